"""The snapshot registry against the real Redis (and the real broker for announcements)."""

from __future__ import annotations

import json
import time

import pytest
import redis
import torch

from contracts.learner import LearnerState
from feature_store.snapshots import (
    Manifest,
    SnapshotCorrupt,
    SnapshotInvalid,
    SnapshotNotFound,
    SnapshotRegistry,
    iter_announcements,
)
from streams.consume import read_topic

pytestmark = pytest.mark.integration


def make_state(seed: int, offset: int = 0, size: int = 64) -> LearnerState:
    g = torch.Generator().manual_seed(seed)
    return LearnerState(tensors={"encoder.weight": torch.randn(size, size, generator=g),
                                 "encoder.bias": torch.randn(size, generator=g, dtype=torch.float64),
                                 "steps": torch.tensor([seed], dtype=torch.int64)},
                        meta={"offsets": {"examples": {"0": offset, "1": offset + 1}}, "seed": seed})


@pytest.fixture
def registry(settings, redis_client):
    reg = SnapshotRegistry(redis_client, settings, keep=3)
    yield reg
    reg.close()


def test_publish_then_load_gives_bitwise_identical_weights_and_a_complete_manifest(registry, settings):
    state = make_state(1, offset=40)
    manifest = registry.publish("ldro", state, metrics={"loss": 0.25})
    assert (manifest.name, manifest.version, manifest.parent) == ("ldro", "1", None)
    assert manifest.offsets == {"examples": {"0": 40, "1": 41}}
    assert manifest.metrics == {"loss": 0.25} and manifest.meta["seed"] == 1
    assert manifest.tensors["encoder.weight"] == {"dtype": "float32", "shape": [64, 64]}

    reader = SnapshotRegistry(settings.redis_url, settings, announce_kafka=False)  # another process's view
    loaded_manifest, loaded = reader.load("ldro")
    assert loaded_manifest == manifest == reader.current("ldro")
    for name, tensor in state.tensors.items():
        assert loaded.tensors[name].dtype == tensor.dtype
        assert loaded.tensors[name].numpy().tobytes() == tensor.numpy().tobytes()
    assert loaded.meta == state.meta
    assert reader.verify("ldro", "1").ok

    second = registry.publish("ldro", make_state(2, offset=80))
    assert (second.version, second.parent) == ("2", "1")
    assert registry.current("ldro").version == "2"
    assert [m.version for m in registry.list_versions("ldro")] == ["1", "2"]


def test_nan_snapshot_is_refused_and_never_becomes_current(registry):
    registry.publish("umnn", make_state(1))
    poisoned = make_state(2)
    poisoned.tensors["encoder.weight"][3, 5] = float("nan")
    with pytest.raises(SnapshotInvalid, match="current stays 1.*non-finite"):
        registry.publish("umnn", poisoned)
    assert registry.current_version("umnn") == "1"
    check = registry.verify("umnn", "2")
    assert not check.ok and "non-finite" in check.reason
    assert "2" in registry.rejected("umnn")
    with pytest.raises(SnapshotCorrupt):
        registry.rollback("umnn", "2")
    assert registry.current_version("umnn") == "1"


def test_corrupted_blob_is_refused_by_verify_load_and_rollback(registry, redis_client):
    registry.publish("drpo", make_state(1))
    registry.publish("drpo", make_state(2))
    blob_key = registry._blob_key("drpo", "1")
    blob = bytearray(redis_client.get(blob_key))
    blob[len(blob) // 2] ^= 0x01  # one flipped bit in the weights
    redis_client.set(blob_key, bytes(blob))

    check = registry.verify("drpo", "1")
    assert not check.ok and "sha256" in check.reason
    with pytest.raises(SnapshotCorrupt, match="sha256"):
        registry.load("drpo", "1")
    with pytest.raises(SnapshotCorrupt, match="cannot roll drpo back to v1"):
        registry.rollback("drpo", "1")
    assert registry.current_version("drpo") == "2"
    assert registry.verify("drpo").ok

    redis_client.set(registry._blob_key("drpo", "2"), b"\x00" * 10)  # the current one rots in place
    with pytest.raises(SnapshotCorrupt):
        registry.load("drpo")  # a reader refuses it (serving keeps its old model)


def test_rollback_moves_the_pointer_and_is_seen_by_a_reader_and_announced(registry, settings):
    pubsub = redis.Redis.from_url(settings.redis_url).pubsub()
    pubsub.subscribe(registry.channel)
    pubsub.get_message(timeout=1)  # subscribe confirmation
    v1 = registry.publish("ldro", make_state(1))
    v2 = registry.publish("ldro", make_state(2))
    rolled = registry.rollback("ldro", "1")
    assert rolled == v1

    reader = SnapshotRegistry(settings.redis_url, settings, announce_kafka=False)
    manifest, state = reader.load("ldro")
    assert manifest.version == "1"
    assert torch.equal(state.tensors["encoder.weight"], make_state(1).tensors["encoder.weight"])

    messages = []
    deadline = time.monotonic() + 5
    while len(messages) < 3 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg:
            messages.append(msg)
    assert [json.loads(m["data"])["event"] for m in messages] == ["publish", "publish", "rollback"]
    assert [m.version for m in iter_announcements(messages)] == ["1", "2", "1"]
    pubsub.close()

    records = []
    read_topic(settings.kafka_bootstrap, settings.topics.model_updates, records.append, expected=3, idle_s=5)
    assert sorted((r.key, json.loads(r.value)["version"], json.loads(r.value)["event"]) for r in records) == [
        (b"ldro", "1", "publish"), (b"ldro", "1", "rollback"), (b"ldro", "2", "publish")]
    assert Manifest(**{k: v for k, v in json.loads(records[0].value).items() if k != "event"}).sha256 in (
        v1.sha256, v2.sha256)


def test_only_the_newest_versions_are_kept_but_never_the_current_one(registry):
    for seed in range(1, 5):
        registry.publish("umnn", make_state(seed))
    assert [m.version for m in registry.list_versions("umnn")] == ["2", "3", "4"]
    with pytest.raises(SnapshotNotFound):
        registry.load("umnn", "1")
    registry.rollback("umnn", "2")
    registry.publish("umnn", make_state(5))  # v5 current; v2 (the rolled-back one) is the oldest
    registry.publish("umnn", make_state(6))
    assert [m.version for m in registry.list_versions("umnn")] == ["4", "5", "6"]
    assert registry.current("umnn").parent == "5"


def test_models_are_isolated_and_unknown_names_give_clear_errors(registry):
    registry.publish("a", make_state(1))
    registry.publish("b", make_state(2))
    assert registry.models() == ["a", "b"]
    assert registry.current("c") is None
    with pytest.raises(SnapshotNotFound, match="no current snapshot"):
        registry.load("c")
    with pytest.raises(SnapshotNotFound, match="no version '9'"):
        registry.rollback("a", "9")
    with pytest.raises(ValueError, match="free of ':'"):
        registry.publish("bad:name", make_state(1))


def test_a_late_publish_never_moves_the_pointer_backwards(registry):
    v1 = registry.publish("ldro", make_state(1))
    registry.publish("ldro", make_state(2))
    with pytest.raises(SnapshotCorrupt, match="STALE current is already v2"):
        registry._point_to(v1, event="publish")  # what a slow concurrent publisher of v1 would do last
    assert registry.current_version("ldro") == "2"
    registry._point_to(v1, event="rollback")  # an explicit rollback may go back
    assert registry.current_version("ldro") == "1"
