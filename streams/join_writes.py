"""Where the join's writes go: the join table's local store at once, the broker a batch at a time.

:class:`JoinWrites` is the join's only writer of ``join-state`` entries and examples. An entry
goes into the Faust table's store immediately (so the next batch and the housekeeping tick
read it) and its changelog record into a :class:`~streams.batch_produce.BatchWriter`; examples
likewise. :meth:`JoinWrites.flush` sends what was collected and registers every record
batch's future with the commit barrier (:mod:`streams.delivery`), which therefore still
covers every example and changelog write before Faust commits source offsets: the barrier
itself flushes what is still collected before it waits (writes are sent by a background task,
:meth:`JoinWrites.flush_in_background`, and a delivery callback's tombstone by one it schedules).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from streams.batch_produce import BatchWriter, OnSent
from streams.delivery import PendingDeliveries

_ENCODE = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)


class JoinWrites:
    """The join table's entries and the examples, written through one :class:`BatchWriter`."""

    def __init__(self, app: Any, state: Any, examples_topic: str, deliveries: PendingDeliveries,
                 max_pending: int = 20_000) -> None:
        self.writer = BatchWriter(app)
        self.state = state
        self.examples_topic = examples_topic
        self.deliveries = deliveries
        self.flush_pending = False
        self.max_pending = max_pending
        deliveries.send_collected = self.flush

    @property
    def changelog_topic(self) -> str:
        return self.state.changelog_topic.get_topic_name()

    def put(self, rid: str, entry: dict) -> None:
        """Set the entry of ``rid`` (the table's store now, its changelog at the next flush)."""
        key = rid.encode("utf-8")
        self.state.data[key] = entry
        self.writer.add(self.changelog_topic, key, _ENCODE(entry))

    def delete(self, rid: str) -> None:
        """Drop the entry of ``rid`` (a changelog delete: a record with no value)."""
        key = rid.encode("utf-8")
        if key in self.state.data:
            del self.state.data[key]
        self.writer.add(self.changelog_topic, key, None)

    def example(self, rid: str, value: bytes, on_sent: OnSent) -> None:
        self.writer.add(self.examples_topic, rid.encode("utf-8"), value, on_sent)

    async def flush(self) -> None:
        """Send every collected write; the barrier waits for their batches before a commit.

        If the producer refuses a batch, writes without a callback (changelog records) are
        lost state: the barrier then refuses every commit (``changelog_error``).
        """
        try:
            sent = await self.writer.flush()
        except Exception as exc:
            self.deliveries.changelog_error = exc
            raise
        for topic, future in sent:
            if topic == self.examples_topic:
                self.deliveries.track_example(future)
            else:
                self.deliveries.track_changelog(future)

    async def flush_in_background(self) -> None:
        """Send the collected writes from a task, so the next join batch need not wait for the broker.

        aiokafka sends the next batch of a partition only once the last one was acked, so an
        awaited flush per join batch costs a broker round trip per batch. Meanwhile writes keep
        collecting and leave together with the next flush. Past ``max_pending`` collected
        records the caller waits for a flush (backpressure).
        """
        if self.writer.size() > self.max_pending:
            await self.flush()
        else:
            self.flush_soon()

    def flush_soon(self) -> None:
        """Flush from a callback (no await there): one task, scheduled unless one is already waiting to run."""
        if not self.flush_pending:
            self.flush_pending = True
            asyncio.ensure_future(self._flush_task())

    async def _flush_task(self) -> None:
        self.flush_pending = False  # writes added from now on need another task (this one may be past its swap)
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - recorded for the barrier by flush(); a task has no caller
            log.error("join writes not sent: %r", exc)
