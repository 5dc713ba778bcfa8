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


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message and the reason it was rejected."""

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
        return [
            ("dl.reason", self.reason.encode()),
            ("dl.field", self.field.encode("utf-8", "replace")),
            ("dl.detail", self.detail[:MAX_DETAIL].encode("utf-8", "replace")),
            ("dl.topic", self.topic.encode()),
            ("dl.partition", str(self.partition).encode()),
            ("dl.offset", str(self.offset).encode()),
        ]

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def from_record(cls, record: Any) -> "DeadLetter":
        """Parse a consumed dead-letter record (kafka-python ``ConsumerRecord`` or alike)."""
        headers = {k: bytes(v).decode("utf-8", "replace") for k, v in (record.headers or [])
                   if k.startswith(HEADER_PREFIX)}
        missing = {"dl.reason", "dl.topic", "dl.partition", "dl.offset"} - set(headers)
        if missing:
            raise ValueError(f"not a dead-letter record: missing headers {sorted(missing)}")
        return cls(reason=headers["dl.reason"], field=headers.get("dl.field", ""),
                   detail=headers.get("dl.detail", ""), topic=headers["dl.topic"],
                   partition=int(headers["dl.partition"]), offset=int(headers["dl.offset"]),
                   key=record.key, value=record.value)
