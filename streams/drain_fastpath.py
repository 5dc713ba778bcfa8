"""Faust's fetch-to-stream loop without four asyncio tasks per record when nothing has to wait.

Why: faust-streaming 0.15.3's ``Consumer._drain_messages`` hands every fetched record to the
streams with ::

    await self.wait_first(callback(message), self.suspend_flow.wait())

``Service.wait_first`` wraps the callback, ``suspend_flow.wait()``, ``stopped.wait()`` and
``crashed.wait()`` in four tasks, runs ``asyncio.wait`` over them and cancels the losers: about
15% of the streams worker's busy samples in py-spy (bench/join_bench.py, BENCHMARKS.md
"Streams join"), although the callback (the conductor putting the event into the agent's
stream queue) almost never has to wait: only when that queue is full or flow control paused
it (a rebalance).

:func:`deliver` runs the callback coroutine up to its first suspension point. If it finishes
there, that is the whole delivery: with ``wait_first`` its task would also have finished in
its first step, before any waiter could win, so the outcome is the same (and no event-loop
turn passes between the put and ``set_read_offset``, which can only narrow the windows
:mod:`streams.recovery_order` is about). If it suspends, the rest of the same coroutine runs
under the original ``wait_first`` with ``suspend_flow.wait()``, so a record whose callback is
blocked when the flow is suspended (a rebalance) is abandoned exactly as before.
Exceptions from the callback propagate as ``wait_first`` propagates them.

:func:`install` replaces ``Consumer._drain_messages`` with :func:`drain_messages`, a copy of
0.15.3's method in which only that one statement differs; it refuses other faust versions.
``tests/unit/streams/test_drain_fastpath.py`` checks the helper; the kill -9 and
hostile-input fault tests are the end-to-end check.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any, AsyncIterator, Awaitable, Callable, cast

import faust
from faust.transport import consumer as faust_consumer
from mode import Service, ServiceT

FAUST_VERSION = "0.15.3"
_ORIGINAL = faust_consumer.Consumer._drain_messages  # noqa: SLF001


@types.coroutine
def _rest(coro: Any, yielded: Any) -> Any:
    """Finish ``coro``, already run up to a suspension point that yielded ``yielded``.

    Yields that value to the driving task (as ``await coro`` would have), passes a cancellation
    or another exception thrown at it into ``coro``, and then delegates the rest of ``coro``.
    """
    try:
        yield yielded
    except GeneratorExit:
        coro.close()
        raise
    except BaseException as exc:  # noqa: BLE001 - cancellation: hand it to the coroutine, as a task would
        try:
            yielded = coro.throw(exc)
        except StopIteration as stop:
            return stop.value
        return (yield from _rest(coro, yielded))
    return (yield from coro)


async def _finish(coro: Any, yielded: Any) -> Any:
    return await _rest(coro, yielded)


async def deliver(consumer: Any, callback: Callable[[Any], Awaitable[Any]], message: Any) -> None:
    """``await consumer.wait_first(callback(message), consumer.suspend_flow.wait())``, with no tasks
    when the callback completes without suspending."""
    coro = callback(message)
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    await consumer.wait_first(_finish(coro, yielded), consumer.suspend_flow.wait())


async def drain_messages(self: Any, fetcher: ServiceT) -> None:  # pragma: no cover
    """faust 0.15.3 ``Consumer._drain_messages``; only the delivery statement differs (:func:`deliver`)."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        await deliver(self, callback, message)  # faust: await self.wait_first(...)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def install() -> bool:
    """Use :func:`drain_messages` in every Faust consumer of this process (only on faust 0.15.3)."""
    if faust.__version__ != FAUST_VERSION:
        return False
    faust_consumer.Consumer._drain_messages = drain_messages  # noqa: SLF001
    return True


def uninstall() -> None:
    faust_consumer.Consumer._drain_messages = _ORIGINAL  # noqa: SLF001


def installed() -> bool:
    return faust_consumer.Consumer._drain_messages is drain_messages  # noqa: SLF001
