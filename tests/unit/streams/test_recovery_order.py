"""After a rebalance, recovery resumes the source partitions without losing records around the seek
(streams.recovery_order, issue 3).

``ModelConsumer`` models what faust-streaming 0.15.3 and aiokafka do with one source partition at
the end of a rebalance (faust/transport/consumer.py ``getmany``/``_drain_messages``/
``perform_seek``, faust/transport/drivers/aiokafka.py ``_fetch_records``, aiokafka's
``Fetcher.fetched_records``):

* a fetch loop runs concurrently with the recovery; aiokafka's position moves when a fetch
  drains records, and a seek moves it back;
* the fetch is served from faust's *live* active-partition set: an empty set drains every
  partition, and records of partitions not active when they are yielded are discarded;
* faust delivers a record only if its offset is >= the read offset, then sets the read offset
  to it; ``perform_seek`` sets the read offset to the committed offset after the seek;
* a fetch that returns while the consumer flow is stopped makes faust seek back to the
  committed offsets instead of delivering;
* ``app.flow_control.resume()`` clears the agent's queue.

Fetches and seeks yield to the event loop a few times (the calls into the consumer thread);
the tests run every combination of those latencies. The agent reads its queue only at the end,
so a cleared record is a lost record.
"""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

import pytest
from faust.tables.recovery import Recovery
from faust.types import TP

from streams import recovery_order

SOURCE = TP("t.impressions", 0)
CHANGELOG = TP("t.streams-join-state-changelog", 0)
COMMITTED = 5
END = 30
GENERATION = 7


class ModelConsumer:
    def __init__(self, fetch_hops: int, seek_hops: int, batch: int = 4) -> None:
        self.fetch_hops, self.seek_hops, self.batch = fetch_hops, seek_hops, batch
        self.position = {SOURCE: COMMITTED, CHANGELOG: 100}  # aiokafka: committed offsets on assignment
        self.end = {SOURCE: END, CHANGELOG: 100}  # the changelog was read to its end
        self.read_offset: dict[TP, int | None] = {SOURCE: None}
        self.active: set[TP] = {CHANGELOG}  # recovery reads the changelog; the source is paused
        self.flow_active = True
        self.can_resume_flow = asyncio.Event()
        self.can_resume_flow.set()
        self.queue: list[int] = []  # the agent's input queue
        self.seeks = 0
        self.on_seek = lambda: None

    def assignment(self) -> set[TP]:
        return {SOURCE, CHANGELOG}

    def pause_partitions(self, tps) -> None:
        self.active.difference_update(tps)

    def resume_partitions(self, tps) -> None:
        self.active.update(tps)

    def stop_flow(self) -> None:
        self.flow_active = False
        self.can_resume_flow.clear()

    def resume_flow(self) -> None:
        self.flow_active = True
        self.can_resume_flow.set()

    @staticmethod
    async def hops(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def perform_seek(self) -> None:
        self.seeks += 1
        self.on_seek()
        await self.hops(self.seek_hops)  # committed offsets fetched in the consumer thread
        self.position[SOURCE] = COMMITTED  # aiokafka's seek
        await self.hops(1)  # back on the event loop
        self.read_offset[SOURCE] = COMMITTED

    async def fetch(self) -> list[tuple[TP, int]]:
        if not self.flow_active:  # _fetch_records
            return []
        for _ in range(50):  # fetched_records waits up to its timeout for data
            await self.hops(self.fetch_hops)
            partitions = self.active
            out = []
            for tp in (SOURCE, CHANGELOG):
                if partitions and tp not in partitions:
                    continue
                start = self.position[tp]
                stop = min(start + self.batch, self.end[tp])
                self.position[tp] = stop
                out.extend((tp, offset) for offset in range(start, stop))
            if out:
                return out
        return []

    async def fetch_loop(self) -> None:
        while True:
            if not self.flow_active:
                await self.can_resume_flow.wait()
            records = await self.fetch()
            if not records:
                await asyncio.sleep(0)
                continue
            if not self.flow_active:
                await self.perform_seek()  # "getmany called while flow not active. Seek back..."
                continue
            for tp, offset in records:
                if not self.flow_active:
                    break
                if tp not in self.active:
                    continue  # fetched, but the partition is paused: discarded
                read = self.read_offset.get(tp)
                if read is None or offset >= read:
                    self.queue.append(offset)  # the conductor puts it in the agent's queue
                    await asyncio.sleep(0)
                    self.read_offset[tp] = offset


class Log:
    def info(self, *args, **kwargs) -> None:
        pass

    warning = dev = info


async def _noop(*args, **kwargs) -> None:
    return None


def recovery_host(consumer: ModelConsumer) -> SimpleNamespace:
    """The attributes of faust's Recovery that on_recovery_completed uses."""
    app = SimpleNamespace(
        consumer=consumer, consumer_generation_id=GENERATION, rebalancing_count=3,
        conf=SimpleNamespace(broker_request_timeout=30.0),
        flow_control=SimpleNamespace(resume=consumer.queue.clear),  # resume() clears the stream queues
        on_rebalance_complete=SimpleNamespace(send=_noop), _fetcher=SimpleNamespace(maybe_start=_noop),
        assignor=SimpleNamespace(assigned_standbys=set), on_rebalance_end=lambda: None)

    async def wait(coro, timeout=None):
        await asyncio.wait_for(coro, timeout)

    return SimpleNamespace(
        app=app, log=Log(), tables=SimpleNamespace(values=list, on_actives_ready=lambda: None,
                                                   on_standbys_ready=lambda: None),
        actives_for_table={}, standbys_for_table={}, completed=asyncio.Event(), _wait=wait,
        _set_recovery_ended=lambda: None, _is_changelog_tp=lambda tp: tp == CHANGELOG)


async def run_recovery_end(method, fetch_hops: int, seek_hops: int, start_hops: int) -> ModelConsumer:
    consumer = ModelConsumer(fetch_hops, seek_hops)
    host = recovery_host(consumer)
    fetcher = asyncio.create_task(consumer.fetch_loop())
    await consumer.hops(start_hops)
    consumer.pause_partitions({CHANGELOG})  # "Done reading from changelog topics"
    try:
        await method(host, GENERATION)
        for _ in range(2000):
            if consumer.queue and consumer.queue[-1] == END - 1:
                break
            await asyncio.sleep(0)
    finally:
        fetcher.cancel()
    return consumer


LATENCIES = list(itertools.product(range(4), range(1, 4), range(3)))


@pytest.mark.parametrize(("fetch_hops", "seek_hops", "start_hops"), LATENCIES)
def test_every_record_from_the_committed_offset_reaches_the_agent_once_in_order(fetch_hops, seek_hops, start_hops):
    consumer = asyncio.run(run_recovery_end(recovery_order.on_recovery_completed, fetch_hops, seek_hops,
                                            start_hops))
    assert consumer.queue == list(range(COMMITTED, END))


def test_the_model_loses_records_with_faust_own_order():
    """The same model with faust's own method: records are lost for some latencies (the bug)."""
    lost = 0
    for fetch_hops, seek_hops, start_hops in LATENCIES:
        consumer = asyncio.run(run_recovery_end(recovery_order._ORIGINAL, fetch_hops, seek_hops, start_hops))
        lost += bool(set(range(COMMITTED, END)) - set(consumer.queue))
    assert lost > 0


def test_nothing_is_resumed_when_a_rebalance_starts_during_the_seek():
    async def scenario() -> tuple[ModelConsumer, SimpleNamespace]:
        consumer = ModelConsumer(fetch_hops=1, seek_hops=2)
        host = recovery_host(consumer)

        def rebalance() -> None:  # on_partitions_revoked of the next rebalance
            host.app.rebalancing_count += 1
            consumer.stop_flow()
            consumer.pause_partitions(consumer.assignment())

        consumer.on_seek = rebalance
        fetcher = asyncio.create_task(consumer.fetch_loop())
        consumer.pause_partitions({CHANGELOG})
        try:
            await recovery_order.on_recovery_completed(host, GENERATION)
            await consumer.hops(50)
        finally:
            fetcher.cancel()
        return consumer, host

    consumer, host = asyncio.run(scenario())
    assert consumer.queue == [] and not consumer.flow_active and not host.completed.is_set()


def test_install_replaces_faust_method_and_uninstall_restores_it():
    was_installed = recovery_order.installed()
    try:
        recovery_order.install()
        assert Recovery.on_recovery_completed is recovery_order.on_recovery_completed
        recovery_order.uninstall()
        assert Recovery.on_recovery_completed is recovery_order._ORIGINAL
    finally:
        if was_installed:
            recovery_order.install()
