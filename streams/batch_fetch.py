"""The join's records reach it a fetched batch at a time, inside the Faust app, not an event at a time.

Why: Faust hands every record to an agent one by one: a ``Message`` and an ``Event`` per
record, a ``wait_first`` (two tasks) per record in the fetch loop, a queue put and get per
record, and an ack per event. Even a no-op agent with ``take_events`` reached only ~0.1x of a
raw kafka-python consumer on this machine (BENCHMARKS.md, "Streams join"), so the join could
never get past that.

What Faust still does, and what this module does instead:

========================================  ====================================================
Faust (kept)                              why
========================================  ====================================================
the app, its worker and web server        process host, /metrics, signals, clean shutdown
the consumer group and rebalancing        partition assignment co-partitions the source topics
                                          with the join table's changelog
the ``join-state`` table and recovery     changelog-backed state, restored on assignment
its fetch thread (aiokafka)               ``Consumer._wait_next_records`` gives a batch per call
                                          (``broker_max_poll_records``), honouring paused
                                          partitions and flow control
offset bookkeeping and commits            our acks go into Faust's own ``_acked`` lists, so its
                                          commit loop, the commit barrier
                                          (:mod:`streams.delivery`) and the rebalance commit
                                          work unchanged
========================================  ====================================================

Replaced (:func:`install` patches ``Consumer._drain_messages``, only for an app with a
``batch_sink``): for the sink's topics, the records of one fetch become one :class:`Batch`
put on a flow-controlled queue (cleared by Faust on every rebalance, exactly like an agent's
stream buffer); records of any other topic (table changelogs during recovery) still take
Faust's per-message path. :meth:`BatchSink.run`, an app task, applies one batch to the join
and then acks all of its offsets at once.

The ordering arguments of :mod:`streams.recovery_order` hold unchanged: a fetch that returns
while the consumer flow is stopped is dropped and answered with Faust's seek back to the
committed offsets; a batch is dropped if the consumer generation changed between its fetch and
its processing (the seek of the new generation re-reads it); a batch in progress is registered
in Faust's set of unacked messages, so a rebalance's ``wait_empty`` waits for it before it
commits, as it waits for an agent's event; the read offset of a partition moves only past
records put on the queue, and the seek resets it. An offset is acked only after its batch's
examples were sent and its entries written, and committed only after the commit barrier saw
them acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from mode.utils.futures import notify
from mode.utils.queues import FlowControlQueue

log = logging.getLogger(__name__)

#: Faust's own per-message drain loop (kept so :func:`uninstall` and apps without a sink use it).
_ORIGINAL = Consumer._drain_messages  # noqa: SLF001

Handler = Callable[[list[tuple[Any, list[Any]]]], Awaitable[None]]


@dataclass
class Batch:
    """The records of one fetch for the sink's topics, and the consumer generation they were fetched in."""

    generation: int
    parts: list[tuple[Any, list[Any]]]


class InFlight:
    """Stands in Faust's set of unacked messages while a batch is processed (a rebalance waits for it)."""

    __slots__ = ("acked", "refcount", "__weakref__")

    def __init__(self) -> None:
        self.acked = False
        self.refcount = 1


class BatchSink:
    """The join's batch queue and the task that applies each batch, then acks its offsets."""

    def __init__(self, app: Any, topics: set[str], handler: Handler, maxsize: int = 2) -> None:
        self.app = app
        self.topics = frozenset(topics)
        self.handler = handler
        self.queue: FlowControlQueue = FlowControlQueue(maxsize=maxsize, flow_control=app.flow_control,
                                                        clear_on_resume=True)

    async def put(self, batch: Batch) -> None:
        await self.queue.put(batch)

    async def run(self) -> None:
        """Apply batches until the app stops (an app task)."""
        while True:
            batch = await self.queue.get()
            consumer = self.app.consumer
            if batch.generation != self.app.consumer_generation_id:
                continue  # fetched before a rebalance: the new generation's seek re-reads it
            marker = InFlight()
            consumer._unacked_messages.add(marker)  # noqa: SLF001 - what Consumer.wait_empty waits for
            try:
                await self.handler(batch.parts)
                if batch.generation == self.app.consumer_generation_id:
                    ack_batch(consumer, batch.parts)
            except Exception as exc:
                log.exception("join batch failed: %r", exc)
                await self.app.crash(exc)
                raise
            finally:
                marker.acked = True
                consumer._unacked_messages.discard(marker)  # noqa: SLF001
                notify(consumer._waiting_for_ack)  # noqa: SLF001


def ack_batch(consumer: Any, parts: list[tuple[Any, list[Any]]]) -> int:
    """Mark every record of ``parts`` processed in Faust's bookkeeping (``Consumer.ack`` for many at once).

    Faust's next commit then moves each partition's committed offset past the contiguous run
    of acked offsets (``Consumer._new_offset``), as it does for an agent's events.
    """
    n = 0
    for tp, records in parts:
        committed = consumer._committed_offset[tp]  # noqa: SLF001
        index = consumer._acked_index[tp]  # noqa: SLF001
        offsets = [r.offset for r in records
                   if (committed is None or r.offset >= committed) and r.offset not in index]
        index.update(offsets)
        consumer._acked[tp].extend(offsets)  # noqa: SLF001
        n += len(offsets)
    consumer._n_acked += n  # noqa: SLF001
    return n


def _new_records(consumer: Any, tp: Any, records: list[Any]) -> list[Any]:
    """Records at or past the partition's read offset (Faust's rule: older ones were re-fetched after a seek)."""
    last = consumer._read_offset[tp]  # noqa: SLF001
    if last is None or records[0].offset >= last:
        return records
    return [r for r in records if r.offset >= last]


async def _mark_gaps(consumer: Any, tp: Any, records: list[Any]) -> None:
    """Offsets missing between the read offset and these records count as acked (Faust's ``_add_gap``)."""
    previous = consumer._read_offset[tp]  # noqa: SLF001
    if previous is not None and records[0].offset - previous > 1:
        await consumer._add_gap(tp, previous + 1, records[0].offset)  # noqa: SLF001
    if records[-1].offset - records[0].offset + 1 != len(records):  # holes inside the batch (compaction, markers)
        for before, after in zip(records, records[1:]):
            if after.offset - before.offset > 1:
                await consumer._add_gap(tp, before.offset + 1, after.offset)  # noqa: SLF001


async def _per_message(consumer: Any, tp: Any, records: list[Any], generation: int) -> None:
    """Faust's own delivery for records outside the sink's topics (changelogs during recovery)."""
    for record in records:
        if not consumer.flow_active or consumer.app.consumer_generation_id != generation:
            return
        await _mark_gaps(consumer, tp, [record])
        await consumer.wait_first(consumer.callback(consumer._to_message(tp, record)),  # noqa: SLF001
                                  consumer.suspend_flow.wait())
        consumer._read_offset[tp] = record.offset  # noqa: SLF001


async def _deliver(consumer: Any, sink: BatchSink, records: dict, active: set | None) -> None:
    """Split one fetch: the sink's topics as one batch, anything else message by message."""
    if not consumer.flow_active:  # stopped during the fetch (a rebalance): faust seeks back, delivers nothing
        try:
            await consumer.perform_seek()
        except Exception as exc:  # noqa: BLE001 - as faust's getmany
            consumer.log.warning(f"exception performing seek when flow not active {exc}")
        return
    generation = consumer.app.consumer_generation_id
    parts: list[tuple[Any, list[Any]]] = []
    inbound = consumer.app.monitor.stream_inbound_time if consumer.app.monitor is not None else {}
    now = time.monotonic()
    for tp, fetched in records.items():
        if not fetched or (active is not None and tp not in active and tp not in consumer._buffered_partitions):  # noqa: SLF001
            continue
        if tp.topic not in sink.topics:
            await _per_message(consumer, tp, _new_records(consumer, tp, fetched), generation)
            continue
        fresh = _new_records(consumer, tp, fetched)
        if not fresh:
            continue
        await _mark_gaps(consumer, tp, fresh)
        consumer._read_offset[tp] = fresh[-1].offset  # noqa: SLF001
        inbound[tp] = now  # Faust's livelock detector: this partition's stream is moving
        parts.append((tp, fresh))
    if parts and consumer.flow_active and consumer.app.consumer_generation_id == generation:
        await consumer.wait_first(sink.put(Batch(generation, parts)), consumer.suspend_flow.wait())


async def _drain_in_batches(self: Consumer, fetcher: Any) -> None:
    """``Consumer._drain_messages`` for an app with a ``batch_sink`` (see the module docstring)."""
    sink: BatchSink | None = getattr(self.app, "batch_sink", None)
    if sink is None:
        await _ORIGINAL(self, fetcher)
        return
    consumer_should_stop = self._stopped.is_set  # noqa: SLF001
    fetcher_should_stop = fetcher._stopped.is_set  # noqa: SLF001
    timeout = getattr(self.app, "batch_fetch_timeout_s", 1.0)
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(CONSUMER_FETCHING)
            records, active = await self._wait_next_records(timeout)  # noqa: SLF001
            if records and not self.should_stop:
                await _deliver(self, sink, records, active)
            else:
                await asyncio.sleep(0)
            self.diag.unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            return
        raise
    finally:
        self.diag.unset_flag(CONSUMER_FETCHING)


def attach(app: Any, source: Any, handler: Handler, fetch_timeout_s: float = 1.0) -> BatchSink:
    """Subscribe ``app`` to ``source`` (a Faust topic) and hand its records to ``handler`` a fetched batch at a time.

    The topic joins Faust's conductor, so the consumer group, the assignor (co-partitioning
    with the tables' changelogs) and recovery treat it as an agent's topic; no agent reads it.
    """
    app.topics.add(source)
    sink = BatchSink(app, set(source.topics), handler)
    app.batch_sink = sink  # read by _drain_in_batches
    app.batch_fetch_timeout_s = fetch_timeout_s

    @app.task
    async def join_batches() -> None:
        await sink.run()

    return sink


def install() -> None:
    """Route the records of every app with a ``batch_sink`` through it (other apps keep Faust's loop)."""
    Consumer._drain_messages = _drain_in_batches  # type: ignore[method-assign]  # noqa: SLF001


def uninstall() -> None:
    Consumer._drain_messages = _ORIGINAL  # type: ignore[method-assign]  # noqa: SLF001


def installed() -> bool:
    return Consumer._drain_messages is _drain_in_batches  # noqa: SLF001
