"""kill -9 of the online store's Redis while a server fetches item features from Feast: every
request is still answered (200, features from the local cache of recent reads, else none; marked
``degraded: "features"``, counted, /healthz degraded), and features come back with Redis (issue 17:
the outage used to turn every POST /rerank into an HTTP 500)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from durable_redis import DurableRedis
from fastapi.testclient import TestClient
from support import fresh_topics

from feature_store.feast_repo import apply, materialize_all
from feature_store.settings import FeatureStoreSettings
from serving.app import build_runtime, create_app
from serving.settings import ServeConfig
from simulator.letor import load_letor

pytestmark = pytest.mark.faults


def body(k: int, item_ids: list[str]) -> dict:
    return {"request_id": f"outage-{k}", "user_id": "u", "query": "q1",
            "candidates": [{"item_id": item, "scores": {"click": 0.1 + 0.1 * j}} for j, item in enumerate(item_ids)]}


@pytest.fixture
def restore_torch_threads():
    """The server sets torch's thread count for the whole process (ServeConfig.torch_threads);
    tests after this one compare in-process models bitwise with learner processes."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_feature_store_outage_serves_without_features_and_recovers(tmp_path, embedded_stack, shared_data,
                                                                      restore_torch_threads):
    server = DurableRedis(tmp_path)
    server.start()
    try:
        settings = fresh_topics(replace(embedded_stack, home=tmp_path / "home", redis=server.url))
        repo = apply(settings, FeatureStoreSettings(), data_root=shared_data, limit=50,
                     progress=False, use_cli=False)
        materialize_all(repo)
        items = load_letor(shared_data / "letor" / "rank.train").queries[0].doc_ids[:5]
        config = ServeConfig(feature_source="feast", calibrator="", fusion="", reranker="", explore=False)
        runtime = build_runtime(settings, config, with_watcher=False)
        with TestClient(create_app(runtime)) as client:
            assert client.post("/rerank", json=body(0, items)).status_code == 200
            assert runtime.features.fetch("u", "q1", items).shape[1] > 0  # the rows are there

            server.kill9()
            answers = [client.post("/rerank", json=body(k, items)) for k in range(1, 21)]
            assert [a.status_code for a in answers] == [200] * 20
            assert all(a.json()["degraded"] == "features" for a in answers)
            # the cold start ranks by the task scores: highest click first
            assert all(a.json()["items"][0]["item_id"] == items[-1] for a in answers)
            health = client.get("/healthz").json()
            assert health["features_unavailable"] == 20 and health["status"] == "degraded"
            assert health["features_from_cache"] == 20 and "unreachable for 20 requests" in health["degraded"][0]
            cached = runtime.features.read("u", "q1", items)  # the rows read before the outage
            assert cached.source == "cache" and cached.features.shape[1] > 0
            never_read = runtime.features.read("u", "q1", ["not-read-before"])
            assert never_read.source == "none" and never_read.features.shape == (1, 0)

            server.start()  # the append-only file brings the rows back
            again = client.post("/rerank", json=body(21, items))
            assert again.status_code == 200 and again.json()["degraded"] is None
            assert runtime.features.read("u", "q1", items).source == "store"
            assert client.get("/healthz").json()["features_unavailable"] == 22
    finally:
        server.stop()
