"""The event contract in detail (contracts/events.py): every refusal names its field, reason and detail.

Checks the boundaries the models declare (empty and oversized lists, labels aligned with items,
1-based positions, non-negative timestamps and values, log-probabilities <= 0, propensities in (0, 1]),
the error message format of :class:`EventError`, the byte cap, both decode paths (the one-parse fast
path for canonical events and the full parse), encode -> decode round trips, and the schema files writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import contracts.events as events
from contracts.events import (
    FEEDBACK_SCHEMA,
    IMPRESSION_SCHEMA,
    LABELED_LIST_SCHEMA,
    SCHEMA_DIR,
    EventError,
    Feedback,
    Impression,
    LabeledList,
    decode,
    encode,
    write_schemas,
)

ALL_SCHEMAS = "['streamrank.feedback.v1', 'streamrank.impression.v1', 'streamrank.labeled_list.v1']"


def item(item_id: str, position: int, **extra) -> dict:
    return {"item_id": item_id, "position": position, **extra}


def impression(**overrides) -> dict:
    doc = {"schema": IMPRESSION_SCHEMA, "event_id": "e1", "request_id": "r1", "ts": 10.0, "user_id": "u1",
           "items": [item("a", 1, scores={"click": 0.5}), item("b", 2)]}
    doc.update(overrides)
    return doc


def feedback(**overrides) -> dict:
    doc = {"schema": FEEDBACK_SCHEMA, "event_id": "f1", "request_id": "r1", "item_id": "a", "ts": 11.0,
           "kind": "click", "value": 1.0}
    doc.update(overrides)
    return doc


def labeled(**overrides) -> dict:
    doc = {"schema": LABELED_LIST_SCHEMA, "example_id": "x1", "request_id": "r1", "impression": impression(),
           "labels": [{"item_id": "a", "position": 1, "click": 1, "reward": 1.0}, {"item_id": "b", "position": 2}],
           "list_reward": 1.0, "query_reward": 0.5,
           "join": {"closed_by": "window", "window_s": 30.0, "feedback_count": 1, "closed_at_ts": 40.0}}
    doc.update(overrides)
    return doc


def refusal(doc: dict | bytes | str, **kwargs) -> EventError:
    raw = json.dumps(doc) if isinstance(doc, dict) else doc
    with pytest.raises(EventError) as info:
        decode(raw, **kwargs)
    return info.value


# --- EventError -------------------------------------------------------------------------------


def test_event_error_message_names_reason_field_and_detail():
    err = EventError("out_of_range", "items.3.position", "Input should be greater than or equal to 1")
    assert str(err) == "out_of_range at items.3.position: Input should be greater than or equal to 1"
    assert (err.reason, err.field, err.detail) == ("out_of_range", "items.3.position",
                                                   "Input should be greater than or equal to 1")
    assert err.as_dict() == {"reason": "out_of_range", "field": "items.3.position",
                             "detail": "Input should be greater than or equal to 1"}
    assert isinstance(err, ValueError)


def test_event_error_without_a_field_says_it_concerns_the_whole_event():
    err = EventError("bad_json", "", "an event is a JSON object")
    assert str(err) == "bad_json at <event>: an event is a JSON object"
    assert err.field == ""


# --- byte cap ---------------------------------------------------------------------------------


def test_a_payload_over_the_byte_cap_is_refused_with_its_size():
    err = refusal(b" " * 100, max_bytes=10)
    assert err.as_dict() == {"reason": "too_large", "field": "", "detail": "100 bytes > 10"}
    assert str(err) == "too_large at <event>: 100 bytes > 10"


def test_the_byte_cap_counts_utf8_bytes_of_a_str_payload():
    err = refusal("é" * 6, max_bytes=10)  # 6 characters, 12 bytes
    assert (err.reason, err.detail) == ("too_large", "12 bytes > 10")


def test_the_default_byte_cap_is_one_megabyte_inclusive():
    body = encode(decode(json.dumps(impression())))
    exactly = body + b" " * (1_000_000 - len(body))
    assert decode(exactly) == decode(body)
    err = refusal(exactly + b" ")
    assert (err.reason, err.detail) == ("too_large", "1000001 bytes > 1000000")
    assert decode(body + b" " * 5, max_bytes=len(body) + 5) == decode(body)


# --- malformed documents ------------------------------------------------------------------------


def test_unparsable_bytes_are_bad_json_with_the_parser_message():
    raw = b'{"schema": 1, oops}'
    with pytest.raises(ValueError) as parser:
        json.loads(raw)
    err = refusal(raw)
    assert err.as_dict() == {"reason": "bad_json", "field": "", "detail": str(parser.value)}


def test_invalid_utf8_is_bad_json():
    err = refusal(b'{"schema": "\xff"}')
    assert (err.reason, err.field) == ("bad_json", "")
    assert "utf-8" in err.detail


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"streamrank.feedback.v1"', b"42", b"null"])
def test_a_json_value_that_is_not_an_object_is_refused(raw):
    err = refusal(raw)
    assert err.as_dict() == {"reason": "bad_json", "field": "", "detail": "an event is a JSON object"}


def test_unparsable_bytes_are_bad_json_when_the_schema_is_expected_too():
    err = refusal(b"{not json", expected=IMPRESSION_SCHEMA)
    assert (err.reason, err.field) == ("bad_json", "")
    assert err.detail.startswith("Invalid JSON")


@pytest.mark.parametrize("schema", ["nope", 7, None])
def test_an_unknown_schema_is_refused_listing_the_known_ones(schema):
    err = refusal({"schema": schema, "event_id": "e"})
    assert err.as_dict() == {"reason": "unknown_schema", "field": "schema",
                             "detail": f"{schema!r} is not one of {ALL_SCHEMAS}"}


def test_an_event_without_a_schema_field_is_refused():
    doc = impression()
    del doc["schema"]
    err = refusal(doc)
    assert (err.reason, err.field, err.detail) == ("unknown_schema", "schema", f"None is not one of {ALL_SCHEMAS}")


def test_a_nested_schema_key_does_not_stand_in_for_a_missing_event_schema():
    doc = impression(context={"schema": IMPRESSION_SCHEMA})
    del doc["schema"]
    doc = {"context": doc.pop("context"), **doc}  # the nested key comes first in the bytes
    err = refusal(doc)
    assert (err.reason, err.field) == ("unknown_schema", "schema")


def test_the_expected_schema_refuses_another_event_type_at_the_schema_field():
    err = refusal(feedback(), expected=IMPRESSION_SCHEMA)
    assert (err.reason, err.field) == ("bad_value", "schema")
    assert IMPRESSION_SCHEMA in err.detail


# --- field errors: reason, dotted path, detail ---------------------------------------------------


def test_a_field_error_carries_the_validators_message_as_detail():
    err = refusal(impression(items=[item("a", 0)]))
    assert (err.reason, err.field) == ("out_of_range", "items.0.position")
    assert "greater than or equal to 1" in err.detail
    assert str(err) == f"out_of_range at items.0.position: {err.detail}"


@pytest.mark.parametrize("doc,reason,field", [
    (feedback(kind="teleport"), "unknown_kind", "kind"),
    ({k: v for k, v in feedback().items() if k != "kind"}, "missing_field", "kind"),
    ({k: v for k, v in feedback().items() if k != "ts"}, "missing_field", "ts"),
    (feedback(kind=5), "unknown_kind", "kind"),
    (labeled(join={"closed_by": "timeout", "window_s": 30.0, "feedback_count": 1, "closed_at_ts": 40.0}),
     "bad_value", "join.closed_by"),
    (feedback(surprise=True), "unknown_field", "surprise"),
    (impression(items=[item("a", 1, propensity=0.0)]), "out_of_range", "items.0.propensity"),
    (impression(items=[item("a", 1, propensity=1.5)]), "out_of_range", "items.0.propensity"),
    (impression(list_logprob=1e-9), "out_of_range", "list_logprob"),
    (impression(ts=-0.001), "out_of_range", "ts"),
    (feedback(ts=-1), "out_of_range", "ts"),
    (feedback(kind="play_time_ms", value=-0.5), "out_of_range", "value"),
    (impression(items=[item("a", 1, duration_ms=-1)]), "out_of_range", "items.0.duration_ms"),
    (labeled(labels=[{"item_id": "a", "position": 1, "click": 2}, {"item_id": "b", "position": 2}]),
     "out_of_range", "labels.0.click"),
    (labeled(join={"closed_by": "idle", "window_s": 30.0, "feedback_count": -1, "closed_at_ts": 40.0}),
     "out_of_range", "join.feedback_count"),
    (impression(user_id=""), "schema_violation", "user_id"),
    (impression(user_id="u" * 257), "too_long", "user_id"),
    (impression(query="q" * 1025), "too_long", "query"),
    (impression(source="s" * 65), "too_long", "source"),
    (impression(items=[item("a", 1, features=[0.0] * 4097)]), "too_long", "items.0.features"),
    (impression(items=[]), "schema_violation", "items"),
    (labeled(labels=[]), "schema_violation", "labels"),
    # strict types (issue 17): a string is not a number, even "NaN"
    (impression(fusion={"weights": {"click": 1.0}, "logprob": "NaN"}), "schema_violation", "fusion.logprob"),
    (impression(ts="yesterday"), "schema_violation", "ts"),
])
def test_each_contract_breach_names_its_reason_and_field(doc, reason, field):
    err = refusal(doc)
    assert (err.reason, err.field) == (reason, field)
    assert err.detail


def test_a_list_over_the_contract_cap_is_oversized_for_items_and_labels():
    many = [item(f"i{k}", k + 1) for k in range(501)]
    err = refusal(impression(items=many))
    assert (err.reason, err.field) == ("oversized_list", "items")
    labels = [{"item_id": f"i{k}", "position": k + 1} for k in range(501)]
    err = refusal(labeled(labels=labels))
    assert (err.reason, err.field) == ("oversized_list", "labels")
    full = decode(json.dumps(impression(items=many[:500])))
    assert len(full.items) == 500


def test_field_paths_are_reported_verbatim_even_for_keys_containing_schema():
    err = refusal(impression(items=[item("a", 1, scores={"schema_v2": "high"})]))
    assert (err.reason, err.field) == ("schema_violation", "items.0.scores.schema_v2")


def test_duplicate_items_and_misaligned_labels_are_refused():
    err = refusal(impression(items=[item("a", 1), item("a", 2)]))
    assert (err.reason, err.field) == ("schema_violation", "items")
    assert "duplicate item_id 'a'" in err.detail
    swapped = labeled(labels=[{"item_id": "b", "position": 2}, {"item_id": "a", "position": 1}])
    err = refusal(swapped)
    assert err.reason == "schema_violation" and "same order" in err.detail
    short = labeled(labels=[{"item_id": "a", "position": 1}])
    assert "same order" in refusal(short).detail
    other = labeled(request_id="r2")
    assert "request_id differs" in refusal(other).detail


def test_item_level_feedback_needs_an_item_but_query_level_feedback_does_not():
    err = refusal(feedback(item_id=None, kind="like"))
    assert err.reason == "schema_violation" and "item_id is required for feedback kind 'like'" in err.detail
    for kind in ("reformulate", "session_end"):
        event = decode(json.dumps({k: v for k, v in feedback(kind=kind).items() if k != "item_id"}))
        assert isinstance(event, Feedback) and event.item_id is None and event.kind == kind


@pytest.mark.parametrize("doc", [
    impression(ts=0.0),
    impression(list_logprob=0.0),
    impression(list_logprob=-1e300),
    impression(items=[item("a", 1, propensity=1.0, duration_ms=0.0, features=[0.0] * 4096)]),
    impression(items=[item("a", 500)], query="q" * 1024, source="s" * 64, user_id="u" * 256),
    feedback(ts=0.0, value=0.0),
    feedback(kind="play_time_ms", value=123456.0),
    labeled(labels=[{"item_id": "a", "position": 1, "click": 1, "long_view": 1, "like": 1, "follow": 1,
                     "share": 1, "play_time_ms": 0.0}, {"item_id": "b", "position": 2}]),
])
def test_values_on_the_boundaries_are_accepted(doc):
    event = decode(json.dumps(doc))
    assert decode(encode(event)) == event


# --- both decode paths ----------------------------------------------------------------------------


def test_the_configured_list_cap_applies_on_the_full_parse_path_too():
    doc = impression(items=[item(f"i{k}", k + 1) for k in range(11)])
    err = refusal(doc, expected=IMPRESSION_SCHEMA, max_list_size=10)
    assert err.as_dict() == {"reason": "oversized_list", "field": "items", "detail": "11 items > 10"}
    event = decode(json.dumps(doc), expected=IMPRESSION_SCHEMA, max_list_size=11)
    assert event == Impression.model_validate(doc)
    late_schema = {k: v for k, v in doc.items() if k != "schema"} | {"schema": IMPRESSION_SCHEMA}
    err = refusal(late_schema, max_list_size=10)  # the schema key is past the fast path's window
    assert err.detail == "11 items > 10"
    assert len(decode(json.dumps(late_schema), max_list_size=11).items) == 11


def test_the_list_cap_concerns_impressions_only():
    event = decode(json.dumps(feedback()), max_list_size=0)
    assert isinstance(event, Feedback)
    assert decode(json.dumps(labeled()), max_list_size=1) == LabeledList.model_validate(labeled())


def test_canonical_events_are_validated_in_one_parse(monkeypatch: pytest.MonkeyPatch):
    """The fast path: a canonical event's leading ``schema`` key picks the model; no second JSON parse."""
    canonical = [encode(decode(json.dumps(doc))) for doc in (impression(), feedback(), labeled())]
    expected = [decode(raw) for raw in canonical]

    def no_second_parse(*args, **kwargs):
        raise AssertionError("json.loads called for a canonical event")

    monkeypatch.setattr(events.json, "loads", no_second_parse)
    assert [decode(raw) for raw in canonical] == expected
    assert [decode(raw.decode()) for raw in canonical] == expected


def test_a_document_whose_schema_key_comes_late_decodes_like_a_canonical_one():
    for doc in (impression(query="q" * 300), feedback(event_id="f" * 250), labeled(example_id="x" * 250)):
        late = {k: v for k, v in doc.items() if k != "schema"} | {"schema": doc["schema"]}
        assert decode(json.dumps(late)) == decode(json.dumps(doc))


def test_a_failed_fast_path_guess_falls_back_to_the_real_schema():
    doc = impression(context={"schema": FEEDBACK_SCHEMA})
    raw = json.dumps({"context": doc.pop("context"), **doc})  # a nested schema key comes first
    event = decode(raw)
    assert isinstance(event, Impression) and event.context == {"schema": FEEDBACK_SCHEMA}


@pytest.mark.parametrize("field, value", [("ts", "11.0"), ("value", "1"), ("event_id", 7)])
def test_the_fast_path_is_as_strict_as_the_full_parse(field, value):
    """A string number (or a number for a string) is refused whether or not the leading schema key
    picks the model at once: the fast path must not coerce what the full parse refuses."""
    doc = feedback(**{field: value})
    err = refusal(json.dumps(doc))  # schema first: the fast path is tried
    assert err.field == field
    late = {k: v for k, v in doc.items() if k != "schema"} | {"schema": doc["schema"]}
    assert refusal(json.dumps(late)).field == field  # the full parse refuses it the same way


# --- round trips ------------------------------------------------------------------------------


def test_full_events_round_trip_and_encode_drops_nulls_and_uses_the_schema_alias():
    full = impression(query="shoes", fusion={"weights": {"click": 0.7, "like": 0.3}, "logprob": -1.25},
                      list_logprob=-3.5, model_versions={"ldro": "7"}, context={"hour": 13.0, "device": "ios"},
                      items=[item("a", 1, scores={"click": 0.5}, calibrated={"click": 0.4}, propensity=0.25,
                                  duration_ms=60000.0, features=[0.5, -1.0]), item("b", 2)], source="replay")
    for doc, model in ((full, Impression), (feedback(kind="play_time_ms", value=5400.0), Feedback),
                       (labeled(reformulated=True), LabeledList)):
        event = decode(json.dumps(doc))
        assert type(event) is model and event == model.model_validate(doc)
        raw = encode(event)
        assert isinstance(raw, bytes) and raw.startswith(b'{"schema":"')
        assert decode(raw) == event and encode(decode(raw)) == raw
        parsed = json.loads(raw)
        assert parsed["schema"] == doc["schema"] and "schema_" not in parsed
        assert "null" not in raw.decode() and "calibrated" not in json.dumps(parsed.get("items", [{}, {}])[1:])


def test_encode_writes_utf8():
    event = decode(json.dumps(impression(query="café ☕")))
    raw = encode(event)
    assert "café ☕".encode("utf-8") in raw
    assert decode(raw).query == "café ☕"


# --- schema files -----------------------------------------------------------------------------


def test_write_schemas_writes_the_committed_files_byte_for_byte(tmp_path: Path):
    target = tmp_path / "nested" / "schemas"
    paths = write_schemas(target)
    assert sorted(p.name for p in paths) == ["feedback.schema.json", "impression.schema.json",
                                             "labeled_list.schema.json"]
    assert all(p.parent == target for p in paths)
    for path in paths:
        assert path.read_text() == (SCHEMA_DIR / path.name).read_text(), path.name
        doc = json.loads(path.read_text())
        assert path.read_text() == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert write_schemas(target) == paths  # idempotent: an existing directory is fine


@pytest.mark.parametrize("features, context, expected", [
    ([None, None], {"item_features": "items:vec"}, "items:vec"),  # rows to fill, by reference
    ([[0.5], None], {"item_features": "items:vec"}, "items:vec"),  # one item without its own row is enough
    ([[0.5], [0.25]], {"item_features": "items:vec"}, None),  # every item carries its row: nothing to fill
    ([None, None], {}, None),  # no reference: nothing to fill from
    ([None, None], {"item_features": 3}, None),  # a reference that is not a name
], ids=["all-missing", "one-missing", "none-missing", "no-reference", "not-a-name"])
def test_features_to_fill_names_the_reference_only_when_some_item_lacks_its_row(features, context, expected):
    from contracts.events import features_to_fill  # noqa: PLC0415

    items = [item(f"i{k}", k + 1, **({} if f is None else {"features": f})) for k, f in enumerate(features)]
    example = decode(json.dumps(labeled(impression=impression(items=items, context=context),
                                        labels=[{"item_id": "i0", "position": 1}, {"item_id": "i1", "position": 2}])))
    assert features_to_fill(example) == expected
