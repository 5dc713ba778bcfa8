"""contracts.fast_decode is an accept-filter of contracts.events: it never accepts what the models refuse,
every refusal keeps the models' reason and field, and its structs stay in step with the models.

Also the strict types and the bounded event time of the event contract (issue 17), which both
decoders share."""

from __future__ import annotations

import json
import sys

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import Feedback, FusionDecision, Impression, EventError, ShownItem, check_event_time, decode
from contracts.fast_decode import FeedbackS, FusionDecisionS, ImpressionS, ShownItemS, accept, decode_record
from simulator.logs import write_simulated_log

PAIRS = [(Impression, ImpressionS), (Feedback, FeedbackS), (ShownItem, ShownItemS),
         (FusionDecision, FusionDecisionS)]
BOUNDS = {"Ge": "ge", "Gt": "gt", "Le": "le", "Lt": "lt", "MinLen": "min_length", "MaxLen": "max_length"}


def feedback(**overrides) -> dict:
    return {"schema": "streamrank.feedback.v1", "event_id": "e1", "request_id": "r1", "item_id": "d1",
            "ts": 1767225600.5, "kind": "click", "value": 1.0} | overrides


def impression(**overrides) -> dict:
    return {"schema": "streamrank.impression.v1", "event_id": "r1:imp", "request_id": "r1", "ts": 1767225600.0,
            "user_id": "u1", "query": "q", "items": [
                {"item_id": "d1", "position": 1, "scores": {"click": 0.5}, "duration_ms": 1000.0},
                {"item_id": "d2", "position": 2, "propensity": 0.5, "features": [0.1, 2]}],
            "fusion": {"weights": {"click": 1.0}, "logprob": -0.5}, "context": {"hour": 3, "device": "ios"}} | overrides


def raw(doc) -> bytes:
    return json.dumps(doc).encode()


def verdict(value: bytes):
    """('ok', fields) or ('error', reason, field) as contracts.events.decode sees ``value``."""
    try:
        event = decode(value)
    except EventError as exc:
        return ("error", exc.reason, exc.field)
    return ("ok", event.request_id, event.ts)


def assert_same_verdict(value: bytes) -> None:
    expected = verdict(value)
    fast = accept(value)
    if fast is not None:
        assert expected == ("ok", fast.request_id, fast.ts), (value, expected)
    try:
        got = decode_record(value)
        got = ("ok", got.request_id, got.ts) if hasattr(got, "ts") else ("ok", got.request_id, None)
    except EventError as exc:
        got = ("error", exc.reason, exc.field)
    if expected[0] == "ok" and got[0] == "ok":
        return
    assert got == expected, value


# --- the structs mirror the models ------------------------------------------------------------------


def _struct_bounds(t) -> dict:
    if isinstance(t, msgspec.inspect.UnionType):
        t = next(x for x in t.types if not isinstance(x, msgspec.inspect.NoneType))
    return {k: getattr(t, k) for k in BOUNDS.values() if getattr(t, k, None) is not None}


@pytest.mark.parametrize("model,struct", PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_each_struct_has_its_models_fields_defaults_and_bounds(model, struct):
    info = {f.name: f for f in msgspec.inspect.type_info(struct).fields}
    fields = {name: f for name, f in model.model_fields.items() if name != "schema_"}
    assert set(info) == set(fields)
    for name, field in fields.items():
        mirror = info[name]
        assert mirror.required == field.is_required(), name
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            got = mirror.default_factory() if mirror.default_factory is not msgspec.NODEFAULT else mirror.default
            assert got == default, name
        wanted = {BOUNDS[type(m).__name__]: getattr(m, BOUNDS[type(m).__name__])
                  for m in field.metadata if type(m).__name__ in BOUNDS}
        bounds = _struct_bounds(mirror.type)
        for key, value in bounds.items():  # the struct's extra bounds are only the finite-float ones
            if key not in wanted:
                assert key in ("ge", "le") and abs(value) == sys.float_info.max, (name, key, value)
        assert {k: v for k, v in bounds.items() if k in wanted} == wanted, name


# --- verdicts ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_lines(tmp_path_factory, shared_data) -> list[bytes]:
    path = tmp_path_factory.mktemp("fast-decode") / "log.jsonl"
    write_simulated_log(path, shared_data, 60, seed=3, namespace="fd", max_candidates=8, with_features=True)
    return path.read_bytes().splitlines()


def test_every_event_of_a_simulated_log_is_accepted_with_the_models_values(log_lines):
    for line in log_lines:
        fast, model = accept(line), decode(line)
        assert fast is not None, line[:200]
        assert msgspec.to_builtins(fast) == json.loads(model.model_dump_json(by_alias=True)) | {
            "schema": model.schema_}


SAMPLES = [raw(feedback()), raw(impression())]
FIELDS = {0: ["event_id", "request_id", "item_id", "ts", "kind", "value", "schema", "extra"],
          1: ["event_id", "ts", "user_id", "query", "items", "fusion", "list_logprob", "model_versions", "context",
              "source", "schema", "items.0.position", "items.0.scores", "items.1.propensity",
              "items.0.duration_ms", "items.1.features", "items.1.item_id", "fusion.weights", "context.hour"]}
values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-(2**70), 2**70), st.just(sys.float_info.max),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["", "1.5", "NaN", "1", "d1", "\ud800x",
                                                                       "x" * 257, "y" * 1025, "click", "session_end"]),
    st.lists(st.integers(0, 2), max_size=3), st.dictionaries(st.sampled_from(["a", "click"]), st.floats(0, 1),
                                                             max_size=2))


def _mutate(doc: dict, path: str, value) -> dict:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return doc


@settings(max_examples=600, deadline=None, database=None)
@given(st.integers(0, 1), st.data(), values, st.booleans())
def test_a_mutated_event_gets_the_models_verdict(which, data, value, drop):
    doc = json.loads(SAMPLES[which])
    path = data.draw(st.sampled_from(FIELDS[which]))
    if drop and "." not in path and path in doc:
        doc.pop(path)
    else:
        doc = _mutate(doc, path, value)
    assert_same_verdict(json.dumps(doc).encode())


@pytest.mark.parametrize("value", [
    raw(feedback(item_id=None)), raw(feedback(item_id=None, kind="reformulate")),
    raw(impression(items=[{"item_id": "a", "position": 1}, {"item_id": "a", "position": 2}])),
    raw(feedback()).replace(b'"ts": 1767225600.5', b'"ts": 1e999'), raw(feedback()) + b" ", b"[]", b"{}", b"",
    raw(feedback()).replace(b"e1", b"e\xff"), raw(feedback()).replace(b'"e1"', b'"\\ud800"'),
    raw(feedback()).replace(b'"ts": 1767225600.5', b'"ts": 1, "ts": "x"'),
    raw(feedback()).replace(b'"ts": 1767225600.5', b'"ts": "x", "ts": 2'),
    raw({k: v for k, v in feedback().items() if k != "schema"}),
    raw(feedback(schema="streamrank.labeled_list.v1")), raw(impression(items=[{"item_id": "a", "position": 1.0}])),
])
def test_edge_records_get_the_models_verdict(value):
    assert_same_verdict(value)


# --- strict types and bounded event time (issue 17) -------------------------------------------------


@pytest.mark.parametrize("doc,field", [
    (feedback(ts="1767225600"), "ts"), (feedback(value="1"), "value"), (feedback(value=True), "value"),
    (feedback(ts=True), "ts"), (impression(ts=False), "ts"), (impression(context={"hour": True}), "context.hour.float"),
    (impression(items=[{"item_id": "a", "position": "1"}]), "items.0.position"),
    (impression(items=[{"item_id": "a", "position": True}]), "items.0.position"),
    (impression(items=[{"item_id": "a", "position": 1.0}]), "items.0.position"),
    (impression(items=[{"item_id": "a", "position": 1, "scores": {"click": "0.5"}}]), "items.0.scores.click"),
])
def test_numeric_strings_and_booleans_are_not_numbers(doc, field):
    for decoder in (decode, decode_record):
        with pytest.raises(EventError) as err:
            decoder(raw(doc))
        assert (err.value.reason, err.value.field) == ("schema_violation", field)


def test_an_event_too_far_after_its_broker_timestamp_is_refused_as_future_ts():
    value = raw(feedback(ts=1000.0 + 60.0))
    assert decode_record(value, 1000.0, max_skew_s=60.0).ts == 1060.0  # at the bound: kept
    with pytest.raises(EventError) as err:
        decode_record(raw(feedback(ts=1060.001)), 1000.0, max_skew_s=60.0)
    assert (err.value.reason, err.value.field) == ("future_ts", "ts")
    assert "60.0 s" in err.value.detail and "1000.0" in err.value.detail
    with pytest.raises(EventError):  # the slow path (a model, not a struct) is bounded too
        decode_record(raw(feedback(item_id="x" * 256, ts=5e9)), 1000.0, max_skew_s=60.0)
    assert decode_record(raw(feedback(ts=10.0)), 1000.0, max_skew_s=60.0).ts == 10.0  # the past is the join's business
    assert decode_record(raw(feedback(ts=5e9)), None, max_skew_s=60.0).ts == 5e9  # no broker time: no bound
    assert decode_record(raw(feedback(ts=5e9)), -1.0, max_skew_s=60.0).ts == 5e9
    check_event_time(5e9, 1000.0, float("inf"))
