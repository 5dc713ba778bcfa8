"""Commit barrier: source offsets are committed only after what their batches wrote is acked.

Why: the join agent writes a batch's table entries (changelog records) at the end of the
batch and turns a closed entry into a tombstone only once its example is delivered, from the
example's delivery callback. Faust flushes the producer before it commits source offsets, but
its flush does not cover either write reliably:

* ``ProducerBuffer.flush`` gives up after 0.1 s without progress, and a record the buffer
  task has dequeued but not yet handed to aiokafka is not counted at all;
* a tombstone written by a delivery callback that fires *during* the flush lands in the
  buffer after the buffer was drained.

Either way a kill -9 right after the commit loses the write: the changelog then holds an
older version of the entry (e.g. without a feedback whose source offset is committed), and
the recovered worker re-emits the example without that label (found by
``tests/faults/streams/test_streams_kill9.py``, 1 run in 5).

The barrier tracks the delivery future of every example send and every changelog write,
and before Faust's own flush waits, in order, for the example deliveries pending at that
moment (their callbacks write the tombstones) and then for every pending changelog write.
Nothing is waited for per batch, so the batch loop does not stall: the wait costs at most one
producer linger plus a round trip per commit interval.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Optional

import faust


class PendingDeliveries:
    """Delivery futures of example sends and changelog writes not yet acked by the broker."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self.examples: set[asyncio.Future] = set()
        self.changelog: set[asyncio.Future] = set()
        self.changelog_error: BaseException | None = None
        #: sends the writes still collected, so that their futures are tracked (streams.join_writes)
        self.send_collected: Optional[Callable[[], Awaitable[None]]] = None

    def track_example(self, future: asyncio.Future) -> None:
        self._track(self.examples, future)

    def track_changelog(self, future: asyncio.Future) -> None:
        """Track one changelog write. A write already done when it is tracked is checked at once: a
        batch can fail while the flush that sent it still awaits the sends of other partitions."""
        if future.done():
            self._note_changelog(future)
        else:
            future.add_done_callback(self._note_changelog)
        self._track(self.changelog, future)

    def _note_changelog(self, future: asyncio.Future) -> None:
        """A changelog write the broker refused, or one cancelled before it was acked (the producer
        closed under it), is lost state: no later commit may pass it (a failed example is not: its
        entry is reopened and rewritten)."""
        if future.cancelled():
            self.changelog_error = asyncio.CancelledError("a changelog write was cancelled before its ack")
        elif future.exception() is not None:
            self.changelog_error = future.exception()

    @staticmethod
    def _track(pending: set[asyncio.Future], future: asyncio.Future) -> None:
        if future.done():
            return
        pending.add(future)
        future.add_done_callback(pending.discard)

    async def settle(self) -> None:
        """Wait until the examples and changelog writes pending now are acked (or failed).

        Examples first: their delivery callbacks write tombstones, which the second wait then
        covers. A failed example delivery counts as settled: the join keeps such an entry open
        and rewrites it, and that rewrite is itself a tracked changelog write. A failed
        changelog write raises (Faust then does not commit).
        Raises :class:`TimeoutError` (so the caller does not commit) if the producer is stuck.
        """
        for pending in (self.examples, self.changelog):
            if self.send_collected is not None:  # collected writes first (then the tombstones the callbacks wrote)
                await self.send_collected()
            snapshot = set(pending)
            if snapshot:
                done, not_done = await asyncio.wait(snapshot, timeout=self.timeout_s)
                if not_done:
                    raise TimeoutError(f"{len(not_done)} producer deliveries not acked in {self.timeout_s} s;"
                                       " not committing source offsets")
            if pending is self.changelog and self.changelog_error is not None:
                raise RuntimeError(f"a changelog write failed ({self.changelog_error!r}); not committing"
                                   " source offsets")
            await asyncio.sleep(0)  # let done-callbacks (tombstone writes) run before the next snapshot


class TrackedTable(faust.Table):
    """A Faust table whose changelog writes report their delivery futures to ``deliveries``."""

    deliveries: Optional[PendingDeliveries] = None

    def send_changelog(self, partition: Optional[int], key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> Any:
        future = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        if self.deliveries is not None:
            self.deliveries.track_changelog(future)
        return future


def install_commit_barrier(app: faust.App, deliveries: PendingDeliveries) -> None:
    """Make ``app``'s producer flush (which Faust awaits before each offset commit) settle first."""
    producer = app.producer
    faust_flush: Callable[[], Awaitable[None]] = producer.flush

    async def flush_after_join_deliveries() -> None:
        await deliveries.settle()
        await faust_flush()

    producer.flush = flush_after_join_deliveries  # type: ignore[method-assign]
