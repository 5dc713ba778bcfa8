"""kill -9 of Redis while snapshots are being published: after the restart the pointer names a
complete, verified version (the last acknowledged one or the one in flight), never a partial one.

Uses its own redis-server with AOF (``appendfsync always``): the durability the snapshot store
needs in production (the shared test Redis runs without persistence).
"""

from __future__ import annotations

import random
import shutil
import threading

import pytest
import redis
import torch
from durable_redis import DurableRedis
from support import fresh_topics

from contracts.learner import LearnerState
from feature_store.snapshots import SnapshotRegistry

pytestmark = pytest.mark.faults


def big_state(seed: int) -> LearnerState:
    g = torch.Generator().manual_seed(seed)
    return LearnerState(tensors={"w": torch.randn(700, 700, generator=g), "b": torch.randn(700, generator=g)},
                        meta={"offsets": {"examples": {"0": seed}}})


def test_redis_kill9_during_publishing_leaves_a_whole_version_current(tmp_path, embedded_stack):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is required (apt-get install -y redis-server)")
    settings = fresh_topics(embedded_stack)
    server = DurableRedis(tmp_path)
    server.start()
    rng = random.Random(6)
    acked: list[str] = []
    seed = 0
    try:
        for _round in range(4):
            client = redis.Redis.from_url(server.url, socket_timeout=5)
            registry = SnapshotRegistry(client, settings, keep=4, announce_kafka=False)
            before = registry.current_version("ldro")
            assert before == (acked[-1] if acked else None)
            killer = threading.Timer(rng.uniform(0.15, 0.6), server.kill9)
            killer.start()
            in_flight = None
            try:
                while True:
                    seed += 1
                    in_flight = str(int(client.get(registry._key("ldro", "seq")) or 0) + 1)
                    manifest = registry.publish("ldro", big_state(seed))
                    acked.append(manifest.version)
                    in_flight = None
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # Redis died under us, somewhere inside publish
            killer.join()
            client.close()

            server.start()  # same port, same AOF directory
            reader = SnapshotRegistry(server.url, settings, announce_kafka=False)
            current = reader.current_version("ldro")
            assert current in {acked[-1] if acked else None, in_flight}, (current, acked[-3:], in_flight)
            if current is not None:
                check = reader.verify("ldro", current)
                assert check.ok, check.reason
                manifest, state = reader.load("ldro", current)
                expected = big_state(int(manifest.meta["offsets"]["examples"]["0"]))
                assert torch.equal(state.tensors["w"], expected.tensors["w"])
                if current == in_flight:
                    acked.append(current)  # the pointer moved before the client heard back
            reader.redis.close()
        assert len(acked) >= 2, "the kills came too early to exercise publishing"
        # Publishing goes on after the restarts with fresh, increasing versions.
        registry = SnapshotRegistry(server.url, settings, keep=4, announce_kafka=False)
        after = registry.publish("ldro", big_state(999))
        assert int(after.version) > int(acked[-1]) and after.parent == acked[-1]
        assert registry.verify("ldro").ok
        registry.redis.close()
    finally:
        server.stop()
