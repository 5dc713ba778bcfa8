"""Replay event logs into Kafka: each event to its topic, keyed by request_id, in log order.

Inter-event gaps are the event-time gaps divided by ``speed`` (``speed=None``: as fast as the
broker takes them). Each line is validated through the event contract first; a malformed
line is counted and reported with its line number and reason and never stops the replay.
The original line bytes are produced unchanged, so replaying a log twice gives the same
topic contents (apart from Kafka timestamps). The producer is idempotent with ordered
retries, so per-partition order is the log's order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from common.config import Settings
from contracts.events import MODELS, TOPIC_SCHEMAS, EventError, decode

SCHEMA_TOPIC = {schema: topic for topic, schema in TOPIC_SCHEMAS.items()}


@dataclass
class LineError:
    path: str
    line: int
    reason: str
    field: str
    detail: str


@dataclass
class ReplaySummary:
    events: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    errors: list[LineError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"events": self.events, "by_topic": self.by_topic, "errors": len(self.errors),
                "seconds": round(self.seconds, 3), "events_per_s": round(self.rate, 1),
                "error_lines": [e.__dict__ for e in self.errors[:20]]}


def make_producer(bootstrap: str, **overrides):
    """A kafka-python producer tuned for ordered, batched, idempotent replay."""
    from kafka import KafkaProducer  # noqa: PLC0415

    config = dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                  batch_size=512 * 1024, max_in_flight_requests_per_connection=5, compression_type=None,
                  max_request_size=8 * 1024 * 1024)
    config.update(overrides)
    return KafkaProducer(**config)


def read_lines(paths: Iterable[str | Path]) -> Iterator[tuple[str, int, bytes]]:
    for path in paths:
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if line:
                    yield str(path), n, line


def count_lines(paths: Iterable[str | Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def replay(paths: list[str | Path], settings: Settings, speed: float | None = None, limit: int | None = None,
           producer=None, progress: bool = True) -> ReplaySummary:
    """Produce the events of ``paths`` to their topics; returns counts, rate and bad lines."""
    if speed is not None and speed <= 0:
        raise ValueError("speed must be > 0 (or None for max speed)")
    own_producer = producer is None
    producer = producer or make_producer(settings.kafka_bootstrap)
    topics = {schema: settings.topics.name(topic) for schema, topic in SCHEMA_TOPIC.items()}
    summary = ReplaySummary()
    total = count_lines(paths) if progress else None
    if limit is not None and total is not None:
        total = min(total, limit)
    bar = tqdm(total=total, desc="replay", unit="ev", disable=not progress or None)
    start = time.monotonic()
    first_ts: float | None = None
    try:
        for path, line_no, raw in read_lines(paths):
            if limit is not None and summary.events + len(summary.errors) >= limit:
                break
            try:
                event = decode(raw, max_list_size=settings.max_list_size)
            except EventError as exc:
                summary.errors.append(LineError(path, line_no, exc.reason, exc.field, exc.detail))
                bar.update(1)
                continue
            schema = event.schema_
            if speed is not None:
                first_ts = event.ts if first_ts is None else first_ts
                delay = (event.ts - first_ts) / speed - (time.monotonic() - start)
                if delay > 0:
                    time.sleep(delay)
            producer.send(topics[schema], key=event.request_id.encode(), value=raw)
            summary.events += 1
            summary.by_topic[SCHEMA_TOPIC[schema]] = summary.by_topic.get(SCHEMA_TOPIC[schema], 0) + 1
            bar.update(1)
        producer.flush()
    finally:
        bar.close()
        summary.seconds = time.monotonic() - start
        if own_producer:
            producer.close()
    return summary


assert set(SCHEMA_TOPIC) == set(MODELS)
