"""serving.topic_tail on the real broker: an idle tail stops hammering it, records still arrive,
and the old spinning loop (a long poll, no pause) is what the pause prevents."""

from __future__ import annotations

import os
import threading
import time

import pytest
from kafka.consumer.fetcher import Fetcher

from serving.topic_tail import TopicTail
from streams.replay import make_producer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class FetchCounter:
    """Counts kafka-python fetch requests (``_create_fetch_requests`` builds one batch per node per call)."""

    def __init__(self, monkeypatch) -> None:
        self.n = 0
        original = Fetcher._create_fetch_requests  # noqa: SLF001

        def counting(fetcher):  # noqa: ANN001, ANN202
            requests = original(fetcher)
            self.n += len(requests)
            return requests

        monkeypatch.setattr(Fetcher, "_create_fetch_requests", counting)


def idle_fetches(settings, counter: FetchCounter, seconds: float, **tail_options) -> tuple[int, TopicTail, list]:
    got: list = []
    lock = threading.Lock()

    def handle(records):
        with lock:
            got.extend(records)

    tail = TopicTail(settings.kafka_bootstrap, settings.topics.model_updates, handle, name="test-tail",
                     **tail_options).start()
    deadline = time.monotonic() + 20
    while tail.polls == 0 and time.monotonic() < deadline:  # connected and assigned
        time.sleep(0.05)
    time.sleep(0.3)
    start = counter.n
    time.sleep(seconds)
    return counter.n - start, tail, got


def test_idle_tail_pauses_and_records_still_arrive(settings, monkeypatch):
    counter = FetchCounter(monkeypatch)
    idle, tail, got = idle_fetches(settings, counter, 2.0)
    try:
        # ~one fetch per 0.2 s pause (+ slack); the old loop sent hundreds (next test)
        print(f"fetches in 2 s with the pause: {idle}")
        assert 0 < idle <= 30, idle
        producer = make_producer(settings.kafka_bootstrap)
        for i in range(300):
            producer.send(settings.topics.model_updates, key=f"m{i % 3}".encode(), value=b"{}")
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 20
        while len(got) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(r.offset for r in got if r.partition == got[0].partition) == \
            list(range(sum(1 for r in got if r.partition == got[0].partition)))
        assert len(got) == 300
    finally:
        tail.close()
    assert not tail.is_alive()


def test_a_long_poll_without_pause_spins_on_the_embedded_broker(settings, monkeypatch):
    """What the pause is for: noida answers an empty fetch at once, so ``poll(timeout_ms=300)``
    loops fetch requests for the whole 300 ms (the watcher's old model-updates listener)."""
    counter = FetchCounter(monkeypatch)
    idle, tail, _ = idle_fetches(settings, counter, 2.0, poll_ms=300, idle_s=0.0)
    tail.close()
    if settings.broker != "noida" or os.environ.get("STREAMRANK_KAFKA"):  # a broker honouring fetch.max.wait.ms holds it
        pytest.skip(f"spinning is noida's behaviour; broker is {settings.broker}")
    print(f"fetches in 2 s without the pause: {idle}")
    assert idle > 100, idle


def test_negative_timings_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        TopicTail("127.0.0.1:1", "t", lambda records: None, name="x", idle_s=-1)
