"""``streamrank serve --workers 2`` on the real Redis + broker: both workers answer, ``/metrics``
adds them up exactly, and a published snapshot is swapped in by every worker with 0 failed requests.

The server runs as the CLI runs it (its own process group; uvicorn's parent plus two spawned
workers). Each request opens its own connection (``Connection: close``), so the kernel hands them
to either worker. The metric files go to a folder the test chooses (``STREAMRANK_SERVE_METRICS_DIR``),
so it can also read each worker's own counter file (``counter_<pid>.db``) and see who answered.
Last, one worker is killed (SIGKILL): its replacement serves the current snapshot and the dead
worker's live gauges leave ``/metrics`` while its answered requests stay counted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_kit import body, scorer, wait_for
from support import settings_env

from common import stack
from feature_store.snapshots import SnapshotRegistry
from loop.children import Children, wait_http
from serving.metrics import SERVE_METRICS_ENV, answered_by_worker, live_gauge_pids

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

#: top item of each published version (serving_kit.body: candidate i<k> has feature k)
TOP = {"1": "i5", "2": "i0"}


def metric_samples(base_url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def answered(samples: dict) -> float:
    return samples.get(("streamrank_rerank_requests_total", (("status", "200"),)), 0.0)


def swaps_by_worker(samples: dict) -> dict[str, float]:
    return {dict(labels)["pid"]: v for (name, labels), v in samples.items() if name == "streamrank_model_swaps"}




def rerank(base_url: str, request_id: str) -> tuple[int, str | None, str | None]:
    """(status, served version, top item) of one request on a connection of its own."""
    try:
        resp = httpx.post(f"{base_url}/rerank", json=body(request_id), headers={"Connection": "close"}, timeout=10)
    except httpx.HTTPError:
        return 0, None, None
    if resp.status_code != 200:
        return resp.status_code, None, None
    doc = resp.json()
    return 200, doc["model_versions"].get("linear-pl"), doc["items"][0]["item_id"]


def test_two_workers_answer_add_up_in_metrics_and_each_hot_swaps(settings, tmp_path: Path):
    registry = SnapshotRegistry(settings.redis_url, settings)
    registry.publish("linear-pl", scorer([1.0, 0, 0, 0]).state_dict())
    port = stack.free_port()
    prom = tmp_path / "prom"
    env = settings_env(settings)
    env.update({SERVE_METRICS_ENV: str(prom), "OMP_NUM_THREADS": "1", "STREAMRANK_SERVE_POLL_INTERVAL_S": "0.3"})
    children = Children(env, tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    try:
        server = children.start("serve", "serve", "--port", str(port), "--workers", "2", "--calibrator", "",
                                "--fusion", "", "--reranker", "linear-pl", "--no-explore", "--no-gate")
        wait_http(f"{base_url}/healthz", 120, children)
        assert wait_for(lambda: metric_samples(base_url).get(("streamrank_serving_workers", ())) == 2, timeout=60), \
            (server.log_path.read_text()[-3000:])

        with ThreadPoolExecutor(4) as pool:
            first = list(pool.map(lambda k: rerank(base_url, f"a{k}"), range(200)))
        assert [r[0] for r in first].count(200) == 200
        assert {(version, top) for _, version, top in first} == {("1", TOP["1"])}
        samples = metric_samples(base_url)
        assert answered(samples) == 200  # summed over the workers, exactly
        assert samples[("streamrank_rerank_seconds_count", ())] == 200
        per_worker = answered_by_worker(prom)
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
        assert sum(per_worker.values()) == 200
        # each worker loaded version 1 itself (its gauge is refreshed by its own thread within a second)
        assert wait_for(lambda: set(swaps_by_worker(metric_samples(base_url)).values()) == {1.0}, timeout=10)
        assert set(map(str, per_worker)) == set(swaps_by_worker(metric_samples(base_url)))  # the same two workers

        # a new snapshot while requests keep coming: every worker swaps, no request fails
        results: list[tuple[int, str | None, str | None]] = []
        stop = threading.Event()

        def load(worker: int) -> None:
            k = 0
            while not stop.is_set():
                results.append(rerank(base_url, f"s{worker}-{k}"))
                k += 1

        loaders = [threading.Thread(target=load, args=(w,)) for w in range(3)]
        for t in loaders:
            t.start()
        time.sleep(1.0)
        registry.publish("linear-pl", scorer([-1.0, 0, 0, 0]).state_dict())
        swapped = wait_for(lambda: set(swaps_by_worker(metric_samples(base_url)).values()) == {2.0}, timeout=30)
        time.sleep(1.0)
        stop.set()
        for t in loaders:
            t.join(timeout=30)
        assert swapped, metric_samples(base_url)
        assert len(results) > 20 and [r[0] for r in results].count(200) == len(results), results[-5:]
        # each answer was scored by the version it names (no half-swapped model)
        assert {(version, top) for _, version, top in results} <= {("1", TOP["1"]), ("2", TOP["2"])}
        assert results[-1][1] == "2"

        after = [rerank(base_url, f"z{k}") for k in range(40)]
        assert {(status, version) for status, version, _ in after} == {(200, "2")}  # converged on every worker
        samples = metric_samples(base_url)
        total = 200 + len(results) + len(after)
        assert answered(samples) == total
        assert sum(answered_by_worker(prom).values()) == total

        # a worker killed outright: the supervisor starts another, which loads the current snapshot;
        # the dead one's live gauges leave /metrics, the requests it answered stay in the sum
        killed = min(per_worker)
        os.kill(killed, signal.SIGKILL)

        def replaced() -> bool:
            now = metric_samples(base_url)
            return str(killed) not in swaps_by_worker(now) and now.get(("streamrank_serving_workers", ())) == 2 \
                and set(swaps_by_worker(now).values()) >= {1.0}

        assert wait_for(replaced, timeout=90), metric_samples(base_url)
        assert killed not in live_gauge_pids(prom) and len(live_gauge_pids(prom)) == 2
        assert answered(metric_samples(base_url)) == total
        again = [rerank(base_url, f"k{k}") for k in range(20)]
        assert {(status, version) for status, version, _ in again} == {(200, "2")}
    finally:
        children.stop_all()
        registry.close()
    assert server.proc.returncode is not None
    assert live_gauge_pids(prom) == set()  # each worker marked itself dead on the way out
