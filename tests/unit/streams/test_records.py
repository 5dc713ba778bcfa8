"""``streams.records``: the exact reason, field and detail of every kind of rejected record, what a
good record keeps, the configured size limits, and the producer's default partitioner.

Reasons are the dead-letter codes of :mod:`streams.dead_letter`; a reason coming from the event
contract must be carried unchanged (reason, field and detail of the :class:`EventError` that
:func:`contracts.events.decode` raises for the same bytes).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from common.config import load_settings
from contracts.events import EventError, Feedback, Impression, ShownItem, decode
from contracts.fast_decode import FeedbackS, ImpressionS
from streams.records import Rejected, partition_for_key, validate_record


def same_event(got, model) -> bool:
    """A fast-decoded struct and the contract's model carry the same values."""
    import msgspec  # noqa: PLC0415

    return msgspec.to_builtins(got) == json.loads(model.model_dump_json(by_alias=True)) | {"schema": model.schema_}

SETTINGS = load_settings({"STREAMRANK_HOME": "/nonexistent-streamrank-home"})
FEEDBACK = {"schema": "streamrank.feedback.v1", "event_id": "e1", "request_id": "r1", "item_id": "a", "ts": 1.0,
            "kind": "click"}
IMPRESSION = {"schema": "streamrank.impression.v1", "event_id": "i1", "request_id": "r1", "ts": 1.0, "user_id": "u",
              "items": [{"item_id": "a", "position": 1}]}
KEY_MISMATCH = Rejected("key_mismatch", "request_id",
                        "record key must equal request_id (impressions and feedback meet by key partitioning)")


def raw(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def contract_error(value: bytes, **limits: int) -> EventError:
    """What the event contract itself says about these bytes."""
    with pytest.raises(EventError) as caught:
        decode(value, **limits)
    return caught.value


# --- empty values ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, b"", bytearray(), "a string, not bytes", '{"schema": "x"}', 7, [b"{}"]])
def test_a_record_without_a_bytes_value_is_rejected_as_empty(value):
    assert validate_record(value, b"r1", "feedback", SETTINGS) == Rejected("empty_value", "", "record has no value")


# --- contract violations carry the contract's reason, field and detail ----------------------

@pytest.mark.parametrize("value, reason, field", [
    (b"{nope", "bad_json", ""),
    (b"[1,2]", "bad_json", ""),
    (raw({**FEEDBACK, "schema": "streamrank.nope.v9"}), "unknown_schema", "schema"),
    (raw({**FEEDBACK, "kind": "teleport"}), "unknown_kind", "kind"),
    (raw({**FEEDBACK, "kind": "play_time_ms", "value": -3}), "out_of_range", "value"),
    (raw(FEEDBACK).replace(b'"ts": 1.0', b'"ts": NaN'), "not_finite", "ts"),
    (raw({**FEEDBACK, "colour": "red"}), "unknown_field", "colour"),
    (raw({k: v for k, v in FEEDBACK.items() if k != "event_id"}), "missing_field", "event_id"),
])
def test_a_contract_violation_keeps_the_contracts_reason_field_and_detail(value, reason, field):
    expected = contract_error(value)
    assert (expected.reason, expected.field) == (reason, field)
    assert validate_record(value, b"r1", "feedback", SETTINGS) == Rejected(reason, field, expected.detail)


def test_a_bytearray_value_is_decoded_like_bytes():
    value = bytearray(raw({**FEEDBACK, "kind": "teleport"}))
    assert validate_record(value, b"r1", "feedback", SETTINGS) == Rejected(
        "unknown_kind", "kind", contract_error(bytes(value)).detail)
    assert same_event(validate_record(bytearray(raw(FEEDBACK)), b"r1", "feedback", SETTINGS), decode(raw(FEEDBACK)))


def test_the_configured_event_size_limit_applies_not_the_contracts_default():
    value = raw(FEEDBACK)
    small = replace(SETTINGS, max_event_bytes=len(value) - 1)
    assert validate_record(value, b"r1", "feedback", small) == Rejected(
        "too_large", "", f"{len(value)} bytes > {len(value) - 1}")
    # exactly at the limit is still an event
    assert isinstance(validate_record(value, b"r1", "feedback", replace(SETTINGS, max_event_bytes=len(value))),
                      (Feedback, FeedbackS))


def test_the_configured_list_size_limit_applies_not_the_contracts_default():
    doc = {**IMPRESSION, "items": [{"item_id": f"x{i}", "position": i + 1} for i in range(3)]}
    assert validate_record(raw(doc), b"r1", "impressions", replace(SETTINGS, max_list_size=2)) == Rejected(
        "oversized_list", "items", "3 items > 2")
    assert isinstance(validate_record(raw(doc), b"r1", "impressions", replace(SETTINGS, max_list_size=3)),
                      (Impression, ImpressionS))


def test_the_default_settings_cap_lists_at_their_max_list_size():
    limit = SETTINGS.max_list_size
    doc = {**IMPRESSION, "items": [{"item_id": f"x{i}", "position": i + 1} for i in range(limit + 1)]}
    assert validate_record(raw(doc), b"r1", "impressions", SETTINGS) == Rejected(
        "oversized_list", "items", f"{limit + 1} items > {limit}")


# --- anything else the decoder throws does not escape ----------------------------------------

def test_a_payload_that_crashes_the_decoder_is_undecodable_with_the_exception_named():
    deep = b"[" * 200_000  # the JSON parser gives up with RecursionError, which is not an EventError
    result = validate_record(deep, b"r1", "feedback", SETTINGS)
    assert isinstance(result, Rejected)
    assert (result.reason, result.field) == ("undecodable", "")
    assert result.detail.startswith("RecursionError: ") and len(result.detail) > len("RecursionError: ")


class _Hostile(bytes):
    """A bytes value whose conversion fails with a very long message."""

    def __bytes__(self) -> bytes:
        raise RuntimeError("x" * 1000)


def test_the_undecodable_detail_is_type_colon_message_cut_at_500_characters():
    result = validate_record(_Hostile(b"{}"), b"r1", "feedback", SETTINGS)
    assert result == Rejected("undecodable", "", ("RuntimeError: " + "x" * 1000)[:500])
    assert len(result.detail) == 500


# --- topic and key -----------------------------------------------------------------------------

def test_an_impression_on_the_feedback_topic_is_the_wrong_topic():
    assert validate_record(raw(IMPRESSION), b"r1", "feedback", SETTINGS) == Rejected(
        "wrong_topic", "schema", "streamrank.impression.v1 on the feedback topic")


def test_feedback_on_the_impressions_topic_is_the_wrong_topic():
    assert validate_record(raw(FEEDBACK), b"r1", "impressions", SETTINGS) == Rejected(
        "wrong_topic", "schema", "streamrank.feedback.v1 on the impressions topic")


@pytest.mark.parametrize("topic", ["impressions", "feedback"])
def test_a_labeled_list_is_the_wrong_topic_on_either_input_topic(topic):
    example = {"schema": "streamrank.labeled_list.v1", "example_id": "x", "request_id": "r1", "impression": IMPRESSION,
               "labels": [{"item_id": "a", "position": 1}], "list_reward": 0.0, "query_reward": 0.0,
               "join": {"closed_by": "window", "window_s": 60.0, "feedback_count": 0, "closed_at_ts": 2.0}}
    assert validate_record(raw(example), b"r1", topic, SETTINGS) == Rejected(
        "wrong_topic", "schema", f"streamrank.labeled_list.v1 on the {topic} topic")


@pytest.mark.parametrize("key", [None, b"", b"r2", b"r1 ", b"R1", b"r"])
def test_a_key_that_is_not_the_request_id_is_a_key_mismatch(key):
    assert validate_record(raw(FEEDBACK), key, "feedback", SETTINGS) == KEY_MISMATCH
    assert validate_record(raw(IMPRESSION), key, "impressions", SETTINGS) == KEY_MISMATCH


def test_the_key_is_compared_as_the_utf8_bytes_of_the_request_id():
    rid = "r\u00e9-\u8acb"
    doc = {**FEEDBACK, "request_id": rid}
    assert same_event(validate_record(raw(doc), rid.encode("utf-8"), "feedback", SETTINGS), decode(raw(doc)))
    assert same_event(validate_record(raw(doc), bytearray(rid.encode("utf-8")), "feedback", SETTINGS), decode(raw(doc)))
    assert validate_record(raw(doc), rid.encode("latin-1", "replace"), "feedback", SETTINGS) == KEY_MISMATCH


# --- good records --------------------------------------------------------------------------------

def test_a_good_feedback_record_is_the_event_with_every_field_kept():
    doc = {**FEEDBACK, "kind": "play_time_ms", "value": 1234.5, "ts": 17.25}
    event = validate_record(raw(doc), b"r1", "feedback", SETTINGS)
    assert same_event(event, Feedback(schema="streamrank.feedback.v1", event_id="e1", request_id="r1", item_id="a", ts=17.25,
                             kind="play_time_ms", value=1234.5))


def test_a_good_impression_record_is_the_event_with_every_field_kept():
    doc = {**IMPRESSION, "query": "cats", "items": [{"item_id": "a", "position": 1, "duration_ms": 9000.0},
                                                    {"item_id": "b", "position": 2, "scores": {"click": 0.25}}]}
    event = validate_record(raw(doc), b"r1", "impressions", SETTINGS)
    assert same_event(event, Impression(schema="streamrank.impression.v1", event_id="i1", request_id="r1", ts=1.0, user_id="u",
                               query="cats", items=[ShownItem(item_id="a", position=1, duration_ms=9000.0),
                                                    ShownItem(item_id="b", position=2, scores={"click": 0.25})]))


# --- partitioner -------------------------------------------------------------------------------

def _murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), written out from the Java source."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


@pytest.mark.parametrize("partitions", [1, 3, 4, 7, 12])
def test_the_partition_is_the_positive_murmur2_of_the_utf8_key_modulo_the_partitions(partitions):
    keys = ["r1", "", "a", "ab", "abc", "abcd", "letor-3-17", "\u00e9t\u00e9", "\u8acb\u6c42-42"] + [
        f"kill-5-{i}" for i in range(60)]
    sign_bits = {_murmur2(k.encode("utf-8")) >> 31 for k in keys}
    assert sign_bits == {0, 1}  # both halves of the hash range are exercised (the 0x7FFFFFFF mask matters)
    for key in keys:
        expected = (_murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
        got = partition_for_key(key, partitions)
        assert type(got) is int and got == expected, key
        assert 0 <= got < partitions


def test_an_event_time_past_the_configured_skew_from_the_broker_timestamp_is_future_ts():
    value = raw({**FEEDBACK, "ts": 1000.0})
    assert isinstance(validate_record(value, b"r1", "feedback", SETTINGS, broker_ts_s=1000.0 - 60.0), FeedbackS)
    got = validate_record(value, b"r1", "feedback", SETTINGS, broker_ts_s=1000.0 - 60.5)
    assert (got.reason, got.field) == ("future_ts", "ts")
    assert isinstance(validate_record(value, b"r1", "feedback", replace(SETTINGS, max_event_skew_s=61.0),
                                      broker_ts_s=1000.0 - 60.5), FeedbackS)
