"""``streams.dead_letter``: the ``dl.*`` headers a dead letter carries (names, order, UTF-8 values, the
500-character detail cut), its ``topic/partition/offset`` source, and parsing a consumed record back
(required and optional headers, foreign headers ignored, undecodable bytes replaced, key and value
bytes kept unchanged).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams.dead_letter import HEADER_PREFIX, MAX_DETAIL, DeadLetter

LETTER = DeadLetter(reason="key_mismatch", field="items.3.position", detail="record key must equal request_id",
                    topic="streamrank.feedback", partition=3, offset=1042, key=b"r1", value=b'{"schema": 1}')


def record(headers: list[tuple[str, bytes]] | None, key: bytes | None = b"k", value: bytes | None = b"v"):
    return SimpleNamespace(key=key, value=value, headers=headers)


def test_the_headers_are_the_six_dl_fields_in_order_as_utf8_text():
    assert LETTER.headers() == [
        ("dl.reason", b"key_mismatch"),
        ("dl.field", b"items.3.position"),
        ("dl.detail", b"record key must equal request_id"),
        ("dl.topic", b"streamrank.feedback"),
        ("dl.partition", b"3"),
        ("dl.offset", b"1042"),
    ]
    assert all(name.startswith(HEADER_PREFIX) for name, _ in LETTER.headers())


def test_the_detail_is_cut_at_500_characters_not_bytes():
    assert MAX_DETAIL == 500
    letter = DeadLetter("bad_json", "", "\u00e9" * 499 + "xy", "t", 0, 0, None, None)
    detail = dict(letter.headers())["dl.detail"]
    assert detail == ("\u00e9" * 499 + "x").encode("utf-8") and len(detail) == 2 * 499 + 1
    exact = DeadLetter("bad_json", "", "d" * 500, "t", 0, 0, None, None)
    assert dict(exact.headers())["dl.detail"] == b"d" * 500


def test_unencodable_field_and_detail_text_is_replaced_not_raised():
    letter = DeadLetter("bad_json", "a.\ud800", "lone \udfff surrogate", "t", 1, 2, None, None)
    headers = dict(letter.headers())
    assert headers["dl.field"] == b"a.?"
    assert headers["dl.detail"] == b"lone ? surrogate"


def test_non_ascii_text_is_written_as_utf8():
    letter = DeadLetter("r\u00e9", "\u00fc", "\u8acb", "t\u00f6pic", 0, 7, None, None)
    headers = dict(letter.headers())
    assert headers["dl.reason"] == "r\u00e9".encode("utf-8")
    assert headers["dl.field"] == "\u00fc".encode("utf-8")
    assert headers["dl.detail"] == "\u8acb".encode("utf-8")
    assert headers["dl.topic"] == "t\u00f6pic".encode("utf-8")


def test_the_source_is_topic_slash_partition_slash_offset():
    assert LETTER.source == "streamrank.feedback/3/1042"
    assert DeadLetter("x", "", "", "a.b", 0, 0, None, None).source == "a.b/0/0"


def test_a_letter_round_trips_through_its_headers_with_key_and_value_bytes_unchanged():
    back = DeadLetter.from_record(record(LETTER.headers(), key=LETTER.key, value=LETTER.value))
    assert back == LETTER
    assert back.source == LETTER.source
    binary = DeadLetter("bad_json", "", "x", "t", 11, 12, b"\x00\xff", b"\xff\xfe{")
    assert DeadLetter.from_record(record(binary.headers(), key=b"\x00\xff", value=b"\xff\xfe{")) == binary
    assert DeadLetter.from_record(record(binary.headers(), key=None, value=None)).key is None


def test_a_long_detail_comes_back_cut_at_500_characters():
    letter = DeadLetter("bad_json", "", "x" * 900, "t.feedback", 3, 42, b"k", b"\xff")
    back = DeadLetter.from_record(record(letter.headers(), key=b"k", value=b"\xff"))
    assert back == DeadLetter("bad_json", "", "x" * 500, "t.feedback", 3, 42, b"k", b"\xff")


def test_field_and_detail_headers_are_optional_and_default_to_empty():
    headers = [("dl.reason", b"conflicting_impression"), ("dl.topic", b"t"), ("dl.partition", b"2"),
               ("dl.offset", b"9")]
    assert DeadLetter.from_record(record(headers)) == DeadLetter("conflicting_impression", "", "", "t", 2, 9, b"k",
                                                                 b"v")


def test_foreign_headers_are_ignored_and_header_values_may_be_any_bytes_like():
    headers = [("traceparent", b"00-abc"), ("dl.reason", bytearray(b"bad_json")), ("dl.field", memoryview(b"f")),
               ("dl.topic", b"t"), ("dl.partition", b"0"), ("dl.offset", b"5"), ("reason", b"other")]
    assert DeadLetter.from_record(record(headers)) == DeadLetter("bad_json", "f", "", "t", 0, 5, b"k", b"v")


def test_invalid_utf8_in_a_header_is_replaced_not_raised():
    headers = [("dl.reason", b"bad\xff"), ("dl.detail", b"\xfe!"), ("dl.topic", b"t"), ("dl.partition", b"1"),
               ("dl.offset", b"1")]
    back = DeadLetter.from_record(record(headers))
    assert (back.reason, back.detail) == ("bad\ufffd", "\ufffd!")


@pytest.mark.parametrize("headers", [None, []])
def test_a_record_without_headers_is_not_a_dead_letter(headers):
    with pytest.raises(ValueError) as caught:
        DeadLetter.from_record(record(headers))
    assert str(caught.value) == ("not a dead-letter record: missing headers "
                                 "['dl.offset', 'dl.partition', 'dl.reason', 'dl.topic']")


@pytest.mark.parametrize("dropped", ["dl.reason", "dl.topic", "dl.partition", "dl.offset"])
def test_each_required_header_is_named_when_missing(dropped):
    headers = [(k, v) for k, v in LETTER.headers() if k != dropped]
    with pytest.raises(ValueError) as caught:
        DeadLetter.from_record(record(headers))
    assert str(caught.value) == f"not a dead-letter record: missing headers ['{dropped}']"


def test_a_header_name_without_the_dl_prefix_does_not_count():
    headers = [(k.removeprefix(HEADER_PREFIX), v) for k, v in LETTER.headers()]
    with pytest.raises(ValueError, match=r"missing headers \['dl.offset', 'dl.partition', 'dl.reason', 'dl.topic'\]"):
        DeadLetter.from_record(record(headers))


def test_a_conflicting_impression_letter_names_the_held_impression_and_keeps_the_record():
    from streams.dead_letter import conflict_letter  # noqa: PLC0415

    record = SimpleNamespace(offset=41, key=b"req-1", value=b'{"schema": "x"}')
    letter = conflict_letter("req-1:imp", "streamrank.impressions", 3, record)
    assert (letter.reason, letter.field) == ("conflicting_impression", "event_id")
    assert letter.detail == "request already has impression 'req-1:imp'"
    assert (letter.topic, letter.partition, letter.offset) == ("streamrank.impressions", 3, 41)
    assert (letter.key, letter.value) == (b"req-1", b'{"schema": "x"}')
