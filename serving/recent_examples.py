"""A bounded window of the most recent joined examples, read from the ``examples`` topic.

The promotion gate needs recent logged data with rewards; the streams worker writes exactly
that (impression ⋈ feedback) to ``examples``. This reader follows every partition
with a :class:`serving.topic_tail.TopicTail` (no consumer group, so it never moves a learner's
offsets; from the beginning, since end offsets are not trusted on every embedded broker) and keeps the last
``maxlen`` valid examples. Invalid records are counted and skipped: the streams stage owns
the dead-letter topic for them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable

from contracts.events import LABELED_LIST_SCHEMA, EventError, LabeledList, decode
from serving.topic_tail import TopicTail

log = logging.getLogger(__name__)


class RecentExamples:
    """Thread-safe ring buffer of :class:`LabeledList` fed by a background consumer."""

    def __init__(self, bootstrap: str | None, topic: str, maxlen: int = 2000,
                 keep: Callable[[LabeledList], bool] | None = None,
                 observe: Callable[[LabeledList, Any], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        #: which examples the window holds (the gate's: explored ones only, so a low
        #: exploration rate does not leave the window full of rounds the gate cannot use)
        self.keep = keep
        #: sees every valid example with its record, kept or not (the dashboard's rewards and staleness)
        self.observe = observe
        self.skipped = 0
        self._items: deque[LabeledList] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.read = 0
        self.invalid = 0
        # broker gone: the tail reconnects; meanwhile the gate answers "insufficient data"
        self._tail = TopicTail(bootstrap, topic, self._handle, name="recent-examples")

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
        self._tail.start()
        return self

    def _handle(self, records) -> None:
        for record in records:
            self.read += 1
            try:
                event = decode(record.value, expected=LABELED_LIST_SCHEMA)
            except EventError:
                self.invalid += 1
                continue
            if self.observe is not None:
                self.observe(event, record)  # type: ignore[arg-type]
            self.add(event)  # type: ignore[arg-type]

    def close(self) -> None:
        self._tail.close()



