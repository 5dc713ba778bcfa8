"""The event contract: one validation path, errors that name the field, schemas in sync."""

from __future__ import annotations

import json

import jsonschema
import pytest

from contracts.events import (
    FEEDBACK_SCHEMA,
    IMPRESSION_SCHEMA,
    SCHEMA_DIR,
    EventError,
    Feedback,
    Impression,
    ShownItem,
    decode,
    encode,
    json_schemas,
)


def impression(**overrides) -> dict:
    doc = {"schema": IMPRESSION_SCHEMA, "event_id": "e1", "request_id": "r1", "ts": 1.5, "user_id": "u1",
           "query": "q1", "items": [{"item_id": "a", "position": 1, "scores": {"click": 0.2}},
                                    {"item_id": "b", "position": 2, "scores": {"click": 0.1}}]}
    doc.update(overrides)
    return doc


def feedback(**overrides) -> dict:
    doc = {"schema": FEEDBACK_SCHEMA, "event_id": "f1", "request_id": "r1", "item_id": "a", "ts": 2.0,
           "kind": "click", "value": 1}
    doc.update(overrides)
    return doc


def test_roundtrip_is_canonical():
    event = decode(json.dumps(impression()))
    assert isinstance(event, Impression)
    assert decode(encode(event)) == event
    assert encode(decode(encode(event))) == encode(event)


BAD = [
    (b"{not json", "bad_json", ""),
    (b"[1,2]", "bad_json", ""),
    (b"\xff\xfe", "bad_json", ""),
    (json.dumps({"schema": "nope"}).encode(), "unknown_schema", "schema"),
    (json.dumps(feedback(kind="teleport")).encode(), "unknown_kind", "kind"),
    (json.dumps(feedback(kind="play_time_ms", value=-5)).encode(), "out_of_range", "value"),
    (json.dumps(feedback(item_id=None)).encode(), "schema_violation", ""),
    (json.dumps(impression(items=[])).encode(), "schema_violation", "items"),
    (json.dumps(impression(ts="yesterday")).encode(), "schema_violation", "ts"),
    (json.dumps(impression(extra=1)).encode(), "unknown_field", "extra"),
    (json.dumps(impression(user_id=None)).encode(), "schema_violation", "user_id"),
    (json.dumps(impression()).replace('"click": 0.2', '"click": NaN').encode(), "not_finite", "items.0.scores.click"),
    (json.dumps(impression()).replace('"click": 0.1', '"click": Infinity').encode(), "not_finite",
     "items.1.scores.click"),
    (json.dumps(impression(items=[{"item_id": "a", "position": 0}])).encode(), "out_of_range", "items.0.position"),
    (json.dumps(impression(items=[{"item_id": "a", "position": 1}, {"item_id": "a", "position": 2}])).encode(),
     "schema_violation", "items"),
    (json.dumps(impression(items=[{"item_id": f"i{k}", "position": k + 1} for k in range(501)])).encode(),
     "oversized_list", "items"),
]


@pytest.mark.parametrize("raw,reason,field", BAD, ids=[f"{r}-{f or 'event'}-{i}" for i, (_, r, f) in enumerate(BAD)])
def test_invalid_events_name_reason_and_field(raw, reason, field):
    with pytest.raises(EventError) as info:
        decode(raw)
    assert info.value.reason == reason
    assert info.value.field == field


def test_configured_list_cap_is_enforced():
    raw = json.dumps(impression(items=[{"item_id": f"i{k}", "position": k + 1} for k in range(11)]))
    with pytest.raises(EventError) as info:
        decode(raw, max_list_size=10)
    assert (info.value.reason, info.value.field) == ("oversized_list", "items")
    assert len(decode(raw, max_list_size=11).items) == 11


def test_too_large_payload_is_refused_before_parsing():
    with pytest.raises(EventError) as info:
        decode(b" " * 100, max_bytes=10)
    assert info.value.reason == "too_large"


def test_expected_schema_rejects_other_event_types():
    with pytest.raises(EventError):
        decode(json.dumps(feedback()), expected=IMPRESSION_SCHEMA)


def test_query_level_feedback_needs_no_item():
    event = decode(json.dumps(feedback(kind="reformulate", item_id=None)))
    assert isinstance(event, Feedback) and event.item_id is None


def test_committed_schema_files_match_the_models():
    for stem, doc in json_schemas().items():
        committed = json.loads((SCHEMA_DIR / f"{stem}.schema.json").read_text())
        assert committed == json.loads(json.dumps(doc)), f"regenerate: python -m contracts.events --write-schemas ({stem})"


@pytest.mark.parametrize("doc,ok", [(impression(), True), (feedback(), True), (feedback(kind="zap"), False),
                                    (impression(items=[]), False), (feedback(value=-1), False)])
def test_json_schema_files_validate_like_decode(doc, ok):
    """Non-Python producers use the JSON Schema files: they must agree with decode()."""
    stem = "impression" if doc["schema"] == IMPRESSION_SCHEMA else "feedback"
    schema = json.loads((SCHEMA_DIR / f"{stem}.schema.json").read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert (not errors) == ok
    if ok:
        decode(json.dumps(doc))
    else:
        with pytest.raises(EventError):
            decode(json.dumps(doc))


def test_models_are_immutable():
    item = ShownItem(item_id="a", position=1)
    with pytest.raises(Exception):
        item.position = 2  # type: ignore[misc]


def test_oversized_string_is_reported_as_too_long():
    with pytest.raises(EventError) as info:
        decode(json.dumps(impression(user_id="u" * 300)))
    assert (info.value.reason, info.value.field) == ("too_long", "user_id")
