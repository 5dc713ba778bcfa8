"""Resume the source partitions after a rebalance without losing the records around the seek.

Why: at the end of every rebalance, faust-streaming 0.15.3's ``Recovery.on_recovery_completed``

1. resumes the source partitions (``consumer.resume_partitions``),
2. awaits ``consumer.perform_seek()``: aiokafka seeks each partition to its committed offset C,
   then the consumer's read offset is set to C, and only then
3. calls ``app.flow_control.resume()``, which *clears* every stream's input queue.

Faust's fetch loop is already running during 2 (the consumer flow was resumed for changelog
recovery), so the just-resumed partitions deliver records into the agent's queue around the
seek:

* a record delivered after the read offset was set to C and before 3 is cleared from the
  queue while the read offset has moved past it: it is never fetched again and never
  processed, and the next commit goes past it (faust's ``Consumer._new_offset`` lets a commit
  start at C+1). The first records after the committed offset are lost for good when the
  partition came from another worker. Seen with instrumentation in
  ``tests/faults/streams/test_streams_kill9.py``: record 57 of ``impressions/2`` was delivered
  right after the seek and cleared; processing went on at 58 and the commit went to 93;
* records fetched before the seek and delivered after it make the consumer count a "gap"
  (C+1..k, treated as acked at the next commit although k is not processed yet) and then drop
  the re-fetched records below the read offset (faust's ``DROPPED MESSAGE ROFF``).

Merely seeking *before* resuming is not enough: while the worker's active partition set is
empty (everything paused between the end of changelog reading and the resume), a fetch call
already waiting in the consumer thread drains the records of *every* partition (aiokafka's
``fetched_records`` treats an empty set as "all"), and Faust then discards those of paused
partitions although aiokafka's position has moved past them. A seek before that window does
not undo it (that variant lost 64-106 of 400 impressions per run of the kill -9 tests with the
timing around the seek stretched).

:func:`on_recovery_completed` keeps faust's steps but stops the consumer flow around them:
``stop_flow`` first, so nothing is delivered until the end (a batch fetched meanwhile is
answered by faust's own seek back to the committed offsets instead of being delivered); then
resume the partitions and seek; then, with no ``await`` in between, clear the queues and
resume the flow. The first record each source partition delivers is then the one at its
committed offset. If a new rebalance started during the seek, nothing is resumed: that
rebalance's own recovery does it. (``Recovery._resume_streams`` has the same order but runs
only for apps without tables; the streams app always has its join table.)

The join's batch path (:mod:`streams.batch_fetch`) keeps this argument: it replaces only the
per-message delivery, not the seek or the commit. A fetch that returns while the flow is stopped
is dropped and answered with the seek; a batch is put on a queue that
``app.flow_control.resume()`` clears like an agent's buffer, and dropped if the consumer
generation changed since its fetch; its offsets are acked into faust's own lists after the
batch, so the next commit starts at the committed offset C exactly as for an agent's events.

``tests/unit/streams/test_recovery_order.py`` runs both methods against a model of faust's
consumer; ``tests/faults/streams/test_streams_kill9.py`` is the end-to-end check.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.recovery import Recovery

#: faust's own method (kept so :func:`uninstall` and tests can restore it).
_ORIGINAL = Recovery.on_recovery_completed


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` with the consumer flow stopped from resume to after the seek."""
    app = self.app
    consumer = app.consumer
    self.log.info("Restore complete!")
    await app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                                   self.standbys_for_table[table]))
                 for table in self.tables.values()]
    if callbacks:
        await asyncio.wait(callbacks)
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {app.consumer_generation_id} param {generation_id}")
        return
    rebalances = app.rebalancing_count
    consumer.stop_flow()  # deliver nothing until the seek is done and the queues are cleared
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    if assignment:
        self.log.info("Seek stream partitions to committed offsets (consumer flow stopped).")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    if app.consumer_generation_id != generation_id or app.rebalancing_count != rebalances:
        self.log.warning("Rebalance during the seek: the next recovery resumes the partitions")
        return
    # No await from here until the flow is resumed: nothing is delivered in between.
    self.completed.set()
    app.flow_control.resume()  # clears the stream queues
    consumer.resume_flow()
    await app._fetcher.maybe_start()  # noqa: SLF001 - as faust's own method does
    self.tables.on_actives_ready()
    if not app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


def install() -> None:
    """Use :func:`on_recovery_completed` in every Faust app of this process."""
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore faust's own ``Recovery.on_recovery_completed``."""
    Recovery.on_recovery_completed = _ORIGINAL  # type: ignore[method-assign]


def installed() -> bool:
    return Recovery.on_recovery_completed is on_recovery_completed
