"""apscheduler jobs publishing snapshots of a changing model into the real Redis."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from common.stack import free_port
from contracts.learner import LearnerState
from feature_store.scheduling import LearnerJobs
from feature_store.settings import FeatureStoreSettings, load_feature_store_settings
from feature_store.snapshots import SnapshotRegistry

pytestmark = pytest.mark.integration


class CountingModel:
    """A stand-in learner runtime: a weight vector and an update counter (reported through the source)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.weights = torch.zeros(8)
        self.updates = 0
        self.reported = 0
        self.poison = False

    def update(self) -> None:
        with self.lock:
            self.weights += 1.0
            if self.poison:
                self.weights[0] = float("nan")
            self.updates += 1

    def source(self):
        with self.lock:
            changed = self.updates != self.reported
            self.reported = self.updates
            state = LearnerState(tensors={"w": self.weights.clone()}, meta={"updates": self.updates})
        return "counting", state, {"updates": self.updates}, changed


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_snapshots_only_when_changed_and_once_more_on_shutdown(settings, redis_client):
    registry = SnapshotRegistry(redis_client, settings, announce_kafka=False)
    model = CountingModel()
    materialized = []
    jobs = LearnerJobs(registry, model.source,
                       FeatureStoreSettings(snapshot_interval_s=0.1, materialize_interval_s=0.15),
                       materialize=lambda: materialized.append(time.monotonic()))
    jobs.start()
    try:
        model.update()
        wait_for(lambda: len(jobs.stats.published) == 1)
        wait_for(lambda: jobs.stats.skipped_unchanged >= 3)  # no change -> no new version
        assert len(jobs.stats.published) == 1
        model.update()
        model.update()
        wait_for(lambda: len(jobs.stats.published) == 2)
        wait_for(lambda: len(materialized) >= 2)
    finally:
        model.update()
        last = jobs.shutdown()
    assert last is not None and last.meta == {"updates": 4}
    assert [m.version for m in registry.list_versions("counting")] == ["1", "2", "3"]
    _, state = registry.load("counting")
    assert torch.equal(state.tensors["w"], torch.full((8,), 4.0))
    assert jobs.shutdown() is None  # nothing changed since


def test_a_failed_publish_is_retried_and_a_nan_state_is_refused(settings, redis_client):
    registry = SnapshotRegistry(redis_client, settings, announce_kafka=False)
    nobody_listens = SnapshotRegistry(f"redis://127.0.0.1:{free_port()}/0", settings, announce_kafka=False)
    model = CountingModel()
    jobs = LearnerJobs(nobody_listens, model.source, FeatureStoreSettings(snapshot_interval_s=60))
    model.update()
    assert jobs.snapshot_if_changed() is None
    assert "Connection refused" in jobs.stats.failures[-1] or "Error" in jobs.stats.failures[-1]
    jobs.registry = registry  # Redis is back
    assert jobs.snapshot_if_changed() is not None  # retried although the source reports no change now
    model.poison = True
    model.update()
    assert jobs.snapshot_if_changed() is None
    assert "non-finite" in jobs.stats.failures[-1]
    assert registry.current_version("counting") == "1"


def test_settings_come_from_env_and_bad_values_are_named():
    cfg = load_feature_store_settings(env={"STREAMRANK_SNAPSHOT_INTERVAL_S": "2.5", "STREAMRANK_SNAPSHOT_KEEP": "9"})
    assert (cfg.snapshot_interval_s, cfg.snapshot_keep, cfg.materialize_interval_s) == (2.5, 9, 3600.0)
    with pytest.raises(ValueError, match="STREAMRANK_SNAPSHOT_KEEP"):
        load_feature_store_settings(env={"STREAMRANK_SNAPSHOT_KEEP": "many"})
    with pytest.raises(ValueError, match="STREAMRANK_SNAPSHOT_INTERVAL_S must be > 0"):
        load_feature_store_settings(env={"STREAMRANK_SNAPSHOT_INTERVAL_S": "0"})
