"""Read topics back from the beginning and summarise them (used by the demo and by tests).

Reads without a consumer group (explicit partition assignment), so inspecting a topic never
moves any worker's committed offsets. Stops when ``expected`` events were read or when no
new record arrived for ``idle_s`` seconds (end offsets are not trusted: some embedded
brokers report them wrong after multi-record batches, see docs/brokers.md).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from common.config import Settings
from contracts.events import EventError, decode


@dataclass
class TopicSummary:
    records: int = 0
    valid: int = 0
    invalid: Counter = field(default_factory=Counter)
    keys: set[bytes] = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"records": self.records, "valid": self.valid, "invalid": dict(self.invalid),
                "distinct_keys": len(self.keys)}


def read_topic(bootstrap: str, topic: str, on_record: Callable, expected: int | None = None,
               idle_s: float = 5.0, timeout_s: float = 120.0) -> int:
    """Call ``on_record(record)`` for every record of ``topic`` from offset 0; returns the count."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=200, max_poll_records=2000,
                             fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024)
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        if not partitions:
            return 0
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        count, last_new = 0, time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            got = sum(len(records) for records in batch.values())
            for records in batch.values():
                for record in records:
                    on_record(record)
            count += got
            now = time.monotonic()
            if got:
                last_new = now
            if expected is not None and count >= expected:
                break
            if now - last_new > idle_s:
                break
        return count
    finally:
        consumer.close()


def summarize_topics(settings: Settings, logical_topics: list[str], expected: dict[str, int] | None = None,
                     idle_s: float = 5.0) -> dict[str, TopicSummary]:
    """Count and validate every record of each topic."""
    out: dict[str, TopicSummary] = {}
    for logical in logical_topics:
        summary = TopicSummary()

        def on_record(record, summary=summary) -> None:
            summary.records += 1
            summary.keys.add(record.key)
            try:
                decode(record.value)
                summary.valid += 1
            except EventError as exc:
                summary.invalid[exc.reason] += 1

        read_topic(settings.kafka_bootstrap, settings.topics.name(logical), on_record,
                   expected=(expected or {}).get(logical), idle_s=idle_s)
        out[logical] = summary
    return out
