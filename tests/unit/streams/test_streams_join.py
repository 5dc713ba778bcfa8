"""Pure join logic: windows, watermarks, duplicates, early/late feedback, determinism."""

from __future__ import annotations

import math
import random

import pytest

from contracts.events import FEEDBACK_SCHEMA, IMPRESSION_SCHEMA, Feedback, Impression, ShownItem
from streams.join import (
    JoinConfig,
    Watermarks,
    apply_feedback,
    apply_impression,
    close_entry,
    close_reason,
    new_entry,
    orphan_expired,
    outcome_of,
    tombstone_expired,
)
from streams.labeling import example_id_for
from streams.rewards import RewardWeights

CFG = JoinConfig(window_s=60.0, allowed_lateness_s=5.0, retention_s=100.0)
W = RewardWeights()


def imp(rid: str = "r1", ts: float = 1000.0, event_id: str | None = None) -> Impression:
    return Impression(schema=IMPRESSION_SCHEMA, event_id=event_id or f"{rid}:imp", request_id=rid, ts=ts,
                      user_id="u", items=[ShownItem(item_id="a", position=1, duration_ms=10_000.0),
                                          ShownItem(item_id="b", position=2)])


def fb(n: int, kind: str = "click", item: str | None = "a", ts: float = 1010.0, value: float = 1.0,
       rid: str = "r1") -> Feedback:
    return Feedback(schema=FEEDBACK_SCHEMA, event_id=f"{rid}:fb{n}", request_id=rid, item_id=item, ts=ts, kind=kind,
                    value=value)


def test_feedback_joins_its_impression_and_the_window_closes_at_the_watermark():
    entry = new_entry()
    assert apply_impression(entry, imp()) == "applied"
    assert apply_feedback(entry, fb(0), CFG) == "applied"
    assert close_reason(entry, 1059.9, CFG) is None
    assert close_reason(entry, 1060.0, CFG) == "window"
    example = close_entry(entry, imp(), CFG, W, "window", 1060.0)
    assert example.labels[0].click == 1 and example.labels[1].click == 0
    assert example.join.feedback_count == 1 and example.join.closed_by == "window"
    assert example.example_id == example_id_for(imp())
    assert entry["closed"] == {"by": "window", "at": 1060.0} and entry["fb"] == {}


def test_duplicate_feedback_counts_once():
    entry = new_entry()
    apply_impression(entry, imp())
    assert apply_feedback(entry, fb(0, "like"), CFG) == "applied"
    assert apply_feedback(entry, fb(0, "like"), CFG) == "duplicate"
    assert apply_feedback(entry, fb(1, "play_time_ms", value=4000.0), CFG) == "applied"
    assert apply_feedback(entry, fb(1, "play_time_ms", value=4000.0), CFG) == "duplicate"
    example = close_entry(entry, imp(), CFG, W, "window", 2000.0)
    assert example.join.duplicate_count == 2 and example.join.feedback_count == 2
    assert example.labels[0].like == 1 and example.labels[0].play_time_ms == 4000.0
    assert math.isclose(example.labels[0].reward, W.like + W.watch_ratio * 0.4)


def test_feedback_before_its_impression_is_held_and_joined():
    entry = new_entry()
    assert apply_feedback(entry, fb(0), CFG) == "early"
    assert close_reason(entry, 10**9, CFG) is None  # no impression yet: nothing to close
    apply_impression(entry, imp())
    example = close_entry(entry, imp(), CFG, W, "window", 1060.0)
    assert example.join.early_feedback_count == 1 and example.labels[0].click == 1


def test_feedback_after_the_window_or_after_close_is_dropped():
    entry = new_entry()
    apply_impression(entry, imp())
    assert apply_feedback(entry, fb(0, ts=1060.0 + 1e-6), CFG) == "outside_window"
    assert apply_feedback(entry, fb(1, ts=1060.0), CFG) == "applied"  # the bound is inclusive
    close_entry(entry, imp(), CFG, W, "window", 1061.0)
    assert apply_feedback(entry, fb(2, ts=1020.0), CFG) == "late"
    # after the close, feedback past the window is what it always was: outside the window, not a loss
    assert apply_feedback(entry, fb(3, ts=1060.0 + 1e-6), CFG) == "outside_window"
    assert apply_impression(entry, imp()) == "duplicate"


def test_feedback_at_exactly_the_window_end_after_the_close_is_a_loss_not_outside_the_window():
    """The window keeps feedback at t0 + W (inclusive), so such feedback arriving after the close is
    ``late`` (what the allowed lateness did not wait for); a microsecond later it is outside."""
    entry = new_entry()
    apply_impression(entry, imp(ts=1000.0))
    close_entry(entry, imp(), CFG, W, "window", 1061.0)
    assert apply_feedback(entry, fb(0, ts=1060.0), CFG) == "late"
    assert apply_feedback(entry, fb(1, ts=1060.0 + 1e-6), CFG) == "outside_window"
    assert entry["fb"] == {} and entry["dups"] == 0  # after the close nothing is recorded


@pytest.mark.parametrize("watermark, expected", [
    (0.5, 0.5),  # a finite watermark below 1 s is kept as it is
    (-3.0, 0.0),  # event time before the epoch: clamped at 0 (closed_at_ts is a timestamp)
    (float("-inf"), 0.25),  # no watermark yet: the impression time
])
def test_closed_at_is_the_watermark_clamped_at_zero_or_the_impression_time(watermark, expected):
    entry = new_entry()
    apply_impression(entry, imp(ts=0.25))
    example = close_entry(entry, imp(ts=0.25), CFG, W, "flush", watermark)
    assert example.join.closed_at_ts == expected
    assert entry["closed"] == {"by": "flush", "at": expected}


def test_held_feedback_outside_the_window_is_excluded_when_the_impression_arrives():
    entry = new_entry()
    apply_feedback(entry, fb(0, ts=1070.0), CFG)
    apply_impression(entry, imp(ts=1000.0))
    assert outcome_of(entry, CFG).items == {}
    assert close_entry(entry, imp(), CFG, W, "window", 1070.0).join.feedback_count == 0


@pytest.mark.parametrize("held", [True, False], ids=["held-early", "after-the-impression"])
def test_feedback_at_exactly_the_window_end_counts_whether_it_came_early_or_late(held):
    """The window is inclusive at t0 + W on every path: applied on arrival (``apply_feedback``),
    and held before the impression then kept by the close (``outcome_of``, ``feedback_count``)."""
    entry = new_entry()
    events = [fb(0, "like", ts=1060.0), fb(1, "click", item="b", ts=1060.0 + 1e-6)]
    if not held:
        apply_impression(entry, imp(ts=1000.0))
    outcomes = [apply_feedback(entry, event, CFG) for event in events]
    assert outcomes == (["early", "early"] if held else ["applied", "outside_window"])
    if held:
        apply_impression(entry, imp(ts=1000.0))
    example = close_entry(entry, imp(), CFG, W, "window", 1061.0)
    assert example.join.feedback_count == 1
    assert example.labels[0].like == 1 and example.labels[1].click == 0


def test_a_second_impression_for_the_same_request_is_a_conflict():
    entry = new_entry()
    apply_impression(entry, imp())
    assert apply_impression(entry, imp(event_id="other")) == "conflict"
    assert entry["imp"] == "r1:imp"


def test_session_end_closes_at_once_and_reformulation_zeroes_query_reward():
    entry = new_entry()
    apply_impression(entry, imp())
    apply_feedback(entry, fb(0, "long_view"), CFG)
    apply_feedback(entry, fb(1, "reformulate", item=None, ts=1020.0), CFG)
    assert close_reason(entry, float("-inf"), CFG) is None
    apply_feedback(entry, fb(2, "session_end", item=None, ts=1030.0), CFG)
    assert close_reason(entry, float("-inf"), CFG) == "session_end"
    example = close_entry(entry, imp(), CFG, W, "session_end", float("-inf"))
    assert example.reformulated and example.query_reward == 0.0
    assert example.join.closed_at_ts == 1000.0  # no finite watermark yet: the impression time


def test_watermark_is_the_minimum_over_both_inputs_minus_lateness():
    marks = Watermarks(allowed_lateness_s=5.0)
    marks.observe(0, "impressions", 1000.0)
    assert marks.get(0) == float("-inf")  # feedback input not seen yet
    marks.observe(0, "feedback", 900.0)
    assert marks.get(0) == 895.0
    marks.observe(0, "feedback", 950.0)
    marks.observe(0, "feedback", 940.0)  # out of order: max holds
    assert marks.get(0) == 945.0
    assert marks.get(1) == float("-inf")
    marks.forget(0)
    assert marks.get(0) == float("-inf")


def test_a_caught_up_partition_takes_the_newest_impression_of_any_partition():
    marks = Watermarks(allowed_lateness_s=0.25)
    marks.observe(0, "impressions", 100.0)
    marks.observe(0, "feedback", 103.0)
    marks.observe(1, "impressions", 102.5)
    assert marks.get(0) == 99.75  # its own last impression holds it back
    marks.set_caught_up({0})  # nothing unread on partition 0: the serving clock (102.5) bounds it
    assert marks.get(0) == 102.25
    marks.observe(1, "impressions", 110.0)
    assert marks.get(0) == 102.75  # ... and feedback always does
    marks.set_caught_up(set())  # unread impressions again: back to its own
    assert marks.get(0) == 99.75
    marks.set_caught_up({2})
    assert marks.get(2) == float("-inf")  # no feedback read on it: nothing closes
    marks.observe(2, "feedback", 104.0)
    assert marks.get(2) == 103.75  # no impression of its own yet, caught up: the others' bound it
    marks.forget(2)
    assert 2 not in marks.impressions_caught_up


def test_a_caught_up_partition_with_no_impression_anywhere_has_no_watermark():
    marks = Watermarks(allowed_lateness_s=1.0)
    marks.observe(0, "feedback", 50.0)
    marks.set_caught_up({0})
    assert marks.get(0) == float("-inf")  # no impression read on any partition: nothing closes
    marks.forget(7)  # forgetting a partition never seen is not an error
    assert marks.get(0) == float("-inf") and marks.impressions_caught_up == {0}


def test_tombstones_and_orphans_expire_by_event_time():
    entry = new_entry()
    apply_feedback(entry, fb(0, ts=1000.0), CFG)
    assert not orphan_expired(entry, 1159.0, CFG) and orphan_expired(entry, 1160.0, CFG)
    closed = new_entry()
    apply_impression(closed, imp(ts=1000.0))
    assert not tombstone_expired(closed, 10**9, CFG)  # open entries never expire
    close_entry(closed, imp(), CFG, W, "window", 1060.0)
    assert not tombstone_expired(closed, 1159.0, CFG) and tombstone_expired(closed, 1160.0, CFG)


def _run(events: list, config: JoinConfig) -> dict[str, tuple]:
    """Drive the pure join like the agent does: one partition, watermark over both inputs."""
    entries: dict[str, dict] = {}
    marks = Watermarks(config.allowed_lateness_s)
    impressions = {}
    out = {}
    for event in events:
        entry = entries.setdefault(event.request_id, new_entry())
        source = "impressions" if isinstance(event, Impression) else "feedback"
        marks.observe(0, source, event.ts)
        if isinstance(event, Impression):
            impressions[event.request_id] = event
            apply_impression(entry, event)
        else:
            apply_feedback(entry, event, config)
        for rid, e in entries.items():
            reason = close_reason(e, marks.get(0), config)
            if reason and rid not in out:
                ex = close_entry(e, impressions[rid], config, W, reason, marks.get(0))
                out[rid] = (tuple(ex.labels), ex.list_reward, ex.query_reward)
    for rid, e in entries.items():  # idle flush of the tail
        if rid not in out and e["imp"] is not None:
            ex = close_entry(e, impressions[rid], config, W, "idle", marks.get(0))
            out[rid] = (tuple(ex.labels), ex.list_reward, ex.query_reward)
    return out


def test_arrival_order_between_the_two_inputs_does_not_change_examples():
    """Each input is in event-time order (a Kafka partition); how the two interleave must not matter."""
    rng = random.Random(3)
    impressions, feedback = [], []
    for r in range(40):
        t0 = 1000.0 + 3 * r
        impressions.append(imp(f"q{r}", t0))
        for n in range(rng.randrange(4)):
            kind = rng.choice(["click", "long_view", "like", "play_time_ms", "reformulate"])
            feedback.append(fb(n, kind, None if kind == "reformulate" else rng.choice("ab"),
                               ts=t0 + rng.uniform(0, 90), value=rng.uniform(1, 9000), rid=f"q{r}"))
    feedback.sort(key=lambda f: f.ts)
    reference = _run(sorted(impressions + feedback, key=lambda e: e.ts), CFG)
    assert len(reference) == 40
    assert _run(impressions + feedback, CFG) == reference  # a whole fetch of impressions first
    assert _run(feedback + impressions, CFG) == reference  # or of feedback first
    for seed, bias in [(0, 0.5), (1, 0.8), (2, 0.2), (3, 0.95)]:
        order = random.Random(seed)
        a, b, merged = list(impressions), list(feedback), []
        while a or b:  # a random merge that keeps each input's own order
            src = a if (a and (not b or order.random() < bias)) else b
            merged.append(src.pop(0))
        assert _run(merged, CFG) == reference


@pytest.mark.parametrize("values, message", [
    ({"window_s": 0}, "window_s must be > 0"),
    ({"window_s": -1}, "finite number >= 0"),
    ({"allowed_lateness_s": float("nan")}, "finite number >= 0"),
    ({"idle_timeout_s": float("inf")}, "finite number >= 0"),
    ({"windw_s": 3}, "unknown join settings"),
])
def test_join_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        JoinConfig.from_mapping(values)
