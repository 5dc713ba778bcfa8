"""The worker's plain-JSON examples are byte-identical to ``encode(LabeledList(...))``.

The streams worker sends :func:`streams.join.close_entry_json` (no pydantic models built);
learners and tests use :func:`streams.join.close_entry`. Both must give the same bytes, and
leave the same tombstone, on real simulated sessions and on the awkward cases: absent
(``None``) fields, floats whose text differs between serializers, ints in float fields,
unicode and escaped ids, query-level feedback, and values the models reject.
"""

from __future__ import annotations

import copy
import math

import pytest
from pydantic import ValidationError

from contracts.events import (
    FEEDBACK_SCHEMA,
    IMPRESSION_SCHEMA,
    Feedback,
    FusionDecision,
    Impression,
    JoinInfo,
    ShownItem,
    decode,
    encode,
)
from simulator.click_models import ClickModel
from simulator.kuairand import load_kuairand
from simulator.letor import load_letor
from simulator.session import SessionSimulator, SimulatorConfig
from streams.join import JoinConfig, apply_feedback, apply_impression, close_entry, close_entry_json, new_entry
from streams.labeling import label_impression, label_impression_json
from streams.rewards import ListOutcome, RewardWeights

CFG = JoinConfig(window_s=60.0, allowed_lateness_s=5.0, retention_s=100.0)
W = RewardWeights()


def both(entry: dict, impression: Impression, config: JoinConfig = CFG, weights: RewardWeights = W,
         closed_by: str = "window", watermark: float = 2000.0, offset: str | None = "t/0/7") -> tuple[bytes, bytes]:
    """(model bytes, plain-JSON bytes) of one entry; the tombstones left behind must agree too."""
    model_entry, json_entry = copy.deepcopy(entry), copy.deepcopy(entry)
    expected = encode(close_entry(model_entry, impression, config, weights, closed_by, watermark,
                                  impression_offset=offset))
    got = close_entry_json(json_entry, impression, config, weights, closed_by, watermark, impression_offset=offset)
    assert json_entry == model_entry
    return expected, got


def joined(impression: Impression, feedback: list[Feedback], config: JoinConfig = CFG) -> dict:
    entry = new_entry()
    for fb in feedback:
        if fb.ts < impression.ts:
            apply_feedback(entry, fb, config)
    apply_impression(entry, impression)
    for fb in feedback:
        if fb.ts >= impression.ts:
            apply_feedback(entry, fb, config)
    return entry


@pytest.mark.parametrize("with_features", [False, True])
def test_simulated_sessions_give_identical_bytes(shared_data, with_features):
    sim = SessionSimulator(load_letor(shared_data / "letor" / "rank.train"), load_kuairand(shared_data / "kuairand"),
                           SimulatorConfig(click_model=ClickModel("pbm"), max_candidates=10,
                                           with_features=with_features), seed=3, namespace="json-identity")
    n = 150 if with_features else 600
    kinds: set[str] = set()
    for k, request in enumerate(sim.requests(n)):
        impression = sim.impression(request)
        feedback = sim.respond(request)
        kinds.update(fb.kind for fb in feedback)
        # the worker labels the impression it decoded from the record's bytes
        wire = decode(encode(impression))
        entry = joined(wire, feedback, JoinConfig(window_s=20.0))
        closed_by = ("window", "session_end", "idle", "flush")[k % 4]
        watermark = (float("-inf"), wire.ts + 21.0, 1e9 + 0.1)[k % 3]
        expected, got = both(entry, wire, JoinConfig(window_s=20.0), W, closed_by, watermark,
                             None if k % 5 == 0 else f"streamrank.impressions/{k % 4}/{k}")
        assert got == expected
    assert {"click", "long_view", "play_time_ms"} <= kinds


def imp(rid: str = "r1", ts: float = 1000.0, items: list[ShownItem] | None = None, **extra) -> Impression:
    items = items or [ShownItem(item_id="a", position=1, duration_ms=10_000.0), ShownItem(item_id="b", position=2)]
    return Impression(schema=IMPRESSION_SCHEMA, event_id=f"{rid}:imp", request_id=rid, ts=ts, user_id="u",
                      items=items, **extra)


def fb(n: int, kind: str = "click", item: str | None = "a", ts: float = 1010.0, value: float = 1.0,
       rid: str = "r1") -> Feedback:
    return Feedback(schema=FEEDBACK_SCHEMA, event_id=f"{rid}:fb{n}", request_id=rid, item_id=item, ts=ts, kind=kind,
                    value=value)


def test_none_fields_are_left_out_as_encode_does():
    bare = imp()  # query, fusion, list_logprob, propensity, calibrated, duration_ms, features: None
    expected, got = both(joined(bare, []), bare, offset=None)
    assert got == expected and b"null" not in got and b"impression_offset" not in got
    full = imp(query="q", fusion=FusionDecision(weights={"click": 0.5}, logprob=None), list_logprob=-1.5,
               items=[ShownItem(item_id="a", position=1, scores={"click": 0.25}, calibrated={"click": 0.3},
                                propensity=0.5, duration_ms=0.0, features=[0.0, -0.0, 1.0])],
               model_versions={"ldro": "v1"}, context={"device": "ios", "hour": 3.0})
    expected, got = both(joined(full, [fb(0), fb(1, "play_time_ms", value=120.0)]), full)
    assert got == expected


@pytest.mark.parametrize("value", [1e16, 1.5e-7, 0.1 + 0.2, 123456789012345678.0, 5e-324, 1.7976931348623157e308,
                                   3.0, 7])
def test_floats_are_written_as_pydantic_writes_them(value):
    impression = imp(ts=value, items=[ShownItem(item_id="a", position=3, duration_ms=value, scores={"p": value},
                                                features=[value, -value])], context={"x": value})
    entry = joined(impression, [fb(0, "play_time_ms", value=value, ts=value), fb(1, "long_view", ts=value)],
                   JoinConfig(window_s=7))  # an int window_s: the model writes 7.0
    expected, got = both(entry, impression, JoinConfig(window_s=7), RewardWeights(watch_ratio=0.3, click=1e-7),
                         watermark=value)
    assert got == expected


def test_ints_in_float_fields_and_extreme_weights_agree():
    outcome = ListOutcome()
    outcome.add("a", "play_time_ms", 5)  # an int play time straight from code, not through Feedback
    outcome.add("a", "click", 1)
    join = {"closed_by": "flush", "window_s": 60, "feedback_count": 2, "duplicate_count": 0,
            "early_feedback_count": 0, "closed_at_ts": 0, "impression_offset": None}
    weights = RewardWeights(click=2, long_view=0, watch_ratio=1e300, reference_play_ms=1e-300)
    assert label_impression_json(imp(), outcome, weights, join) == encode(
        label_impression(imp(), outcome, weights, JoinInfo(**join)))


@pytest.mark.parametrize("rid", ["é-ü", "請求-42", "emoji-🦀", 'quote"back\\slash', "ctl\x01\x1f\u2028\u2029", "a" * 256])
def test_unicode_and_escaped_ids_agree(rid):
    items = [ShownItem(item_id=f"i-{rid}"[:256], position=1), ShownItem(item_id="ñ/\t", position=2)]
    impression = Impression(schema=IMPRESSION_SCHEMA, event_id=rid, request_id=rid, ts=5.0, user_id=f"ü{rid}"[:256],
                            query=f"suche {rid}", items=items, model_versions={"m": rid}, context={rid: rid})
    feedback = [Feedback(schema=FEEDBACK_SCHEMA, event_id=f"{rid}{n}"[:256], request_id=rid, item_id=item, ts=6.0,
                         kind=kind, value=1.0)
                for n, (item, kind) in enumerate([(f"i-{rid}"[:256], "click"), ("ñ/\t", "like"), (None, "reformulate"),
                                                  (None, "session_end")])]
    entry = joined(impression, feedback)
    expected, got = both(entry, impression, closed_by="session_end", offset=f"{rid}/0/1")
    assert got == expected
    assert decode(got).request_id == rid


def test_feedback_before_the_impression_and_duplicates_agree():
    feedback = [fb(0, ts=990.0), fb(0, ts=990.0), fb(1, "share", item="b", ts=995.0), fb(2, "follow", ts=1500.0)]
    entry = joined(imp(), feedback)
    assert entry["early"] == 2 and entry["dups"] == 1
    expected, got = both(entry, imp())
    assert got == expected


def test_values_the_models_reject_still_raise():
    outcome = ListOutcome()
    outcome.add("a", "click", 1.0)
    join = {"closed_by": "window", "window_s": 60.0, "feedback_count": 1, "duplicate_count": 0,
            "early_feedback_count": 0, "closed_at_ts": 10.0, "impression_offset": None}
    weights = RewardWeights(click=math.inf)
    with pytest.raises(ValidationError):
        label_impression(imp(), outcome, weights, JoinInfo(**join))
    with pytest.raises(ValidationError):
        label_impression_json(imp(), outcome, weights, join)
    with pytest.raises(ValidationError):
        label_impression_json(imp(), outcome, RewardWeights(), {**join, "closed_by": "timeout"})


def test_a_fast_decoded_impression_gives_the_same_example_with_the_records_own_bytes():
    """The worker's batch path hands ``close_entry_json`` a fast-decoded impression and its record's
    bytes: the example must decode to the model path's, carry those bytes as its impression, and
    leave the same tombstone."""
    from contracts.fast_decode import ImpressionS, accept  # noqa: PLC0415

    impression = imp(query="q", items=[ShownItem(item_id="a", position=1, duration_ms=10_000.0),
                                       ShownItem(item_id="b", position=2, scores={"click": 0.25})])
    raw = encode(impression)
    fast = accept(raw)
    assert type(fast) is ImpressionS
    feedback = [fb(0), fb(1, "play_time_ms", value=4000.0), fb(2, "like", item="b", ts=1020.0)]
    model_entry, fast_entry = joined(impression, feedback), joined(impression, feedback)
    expected = close_entry(model_entry, impression, CFG, W, "window", 1061.0, impression_offset="t/1/9")
    got = close_entry_json(fast_entry, fast, CFG, W, "window", 1061.0, impression_offset="t/1/9", raw=raw)
    assert isinstance(got, bytes)
    assert decode(got) == expected
    assert raw in got  # the record's own bytes, not a re-encoding
    assert fast_entry == model_entry


def test_a_fast_decoded_impression_takes_the_model_path_when_the_models_would_coerce():
    """A count the models coerce (1.0 for an int field) is not written by the byte path: the example is
    then the model path's for the decoded impression, as label_impression_json gives it."""
    from contracts.fast_decode import accept  # noqa: PLC0415
    from streams.labeling import label_impression_raw  # noqa: PLC0415

    impression = imp()
    raw = encode(impression)
    outcome = ListOutcome()
    outcome.add("a", "click", 1.0)
    outcome.add("b", "play_time_ms", 2500.0)
    join = {"closed_by": "window", "window_s": 60.0, "feedback_count": 2.0, "duplicate_count": 0,
            "early_feedback_count": 0, "closed_at_ts": 1061.0, "impression_offset": "t/0/3"}
    got = label_impression_raw(accept(raw), raw, outcome, RewardWeights(click=2.0), join)
    assert got == label_impression_json(decode(raw), outcome, RewardWeights(click=2.0), join)
    example = decode(got)
    assert example.join.feedback_count == 2 and example.labels[0].click == 1 and example.list_reward > 0


def test_the_byte_path_keeps_a_records_own_spelling_of_the_impression():
    """A record written with other whitespace than ``encode`` writes: the example carries those very bytes
    (the models' path would re-encode them), and decodes to the same example."""
    import json  # noqa: PLC0415

    from contracts.fast_decode import accept  # noqa: PLC0415
    from streams.labeling import label_impression_raw  # noqa: PLC0415

    impression = imp()
    raw = json.dumps(json.loads(encode(impression)), indent=1).encode()
    assert raw != encode(impression)
    join = {"closed_by": "window", "window_s": 60.0, "feedback_count": 0, "duplicate_count": 0,
            "early_feedback_count": 0, "closed_at_ts": 1061.0}
    got = label_impression_raw(accept(raw), raw, ListOutcome(), W, join)
    assert raw in got
    assert decode(got) == decode(label_impression_json(impression, ListOutcome(), W, join))
