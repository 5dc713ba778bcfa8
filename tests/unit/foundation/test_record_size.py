"""The record size limit every producer checks, and which kafka-python errors mean "build a new producer"."""

from __future__ import annotations

import pytest
from kafka import errors

from common.record_size import (
    RECORD_OVERHEAD_BYTES,
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
