"""The join's batch path over a model of Faust's consumer bookkeeping (streams.batch_fetch).

Offsets of a batch are acked into Faust's own lists only once the join applied it, and only in
the consumer generation it was fetched in; a batch in progress is in Faust's unacked set (so a
rebalance's wait_empty waits for it); records below the read offset are dropped, as Faust does.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from weakref import WeakSet

from mode.utils.queues import FlowControlEvent

from streams.batch_fetch import Batch, BatchSink, _new_records, ack_batch


def consumer_model() -> SimpleNamespace:
    return SimpleNamespace(_committed_offset=defaultdict(lambda: None), _acked=defaultdict(list),
                           _acked_index=defaultdict(set), _read_offset=defaultdict(lambda: None), _n_acked=0,
                           _unacked_messages=WeakSet(), _waiting_for_ack=None)


def records(tp: str, *offsets: int) -> tuple[str, list]:
    return tp, [SimpleNamespace(offset=o) for o in offsets]


def test_ack_batch_acks_each_new_offset_once_and_none_below_the_committed_one():
    consumer = consumer_model()
    consumer._committed_offset["a"] = 5
    assert ack_batch(consumer, [records("a", 3, 4, 5, 6), records("b", 0, 1)]) == 4
    assert consumer._acked["a"] == [5, 6] and consumer._acked["b"] == [0, 1]
    assert ack_batch(consumer, [records("a", 6, 7)]) == 1  # 6 was acked already
    assert consumer._acked["a"] == [5, 6, 7] and consumer._n_acked == 5


def test_records_below_the_read_offset_are_dropped():
    consumer = consumer_model()
    tp, batch = records("a", 7, 8, 9)
    assert _new_records(consumer, tp, batch) is batch  # nothing read yet
    consumer._read_offset["a"] = 8
    assert [r.offset for r in _new_records(consumer, tp, batch)] == [8, 9]  # Faust's rule: >= the read offset


def app_model(consumer, generation: int = 1) -> SimpleNamespace:
    return SimpleNamespace(consumer=consumer, consumer_generation_id=generation,
                           flow_control=FlowControlEvent(initially_suspended=False))


def test_the_sink_acks_after_the_join_and_registers_the_batch_in_progress():
    consumer = consumer_model()
    app = app_model(consumer)
    seen = []

    async def handler(parts) -> None:
        seen.append([len(consumer._unacked_messages), list(consumer._acked["a"])])

    async def scenario() -> None:
        sink = BatchSink(app, {"a"}, handler)
        task = asyncio.ensure_future(sink.run())
        await sink.put(Batch(1, [records("a", 0, 1, 2)]))
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    assert seen == [[1, []]]  # in Faust's unacked set while applied, nothing acked yet
    assert consumer._acked["a"] == [0, 1, 2] and len(consumer._unacked_messages) == 0


def test_the_sink_neither_applies_nor_acks_a_batch_from_an_older_generation():
    consumer = consumer_model()
    app = app_model(consumer, generation=2)
    applied = []

    async def handler(parts) -> None:
        applied.append(parts)

    async def scenario() -> None:
        sink = BatchSink(app, {"a"}, handler)
        task = asyncio.ensure_future(sink.run())
        await sink.put(Batch(1, [records("a", 0, 1)]))  # fetched before the rebalance: the seek re-reads it
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    assert applied == [] and consumer._acked["a"] == []


def test_a_batch_whose_generation_changes_while_it_is_applied_is_not_acked():
    consumer = consumer_model()
    app = app_model(consumer, generation=1)

    async def handler(parts) -> None:
        app.consumer_generation_id = 2  # a rebalance while the join applied it

    async def scenario() -> None:
        sink = BatchSink(app, {"a"}, handler)
        task = asyncio.ensure_future(sink.run())
        await sink.put(Batch(1, [records("a", 0, 1)]))
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    assert consumer._acked["a"] == [] and len(consumer._unacked_messages) == 0


def test_faust_clears_queued_batches_when_the_flow_resumes_after_a_rebalance():
    consumer = consumer_model()
    app = app_model(consumer)

    async def scenario() -> int:
        sink = BatchSink(app, {"a"}, None)
        await sink.put(Batch(1, [records("a", 0)]))
        app.flow_control.resume()  # what streams.recovery_order does right before the flow resumes
        return sink.queue.qsize()

    assert asyncio.run(scenario()) == 0
