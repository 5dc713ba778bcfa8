"""streams.fetch_backoff on the real broker: an idle consumer stops hammering it, records still arrive."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher

from streams import fetch_backoff
from streams.replay import make_producer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def fetches_while_idle_then_records(bootstrap: str, topic: str, idle_s: float, produce: int) -> tuple[int, int]:
    """Fetch requests sent during ``idle_s`` on an empty topic, then records read after producing ``produce``."""
    sent = {"n": 0}
    wrapped = Fetcher._proc_fetch_request  # noqa: SLF001 - the (possibly patched) task, counted from outside

    async def counting(self, assignment, node_id, request):  # noqa: ANN001, ANN202
        sent["n"] += 1
        return await wrapped(self, assignment, node_id, request)

    Fetcher._proc_fetch_request = counting  # noqa: SLF001
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=1500)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await consumer.getmany(timeout_ms=200)
        sent["n"] = 0
        deadline = time.monotonic() + idle_s
        while time.monotonic() < deadline:
            assert not await consumer.getmany(timeout_ms=100)
        idle_fetches = sent["n"]
        producer = make_producer(bootstrap)
        for i in range(produce):
            producer.send(topic, key=f"k{i}".encode(), value=b"v")
        producer.flush()
        producer.close()
        got, deadline = 0, time.monotonic() + 20
        while got < produce and time.monotonic() < deadline:
            got += sum(len(v) for v in (await consumer.getmany(timeout_ms=500)).values())
        return idle_fetches, got
    finally:
        await consumer.stop()
        Fetcher._proc_fetch_request = wrapped  # noqa: SLF001


def test_empty_fetches_back_off_and_new_records_still_arrive(settings):
    fetch_backoff.install(0.1)
    try:
        assert fetch_backoff.installed_backoff_s() == 0.1
        idle, got = asyncio.run(fetches_while_idle_then_records(settings.kafka_bootstrap, settings.topics.feedback,
                                                                idle_s=2.0, produce=500))
    finally:
        fetch_backoff.uninstall()
    assert fetch_backoff.installed_backoff_s() == 0.0
    # one broker: at most one fetch per 0.1 s backoff (+ slack); noida without it answers ~1,700/s
    assert 0 < idle <= 40, idle
    assert got == 500


def test_backoff_must_not_be_negative():
    with pytest.raises(ValueError, match=">= 0"):
        fetch_backoff.install(-1)
