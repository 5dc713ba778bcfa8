"""The storage keeper's arithmetic (common.retention): how much to trim and where to cut."""

from __future__ import annotations

import pytest

from common.retention import HIGH_WATER, MAX_FRACTION, TARGET_RATIO, fraction_to_trim, trim_offsets


def test_nothing_is_trimmed_below_the_high_water_mark():
    assert fraction_to_trim(0, 100) == 0.0
    assert fraction_to_trim(int(HIGH_WATER * 100), 100) == 0.0
    assert 0.0 < TARGET_RATIO < HIGH_WATER < 1.0


def test_over_the_high_water_mark_the_log_falls_to_the_target_share():
    fraction = fraction_to_trim(200, 100)
    assert fraction == pytest.approx(1 - TARGET_RATIO * 100 / 200)
    assert 200 * (1 - fraction) == pytest.approx(TARGET_RATIO * 100)
    assert fraction_to_trim(81, 100) == pytest.approx(1 - TARGET_RATIO * 100 / 81)


def test_a_huge_log_is_cut_at_most_by_the_cap():
    assert fraction_to_trim(10**12, 100) == MAX_FRACTION


def test_the_bound_must_be_positive():
    with pytest.raises(ValueError, match="max_bytes"):
        fraction_to_trim(10, 0)


def test_cuts_delete_the_fraction_of_each_partition_rounded_up():
    ranges = {"a": (0, 10), "b": (5, 8), "c": (7, 7), "d": (100, 101)}
    assert trim_offsets(ranges, 0.5) == {"a": 5, "b": 7, "d": 101}  # c is empty: left out
    assert trim_offsets(ranges, 0.0) == {}
    assert trim_offsets(ranges, 1.0) == {"a": 10, "b": 8, "d": 101}  # never past the head


def test_a_fraction_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        trim_offsets({"a": (0, 1)}, 1.5)


def test_every_deployments_data_topics_are_trimmable_and_nothing_else():
    from common.retention import trimmable

    assert trimmable("streamrank.impressions") and trimmable("demo1796.dead-letter") and trimmable("t1a2b.examples")
    assert not trimmable("streamrank.model-updates")
    assert not trimmable("streamrank.streams-join-state-changelog")
    assert not trimmable("streamrank.myexamples")  # a suffix, not the logical name after the prefix's dot
    assert not trimmable("__consumer_offsets")


def test_read_records_go_before_a_topic_no_group_has_committed_on():
    from common.retention import plan_cuts

    ranges = {"read": (0, 100), "replayed": (0, 100)}  # "replayed": its reader has not committed yet
    cuts, held = plan_cuts(ranges, {"read": 80}, 0.3)
    assert cuts == {"read": 60} and held == 0  # the 60 records a 0.3 cut of each would take, all already read


def test_unread_partitions_give_at_most_their_fraction_when_read_records_are_not_enough():
    from common.retention import plan_cuts

    ranges = {"a": (0, 100), "b": (0, 100), "c": (0, 50)}
    cuts, held = plan_cuts(ranges, {"a": 20}, 0.5)  # 125 wanted; 20 read
    assert cuts == {"a": 20, "b": 50, "c": 25} and held == 30  # b and c lose their 0.5, no more
    cuts, held = plan_cuts({"a": (0, 100), "b": (0, 100)}, {"a": 60}, 0.5)  # 100 wanted; 60 read
    assert cuts == {"a": 60, "b": 40} and held == 0  # the unread rest takes only what is missing


def test_cuts_stop_at_what_consumer_groups_have_not_committed():
    from common.retention import plan_cuts

    ranges = {"a": (0, 100), "b": (10, 100), "c": (0, 100)}
    cuts, held = plan_cuts(ranges, {"a": 50, "b": 5, "c": 100}, 0.9)  # b's group read nothing it still holds
    assert cuts == {"a": 50, "c": 100} and "b" not in cuts
    assert held == (90 + 81 + 90) - (50 + 100)
    assert plan_cuts({"a": (0, 100)}, {"a": 500}, 0.2) == ({"a": 20}, 0)  # a floor past the head: all read
    assert plan_cuts(ranges, {}, 0.0) == ({}, 0)


def test_the_log_size_leaves_out_a_rewrite_in_progress(tmp_path):
    from common.retention import folder_bytes

    assert folder_bytes(tmp_path / "missing") == 0
    (tmp_path / "kafka.json").write_bytes(b"x" * 100)
    (tmp_path / "noida.control.json").write_bytes(b"y" * 10)
    (tmp_path / "kafka.tmp").write_bytes(b"z" * 1000)  # noida's next log, renamed over kafka.json when done
    assert folder_bytes(tmp_path) == 110
