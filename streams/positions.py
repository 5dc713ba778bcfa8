"""How far this worker has read each source partition: lag, caught-up and idle partitions.

The join's watermarks and idle closes depend on where the consumer stands, not only on event
time: a partition read up to the broker's high watermark lets the impression term of the
watermark follow the other partitions (:class:`streams.join.Watermarks`), and a partition idle
for ``idle_timeout_s`` *with zero lag* closes its open windows (the tail of a finished replay).
:class:`ConsumerPositions` keeps the last processed offset and input time per partition and
reads the high watermarks from Faust's consumer.
"""

from __future__ import annotations

from typing import Any

from common.config import Settings
from streams.join import Watermarks
from streams.metrics import StreamMetrics


class ConsumerPositions:
    """Per-partition read positions of one worker, and what follows from them."""

    def __init__(self, app: Any, settings: Settings, metrics: StreamMetrics, idle_timeout_s: float) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.idle_timeout_s = idle_timeout_s
        self.logical = {settings.topics.impressions: "impressions", settings.topics.feedback: "feedback"}
        self.last_offsets: dict[tuple[str, int], int] = {}
        self.last_input: dict[int, float] = {}

    def read(self, topic: str, partition: int, offset: int, now: float) -> None:
        """Record that this worker processed ``offset`` of ``topic``/``partition`` at ``now`` (monotonic)."""
        self.last_offsets[(topic, partition)] = offset
        self.last_input[partition] = now

    def forget(self, partition: int) -> None:
        """The partition was revoked: its idle clock starts again if it comes back."""
        self.last_input.pop(partition, None)

    def partition_idle(self, partition: int, now: float) -> bool:
        """No input from ``partition`` for ``idle_timeout_s`` and nothing left to read on it.

        Idleness is processing time, so it closes the tail of a finished replay; requiring zero
        lag keeps a stalled or rebalancing worker from closing windows whose feedback is
        still waiting in the topic. A lag not known yet (no fetch of that topic-partition has
        answered since the assignment, so no high watermark) is not zero: right after a restart
        or a rebalance a slow first fetch would otherwise close the recovered windows before
        their feedback was read.
        """
        last = self.last_input.setdefault(partition, now)
        if now - last < self.idle_timeout_s:
            return False
        for logical_topic in self.logical:
            lag = self.metrics.lag.get(f"{logical_topic}/{partition}")
            if lag is None or lag > 0:
                return False
        return True

    def update_caught_up(self, watermarks: Watermarks) -> None:
        """Tell ``watermarks`` which partitions' impressions were read up to the broker's high watermark.

        Only records this worker processed count (not the group's committed offset), and an
        unknown high watermark (right after assignment) is not caught up: both keep the
        impression term at the partition's own newest impression, as without this.
        """
        topic = self.settings.topics.impressions
        caught_up: set[int] = set()
        try:
            consumer = self.app.consumer
            assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
        except Exception:  # noqa: BLE001 - no consumer yet (start-up, unit tests)
            assigned = []
        for tp in assigned:
            last = self.last_offsets.get((topic, tp.partition))
            if last is None:
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet
                continue
            if highwater is not None and last + 1 >= int(highwater):
                caught_up.add(tp.partition)
        watermarks.set_caught_up(caught_up)

    def update_lag(self) -> None:
        """Records behind the high watermark per source topic-partition, into ``metrics.lag``.

        The position is the next offset to read: after the last record this worker processed,
        or the group's committed offset for a partition it has not read from yet.
        """
        consumer = self.app.consumer
        committed = getattr(consumer, "_committed_offset", {})
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            if tp.topic not in self.logical:
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not known yet right after assignment
                continue
            if highwater is None:
                continue
            last = self.last_offsets.get((tp.topic, tp.partition))
            positions = [p for p in (None if last is None else last + 1, committed.get(tp)) if p is not None]
            lag[f"{tp.topic}/{tp.partition}"] = max(0, int(highwater) - max(positions, default=0))
        self.metrics.lag = lag
