"""The record size limit every producer checks, and which kafka-python errors mean "build a new producer"."""

from __future__ import annotations

import pytest
from kafka import errors

from common.record_size import (
    RECORD_OVERHEAD_BYTES,
    BrokenProducerRule,
    RecordTooLarge,
    check_record_size,
    needs_new_producer,
    producer_max_request_size,
    record_bytes,
)


def test_key_and_value_count_against_the_limit():
    assert record_bytes(b"key", b"value") == 8 and record_bytes(None, None) == 0
    check_record_size(b"k", b"x" * 9, limit=10)
    with pytest.raises(RecordTooLarge, match="record of 11 bytes for impressions is over the limit of 10 bytes") as err:
        check_record_size(b"k", b"x" * 10, limit=10, topic="impressions")
    assert (err.value.size, err.value.limit) == (11, 10) and isinstance(err.value, ValueError)
    assert producer_max_request_size(1000) == 1000 + RECORD_OVERHEAD_BYTES


@pytest.mark.parametrize("exc,fatal", [
    (errors.MessageSizeTooLargeError(), True),
    (errors.OutOfOrderSequenceNumberError(), True),
    (errors.UnknownProducerIdError(), True),
    (errors.ProducerFencedError(), True),
    (errors.KafkaTimeoutError(), False),
    (errors.NotLeaderForPartitionError(), False),
    (ConnectionError("refused"), False),
])
def test_only_errors_that_break_the_producer_ask_for_a_new_one(exc, fatal):
    assert needs_new_producer(exc) is fatal


def test_only_the_largest_record_a_wedged_producer_failed_as_too_large_is_refused():
    rule = BrokenProducerRule(max_record_bytes=1000)
    assert rule.limit() == 1001 and not rule.refuses(1000) and rule.refuses(1001)
    # a wedged producer fails the victims with the same error as the record the broker refused
    assert rule.note(errors.MessageSizeTooLargeError(), 40) is True
    assert rule.note(errors.MessageSizeTooLargeError(), 700) is True
    assert rule.note(errors.MessageSizeTooLargeError(), 90) is True
    assert rule.refused_size == 700 and rule.limit() == 700
    assert not rule.refuses(40) and not rule.refuses(699) and rule.refuses(700) and rule.refuses(900)


def test_other_fatal_errors_break_the_producer_without_moving_the_limit_and_others_do_neither():
    rule = BrokenProducerRule(max_record_bytes=1000)
    assert rule.note(errors.OutOfOrderSequenceNumberError(), 800) is True
    assert rule.note(errors.KafkaTimeoutError(), 900) is False
    assert rule.refused_size is None and rule.limit() == 1001
    # a refused size over the configured limit does not raise the limit
    rule.note(errors.MessageSizeTooLargeError(), 5000)
    assert rule.limit() == 1001
    with pytest.raises(ValueError, match="max_record_bytes must be >= 1"):
        BrokenProducerRule(0)
