"""Dead-letter records: the original bytes of a rejected event plus where it came from and why.

A dead-letter record keeps the rejected message exactly as it was (key and value bytes
unchanged, so it can be fixed and re-produced) and carries its provenance in Kafka headers,
the convention Kafka Connect uses for its error topics:

=====================  ==============================================================
header                 meaning
=====================  ==============================================================
``dl.reason``          short machine-readable code (``bad_json``, ``not_finite``,
                       ``unknown_kind``, ``oversized_list``, ``wrong_topic``,
                       ``key_mismatch``, ``conflicting_impression``, ...)
``dl.field``           dotted path of the offending field ('' for the whole event)
``dl.detail``          human-readable detail (truncated to 500 characters)
``dl.topic``           source topic
``dl.partition``       source partition
``dl.offset``          source offset
=====================  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HEADER_PREFIX = "dl."
MAX_DETAIL = 500


def letter_headers(letter: "DeadLetter") -> list[tuple[str, bytes]]:
    """Kafka headers carrying the provenance (values are UTF-8 bytes)."""
    return [
        ("dl.reason", letter.reason.encode()),
        ("dl.field", letter.field.encode("utf-8", "replace")),
        ("dl.detail", letter.detail[:MAX_DETAIL].encode("utf-8", "replace")),
        ("dl.topic", letter.topic.encode()),
        ("dl.partition", str(letter.partition).encode()),
        ("dl.offset", str(letter.offset).encode()),
    ]


def letter_source(topic: str, partition: int, offset: int) -> str:
    """Where the rejected message was consumed: ``topic/partition/offset``."""
    return f"{topic}/{partition}/{offset}"


def letter_fields(record: Any) -> dict[str, Any]:
    """The :class:`DeadLetter` fields of a consumed dead-letter record (kafka-python ``ConsumerRecord`` or alike)."""
    headers = {k: bytes(v).decode("utf-8", "replace") for k, v in (record.headers or [])
               if k.startswith(HEADER_PREFIX)}
    missing = {"dl.reason", "dl.topic", "dl.partition", "dl.offset"} - set(headers)
    if missing:
        raise ValueError(f"not a dead-letter record: missing headers {sorted(missing)}")
    return {"reason": headers["dl.reason"], "field": headers.get("dl.field", ""),
            "detail": headers.get("dl.detail", ""), "topic": headers["dl.topic"],
            "partition": int(headers["dl.partition"]), "offset": int(headers["dl.offset"]),
            "key": record.key, "value": record.value}


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message and the reason it was rejected.

    The logic lives in the module-level functions above (:func:`letter_headers`,
    :func:`letter_source`, :func:`letter_fields`) so mutation testing reaches it: mutmut 3.3.1
    does not mutate a decorated class or function.
    """

    reason: str
    field: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers carrying the provenance (values are UTF-8 bytes)."""
        return letter_headers(self)

    @property
    def source(self) -> str:
        return letter_source(self.topic, self.partition, self.offset)

    @classmethod
    def from_record(cls, record: Any) -> "DeadLetter":
        """Parse a consumed dead-letter record (kafka-python ``ConsumerRecord`` or alike)."""
        return cls(**letter_fields(record))


def conflict_letter(held_event_id: str, topic: str, partition: int, record: Any) -> DeadLetter:
    """The letter of a second impression (another ``event_id``) for a request that already has
    ``held_event_id``: the first impression stays, this one is refused."""
    return DeadLetter("conflicting_impression", "event_id", f"request already has impression {held_event_id!r}",
                      topic, partition, record.offset, record.key, record.value)
