"""One consumed record of ``impressions`` or ``feedback``: is it a usable event, and where its key lives.

:func:`validate_record` never raises on bad input: a hostile payload becomes a :class:`Rejected`
with the reason and field the dead-letter headers carry (:mod:`streams.dead_letter`), and the
agent goes on with the next record. :func:`partition_for_key` is the producer's default
partitioner, so the join can tell which partition (and which worker) owns a request id.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kafka.partitioner.default import murmur2

from common.config import Settings
from contracts.events import EventError, Feedback, Impression
from contracts.fast_decode import FeedbackS, ImpressionS, decode_record


@lru_cache(maxsize=200_000)
def partition_for_key(key: str, partitions: int) -> int:
    """The default Kafka partitioner (murmur2 of the UTF-8 key), as kafka-python and aiokafka use it."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


@dataclass
class Rejected:
    """Why one consumed record is not a usable event."""

    reason: str
    field: str
    detail: str


_IMPRESSIONS = (Impression, ImpressionS)
_FEEDBACK = (Feedback, FeedbackS)


def validate_record(value: Any, key: Any, logical_topic: str, settings: Settings,
                    broker_ts_s: float | None = None) -> Impression | Feedback | ImpressionS | FeedbackS | Rejected:
    """Decode and check one record of ``impressions`` or ``feedback`` (never raises on bad input).

    One decode for every consumer (:func:`contracts.fast_decode.decode_record`): the fast
    structs when they accept the record, the pydantic models' verdict otherwise; ``broker_ts_s``
    (the record's timestamp, seconds) bounds the event time (``future_ts``).
    """
    if not isinstance(value, (bytes, bytearray)) or not value:
        return Rejected("empty_value", "", "record has no value")
    try:
        event = decode_record(bytes(value), broker_ts_s, max_bytes=settings.max_event_bytes,
                              max_list_size=settings.max_list_size, max_skew_s=settings.max_event_skew_s)
    except EventError as exc:
        return Rejected(exc.reason, exc.field, exc.detail)
    except Exception as exc:  # noqa: BLE001 - a hostile payload must never stop the agent
        return Rejected("undecodable", "", f"{type(exc).__name__}: {exc}"[:500])
    wanted = _IMPRESSIONS if logical_topic == "impressions" else _FEEDBACK
    if not isinstance(event, wanted):
        return Rejected("wrong_topic", "schema", f"{event.schema_} on the {logical_topic} topic")
    if key is None or bytes(key) != event.request_id.encode("utf-8"):
        return Rejected("key_mismatch", "request_id",
                        "record key must equal request_id (impressions and feedback meet by key partitioning)")
    return event
