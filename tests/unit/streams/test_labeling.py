"""``streams.labeling``: the labels and rewards of a joined list, and its two outputs.

* the example id is ``sha1(request_id NUL event_id)``, equal for every re-delivery;
* every shown item gets its labels in shown order, an item without feedback all zeros;
* the rewards follow :mod:`streams.rewards`'s formulas, recomputed here by hand: item reward
  ``w_c click + w_lv long_view + w_wt min(1, t/d) + w_l like + w_f follow + w_s share`` (``d`` the
  duration, or the reference play time when unknown or 0), list reward ``sum r_i / log2(1 + pos_i)``,
  query reward 1 / ``partial_credit`` / 0 and 0 after a reformulation; only shown items count;
* :func:`label_impression_json` gives the bytes of ``encode(label_impression(...))`` (same bytes or
  the same error) and, as its docstring promises for the hot path, builds no model for plain values
  while everything the models would coerce or reject goes through them.
"""

from __future__ import annotations

import hashlib
import math

import pytest

import streams.labeling as labeling
from contracts.events import IMPRESSION_SCHEMA, LABELED_LIST_SCHEMA, Impression, JoinInfo, ShownItem, decode, encode
from streams.labeling import example_id_for, item_labels, label_impression, label_impression_json
from streams.rewards import ItemOutcome, ListOutcome, RewardWeights

#: Weights with no two alike, so a swapped or dropped term changes the reward.
W = RewardWeights(click=1.5, long_view=2.25, watch_ratio=0.75, like=3.5, follow=5.0, share=7.25,
                  reference_play_ms=40_000.0, partial_credit=0.4)
JOIN = {"closed_by": "window", "window_s": 60.0, "feedback_count": 3, "duplicate_count": 1, "early_feedback_count": 2,
        "closed_at_ts": 1070.0, "impression_offset": "streamrank.impressions/2/17"}


def imp(rid: str = "r1", event_id: str = "e-imp", items: list[ShownItem] | None = None, **extra) -> Impression:
    items = items or [ShownItem(item_id="a", position=2, duration_ms=10_000.0),
                      ShownItem(item_id="b", position=5),
                      ShownItem(item_id="c", position=9, duration_ms=0.0)]
    return Impression(schema=IMPRESSION_SCHEMA, event_id=event_id, request_id=rid, ts=1000.0, user_id="u",
                      items=items, **extra)


def outcome(**items: dict) -> ListOutcome:
    out = ListOutcome()
    for item_id, fields in items.items():
        out.items[item_id] = ItemOutcome(**fields)
    return out


def reward(o: ItemOutcome, duration_ms: float | None, w: RewardWeights = W) -> float:
    """The item reward written out from the formula (watch ratio against the duration or the reference time)."""
    denominator = duration_ms if duration_ms is not None and duration_ms > 0 else w.reference_play_ms
    ratio = min(1.0, max(0.0, o.play_time_ms / denominator))
    return (w.click * o.click + w.long_view * o.long_view + w.watch_ratio * ratio + w.like * o.like
            + w.follow * o.follow + w.share * o.share)


# --- example id ----------------------------------------------------------------------------------

def test_the_example_id_is_the_sha1_of_request_id_nul_event_id():
    impression = imp(rid="req-\u00e9", event_id="ev-7")
    assert example_id_for(impression) == hashlib.sha1("req-\u00e9\x00ev-7".encode("utf-8")).hexdigest()


def test_a_redelivered_impression_keeps_its_example_id_and_another_event_gets_another():
    impression = imp()
    assert example_id_for(decode(encode(impression))) == example_id_for(impression)
    assert example_id_for(imp(event_id="e-other")) != example_id_for(impression)
    assert example_id_for(imp(rid="r2")) != example_id_for(impression)
    # the separator keeps (request, event) pairs apart that plain concatenation would merge
    assert example_id_for(imp(rid="ab", event_id="c")) != example_id_for(imp(rid="a", event_id="bc"))


# --- per-item labels -------------------------------------------------------------------------------

def test_every_shown_item_is_labelled_in_shown_order_with_its_own_feedback():
    got = outcome(a={"click": 1, "long_view": 1, "play_time_ms": 4_000.0, "share": 1},
                  c={"like": 1, "follow": 1, "play_time_ms": 50_000.0},
                  z={"click": 1, "long_view": 1})  # feedback on an item that was not shown
    labels, shown = item_labels(imp(), got, W)
    assert labels == [
        {"item_id": "a", "position": 2, "click": 1, "long_view": 1, "play_time_ms": 4_000.0, "like": 0, "follow": 0,
         "share": 1, "reward": 1.5 + 2.25 + 0.75 * 0.4 + 7.25},
        {"item_id": "b", "position": 5, "click": 0, "long_view": 0, "play_time_ms": 0.0, "like": 0, "follow": 0,
         "share": 0, "reward": 0.0},
        # duration 0 is unknown: watch ratio against the 40 s reference, capped at 1
        {"item_id": "c", "position": 9, "click": 0, "long_view": 0, "play_time_ms": 50_000.0, "like": 1, "follow": 1,
         "share": 0, "reward": 3.5 + 5.0 + 0.75 * 1.0},
    ]
    assert shown == [got.items["a"], ItemOutcome(), got.items["c"]]


def test_play_time_is_written_as_a_float_and_the_reward_uses_the_items_duration():
    got = outcome(a={"play_time_ms": 2_500}, b={"play_time_ms": 10_000})  # ints straight from code
    labels, _ = item_labels(imp(), got, W)
    assert [type(lab["play_time_ms"]) for lab in labels] == [float, float, float]
    assert labels[0]["reward"] == pytest.approx(0.75 * 2_500 / 10_000.0)  # against a's 10 s duration
    assert labels[1]["reward"] == pytest.approx(0.75 * 10_000 / 40_000.0)  # b has no duration: reference time
    assert all(type(lab["reward"]) is float for lab in labels)


# --- the labelled list -----------------------------------------------------------------------------

def test_the_labeled_list_carries_the_impression_join_and_independently_computed_rewards():
    impression = imp()
    got = outcome(a={"click": 1, "play_time_ms": 7_000.0}, b={"long_view": 1, "play_time_ms": 30_000.0},
                  c={"click": 1, "like": 1})
    example = label_impression(impression, got, W, JoinInfo(**JOIN))
    rewards = [reward(got.items["a"], 10_000.0), reward(got.items["b"], None), reward(got.items["c"], 0.0)]
    assert example.schema_ == LABELED_LIST_SCHEMA
    assert example.example_id == hashlib.sha1(b"r1\x00e-imp").hexdigest()
    assert example.request_id == "r1" and example.impression == impression
    assert [lab.item_id for lab in example.labels] == ["a", "b", "c"]
    assert [lab.position for lab in example.labels] == [2, 5, 9]
    assert [lab.reward for lab in example.labels] == pytest.approx(rewards)
    assert [(lab.click, lab.long_view, lab.like) for lab in example.labels] == [(1, 0, 0), (0, 1, 0), (1, 0, 1)]
    assert example.list_reward == pytest.approx(sum(r / math.log2(1 + p) for r, p in zip(rewards, [2, 5, 9])))
    assert example.query_reward == 1.0  # b had a long view and the query was not reformulated
    assert example.reformulated is False
    assert example.join == JoinInfo(**JOIN)


@pytest.mark.parametrize("items, reformulated, expected", [
    ({"b": {"long_view": 1}}, False, 1.0),
    ({"a": {"click": 1}, "c": {"click": 1, "like": 1}}, False, 0.4),  # a click without a long view: partial
    ({"a": {"like": 1, "play_time_ms": 9_000.0}}, False, 0.0),
    ({}, False, 0.0),
    ({"b": {"long_view": 1, "click": 1}}, True, 0.0),  # a reformulation zeroes even a long view
    ({"z": {"long_view": 1}}, False, 0.0),  # an item not shown does not satisfy the query
    ({"z": {"long_view": 1}, "a": {"click": 1}}, False, 0.4),
])
def test_the_query_reward_is_one_for_a_long_view_partial_for_a_click_and_zero_after_reformulating(
        items, reformulated, expected):
    got = outcome(**items)
    got.reformulated = reformulated
    example = label_impression(imp(), got, W, JoinInfo(**JOIN))
    assert example.query_reward == expected
    assert example.reformulated is reformulated


def test_an_unlabelled_list_has_zero_rewards():
    example = label_impression(imp(), ListOutcome(), W, JoinInfo(**JOIN))
    assert [lab.reward for lab in example.labels] == [0.0, 0.0, 0.0]
    assert example.list_reward == 0.0 and example.query_reward == 0.0


# --- the wire form -------------------------------------------------------------------------------

def model_result(impression: Impression, got: ListOutcome, weights: RewardWeights, join: dict):
    """``encode(label_impression(...))``, or the type of the error the models raise."""
    try:
        return encode(label_impression(impression, got, weights, JoinInfo(**join)))
    except Exception as exc:  # noqa: BLE001 - the error is the result to compare
        return type(exc)


def json_result(impression: Impression, got: ListOutcome, weights: RewardWeights, join: dict):
    try:
        return label_impression_json(impression, got, weights, join)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


class ModelSpy:
    """Counts the :class:`JoinInfo` models :func:`label_impression_json` builds (it builds one only on the model path)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, **fields) -> JoinInfo:
        self.calls += 1
        return JoinInfo(**fields)


@pytest.fixture
def spy(monkeypatch) -> ModelSpy:
    counter = ModelSpy()
    monkeypatch.setattr(labeling, "JoinInfo", counter)
    return counter


PLAIN = outcome(a={"click": 1, "long_view": 1, "play_time_ms": 4_000.0, "like": 1, "follow": 1, "share": 1},
                b={"click": 1, "play_time_ms": 0.0})


@pytest.mark.parametrize("got, join", [
    (PLAIN, JOIN),
    (ListOutcome(), JOIN),
    (outcome(a={"click": 0, "play_time_ms": 0.0}), JOIN),  # zeros are plain values too
    (PLAIN, {**JOIN, "impression_offset": None}),
    (PLAIN, {k: v for k, v in JOIN.items() if k not in ("duplicate_count", "early_feedback_count",
                                                        "impression_offset")}),
    (PLAIN, {**JOIN, "feedback_count": 0, "duplicate_count": 0, "early_feedback_count": 0, "closed_at_ts": 0.0}),
    (PLAIN, {**JOIN, "window_s": 7, "closed_at_ts": 1070}),  # ints in float fields: written as floats
    (PLAIN, {**JOIN, "closed_by": "session_end"}),
    (PLAIN, {**JOIN, "closed_by": "idle"}),
    (PLAIN, {**JOIN, "closed_by": "flush"}),
])
def test_plain_values_give_the_models_bytes_without_building_a_model(spy, got, join):
    impression = imp(query="q")  # with None fields (fusion, list_logprob, ...) that must be left out
    expected = model_result(impression, got, W, join)
    assert isinstance(expected, bytes)
    spy.calls = 0
    assert label_impression_json(impression, got, W, join) == expected
    assert spy.calls == 0


def test_a_reformulated_plain_list_takes_the_plain_path_too(spy):
    got = outcome(a={"long_view": 1})
    got.reformulated = True
    expected = model_result(imp(), got, W, JOIN)
    spy.calls = 0
    assert label_impression_json(imp(), got, W, JOIN) == expected
    assert spy.calls == 0
    assert decode(expected).query_reward == 0.0


def _out(**fields) -> ListOutcome:
    return outcome(a={"click": 1, **fields})


def _reformulated(value) -> ListOutcome:
    got = _out()
    got.reformulated = value
    return got


@pytest.mark.parametrize("got, weights, join", [
    # flags the models coerce (a bool or a float written as an int) or reject (outside 0..1)
    *[(_out(**{kind: value}), W, JOIN)
      for kind in ("click", "long_view", "like", "follow", "share") for value in (True, 1.0, 2, -1)],
    (_out(click=False), W, JOIN),
    # play times the models reject: negative, infinite (the reward stays finite: watch ratio capped at 1), NaN
    (_out(play_time_ms=-5.0), W, JOIN),
    (_out(play_time_ms=math.inf), W, JOIN),
    (_out(play_time_ms=math.nan), W, JOIN),
    # rewards that are not finite: an infinite weight, or finite item rewards whose list sum overflows
    (_out(), RewardWeights(click=math.inf), JOIN),
    (outcome(a={"click": 1}, b={"click": 1}, c={"click": 1}), RewardWeights(click=1.7e308), JOIN),
    (_out(), RewardWeights(partial_credit=math.inf), JOIN),  # a click only: the query reward is partial credit
    (_reformulated(1), W, JOIN),  # not a bool: the model writes true
    (_reformulated(0), W, JOIN),
    # join fields the models coerce or reject
    (_out(), W, {**JOIN, "closed_by": "timeout"}),
    (_out(), W, {**JOIN, "feedback_count": -1}),
    (_out(), W, {**JOIN, "feedback_count": True}),
    (_out(), W, {**JOIN, "feedback_count": 3.0}),
    (_out(), W, {**JOIN, "duplicate_count": -1}),
    (_out(), W, {**JOIN, "duplicate_count": True}),
    (_out(), W, {**JOIN, "early_feedback_count": -2}),
    (_out(), W, {**JOIN, "early_feedback_count": 1.0}),
    (_out(), W, {**JOIN, "window_s": math.inf}),
    (_out(), W, {**JOIN, "window_s": math.nan}),
    (_out(), W, {**JOIN, "closed_at_ts": math.inf}),
    (_out(), W, {**JOIN, "closed_at_ts": -1.0}),
    (_out(), W, {**JOIN, "closed_at_ts": -math.inf}),
])
def test_values_the_models_would_coerce_or_reject_go_through_the_models(spy, got, weights, join):
    expected = model_result(imp(), got, weights, join)
    spy.calls = 0
    assert json_result(imp(), got, weights, join) == expected
    assert spy.calls == 1


def test_an_infinite_play_time_is_refused_although_its_reward_is_finite():
    got = _out(play_time_ms=math.inf)
    labels, _ = item_labels(imp(), got, W)
    assert math.isfinite(labels[0]["reward"])
    assert model_result(imp(), got, W, JOIN) is json_result(imp(), got, W, JOIN)
    assert isinstance(json_result(imp(), got, W, JOIN), type) and issubclass(json_result(imp(), got, W, JOIN),
                                                                             ValueError)
