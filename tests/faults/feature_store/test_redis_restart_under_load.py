"""Redis killed -9 under load and restarted *empty* (issue 17): 0 HTTP 5xx, every degraded answer says so,
/healthz reports degraded with the reason and recovers by itself, the repair job re-materializes the lost
features, publishing resumes and the served version never goes backwards.

Short form (seconds): one in-process server on a Feast repo of 50 LETOR queries, one client thread.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace

import pytest
import torch
from durable_redis import DurableRedis
from fastapi.testclient import TestClient
from support import fresh_topics

from common.waiting import wait_for
from feature_store.feast_repo import apply, materialize_all
from feature_store.settings import FeatureStoreSettings
from feature_store.snapshots import SnapshotRegistry
from serving.app import build_runtime, create_app
from serving.baseline import LinearListScorer
from serving.gate import GateConfig
from serving.settings import ServeConfig
from simulator.letor import load_letor

pytestmark = pytest.mark.faults


def body(k: int, item_ids: list[str]) -> dict:
    return {"request_id": f"load-{k}", "user_id": "u", "query": "q1",
            "candidates": [{"item_id": item, "scores": {"click": 0.1 + 0.1 * j}} for j, item in enumerate(item_ids)]}


def scorer(width: int) -> LinearListScorer:
    model = LinearListScorer(n_features=width)
    with torch.no_grad():
        model.feature_weight.fill_(0.01)
    return model


class Load:
    """One client posting /rerank back to back on a thread; keeps every status, degraded flag and version."""

    def __init__(self, client: TestClient, item_ids: list[str]) -> None:
        self.client, self.item_ids = client, item_ids
        self.answers: list[tuple[int, str | None, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            response = self.client.post("/rerank", json=body(k, self.item_ids))
            doc = response.json() if response.status_code == 200 else {}
            self.answers.append((response.status_code, doc.get("degraded"),
                                 doc.get("model_versions", {}).get("linear-pl")))
            k += 1

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def feast_on_redis(tmp_path, embedded_stack, shared_data):
    """A Redis of the test's own (append-only file under tmp_path/redis) holding a Feast repo of 50
    LETOR queries: (server, settings, five item ids of the first query)."""
    (tmp_path / "redis").mkdir()
    server = DurableRedis(tmp_path / "redis")
    server.start()
    try:
        settings = fresh_topics(replace(embedded_stack, home=tmp_path / "home", redis=server.url))
        repo = apply(settings, FeatureStoreSettings(), data_root=shared_data, limit=50, progress=False, use_cli=False)
        materialize_all(repo)
        yield server, settings, load_letor(shared_data / "letor" / "rank.train").queries[0].doc_ids[:5]
    finally:
        server.stop()


def restart_empty(server: DurableRedis, tmp_path) -> None:
    """kill -9, then start again without its append-only file: Redis comes back empty."""
    server.kill9()
    shutil.rmtree(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_redis_killed_and_restarted_empty_under_load(tmp_path, feast_on_redis, monkeypatch, restore_torch_threads):
    monkeypatch.setenv("STREAMRANK_FEATURE_REPAIR_CHECK_S", "0.5")
    server, settings, items = feast_on_redis
    config = ServeConfig(feature_source="feast", calibrator="", fusion="", reranker="linear-pl", explore=False,
                         poll_interval_s=0.3, watch_kafka=False, gate=GateConfig(enabled=False))
    runtime = build_runtime(settings, config)
    width = runtime.features.fetch("u", "q1", items).shape[1]
    registry = SnapshotRegistry(server.url, settings, announce_kafka=False)
    registry.publish("linear-pl", scorer(width).state_dict())
    registry.publish("linear-pl", scorer(width).state_dict())
    runtime.features.window_s = 1.0  # /healthz looks back 1 s instead of 60: it recovers within the test
    with TestClient(create_app(runtime)) as client:
        with Load(client, items) as load:
            assert wait_for(lambda: any(v == "2" and d is None for _, d, v in load.answers), 30)

            server.kill9()
            assert wait_for(lambda: runtime.features.unavailable >= 20, 30)
            health = client.get("/healthz").json()
            assert health["status"] == "degraded" and "unreachable" in health["degraded"][0]
            assert 'streamrank_rerank_degraded_total{reason="features"}' in client.get("/metrics").text

            shutil.rmtree(tmp_path / "redis")  # the append-only file is lost too: Redis comes back empty
            (tmp_path / "redis").mkdir()
            server.start()
            restarted = time.monotonic()
            assert wait_for(lambda: runtime.repair.repairs == 1, 120), runtime.repair.failures
            mark = len(load.answers)
            assert wait_for(lambda: any(d is None for _, d, _v in load.answers[mark:]), 30)
            features_back_s = time.monotonic() - restarted  # reported, not asserted
            assert runtime.features.fetch("u", "q1", items).shape[1] == width  # the rows are back

            assert registry.publish("linear-pl", scorer(width).state_dict()).version == "1"  # the registry was lost
            assert wait_for(lambda: any(d["version"] == "1" and d["action"] == "refused"
                                        for d in client.get("/models").json()["decisions"]), 30)
            registry.publish("linear-pl", scorer(width).state_dict())
            newest = registry.publish("linear-pl", scorer(width).state_dict())
            assert wait_for(lambda: any(v == newest.version for _, _d, v in load.answers), 30)
            assert wait_for(lambda: client.get("/healthz").json()["status"] == "ok", 30)
        metrics = client.get("/metrics").text
    registry.close()

    statuses = [status for status, _, _ in load.answers]
    assert statuses.count(200) == len(statuses), sorted(set(statuses))  # 0 HTTP 5xx (and no 4xx)
    degraded = sum(1 for _, d, _ in load.answers if d == "features")
    assert degraded >= 20 and f'streamrank_rerank_degraded_total{{reason="features"}} {degraded}.0' in metrics
    served = [int(v) for _, _, v in load.answers if v is not None]
    assert served == sorted(served), "a served version went backwards"
    print(f"\nredis restart under load: {len(statuses)} requests, 0 failed, {degraded} degraded, "
          f"repairs {runtime.repair.repairs}, features back {features_back_s:.1f} s after the restart, "
          f"versions served {sorted(set(served))}")


def test_rows_lost_by_an_empty_restart_are_noticed_and_repaired(tmp_path, feast_on_redis, restore_torch_threads):
    """Redis comes back empty: the rows are missing, not unreachable. Serving fills them from its cache
    (degraded), /healthz names the missing rows, and one repair check re-materializes them."""
    from feature_store.scheduling import MaterializeRepair

    server, settings, items = feast_on_redis
    config = ServeConfig(feature_source="feast", calibrator="", fusion="", reranker="", explore=False,
                         repair_features=False)
    runtime = build_runtime(settings, config, with_watcher=False)
    runtime.features.missing_alarm_items = 4  # the query has few items; the default waits for 20 reads
    repair = MaterializeRepair.for_repo(settings)
    with TestClient(create_app(runtime)) as client:
        assert client.post("/rerank", json=body(0, items)).json()["degraded"] is None
        assert repair.check_once() is False  # the marker is there: nothing to do

        restart_empty(server, tmp_path)
        answers = [client.post("/rerank", json=body(k, items)) for k in range(1, 6)]
        assert [a.status_code for a in answers] == [200] * 5
        assert all(a.json()["degraded"] == "features" for a in answers)  # filled from the cache
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and health["features_unavailable"] == 0
        assert any("missing from the online store" in reason for reason in health["degraded"])

        assert repair.check_once() is True and repair.repairs == 1
        assert client.post("/rerank", json=body(6, items)).json()["degraded"] is None
        assert runtime.features.read("u", "q1", items).source == "store"
        assert repair.check_once() is False
    repair.shutdown()
