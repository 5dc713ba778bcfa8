"""Broker conformance: what streamrank needs from a Kafka-protocol broker, over TCP.

Each test is one capability; ``docs/brokers.md`` records which embedded broker passes which.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import MemberState

from common import stack

pytestmark = pytest.mark.broker
HERE = Path(__file__).parent


def new_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"conf-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return name


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], **config) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, **config)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def drain(consumer: KafkaConsumer, expected: int, timeout: float = 30.0) -> list:
    records, deadline = [], time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
    return records


def group_consumer(bootstrap: str, topic: str, group: str, **config) -> KafkaConsumer:
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                         enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000, **config)


def test_produce_consume_roundtrip(bootstrap):
    topic = new_topic(bootstrap)
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
    produce(bootstrap, topic, sent)
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    got = drain(consumer, len(sent))
    consumer.close()
    assert [(r.key, r.value) for r in got] == sent


def test_topic_created_with_n_partitions(bootstrap):
    topic = new_topic(bootstrap, partitions=6)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + 10
    partitions = None
    while not partitions and time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        time.sleep(0.1)
    consumer.close()
    assert partitions == set(range(6))


def test_consumer_group_commit_and_resume(bootstrap):
    topic = new_topic(bootstrap)
    produce(bootstrap, topic, [(b"k", str(i).encode()) for i in range(100)])
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = group_consumer(bootstrap, topic, group, max_poll_records=40)
    got = drain(first, 40)[:40]
    first.commit({TopicPartition(topic, 0): OffsetAndMetadata(40, "", -1)})
    first.close()
    second = group_consumer(bootstrap, topic, group)
    rest = drain(second, 60)
    second.close()
    assert [r.value for r in got] == [str(i).encode() for i in range(40)]
    assert [r.value for r in rest] == [str(i).encode() for i in range(40, 100)]


def test_end_offsets_after_multi_record_batch(bootstrap):
    topic = new_topic(bootstrap)
    produce(bootstrap, topic, [(None, b"x" * 100) for _ in range(50)])  # one batch of 50 records
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tp = TopicPartition(topic, 0)
    end = consumer.end_offsets([tp])[tp]
    consumer.close()
    assert end == 50


def test_idempotent_producer_kafka_python(bootstrap):
    topic = new_topic(bootstrap)
    sent = [(None, str(i).encode()) for i in range(300)]
    produce(bootstrap, topic, sent, enable_idempotence=True, acks="all")
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    got = drain(consumer, 300)
    consumer.close()
    assert [r.value for r in got] == [v for _, v in sent]


def test_idempotent_producer_aiokafka(bootstrap):
    """Faust produces through aiokafka: its idempotent producer must work for exactly-once options."""
    from aiokafka import AIOKafkaProducer

    topic = new_topic(bootstrap)

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=10000)
        await producer.start()
        try:
            for i in range(100):
                await producer.send(topic, str(i).encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(run(), 60))
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    got = drain(consumer, 100)
    consumer.close()
    assert [r.value for r in got] == [str(i).encode() for i in range(100)]


class GroupMember(threading.Thread):
    """One consumer-group member polled without pause on a thread of its own, as a separate
    process would be, and closed (LeaveGroup) on that thread when stopped.

    Why a thread each: kafka-python 3.0.12 runs JoinGroup -> SyncGroup as a background task and
    applies its result only inside a ``poll()`` that is waiting for it; a task that completes
    between two polls is thrown away and the next poll sends a fresh JoinGroup
    (``BaseCoordinator.join_group_async``: ``if self._join_task is None or
    self._join_task.is_done``). Polling two members in turn from one thread makes that the rule:
    the follower's join completes while the leader's poll runs, the follower rejoins, noida starts
    a new generation for it, and so on (docs/brokers.md).
    """

    def __init__(self, name: str, bootstrap: str, topic: str, group: str):
        super().__init__(daemon=True, name=f"{group}-{name}")
        self.consumer = group_consumer(bootstrap, topic, group)
        self.view = (-1, MemberState.UNJOINED, frozenset())  # generation, state, partitions
        self.error: BaseException | None = None
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self.consumer.poll(timeout_ms=500)  # long enough to await a whole join and sync
                meta = self.consumer.group_metadata()
                self.view = (meta.generation_id, meta.state,
                             frozenset(tp.partition for tp in self.consumer.assignment()))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread in settled()
            self.error = exc
        finally:
            self.consumer.close()

    def stop(self) -> None:
        if self.is_alive():
            self._stopping.set()
            self.join(timeout=30)
            assert not self.is_alive(), f"{self.name} did not close"
        elif self.ident is None:  # never started
            self.consumer.close()


def settled(members: list[GroupMember], after_generation: int, timeout: float = 90.0) -> list[tuple]:
    """Each member's (generation, state, partitions) once all are stable in one generation newer
    than ``after_generation``; their assignments then come from the same SyncGroup round."""
    deadline = time.monotonic() + timeout
    while True:
        for member in members:
            if member.error is not None:
                raise member.error
        views = [member.view for member in members]
        generations = {generation for generation, _, _ in views}
        if (len(generations) == 1 and min(generations) > after_generation
                and all(state == MemberState.STABLE for _, state, _ in views)):
            return views
        assert time.monotonic() < deadline, f"group did not settle in {timeout} s: {views}"
        time.sleep(0.05)


def test_two_member_rebalance_splits_and_reassigns_partitions(fresh_bootstrap):
    bootstrap = fresh_bootstrap
    topic = new_topic(bootstrap, partitions=4)
    group = f"g-{uuid.uuid4().hex[:6]}"
    members: list[GroupMember] = []
    try:
        members.append(a := GroupMember("a", bootstrap, topic, group))
        a.start()
        [(alone, _, pa)] = settled([a], after_generation=-1)
        assert pa == {0, 1, 2, 3}
        members.append(b := GroupMember("b", bootstrap, topic, group))
        b.start()
        (split, _, pa), (_, _, pb) = settled([a, b], after_generation=alone)
        assert pa and pb and not (pa & pb) and pa | pb == {0, 1, 2, 3}
        b.stop()  # closes the consumer: LeaveGroup
        [(_, _, pa)] = settled([a], after_generation=split)
        assert pa == {0, 1, 2, 3}
    finally:
        for member in reversed(members):
            member.stop()


def _faust_worker(bootstrap: str, app_id: str, in_topic: str, report_topic: str, state_dir: Path):
    env = dict(os.environ, BROKER=bootstrap, APP_ID=app_id, IN_TOPIC=in_topic, REPORT_TOPIC=report_topic,
               WEB_PORT=str(stack.free_port()), STATE_DIR=str(state_dir), PYTHONUNBUFFERED="1")
    log = open(state_dir / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, str(HERE / "faust_counter_app.py"), "worker", "-l", "warn"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=state_dir)


def _report(bootstrap: str, in_topic: str, report_topic: str, want: dict[str, int], timeout: float) -> dict:
    """Ask the app for its table until it equals ``want`` or time runs out; returns the last report."""
    consumer = KafkaConsumer(report_topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None)
    consumer.poll(timeout_ms=500)
    last: dict = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        produce(bootstrap, in_topic, [(b"report", b"report")])
        for batch in consumer.poll(timeout_ms=1500).values():
            for record in batch:
                last = json.loads(record.value)
        if last == want:
            break
    consumer.close()
    return last


def test_faust_table_survives_worker_restart_with_exact_counts(bootstrap, tmp_path):
    in_topic = new_topic(bootstrap, partitions=2)
    report_topic = new_topic(bootstrap, partitions=1)
    app_id = f"conf-faust-{uuid.uuid4().hex[:6]}"
    keys = [f"key{i}" for i in range(10)]
    first_batch = {k: 30 + i for i, k in enumerate(keys)}
    second_batch = {k: 5 for k in keys}
    worker = _faust_worker(bootstrap, app_id, in_topic, report_topic, tmp_path)
    try:
        produce(bootstrap, in_topic, [(k.encode(), b"x") for k, n in first_batch.items() for _ in range(n)])
        assert _report(bootstrap, in_topic, report_topic, first_batch, timeout=90) == first_batch
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    worker = _faust_worker(bootstrap, app_id, in_topic, report_topic, tmp_path)  # recovers from the changelog
    try:
        produce(bootstrap, in_topic, [(k.encode(), b"x") for k, n in second_batch.items() for _ in range(n)])
        want = {k: first_batch[k] + second_batch[k] for k in keys}
        assert _report(bootstrap, in_topic, report_topic, want, timeout=90) == want
    finally:
        worker.terminate()
        worker.wait(timeout=30)
