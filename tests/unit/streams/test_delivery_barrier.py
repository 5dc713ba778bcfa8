"""The commit barrier waits for example deliveries, then for the tombstones their callbacks write."""

from __future__ import annotations

import asyncio

import pytest

from streams.delivery import PendingDeliveries


def test_settle_waits_for_examples_then_for_the_changelog_writes_their_callbacks_make():
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        deliveries = PendingDeliveries(timeout_s=5)
        order: list[str] = []
        example = loop.create_future()
        tombstone = loop.create_future()

        def delivered(_future: asyncio.Future) -> None:
            order.append("example delivered")
            deliveries.track_changelog(tombstone)  # as Joiner._delivered writes the tombstone
            loop.call_later(0.05, lambda: (order.append("tombstone acked"), tombstone.set_result(None)))

        example.add_done_callback(delivered)
        deliveries.track_example(example)
        loop.call_later(0.05, example.set_result, None)
        await deliveries.settle()
        order.append("commit")
        return order

    assert asyncio.run(scenario()) == ["example delivered", "tombstone acked", "commit"]


def test_settle_counts_a_failed_delivery_as_settled_and_forgets_done_futures():
    async def scenario() -> PendingDeliveries:
        loop = asyncio.get_running_loop()
        deliveries = PendingDeliveries(timeout_s=5)
        failed = loop.create_future()
        deliveries.track_example(failed)
        loop.call_later(0.01, failed.set_exception, RuntimeError("broker down"))
        await deliveries.settle()
        failed.exception()  # retrieved, as the join's callback does
        return deliveries

    deliveries = asyncio.run(scenario())
    assert not deliveries.examples and not deliveries.changelog


def test_settle_refuses_to_let_a_commit_through_while_a_write_is_unacked():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deliveries = PendingDeliveries(timeout_s=0.1)
        deliveries.track_changelog(loop.create_future())  # never acked
        await deliveries.settle()

    with pytest.raises(TimeoutError, match="not committing"):
        asyncio.run(scenario())


def test_settle_refuses_every_later_commit_once_a_changelog_write_failed():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deliveries = PendingDeliveries(timeout_s=1.0)
        lost = loop.create_future()
        deliveries.track_changelog(lost)
        lost.set_exception(RuntimeError("broker down"))
        await asyncio.sleep(0)  # the write's callbacks run (it leaves the pending set)
        for _ in range(2):
            with pytest.raises(RuntimeError, match="changelog write failed"):
                await deliveries.settle()

    asyncio.run(scenario())


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_changelog_write_already_lost_when_tracked_refuses_the_commit(outcome):
    """A flush tracks its batch futures only after it sent every partition's batch: one may have
    failed (or been cancelled) by then, and its loss must still stop the commit."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deliveries = PendingDeliveries(timeout_s=1.0)
        lost = loop.create_future()
        if outcome == "failed":
            lost.set_exception(RuntimeError("broker down"))
        else:
            lost.cancel()
        deliveries.track_changelog(lost)
        with pytest.raises(RuntimeError, match="changelog write failed"):
            await deliveries.settle()

    asyncio.run(scenario())


def test_a_changelog_write_acked_before_it_was_tracked_lets_the_commit_through():
    async def scenario() -> PendingDeliveries:
        loop = asyncio.get_running_loop()
        deliveries = PendingDeliveries(timeout_s=1.0)
        acked = loop.create_future()
        acked.set_result(None)
        deliveries.track_changelog(acked)
        await deliveries.settle()
        return deliveries

    deliveries = asyncio.run(scenario())
    assert deliveries.changelog_error is None and not deliveries.changelog
