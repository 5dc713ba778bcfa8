"""Follow every partition of one topic on a background thread, without a consumer group.

Serving reads two topics this way: ``model-updates`` (wake-ups for the snapshot watcher) and
``examples`` (the promotion gate's window of recent logged rounds). Neither may move anyone's
group offsets, both start from the beginning (end offsets are not trusted on every embedded
broker, see INFRA.md), and both must survive a broker that goes away (reconnect after
``reconnect_s``; the caller's other paths keep working meanwhile).

Why the short poll and the pause after an empty one: kafka-python's ``poll(timeout_ms=T)``
loops fetch requests until ``T`` passes. A broker that honours ``fetch.max.wait.ms`` holds each
empty fetch, so that loop is cheap; the embedded noida broker answers an empty fetch at once,
and the loop spins (``tests/integration/serving/test_topic_tail.py``: 2,757 fetch requests in
2 idle seconds), taking CPU and the GIL from the reranker's request thread (the single-client
latency in BENCHMARKS.md, "Serving", 20:11 -> 20:17 rows). So each poll is
short (``poll_ms``) and an empty one is followed by ``idle_s`` of sleep: a caught-up tail
costs a few fetches per second (10 in those 2 seconds), and a record arrives at most ~``idle_s`` later than it could.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

#: ``handle(records)`` gets each non-empty batch (kafka-python ``ConsumerRecord`` objects).
RecordHandler = Callable[[Iterable[Any]], None]


class TopicTail:
    """A daemon thread that hands every record of ``topic`` (all partitions, from the start) to ``handle``."""

    def __init__(self, bootstrap: str | None, topic: str, handle: RecordHandler, name: str,
                 poll_ms: int = 0, idle_s: float = 0.2, reconnect_s: float = 1.0, max_records: int = 500) -> None:
        if poll_ms < 0 or idle_s < 0:
            raise ValueError("poll_ms and idle_s must be >= 0")
        self.bootstrap = bootstrap
        self.topic = topic
        self.handle = handle
        self.poll_ms = int(poll_ms)
        self.idle_s = float(idle_s)
        self.reconnect_s = float(reconnect_s)
        self.max_records = int(max_records)
        self.polls = 0
        self.empty_polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "TopicTail":
        if self.bootstrap:
            self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _connect(self):
        from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", request_timeout_ms=10_000, fetch_max_wait_ms=200)
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            consumer.close()
            return None
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._connect()
                    if consumer is None:  # topic not created yet
                        self._stop.wait(self.reconnect_s)
                        continue
                batch = consumer.poll(timeout_ms=self.poll_ms, max_records=self.max_records)
                self.polls += 1
                if not batch:
                    self.empty_polls += 1
                    self._stop.wait(self.idle_s)
                    continue
                for records in batch.values():
                    self.handle(records)
            except Exception as exc:  # noqa: BLE001 - broker gone: reconnect later, the caller's other paths go on
                log.warning("%s tail: %s", self.topic, exc)
                self._close_consumer(consumer)
                consumer = None
                self._stop.wait(self.reconnect_s)
        self._close_consumer(consumer)

    @staticmethod
    def _close_consumer(consumer) -> None:
        if consumer is None:
            return
        try:
            consumer.close()
        except Exception:  # noqa: BLE001
            pass

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
