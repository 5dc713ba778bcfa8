"""Replay event logs into Kafka: each event to its topic, keyed by request_id, in log order.

Inter-event gaps are the event-time gaps divided by ``speed`` (``speed=None``: as fast as the
broker takes them). Each line is validated through the event contract first; a malformed
line is counted and reported with its line number and reason and never stops the replay.
The original line bytes are produced unchanged, so replaying a log twice gives the same
topic contents (apart from Kafka timestamps). The producer is idempotent with ordered
retries, so per-partition order is the log's order.

Size (issue 17): a line whose record would be over ``Settings.max_event_bytes`` is reported as a
``too_large`` line and never sent (:mod:`common.record_size`). A broker with a smaller limit than
that refuses it anyway, and with kafka-python 3.0.12 an idempotent producer then fails every later
send: replay sees the failure in a send's callback, closes the producer, builds a new one and sends
again the records that failed only with it (after the records sent meanwhile, so those few may
land out of log order, and one the broker took just before the producer broke may land twice: the
join holds early feedback for its impression and drops a repeated event id). A record the broker
refused for itself (the largest that failed as too large, or a larger one) is counted in ``lost``.
Which records are sent again is :class:`common.record_size.BrokenProducerRule`, the rule serving's
impression emitter follows too; replay applies it to each batch of failures before its next send.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from common.config import Settings
from common.record_size import BrokenProducerRule, RecordTooLarge, check_record_size, record_bytes
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
    #: producers closed and built anew after a fatal client error; records sent again; records lost
    producer_rebuilds: int = 0
    resent: int = 0
    lost: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"events": self.events, "by_topic": self.by_topic, "errors": len(self.errors),
                "seconds": round(self.seconds, 3), "events_per_s": round(self.rate, 1),
                "producer_rebuilds": self.producer_rebuilds, "resent": self.resent, "lost": self.lost,
                "error_lines": [e.__dict__ for e in self.errors[:20]]}


def make_producer(bootstrap: str, **overrides):
    """A kafka-python producer tuned for ordered, batched, idempotent replay."""
    from kafka import KafkaProducer  # noqa: PLC0415

    config = dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                  batch_size=512 * 1024, max_in_flight_requests_per_connection=5, compression_type=None,
                  max_request_size=8 * 1024 * 1024)
    config.update(overrides)
    return KafkaProducer(**config)


class ResilientSender:
    """Sends replay's records and heals a producer that a fatal client error broke (see the module).

    Failures arrive in send callbacks (the producer's I/O thread); :meth:`heal` runs on the caller's
    thread, before each send and after the final flush.
    """

    def __init__(self, producer, rebuild, summary: ReplaySummary, max_record_bytes: int) -> None:
        self.producer = producer
        self.rebuild = rebuild  # None: a producer handed in by the caller, not ours to replace
        self.summary = summary
        #: (topic, key, value, error) of failed sends; appended on the I/O thread, drained here
        self.failed: deque[tuple[str, bytes, bytes, BaseException]] = deque()
        #: which failed records go again on a rebuilt producer (shared with serving.emitter)
        self.broken_rule = BrokenProducerRule(max_record_bytes)

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        if self.failed:
            self.heal()
        future = self.producer.send(topic, key=key, value=value)
        future.add_errback(lambda exc: self.failed.append((topic, key, value, exc)))

    def heal(self) -> None:
        """Rebuild the producer if a failure broke it; send the records that failed only with it."""
        failed = [self.failed.popleft() for _ in range(len(self.failed))]
        # every failure of the batch is noted first, so the largest refused size is known before any
        # record of it is judged (a wedged producer fails the smaller victims with the same error)
        broken = any([self.broken_rule.note(exc, record_bytes(k, v)) for _, k, v, exc in failed])
        if broken and self.rebuild is not None:
            self.producer.close(timeout=5)
            self.producer = self.rebuild()
            self.summary.producer_rebuilds += 1
        for topic, key, value, _exc in failed:
            if self.broken_rule.refuses(record_bytes(key, value)) or not broken or self.rebuild is None:
                self.summary.lost += 1  # refused for itself (or no producer of ours to rebuild)
                continue
            self.summary.resent += 1
            self.producer.send(topic, key=key, value=value).add_errback(
                lambda e, t=topic, k=key, v=value: self.failed.append((t, k, v, e)))

    def finish(self) -> None:
        """Flush until nothing failed is left to send again (each record is sent again at most once
        per rebuild; a record that keeps failing ends in ``lost``)."""
        self.producer.flush()
        for _ in range(3):
            if not self.failed:
                return
            self.heal()
            self.producer.flush()
        self.summary.lost += len(self.failed)
        self.failed.clear()


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
    summary = ReplaySummary()
    sender = ResilientSender(producer or make_producer(settings.kafka_bootstrap),
                             (lambda: make_producer(settings.kafka_bootstrap)) if own_producer else None, summary,
                             settings.max_event_bytes)
    topics = {schema: settings.topics.name(topic) for schema, topic in SCHEMA_TOPIC.items()}
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
                event = decode(raw, max_list_size=settings.max_list_size, max_bytes=settings.max_event_bytes)
                key = event.request_id.encode()
                check_record_size(key, raw, settings.max_event_bytes)
            except EventError as exc:
                summary.errors.append(LineError(path, line_no, exc.reason, exc.field, exc.detail))
                bar.update(1)
                continue
            except RecordTooLarge as exc:
                summary.errors.append(LineError(path, line_no, "too_large", "", str(exc)))
                bar.update(1)
                continue
            schema = event.schema_
            if speed is not None:
                first_ts = event.ts if first_ts is None else first_ts
                delay = (event.ts - first_ts) / speed - (time.monotonic() - start)
                if delay > 0:
                    time.sleep(delay)
            sender.send(topics[schema], key, raw)
            summary.events += 1
            summary.by_topic[SCHEMA_TOPIC[schema]] = summary.by_topic.get(SCHEMA_TOPIC[schema], 0) + 1
            bar.update(1)
        sender.finish()
    finally:
        bar.close()
        summary.seconds = time.monotonic() - start
        if own_producer:
            sender.producer.close()
    return summary


assert set(SCHEMA_TOPIC) == set(MODELS)
