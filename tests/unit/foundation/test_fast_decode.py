"""contracts.fast_decode is an accept-filter of contracts.events: it never accepts what the models refuse,
every refusal keeps the models' reason and field, and its structs stay in step with the models. The
learners' decoder of ``examples`` records (``decode_example``, a ``LabeledList`` with inline features)
is held to the same, in both feature spellings: ``features`` (JSON numbers) and ``features_f32``
(base64 of little-endian float32: valid, wrong length, NaN/inf, bad base64, both on one item).

Also the strict types and the bounded event time of the event contract (issue 17), which both
decoders share."""

from __future__ import annotations

import base64
import json
import sys

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import (
    LABELED_LIST_SCHEMA,
    EventError,
    Feedback,
    FusionDecision,
    Impression,
    ItemLabels,
    JoinInfo,
    LabeledList,
    ShownItem,
    check_event_time,
    decode,
    encode,
    f32_bytes,
)
from contracts.fast_decode import (
    FeedbackS,
    FusionDecisionS,
    ImpressionS,
    ItemLabelsS,
    JoinInfoS,
    LabeledListS,
    ShownItemS,
    accept,
    accept_example,
    decode_example,
    decode_record,
    replaced,
)
from simulator.examples import simulated_examples
from simulator.logs import write_simulated_log

PAIRS = [(Impression, ImpressionS), (Feedback, FeedbackS), (ShownItem, ShownItemS),
         (FusionDecision, FusionDecisionS), (ItemLabels, ItemLabelsS), (JoinInfo, JoinInfoS),
         (LabeledList, LabeledListS)]
BOUNDS = {"Ge": "ge", "Gt": "gt", "Le": "le", "Lt": "lt", "MinLen": "min_length", "MaxLen": "max_length"}


def feedback(**overrides) -> dict:
    return {"schema": "streamrank.feedback.v1", "event_id": "e1", "request_id": "r1", "item_id": "d1",
            "ts": 1767225600.5, "kind": "click", "value": 1.0} | overrides


def b64(values, dtype="<f4") -> str:
    """``values`` as the base64 of their bytes in ``dtype`` (``features_f32`` when little-endian float32)."""
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()


#: ``features_f32`` spellings, valid and not: what the hypothesis tests draw from.
F32_VALUES = [b64([0.5, -1.25]), b64([]), b64([np.nan]), b64([1.0, np.inf]), b64([-np.inf]), b64([1.0], "<f8"),
              base64.b64encode(b"\0\0\0").decode(), base64.b64encode(b"\0" * 5).decode(), "AACAPw", "AACA-w==",
              "AACAPw==\n", " AACAPw==", "AAAA=", "AACAPw==AACAPw==", "AACAP_==", "%%%%", "\u00e9AAA"]


def impression(**overrides) -> dict:
    return {"schema": "streamrank.impression.v1", "event_id": "r1:imp", "request_id": "r1", "ts": 1767225600.0,
            "user_id": "u1", "query": "q", "items": [
                {"item_id": "d1", "position": 1, "scores": {"click": 0.5}, "duration_ms": 1000.0,
                 "features_f32": b64([0.5, -1.25])},
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
              "items.0.duration_ms", "items.1.features", "items.1.item_id", "fusion.weights", "context.hour",
              "items.0.features_f32", "items.1.features_f32", "items.0.features"]}
values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-(2**70), 2**70), st.just(sys.float_info.max),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["", "1.5", "NaN", "1", "d1", "\ud800x",
                                                                       "x" * 257, "y" * 1025, "click", "session_end"]),
    st.lists(st.integers(0, 2), max_size=3), st.dictionaries(st.sampled_from(["a", "click"]), st.floats(0, 1),
                                                             max_size=2),
    st.sampled_from(F32_VALUES), st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()))


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


# --- examples: the learners' LabeledList decoder --------------------------------------------------


def example(**overrides) -> dict:
    imp = impression()
    return {"schema": LABELED_LIST_SCHEMA, "example_id": "x1", "request_id": "r1", "impression": imp,
            "labels": [{"item_id": "d1", "position": 1, "click": 1, "reward": 1.5},
                       {"item_id": "d2", "position": 2, "play_time_ms": 3000.0, "like": 0}],
            "list_reward": 1.5, "query_reward": 0.0, "reformulated": False,
            "join": {"closed_by": "window", "window_s": 60.0, "feedback_count": 2, "closed_at_ts": 1767225660.0,
                     "impression_offset": "impressions/0/7"}} | overrides


def example_verdict(value: bytes, max_bytes: int = 1_000_000):
    """('ok', the example as JSON builtins) or ('error', reason, field) as contracts.events.decode sees it."""
    try:
        event = decode(value, expected=LABELED_LIST_SCHEMA, max_bytes=max_bytes)
    except EventError as exc:
        return ("error", exc.reason, exc.field)
    return ("ok", json.loads(encode(event)))


def as_builtins(event) -> dict:
    """An example's fields as JSON builtins, struct or model (``encode`` drops nulls: so does this)."""
    if isinstance(event, msgspec.Struct):
        return json.loads(msgspec.json.encode(_without_nulls(msgspec.to_builtins(event))))
    return json.loads(encode(event))


def _without_nulls(doc):
    if isinstance(doc, dict):
        return {k: _without_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, list):
        return [_without_nulls(v) for v in doc]
    return doc


def assert_same_example_verdict(value: bytes, max_bytes: int = 1_000_000) -> None:
    expected = example_verdict(value, max_bytes)
    fast = accept_example(value)
    if fast is not None:  # what the filter accepts, the model accepts, with the same values
        assert expected[0] == "ok", (value[:300], expected)
        assert as_builtins(fast) | {"schema": LABELED_LIST_SCHEMA} == expected[1] | {"schema": LABELED_LIST_SCHEMA}
    try:
        got = ("ok", as_builtins(decode_example(value, max_bytes)))
    except EventError as exc:
        got = ("error", exc.reason, exc.field)
    if expected[0] == "ok":
        assert got[0] == "ok" and got[1] | {"schema": LABELED_LIST_SCHEMA} == expected[1] | {
            "schema": LABELED_LIST_SCHEMA}, value[:300]
    else:
        assert got == expected, value[:300]


def test_simulated_examples_with_features_are_accepted_as_structs_with_the_models_values():
    for ex in simulated_examples(30, seed=7, max_candidates=8, with_features=True):
        value = encode(ex)
        fast = accept_example(value)
        assert type(fast) is LabeledListS, value[:200]
        assert as_builtins(fast) == json.loads(value)
        assert all(it.features is None and it.features_f32 is not None for it in ex.impression.items)
        assert [it.features_f32 for it in fast.impression.items] == [it.features_f32 for it in ex.impression.items]
        for mine, theirs in zip(fast.impression.items, ex.impression.items):
            assert mine.n_features == theirs.n_features == 300
            assert np.array_equal(mine.feature_row(), theirs.feature_row())
        assert type(decode_example(value)) is LabeledListS


def test_a_valid_example_is_accepted_with_or_without_its_schema_tags():
    doc = example()
    assert type(decode_example(raw(doc))) is LabeledListS
    bare = {k: v for k, v in doc.items() if k != "schema"}
    bare["impression"] = {k: v for k, v in doc["impression"].items() if k != "schema"}
    assert type(accept_example(raw(bare))) is LabeledListS  # the models' schema fields have defaults
    assert_same_example_verdict(raw(bare))


EXAMPLE_FIELDS = ["example_id", "request_id", "impression", "labels", "list_reward", "query_reward", "reformulated",
                  "join", "schema", "extra", "impression.schema", "impression.request_id", "impression.items",
                  "impression.items.0.item_id", "impression.items.1.features", "impression.items.1.features.0",
                  "impression.items.1.features.1", "impression.items.0.features", "impression.items.0.scores.click",
                  "impression.items.0.features_f32", "impression.items.1.features_f32",
                  "impression.fusion.logprob", "impression.extra", "labels.0", "labels.0.item_id",
                  "labels.1.item_id", "labels.0.position", "labels.0.click", "labels.1.play_time_ms",
                  "labels.0.reward", "labels.1.share", "labels.0.extra", "join.closed_by", "join.window_s",
                  "join.feedback_count", "join.duplicate_count", "join.closed_at_ts", "join.impression_offset",
                  "join.extra"]
example_values = st.one_of(
    values, st.just(-sys.float_info.max), st.integers(-1, 2), st.sampled_from(["window", "r1", "d2", "x1"]),
    st.lists(st.floats(), max_size=3), st.lists(st.one_of(st.booleans(), st.none(), st.text(max_size=2),
                                                          st.integers(-(2**64), 2**64)), min_size=1, max_size=3))


@settings(max_examples=800, deadline=None, database=None)
@given(st.data(), example_values, st.booleans())
def test_a_mutated_example_gets_the_models_verdict(data, value, drop):
    doc = example()
    path = data.draw(st.sampled_from(EXAMPLE_FIELDS))
    parts = path.split(".")
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if drop and isinstance(parent, dict) and parts[-1] in parent:
        parent.pop(parts[-1])
    elif isinstance(parent, list):
        parent[int(parts[-1])] = value
    else:
        parent[parts[-1]] = value
    # json.dumps writes NaN/Infinity for non-finite floats: tokens JSON does not have, which both must refuse
    assert_same_example_verdict(json.dumps(doc).encode())


def _features(tokens: bytes) -> bytes:
    """The sample example with ``items.1.features`` written as the raw JSON ``tokens``."""
    return raw(example()).replace(b'"features": [0.1, 2]', b'"features": ' + tokens)


def _f32(item: int, value, **others) -> bytes:
    """The sample example with ``items.<item>.features_f32`` set to ``value`` (and ``others`` set on that item)."""
    doc = example()
    doc["impression"]["items"][item] |= {"features_f32": value, **others}
    return raw(doc)


F32_EDGES = [_f32(0, v) for v in F32_VALUES] + [
    _f32(0, b64([np.float32(3.4028235e38), -np.float32(3.4028235e38), 1e-45, -0.0])),
    _f32(0, b64(np.zeros(4096))), _f32(0, b64(np.zeros(4097))), _f32(0, None), _f32(0, 1.5), _f32(0, [1.0]),
    _f32(0, {"a": 1}), _f32(0, True), _f32(1, b64([0.1, 2.0])), _f32(1, None), _f32(0, b64([1.0]), features=[1.0]),
    _f32(0, b64([1.0]), features=None), _f32(0, b64([np.nan]), features=[1.0]), _f32(0, "AACAPw", features=[1.0]),
    _f32(0, b64([1.0, 2.0, np.nan] + [0.0] * 300)), _f32(0, b64([1.0] * 3) + b64([1.0]))]


@pytest.mark.parametrize("value", F32_EDGES)
def test_binary_feature_edges_get_the_models_verdict(value):
    assert_same_example_verdict(value)
    impression_only = json.loads(value)["impression"]
    assert_same_verdict(raw(impression_only))


@pytest.mark.parametrize("blob,reason", [
    (f32_bytes([np.nan, 1.0]), "not_finite"), (f32_bytes([1.0, np.inf]), "not_finite"),
    (f32_bytes([-np.inf]), "not_finite"), (f32_bytes([1.0, 2.0])[:-1], "bad_value"), (b"\0" * 5, "bad_value"),
    (bytes(4 * 4097), "too_long")])
def test_non_finite_or_misshapen_binary_features_are_refused_naming_the_field(blob, reason):
    """The filter itself refuses them (no struct slips through), and the model's error names the field,
    so the dead-letter record says what and where."""
    value = _f32(0, base64.b64encode(blob).decode())
    assert accept_example(value) is None and accept(raw(json.loads(value)["impression"])) is None
    with pytest.raises(EventError) as err:
        decode_example(value)
    assert (err.value.reason, err.value.field) == (reason, "impression.items.0.features_f32"), err.value.as_dict()
    assert type(decode_example(_f32(0, b64([1.0, 2.0])))) is LabeledListS  # the valid one, for contrast


def test_both_spellings_on_one_item_are_refused_naming_features_f32():
    value = _f32(1, b64([0.1, 2.0]))  # item 1 already carries ``features``
    assert accept_example(value) is None and accept(raw(json.loads(value)["impression"])) is None
    with pytest.raises(EventError) as err:
        decode_example(value)
    assert (err.value.reason, err.value.field) == ("schema_violation", "impression.items.1.features_f32")


def test_binary_features_round_trip_through_encode_and_read_as_float32():
    value = raw(example())
    struct, model = decode_example(value), decode(value, expected=LABELED_LIST_SCHEMA)
    for event in (struct, model):
        item = event.impression.items[0]
        assert item.features is None and item.n_features == 2
        row = item.feature_row()
        assert row.dtype == np.float32 and row.tolist() == [0.5, -1.25] and not row.flags.writeable
        assert event.impression.items[1].feature_row() == [0.1, 2.0]
    assert json.loads(encode(model))["impression"]["items"][0]["features_f32"] == b64([0.5, -1.25])
    assert decode(encode(model), expected=LABELED_LIST_SCHEMA) == model


@pytest.mark.parametrize("value", [
    _features(b"[NaN, 1]"), _features(b"[Infinity]"), _features(b"[-Infinity]"), _features(b"[1e999]"),
    _features(b"[-1e400]"), _features(b"[1.7976931348623157e308, -1.7976931348623157e308]"), _features(b"[1e-400]"),
    _features(b"[-0.0, -0]"), _features(b"[true]"), _features(b'["1.5"]'), _features(b"[null]"), _features(b"[[1]]"),
    _features(b"[01]"), _features(b"[1.]"), _features(b"[.5]"), _features(b"[+1]"), _features(b"[1,]"),
    _features(b"[]"), _features(b"null"), _features(b"{}"), _features(b'"0.1,2"'),
    _features(b"[" + b",".join([b"0.5"] * 4096) + b"]"), _features(b"[" + b",".join([b"0.5"] * 4097) + b"]"),
    _features(b"[123456789012345678901234567890, 0.30000000000000004, 5e-324]"),
    _features(b"[" + str(2**64).encode() + b"]"),
    raw(example(request_id="r2")), raw(example(labels=list(reversed(example()["labels"])))),
    raw(example(labels=example()["labels"][:1])), raw(example(labels=example()["labels"] * 2)),
    raw(example(impression=impression(items=[{"item_id": "d1", "position": 1}, {"item_id": "d1", "position": 2}]),
                labels=[{"item_id": "d1", "position": 1}, {"item_id": "d1", "position": 2}])),
    raw(example(reformulated=1)), raw(example(reformulated="true")), raw(example(list_reward=True)),
    raw(example(list_reward="1.5")), raw(example(query_reward=None)), raw(example(schema="streamrank.impression.v1")),
    raw(example(impression=impression(schema="streamrank.feedback.v1"))), raw(example(unknown=1)),
    raw(example(join={"closed_by": "window", "window_s": 60.0, "feedback_count": 2.0, "closed_at_ts": 1.0})),
    raw(example(join={"closed_by": "later", "window_s": 60.0, "feedback_count": 2, "closed_at_ts": 1.0})),
    raw(example(join={"closed_by": "idle", "window_s": 60.0, "feedback_count": -1, "closed_at_ts": 1.0})),
    raw(example(join={"closed_by": "idle", "window_s": 1e999, "feedback_count": 1, "closed_at_ts": 1.0})),
    raw(example(join={"closed_by": "idle", "window_s": 1.0, "feedback_count": 1, "closed_at_ts": 1.0, "x": 1})),
    raw(example(labels=[{"item_id": "d1", "position": 1, "click": 2}, {"item_id": "d2", "position": 2}])),
    raw(example(labels=[{"item_id": "d1", "position": 1, "click": True}, {"item_id": "d2", "position": 2}])),
    raw(example(labels=[{"item_id": "d1", "position": 1, "click": 1.0}, {"item_id": "d2", "position": 2}])),
    raw(example(labels=[{"item_id": "d1", "position": 0}, {"item_id": "d2", "position": 2}])),
    raw(example(labels=[{"item_id": "d1", "position": 1, "play_time_ms": -1.0}, {"item_id": "d2", "position": 2}])),
    raw(example(labels=[])), raw(example()).replace(b'"list_reward": 1.5', b'"list_reward": 1.5, "list_reward": "x"'),
    raw(example()).replace(b'"list_reward": 1.5', b'"list_reward": "x", "list_reward": 1.5'),
    raw(example()).replace(b'"example_id": "x1"', b'"example_id": "x\\ud800"'), raw(example())[:-1], b"[]", b"",
    raw(example()).replace(b'"example_id": "x1"', b'"example_id": "x\xff"'), b" " + raw(example()),
    raw(example()) + b"\n", raw(example(example_id="x" * 257)), raw(example(example_id="")),
])
def test_edge_examples_get_the_models_verdict(value):
    assert_same_example_verdict(value)


def test_feature_values_that_json_cannot_hold_finite_are_refused_by_the_filter_itself():
    """``Features`` has no explicit bounds: msgspec's JSON decoder must refuse these on its own."""
    for tokens in (b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1e999]", b"[-1e309]", b"[true]", b'["1"]', b"[null]"):
        assert accept_example(_features(tokens)) is None, tokens
        with pytest.raises(EventError) as err:
            decode_example(_features(tokens))
        assert err.value.field.startswith("impression.items.1.features"), (tokens, err.value.field)


def test_an_oversized_record_is_refused_as_too_large_before_any_decode():
    value = raw(example())
    assert type(decode_example(value, max_bytes=len(value))) is LabeledListS
    with pytest.raises(EventError) as err:
        decode_example(value, max_bytes=len(value) - 1)
    assert err.value.reason == "too_large"


def test_replaced_copies_a_struct_or_a_model_with_the_changes():
    value = raw(example())
    struct, model = decode_example(value), decode(value, expected=LABELED_LIST_SCHEMA)
    for event in (struct, model):
        item = replaced(event.impression.items[1], features=None)
        assert type(item) is type(event.impression.items[1]) and item.features is None
        assert event.impression.items[1].features == [0.1, 2.0]  # the original is untouched
        assert replaced(event, example_id="x2").example_id == "x2" and event.example_id == "x1"


@pytest.mark.parametrize("broker_ts", [0.0, 0.5])
def test_a_broker_timestamp_at_or_near_the_epoch_still_bounds_the_event_time(broker_ts):
    """Only a negative broker timestamp means "none on the record"; 0 and 0.5 s are times like any other."""
    with pytest.raises(EventError) as err:
        check_event_time(100.0, broker_ts, 10.0)
    gap = 100.0 - broker_ts
    assert err.value.detail == (f"ts 100.0 is {gap:.3f} s after the record's broker timestamp {broker_ts!r} "
                                f"(max skew 10.0 s)")
    check_event_time(broker_ts + 10.0, broker_ts, 10.0)  # at the bound: kept
