"""streams.drain_fastpath.deliver behaves like faust's ``wait_first(callback(message), suspend_flow.wait())``."""

from __future__ import annotations

import asyncio
import inspect
import textwrap

import pytest
from faust.transport import consumer as faust_consumer
from mode import Service

from streams import drain_fastpath
from streams.drain_fastpath import deliver


class FakeConsumer(Service):
    """What deliver uses of faust's Consumer: mode's wait_first and the suspend_flow event."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


def run(coro):
    return asyncio.run(coro)


def test_a_callback_that_never_waits_runs_without_tasks():
    async def main():
        consumer = FakeConsumer()
        seen = []

        async def callback(message):
            seen.append(message)
            return "ignored"

        before = len(asyncio.all_tasks())
        created = []
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro, **kw: created.append(coro) or asyncio.Task(coro, loop=lp, **kw))
        for n in range(5):
            await deliver(consumer, callback, n)
        loop.set_task_factory(None)
        assert seen == [0, 1, 2, 3, 4] and created == [] and len(asyncio.all_tasks()) == before

    run(main())


def test_a_callback_that_waits_finishes_with_its_result_order_kept():
    async def main():
        consumer = FakeConsumer()
        seen = []

        async def callback(message):
            seen.append(("start", message))
            await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            seen.append(("end", message))

        await deliver(consumer, callback, 1)
        await deliver(consumer, callback, 2)
        assert seen == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]

    run(main())


def test_a_blocked_callback_is_abandoned_when_the_flow_is_suspended():
    async def main():
        consumer = FakeConsumer()
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        await queue.put("full")
        cancelled = []

        async def callback(message):
            try:
                await queue.put(message)  # blocks: the stream buffer is full
            except asyncio.CancelledError:
                cancelled.append(message)
                raise

        async def rebalance():
            await asyncio.sleep(0.05)
            consumer.suspend_flow.set()

        task = asyncio.ensure_future(rebalance())
        await asyncio.wait_for(deliver(consumer, callback, "m"), timeout=5)
        await task
        await asyncio.sleep(0)
        assert cancelled == ["m"] and queue.qsize() == 1

    run(main())


def test_errors_of_the_callback_propagate_before_and_after_a_wait():
    async def main():
        consumer = FakeConsumer()

        async def at_once(message):
            raise ValueError("bad at once")

        async def later(message):
            await asyncio.sleep(0.01)
            raise KeyError("bad later")

        with pytest.raises(ValueError, match="bad at once"):
            await deliver(consumer, at_once, 1)
        with pytest.raises(KeyError, match="bad later"):
            await deliver(consumer, later, 1)

    run(main())


def test_a_callback_that_catches_the_cancellation_can_still_finish():
    async def main():
        consumer = FakeConsumer()
        steps = []

        async def callback(message):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                steps.append("cancelled")
                raise
            finally:
                steps.append("cleanup")

        async def rebalance():
            await asyncio.sleep(0.02)
            consumer.suspend_flow.set()

        task = asyncio.ensure_future(rebalance())
        await deliver(consumer, callback, 1)
        await task
        await asyncio.sleep(0)
        assert steps == ["cancelled", "cleanup"]

    run(main())


def test_the_drain_loop_is_faust_s_own_but_for_the_delivery_statement():
    original = textwrap.dedent(inspect.getsource(drain_fastpath._ORIGINAL)).splitlines()  # noqa: SLF001
    ours = inspect.getsource(drain_fastpath.drain_messages).splitlines()
    body = [line for line in original[5:] if "wait_first(" not in line and "callback(message), self.suspend" not in line]
    ours_body = [line.replace("faust_consumer.CONSUMER_FETCHING", "CONSUMER_FETCHING") for line in ours[2:]]
    missing = [line for line in body if line not in ours_body and line.strip() != ")"]
    added = [line for line in ours_body if line not in body]
    assert missing == []
    assert [line.strip() for line in added] == ["await deliver(self, callback, message)  # faust: await self.wait_first(...)"]
    assert drain_fastpath.install() and faust_consumer.Consumer._drain_messages is drain_fastpath.drain_messages  # noqa: SLF001
    drain_fastpath.uninstall()
    assert not drain_fastpath.installed()
