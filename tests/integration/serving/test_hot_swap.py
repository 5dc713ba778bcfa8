"""Hot-swap on the real Redis + broker: publish, refuse bad snapshots, roll back, finish in-flight requests."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from serving_kit import body, scorer, serve_config, served, served_version, wait_for, write_raw_snapshot

from feature_store.snapshots import SnapshotRegistry
from serving.components import Component

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(settings):
    reg = SnapshotRegistry(settings.redis_url, settings)
    yield reg
    reg.close()


def ranked(client, request_id: str) -> tuple[list[str], dict]:
    doc = client.post("/rerank", json=body(request_id)).json()
    return [it["item_id"] for it in doc["items"]], doc["model_versions"]


def test_published_snapshots_are_swapped_in_and_change_the_ranking(settings, registry):
    registry.publish("linear-pl", scorer([1.0, 0, 0, 0]).state_dict())
    with served(settings) as (client, runtime):
        order, versions = ranked(client, "a")
        assert versions == {"linear-pl": "1"} and order[0] == "i5"
        registry.publish("linear-pl", scorer([-1.0, 0, 0, 0]).state_dict())
        assert wait_for(lambda: served_version(client) == "2")
        order, versions = ranked(client, "b")
        assert versions == {"linear-pl": "2"} and order[0] == "i0"
        decisions = client.get("/models").json()["decisions"]
        assert [(d["version"], d["action"]) for d in decisions] == [("1", "swapped"), ("2", "swapped")]
        assert decisions[1]["source"] in ("redis-pubsub", "kafka", "poll")


def test_rollback_through_the_registry_is_picked_up(settings, registry):
    registry.publish("linear-pl", scorer([1.0, 0, 0, 0]).state_dict())
    registry.publish("linear-pl", scorer([-1.0, 0, 0, 0]).state_dict())
    with served(settings) as (client, _):
        assert served_version(client) == "2"
        registry.rollback("linear-pl", "1")
        assert wait_for(lambda: served_version(client) == "1")
        assert ranked(client, "r")[0][0] == "i5"


def test_corrupt_blob_is_refused_and_the_old_model_keeps_serving(settings, registry):
    registry.publish("linear-pl", scorer().state_dict())
    with served(settings) as (client, runtime):
        good = scorer([-1.0, 0, 0, 0])
        state = good.state_dict()
        raw_version = write_raw_snapshot(registry, "linear-pl", state.tensors, state.meta, flip_byte=True)
        assert wait_for(lambda: any(d["version"] == raw_version for d in client.get("/models").json()["decisions"]))
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["action"] == "refused" and "sha256" in decision["reason"]
        assert served_version(client) == "1" and ranked(client, "x")[1] == {"linear-pl": "1"}


def test_nan_weights_are_refused_even_when_the_checksum_matches(settings, registry):
    registry.publish("linear-pl", scorer().state_dict())
    with served(settings) as (client, _):
        state = scorer().state_dict()
        state.tensors["feature_weight"][2] = float("nan")
        bad = write_raw_snapshot(registry, "linear-pl", state.tensors, state.meta)
        assert wait_for(lambda: any(d["version"] == bad for d in client.get("/models").json()["decisions"]))
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["action"] == "refused" and "non-finite" in decision["reason"]
        assert served_version(client) == "1"


def test_weights_that_overflow_on_the_canary_are_refused(settings, registry):
    registry.publish("linear-pl", scorer().state_dict())
    with served(settings) as (client, _):
        client.post("/rerank", json=body("warm"))  # the canary is the last real request
        huge = scorer(scale=3e38)  # finite weights, infinite scores
        version = registry.publish("linear-pl", huge.state_dict()).version
        assert wait_for(lambda: any(d["version"] == version for d in client.get("/models").json()["decisions"]))
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["action"] == "refused" and "non-finite scores on the canary" in decision["reason"]
        assert served_version(client) == "1"


def test_a_snapshot_with_other_shapes_is_not_hot_swapped(settings, registry):
    registry.publish("linear-pl", scorer().state_dict())
    with served(settings) as (client, _):
        version = registry.publish("linear-pl", scorer(n_features=7, feature_weights=[1.0] * 7).state_dict()).version
        assert wait_for(lambda: any(d["version"] == version for d in client.get("/models").json()["decisions"]))
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["action"] == "refused" and "shapes" in decision["reason"]
        assert served_version(client) == "1"


class SlowScorer(torch.nn.Module):
    """Wraps a real scorer and holds the request for a while (to overlap a swap)."""

    def __init__(self, inner, started: threading.Event, delay: float) -> None:
        super().__init__()
        self.inner, self.started, self.delay = inner, started, delay

    def rerank(self, request, explore=False):
        self.started.set()
        time.sleep(self.delay)
        return self.inner.rerank(request, explore)


def test_in_flight_requests_finish_on_the_model_they_started_with(settings):
    with served(settings, serve_config(watch_kafka=False, watch_pubsub=False, poll_interval_s=60)) as (client, runtime):
        started = threading.Event()
        runtime.holder.swap(Component("reranker", "linear-pl", "old", SlowScorer(scorer([1.0, 0, 0, 0]), started, 0.5)))
        result = {}
        thread = threading.Thread(target=lambda: result.update(client.post("/rerank", json=body("slow")).json()))
        thread.start()
        assert started.wait(5)
        runtime.holder.swap(Component("reranker", "linear-pl", "new", scorer([-1.0, 0, 0, 0])))
        fresh = client.post("/rerank", json=body("fresh")).json()
        thread.join(10)
        assert result["model_versions"] == {"linear-pl": "old"} and result["items"][0]["item_id"] == "i5"
        assert fresh["model_versions"] == {"linear-pl": "new"} and fresh["items"][0]["item_id"] == "i0"


def test_an_older_version_is_only_served_by_an_explicit_rollback(settings, registry):
    """A pointer moved back by a publish (a registry that restarted empty numbers from 1 again) is refused;
    the same version through `snapshots rollback` is served (issue 17)."""
    registry.publish("linear-pl", scorer([1.0, 0, 0, 0]).state_dict())
    registry.publish("linear-pl", scorer([-1.0, 0, 0, 0]).state_dict())
    with served(settings) as (client, _):
        assert served_version(client) == "2"
        registry.redis.set(registry._key("linear-pl", "current"), "1")  # moved back without a rollback
        registry.redis.set(registry._key("linear-pl", "current_event"), "publish")
        assert wait_for(lambda: any(d["version"] == "1" and d["action"] == "refused"
                                    for d in client.get("/models").json()["decisions"]))
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["reason"] == "older than the serving v2 and not an explicit rollback"
        assert served_version(client) == "2"
        registry.rollback("linear-pl", "1")
        assert wait_for(lambda: served_version(client) == "1")


@pytest.mark.parametrize("pointer", [b"999999", b"\xffgarbage"], ids=["far-future", "garbage"])
def test_a_corrupt_pointer_keeps_the_old_model_and_the_next_publish_is_swapped_in(settings, registry, pointer):
    """Issue 17: a garbage ``current`` used to block every later publish; now the server keeps serving
    v1 while the pointer is bad, the next publish heals it and the server swaps to it."""
    registry.publish("linear-pl", scorer([1.0, 0, 0, 0]).state_dict())
    with served(settings) as (client, _):
        assert served_version(client) == "1"
        registry.redis.set(registry._key("linear-pl", "current"), pointer)
        assert wait_for(lambda: any(d["action"] == "refused" for d in client.get("/models").json()["decisions"]))
        assert served_version(client) == "1" and ranked(client, "during")[1] == {"linear-pl": "1"}
        healed = registry.publish("linear-pl", scorer([-1.0, 0, 0, 0]).state_dict())
        assert healed.version == "2" and registry.bad_pointer_heals("linear-pl") == 1
        assert wait_for(lambda: served_version(client) == "2")
        assert ranked(client, "after") == (["i0", "i1", "i2", "i3", "i4", "i5"], {"linear-pl": "2"})
