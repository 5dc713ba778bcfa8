"""Item-, list- and query-level rewards (pure), with the formulas of streams/rewards.py's docstring."""

from __future__ import annotations

import math

import pytest

from streams.rewards import (
    ItemOutcome,
    ListOutcome,
    RewardWeights,
    item_reward,
    list_reward,
    query_satisfaction,
    watch_ratio,
)

W = RewardWeights(click=1.0, long_view=2.0, watch_ratio=3.0, like=0.5, follow=4.0, share=5.0,
                  reference_play_ms=10_000.0, partial_credit=0.3)


@pytest.mark.parametrize("outcome, duration, expected", [
    (ItemOutcome(), 1000.0, 0.0),
    (ItemOutcome(click=1), None, 1.0),
    (ItemOutcome(click=1, long_view=1, play_time_ms=500.0), 1000.0, 1.0 + 2.0 + 3.0 * 0.5),
    (ItemOutcome(play_time_ms=5_000.0), None, 3.0 * 0.5),  # unknown duration: reference play time
    (ItemOutcome(play_time_ms=5_000.0), 0.0, 3.0 * 0.5),  # zero duration: reference too
    (ItemOutcome(play_time_ms=50_000.0), 1000.0, 3.0),  # the watch ratio is capped at 1
    (ItemOutcome(like=1, follow=1, share=1), 1.0, 0.5 + 4.0 + 5.0),
])
def test_item_reward(outcome, duration, expected):
    assert math.isclose(item_reward(outcome, duration, W), expected)


def test_outcome_aggregation_keeps_binary_flags_and_the_largest_play_time():
    outcome = ItemOutcome()
    for kind, value in [("click", 1.0), ("click", 1.0), ("play_time_ms", 900.0), ("play_time_ms", 400.0),
                        ("like", 0.0), ("share", 1.0)]:
        outcome.add(kind, value)
    assert (outcome.click, outcome.play_time_ms, outcome.like, outcome.share) == (1, 900.0, 0, 1)


def test_list_reward_is_position_discounted():
    assert math.isclose(list_reward([1.0, 1.0, 1.0], [1, 2, 3]), 1.0 + 1 / math.log2(3) + 1 / math.log2(4))
    with pytest.raises(ValueError):
        list_reward([1.0], [1, 2])


@pytest.mark.parametrize("outcomes, reformulated, expected", [
    ([ItemOutcome(long_view=1)], False, 1.0),
    ([ItemOutcome(long_view=1)], True, 0.0),
    ([ItemOutcome(click=1)], False, 0.3),
    ([ItemOutcome()], False, 0.0),
    ([], False, 0.0),
])
def test_query_satisfaction(outcomes, reformulated, expected):
    assert query_satisfaction(outcomes, reformulated, W) == expected


def test_list_outcome_routes_query_level_kinds():
    outcome = ListOutcome()
    outcome.add(None, "reformulate", 1.0)
    outcome.add(None, "session_end", 1.0)
    outcome.add("a", "click", 1.0)
    assert outcome.reformulated and set(outcome.items) == {"a"}


def test_watch_ratio_never_negative():
    assert watch_ratio(-5.0, 100.0, 1000.0) == 0.0


@pytest.mark.parametrize("duration, expected", [
    (0.5, 0.5),  # any positive duration is the denominator, even under 1 ms
    (0.0, 0.25 / 1000.0),  # unknown (0 or None): the reference play time
    (None, 0.25 / 1000.0),
    (-2.0, 0.25 / 1000.0),
])
def test_watch_ratio_divides_by_a_positive_duration_else_the_reference(duration, expected):
    assert watch_ratio(0.25, duration, 1000.0) == pytest.approx(expected, rel=1e-12)


def test_weights_come_from_a_mapping_and_unknown_names_are_refused():
    assert RewardWeights.from_mapping({"click": "2.5"}).click == 2.5
    with pytest.raises(ValueError, match="unknown reward weights"):
        RewardWeights.from_mapping({"clikc": 1.0})
