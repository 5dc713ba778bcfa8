"""Pure summaries of the closed loop: ECE, curves, staleness attribution."""

from __future__ import annotations

import pytest

from loop import metrics as dm


def test_ece_is_zero_when_calibrated_per_bin_and_the_gap_otherwise():
    assert dm.ece([0.25] * 4, [1, 0, 0, 0]) == pytest.approx(0.0)
    # Two bins: [0.1 x2 with 1 click] gap 0.4 and [0.9 x2 with 2 clicks] gap 0.1, weights 1/2 each.
    assert dm.ece([0.1, 0.1, 0.9, 0.9], [1, 0, 1, 1]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_curves_bucket_by_time_and_drop_a_tiny_trailing_bucket():
    rows = [dm.Served(t=100 + i, request_id=str(i), ok=True, latency_s=0.01, reward=float(i < 10), ndcg10=0.5,
                      clicks=[1], click_probs=[0.5]) for i in range(21)]
    rows.append(dm.Served(t=99, request_id="bad", ok=False, latency_s=1.0))
    curve = dm.curves(rows, start=100, bucket_s=10)
    assert [(c["t"], c["requests"], c["reward"]) for c in curve] == [(5.0, 10, 1.0), (15.0, 10, 0.0)]


def test_staleness_uses_the_first_served_version_that_covers_the_example():
    examples = {"a": ("ex:0", 5, 10.5), "b": ("ex:1", 2, 11.5), "c": ("ex:0", 9, 12.5)}
    feedback = {"a": 10.0, "b": 11.0, "c": 12.0}
    manifests = {"ldro": [{"version": "1", "meta": {"runtime": {"offsets": {"ex:0": 4, "ex:1": 7}}}},
                          {"version": "2", "meta": {"runtime": {"offsets": {"ex:0": 6, "ex:1": 7}}}}],
                 "umnn": [{"version": "7", "meta": {"runtime": {"offsets": {"ex:0": 9}}}}]}
    served_at = {"ldro": {"1": 13.0, "2": 15.0}, "umnn": {"7": 20.0}}
    values, unserved = dm.staleness(dm.staleness_rows(examples, feedback, manifests, served_at))
    # a: offset 5 first covered by ldro v2 (served 15); b: ldro v1 (13); c: only umnn v7 (20).
    assert sorted(values) == [2.0, 5.0, 8.0] and unserved == 0
    rows = dm.staleness_rows(examples, feedback, {"ldro": manifests["ldro"]}, {"ldro": served_at["ldro"]})
    values, unserved = dm.staleness(rows)
    assert sorted(values) == [2.0, 5.0] and unserved == 1
    # join = example produced - last feedback, for served and unserved examples alike
    assert dm.staleness_breakdown(rows)["join_s"] == [0.5, 0.5, 0.5]


def test_first_served_records_the_first_response_per_version():
    rows = [dm.Served(t=t, request_id="x", ok=True, latency_s=0, versions=v)
            for t, v in [(3.0, {"m": "2"}), (1.0, {"m": "1"}), (2.0, {"m": "1"}), (4.0, {})]]
    assert dm.first_served(rows, "m") == {"1": 1.0, "2": 3.0}


def test_staleness_by_close_splits_by_reason_and_drops_the_warm_up():
    rows = [{"request_id": "a", "closed_by": "session_end", "feedback_done_at": 1.0, "first_served_at": 9.0},
            {"request_id": "b", "closed_by": "session_end", "feedback_done_at": 20.0, "first_served_at": 22.0},
            {"request_id": "c", "closed_by": "window", "feedback_done_at": 21.0, "first_served_at": 25.0},
            {"request_id": "d", "closed_by": "window", "feedback_done_at": 30.0, "first_served_at": None}]
    everything = dm.staleness_by_close(rows)
    assert everything["all"] == {"examples": 4, "served": 3, "p50_s": 4.0, "p99_s": pytest.approx(7.92)}
    assert everything["session_end"]["p50_s"] == 5.0 and everything["window"]["served"] == 1
    steady = dm.staleness_by_close(rows, since=10.0)
    assert steady["all"]["examples"] == 3 and steady["session_end"] == {"examples": 1, "served": 1, "p50_s": 2.0,
                                                                       "p99_s": 2.0}


def test_staleness_starts_at_the_last_feedback_event_the_window_kept():
    served = dm.Served(t=10.0, request_id="r", ok=True, latency_s=0.01,
                       feedback_sent=[(10.2, 10.21), (11.0, 11.02), (12.9, 13.0)])
    # window end at event time 11.5: the event at 12.9 was dropped by the join, nothing learned from it
    assert dm.learned_feedback_done(served, 11.5) == 11.02
    assert dm.learned_feedback_done(served, 20.0) == 13.0
    # no event inside the window: the impression (the response) was the last thing learned from
    assert dm.learned_feedback_done(served, 10.1) == 10.0
    # no example read back for it: the last event produced
    assert dm.learned_feedback_done(served, None) == 13.0


def test_demo_set_overrides_are_checked_against_the_config_fields():
    from loop.config import DemoConfig, demo_overrides

    got = demo_overrides({"learner_max_wait_s": None, "join_within_s": 1, "learner_batch": 8})
    assert got == {"learner_max_wait_s": None, "join_within_s": 1.0, "learner_batch": 8}
    assert DemoConfig(**got).learner_max_wait_s is None
    for bad, field_name in (({"nope": 1}, "nope"), ({"rate": 5.0}, "rate"), ({"learner_batch": 2.5}, "learner_batch"),
                            ({"join_within_s": None}, "join_within_s"), ({"warm_start_ldro": 1}, "warm_start_ldro")):
        with pytest.raises(ValueError, match=field_name):
            demo_overrides(bad)


def test_the_breakdown_splits_the_join_at_the_window_end_when_rows_have_it():
    rows = [{"feedback_done_at": 10.0, "window_end_at": 11.5, "example_at": 11.7, "snapshot_created_at": 12.5,
             "first_served_at": 12.6},
            {"feedback_done_at": 20.0, "window_end_at": 21.0, "example_at": 20.1, "snapshot_created_at": None,
             "first_served_at": None},  # closed by session_end before its window's end; not served yet
            {"feedback_done_at": 30.0, "example_at": 30.4, "snapshot_created_at": 31.0, "first_served_at": 31.1}]
    parts = dm.staleness_breakdown(rows)
    assert parts["join_s"] == pytest.approx([1.7, 0.1, 0.4])
    assert parts["window_rest_s"] == pytest.approx([1.5, 1.0]) and parts["after_window_s"] == pytest.approx([0.2, -0.9])
    assert parts["learn_publish_s"] == pytest.approx([0.8, 0.6]) and parts["swap_s"] == pytest.approx([0.1, 0.1])
