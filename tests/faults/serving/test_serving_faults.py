"""Serving under faults: the broker killed mid-traffic; corrupt and NaN snapshots published mid-load."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace

import pytest
from serving_kit import body, scorer, serve_config, served, served_version, wait_for, write_raw_snapshot
from support import fresh_topics

from common import stack
from feature_store.snapshots import SnapshotRegistry

pytestmark = pytest.mark.faults


@pytest.fixture
def own_broker(embedded_stack, tmp_path):
    """A broker of our own (never the session's shared one): this test kills it."""
    port = stack.free_port()
    pid = stack.launch(stack.broker_spec(embedded_stack.broker, tmp_path, port), tmp_path)
    address = f"{stack.LOOPBACK}:{port}"
    try:
        stack.wait_until(lambda: stack.kafka_ready(address), 60, "test broker", pid)
        yield pid, replace(embedded_stack, kafka=address)
    finally:
        stack.stop_pid(pid, grace=2)


def test_killing_kafka_during_serving_fails_no_response_and_counts_the_drops(own_broker):
    pid, base = own_broker
    settings = fresh_topics(base)
    registry = SnapshotRegistry(settings.redis_url, settings, announce_kafka=False)
    registry.publish("linear-pl", scorer().state_dict())
    with served(settings, serve_config(emit_queue=5)) as (client, runtime):
        for i in range(20):  # paced so that the small buffer (5) never overflows while Kafka is up
            assert client.post("/rerank", json=body(f"a{i}")).status_code == 200
            assert wait_for(lambda: runtime.emitter.queued == 0, timeout=20)
        assert wait_for(lambda: runtime.emitter.stats.acked == 20, timeout=20)
        assert runtime.emitter.stats.dropped == 0

        os.killpg(pid, signal.SIGKILL)  # the broker dies without a goodbye
        assert wait_for(lambda: not stack.pid_alive(pid), timeout=10)
        after = [client.post("/rerank", json=body(f"b{i}")) for i in range(150)]
        assert [r.status_code for r in after] == [200] * 150
        assert all(r.json()["model_versions"] == {"linear-pl": "1"} for r in after)

        # Every impression after the kill is accounted for: dropped at the full buffer, or failed
        # after the producer's delivery timeout; none is reported as delivered.
        stats = runtime.emitter.stats
        assert wait_for(lambda: stats.failed + stats.dropped == 150, timeout=60), stats.as_dict()
        assert stats.acked == 20 and stats.offered == 170
        metrics = {line.split()[0]: float(line.split()[-1]) for line in client.get("/metrics").text.splitlines()
                   if line.startswith("streamrank_impressions_")}
        assert metrics["streamrank_impressions_dropped"] + metrics["streamrank_impressions_failed"] == 150
        assert metrics["streamrank_impressions_acked"] == 20
        # Snapshots still arrive through Redis while Kafka is gone.
        registry.publish("linear-pl", scorer([-1.0, 0, 0, 0]).state_dict())
        assert wait_for(lambda: served_version(client) == "2")
        assert client.post("/rerank", json=body("c")).json()["items"][0]["item_id"] == "i0"
    registry.close()


def test_corrupt_and_nan_snapshots_published_mid_load_never_serve(settings):
    registry = SnapshotRegistry(settings.redis_url, settings)
    registry.publish("linear-pl", scorer().state_dict())
    failures: list[str] = []
    seen_versions: set[str] = set()
    stop = threading.Event()

    with served(settings) as (client, _):
        def load(worker: int) -> None:
            i = 0
            while not stop.is_set():
                response = client.post("/rerank", json=body(f"w{worker}-{i}"))
                i += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                seen_versions.update(response.json()["model_versions"].values())

        threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        bad: set[str] = set()
        good_versions: list[str] = []
        try:
            for round_ in range(3):
                good = registry.publish("linear-pl", scorer([1.0 + round_, 0, 0, 0]).state_dict()).version
                assert wait_for(lambda: served_version(client) == good)
                good_versions.append(good)
                # One bad snapshot at a time: the watcher checks the *current* version, so a second
                # pointer move before its check would skip the first bad one (never decided at all).
                corrupt = scorer().state_dict()
                nan = scorer().state_dict()
                nan.tensors["task_weight"][0] = float("nan")
                for state, flip in ((corrupt, True), (nan, False)):
                    bad.add(write_raw_snapshot(registry, "linear-pl", state.tensors, state.meta, flip_byte=flip))
                    assert wait_for(lambda: bad <= {d["version"] for d in client.get("/models").json()["decisions"]})
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        decisions = client.get("/models").json()["decisions"]
    registry.close()
    assert failures == []
    assert not (seen_versions & bad), f"a bad snapshot served: {seen_versions & bad}"
    assert {d["version"]: d["action"] for d in decisions if d["version"] in bad} == {v: "refused" for v in bad}
    assert set(good_versions) <= seen_versions  # the good ones in between did serve
