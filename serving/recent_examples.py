"""A bounded window of the most recent joined examples, read from the ``examples`` topic.

The promotion gate needs recent logged data with rewards; the streams worker writes exactly
that (impression ⋈ feedback) to ``examples``. This reader assigns itself every partition
without a consumer group (so it never moves a learner's offsets), starts from the beginning
(end offsets are not trusted on every embedded broker, see INFRA.md) and keeps the last
``maxlen`` valid examples. Invalid records are counted and skipped: the streams stage owns
the dead-letter topic for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from streams.events import LABELED_LIST_SCHEMA, EventError, LabeledList, decode

log = logging.getLogger(__name__)


class RecentExamples:
    """Thread-safe ring buffer of :class:`LabeledList` fed by a background consumer."""

    def __init__(self, bootstrap: str | None, topic: str, maxlen: int = 2000,
                 keep: Callable[[LabeledList], bool] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        #: which examples the window holds (the gate's: explored ones only, so a low
        #: exploration rate does not leave the window full of rounds the gate cannot use)
        self.keep = keep
        self.skipped = 0
        self._items: deque[LabeledList] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.read = 0
        self.invalid = 0
        self._thread = threading.Thread(target=self._run, name="recent-examples", daemon=True)

    def add(self, example: LabeledList) -> None:
        if self.keep is not None and not self.keep(example):
            self.skipped += 1
            return
        with self._lock:
            self._items.append(example)

    def snapshot(self) -> list[LabeledList]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def start(self) -> "RecentExamples":
        if self.bootstrap:
            self._thread.start()
        return self

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                             auto_offset_reset="earliest", consumer_timeout_ms=500,
                                             request_timeout_ms=10_000, fetch_max_wait_ms=200)
                    partitions = consumer.partitions_for_topic(self.topic)
                    if not partitions:
                        consumer.close()
                        consumer = None
                        self._stop.wait(1.0)
                        continue
                    tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                    consumer.assign(tps)
                    consumer.seek_to_beginning(*tps)
                batch = consumer.poll(timeout_ms=300, max_records=500)
                for records in batch.values():
                    for record in records:
                        self.read += 1
                        try:
                            event = decode(record.value, expected=LABELED_LIST_SCHEMA)
                        except EventError:
                            self.invalid += 1
                            continue
                        self.add(event)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - broker gone: retry; the gate falls back to "insufficient data"
                log.warning("examples reader: %s", exc)
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # noqa: BLE001
                        pass
                consumer = None
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (used by tests and the demo)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
