"""How big a Kafka record may be, and which producer errors leave a kafka-python producer unusable.

Every producer of the project (serving's impression emitter, replay, the stream workers) checks a
record against :func:`record_limit` *before* sending it, because a record the broker refuses costs
more than itself: with kafka-python 3.0.12 and ``acks="all"`` (an idempotent producer), one
``MessageSizeTooLargeError`` from the broker leaves the producer failing every later send, 7-byte
records included (issue 17; measured against the embedded noida broker, whose limit is about 1 MB
like Apache Kafka's default ``message.max.bytes`` of 1,048,588). A too-big record is dead-lettered
or dropped and counted by the caller; a producer that saw one of :data:`FATAL_PRODUCER_ERRORS`
anyway (a broker with a smaller limit than configured) is closed and built anew
(:func:`needs_new_producer`), and :class:`BrokenProducerRule` says which of the records that failed
with it to send again on the new one.

The limit is ``Settings.max_event_bytes`` (``STREAMRANK_MAX_EVENT_BYTES``, 1,000,000 by default):
the consumers refuse larger events anyway (:func:`contracts.events.decode`), and it sits under
the brokers' default with room for the record batch header (:data:`RECORD_OVERHEAD_BYTES`).
"""

from __future__ import annotations

import threading

from common.errors import StreamrankError

#: What a record batch header, record header, key length and offsets add to key + value on the
#: wire (v2 batch: 61 bytes of batch header + up to ~20 of record header for one record); the
#: producer's ``max_request_size`` is set to the limit plus this.
RECORD_OVERHEAD_BYTES = 128

#: kafka-python errors after which a producer keeps failing (idempotent sequence state broken, or
#: fenced): close it and build a new one. Compared by class name so this module imports no client.
FATAL_PRODUCER_ERRORS = frozenset({
    "MessageSizeTooLargeError", "OutOfOrderSequenceNumberError", "UnknownProducerIdError",
    "DuplicateSequenceNumberError", "InvalidProducerEpochError", "InvalidProducerIdMappingError",
    "ProducerFencedError", "IllegalStateError",
})

#: the error the broker answers a record over its size limit with (and a wedged producer every record)
TOO_LARGE_ERROR = "MessageSizeTooLargeError"


class RecordTooLarge(StreamrankError, ValueError):
    """A record over the size limit: never sent (the caller dead-letters or drops and counts it)."""

    def __init__(self, size: int, limit: int, topic: str = "") -> None:
        where = f" for {topic}" if topic else ""
        super().__init__(f"record of {size} bytes{where} is over the limit of {limit} bytes (max_event_bytes)")
        self.size = size
        self.limit = limit


def record_bytes(key: bytes | None, value: bytes | None) -> int:
    """Key plus value, the part of a record the limit is about."""
    return len(key or b"") + len(value or b"")


def check_record_size(key: bytes | None, value: bytes | None, limit: int, topic: str = "") -> None:
    """Raise :class:`RecordTooLarge` when ``key`` + ``value`` exceed ``limit`` bytes."""
    size = record_bytes(key, value)
    if size > limit:
        raise RecordTooLarge(size, limit, topic)


def producer_max_request_size(limit: int) -> int:
    """The kafka-python ``max_request_size`` that lets every record under ``limit`` through."""
    return limit + RECORD_OVERHEAD_BYTES


def needs_new_producer(exc: BaseException) -> bool:
    """Whether a send that failed with ``exc`` leaves the producer unusable (rebuild it)."""
    return any(cls.__name__ in FATAL_PRODUCER_ERRORS for cls in type(exc).__mro__)


class BrokenProducerRule:
    """Which failed records to send again after a fatal client error, and which the broker refused.

    What: every failed send is shown to :meth:`note`, which says whether its error broke the
    producer (close it and build a new one) and keeps the largest record that failed with
    ``MessageSizeTooLargeError``; :meth:`refuses` then says whether a record is at or over
    :meth:`limit`: the configured ``max_record_bytes`` + 1, or that refused size when smaller.

    Why: a kafka-python producer the broker wedged (issue 17) fails *every* later record with
    ``MessageSizeTooLargeError``, small ones included, so the error alone does not say which record
    the broker refused for itself. Only the largest that failed so can be; smaller ones are victims
    of the broken producer and are sent again on the new one, and that size or more is not sent
    again (the broker's limit is below it). Serving's impression emitter
    (:mod:`serving.emitter`: non-blocking, decides per failure as it arrives) and replay's sender
    (:mod:`streams.replay`: at least once, decides for a batch of failures) share this rule; what to
    do with a refused record (count it as failed, lost or too large) and when to rebuild stays theirs.
    Thread-safe: failures arrive on the producer's I/O thread.
    """

    def __init__(self, max_record_bytes: int) -> None:
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
        self.max_record_bytes = max_record_bytes
        #: the largest record that failed with MessageSizeTooLargeError (a broken producer fails small
        #: records with it too, never larger ones than the broker refused); ``None`` before any
        self.refused_size: int | None = None
        self._lock = threading.Lock()

    def note(self, exc: BaseException, size: int) -> bool:
        """Take a send of ``size`` bytes that failed with ``exc``; ``True`` when ``exc`` broke the producer."""
        if not needs_new_producer(exc):
            return False
        if type(exc).__name__ == TOO_LARGE_ERROR:
            with self._lock:
                self.refused_size = max(self.refused_size or 0, size)
        return True

    def limit(self) -> int:
        """Records of this many bytes or more are not sent: over the configured limit, or refused by the broker."""
        refused = self.refused_size
        return self.max_record_bytes + 1 if refused is None else min(self.max_record_bytes + 1, refused)

    def refuses(self, size: int) -> bool:
        """Whether a record of ``size`` bytes is not to be sent (again): at or over :meth:`limit`."""
        return size >= self.limit()
