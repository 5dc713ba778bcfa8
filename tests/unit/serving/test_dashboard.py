"""The dashboard's data: time buckets, live staleness, status files, the gate's rows, and the routes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from common.config import Settings
from serving.app import build_runtime, create_app
from serving.baseline import LinearListScorer
from serving.components import Component
from serving.dashboard import DashboardFeeds, DashboardRecorder, consumers, dashboard_data, gate_rows
from serving.holder import Decision
from serving.settings import ServeConfig

VENDOR = Path(__file__).resolve().parents[3] / "serving" / "static" / "vendor" / "uplot"


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_buckets_close_with_counts_and_percentiles():
    clock = Clock(1000.0)
    rec = DashboardRecorder(bucket_s=2.0, clock=clock)
    for ms in range(1, 101):  # 100 requests of 1..100 ms in the first bucket
        rec.observe_request(ms / 1000)
    assert rec.points() == []  # the bucket is still open
    clock.t = 1002.5
    rec.observe_request(0.5)
    points = rec.points()
    assert len(points) == 1
    p = points[0]
    assert p["t"] == 1002.0 and p["requests"] == 100 and p["requests_per_s"] == 50.0
    assert p["latency_p50_ms"] == pytest.approx(50.5) and p["latency_p99_ms"] == pytest.approx(99.01)
    clock.t = 1010.0  # idle buckets appear as zero-request points, not as a gap
    points = rec.points()
    assert [q["requests"] for q in points] == [100, 1, 0, 0, 0]
    assert rec.points(since=1004.0) == points[2:]


def test_staleness_counts_from_join_to_first_covering_swap():
    clock = Clock(100.0)
    rec = DashboardRecorder(bucket_s=1.0, clock=clock)
    rec.observe_example(1.0, "ex", 0, 5, joined_at=100.0)
    rec.observe_example(2.0, "ex", 0, 6, joined_at=101.0)
    rec.observe_example(3.0, "ex", 1, 0, joined_at=102.0)
    rec.observe_swap(104.0, {"ex:0": 5})  # covers offset 5 of partition 0 only
    assert rec.staleness() == {"examples": 1, "p50_s": 4.0, "p99_s": 4.0}
    rec.observe_swap(105.0, {"ex:0": 5})  # the same offsets again: nothing new is covered
    assert rec.staleness()["examples"] == 1
    rec.observe_swap(110.0, {"ex:0": 6, "ex:1": 0})
    assert rec.staleness()["examples"] == 3
    assert sorted(rec._recent_staleness) == [4.0, 8.0, 9.0]
    clock.t = 111.5
    assert sum(p["examples"] for p in rec.points()) == 3
    rewards = [p["reward"] for p in rec.points() if p["reward"] is not None]
    assert rewards == [2.0]  # all three arrived in one bucket: mean of 1, 2, 3


def test_feeds_read_records_swaps_and_dead_letter_headers():
    rec = DashboardRecorder(clock=Clock(50.0))
    feeds = DashboardFeeds(rec, None, "dl")
    feeds.example(SimpleNamespace(list_reward=0.5), SimpleNamespace(topic="ex", partition=2, offset=9, timestamp=40_000))
    feeds.swap(None, SimpleNamespace(at=45.0, details={"offsets": {"ex:2": 9}}))
    assert rec.staleness()["p50_s"] == 5.0
    good = SimpleNamespace(headers=[("dl.reason", b"bad_json"), ("dl.topic", b"t"), ("dl.partition", b"0"),
                                    ("dl.offset", b"1")], key=b"k", value=b"v")
    feeds._dead_letters([good, good, SimpleNamespace(headers=[], key=None, value=b"")])
    assert rec.dead_letters == {"bad_json": 2, "unlabelled": 1}


def test_consumers_and_simulator_from_status_files(tmp_path):
    (tmp_path / "w1.json").write_text(json.dumps({"worker": "w1", "total_lag": 7, "updated_at": 1.0,
                                                  "counts": {"dead_lettered": 3}}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "learners").mkdir()
    (tmp_path / "learners" / "ldro.json").write_text(json.dumps({"model": "ldro", "lag": 0, "applied": 12, "ts": 2.0}))
    (tmp_path / "simulator.json").write_text(json.dumps({"points": [{"t": 5.0, "reward": 1.0}, {"t": 7.0, "reward": 2.0}],
                                                        "updated_at": 8.0}))
    rows = consumers(tmp_path)
    assert [(r["name"], r["kind"], r["lag"]) for r in rows] == [("w1", "streams", 7), ("learner-ldro", "learner", 0)]
    assert rows[0]["dead_lettered"] == 3 and rows[1]["applied"] == 12
    doc = dashboard_data(DashboardRecorder(), {}, [], tmp_path, since=6.0)
    assert len(doc["simulator"]["points"]) == 2  # the simulator has its own cursor
    doc = dashboard_data(DashboardRecorder(), {}, [], tmp_path, since=0.0, simulator_since=6.0)
    assert doc["simulator"]["points"] == [{"t": 7.0, "reward": 2.0}]
    assert doc["point_counts"]["simulator"] == 1


def test_gate_rows_carry_estimate_and_lower_bound():
    decisions = [Decision(1.0, "ldro", "3", "reranker", "blocked-by-gate", "lower bound", "poll",
                          {"gate": {"accepted": False, "candidate_value": 0.4, "current_value": 0.5,
                                    "lower_bound": -0.2, "n": 80, "reason": "below"}}).as_dict(),
                 Decision(2.0, "umnn", "4", "calibrator", "swapped", "ok", "poll", {}).as_dict()]
    assert gate_rows(decisions) == [{"at": 1.0, "model": "ldro", "version": "3", "action": "blocked-by-gate",
                                     "accepted": False, "estimate": 0.4, "current": 0.5, "lower_bound": -0.2,
                                     "n": 80, "reason": "below"}]
    doc = dashboard_data(DashboardRecorder(), {}, decisions, None)
    assert doc["swaps"] == [{"at": 2.0, "model": "umnn", "role": "calibrator", "version": "4"}]
    assert doc["refusals"] == {"blocked-by-gate": 1}


@pytest.fixture
def client(tmp_path):
    settings = Settings(home=tmp_path, kafka=None, redis=None)
    runtime = build_runtime(settings, ServeConfig(max_candidates=5, reranker="linear-pl", explore=False),
                            with_watcher=False)
    runtime.holder.swap(Component("reranker", "linear-pl", "7", LinearListScorer(n_features=2)))
    threads = torch.get_num_threads()
    with TestClient(create_app(runtime)) as c:
        yield c, runtime
    torch.set_num_threads(threads)


def test_page_data_and_vendored_files_are_served(client):
    c, runtime = client
    page = c.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/dashboard/vendor/uPlot.iife.min.js" in page.text and "https://" not in page.text  # no CDN
    js = c.get("/dashboard/vendor/uPlot.iife.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert c.get("/dashboard/vendor/..%2Fdashboard.html").status_code == 404
    body = {"request_id": "r1", "user_id": "u", "query": "q",
            "candidates": [{"item_id": f"i{k}", "scores": {"click": 0.5}, "features": [float(k), 0.0]} for k in range(3)]}
    runtime.dashboard.clock = lambda: 10.0**10  # every bucket so far is closed
    for _ in range(2):
        assert c.post("/rerank", json=body).status_code == 200
    runtime.dashboard.clock = lambda: 10.0**10 + 5
    doc = c.get("/dashboard/data").json()
    assert sum(p["requests"] for p in doc["points"]) == 2
    assert doc["serving"]["reranker"]["version"] == "7" and doc["serving"]["fusion"]["cold_start"] is True
    assert doc["point_counts"]["serving"] == len(doc["points"])
    assert c.get("/dashboard/data", params={"since": "soon"}).status_code == 422
    paths = c.get("/openapi.json").json()["paths"]
    assert "/dashboard/data" in paths and "/dashboard" in paths
    assert "DashboardData" in json.dumps(paths["/dashboard/data"])


def test_dashboard_off_answers_404(tmp_path):
    settings = Settings(home=tmp_path, kafka=None, redis=None)
    runtime = build_runtime(settings, ServeConfig(reranker="linear-pl", dashboard=False), with_watcher=False)
    threads = torch.get_num_threads()
    with TestClient(create_app(runtime)) as c:
        assert c.get("/dashboard/data").status_code == 404
    torch.set_num_threads(threads)


def test_vendored_chart_library_is_the_published_file():
    """VENDORED.md's hashes: an edit to the vendored files must be a deliberate upgrade."""
    expected = {"uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
                "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04"}
    for name, digest in expected.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest
        assert f"`{name}` {digest}" in (VENDOR / "VENDORED.md").read_text()
