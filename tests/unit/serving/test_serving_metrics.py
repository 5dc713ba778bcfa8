"""serving.metrics and serving.workers without a server: one process keeps a registry per app;
several workers' files add up in ``/metrics``, gauges combine by their mode, dead workers leave.

Two workers are simulated in this process the way prometheus_client's own tests do it: a
``MultiProcessValue`` class per fake pid (each writes its own ``*_<pid>.db`` files).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from common.config import load_settings
from serving.metrics import MULTIPROC_ENV, SERVE_METRICS_ENV, Metrics, live_gauge_pids, mark_dead_workers, prepare_multiproc_dir
from serving.settings import ServeConfig, load_serve_config
from serving.workers import CONFIG_ENV, config_from_json, config_to_json, metrics_dir, worker_environment


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus exposition."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def shared_dir(tmp_path, monkeypatch):
    """A multiprocess metrics folder; ``as_worker(pid)`` makes the metrics built next write as ``pid``."""
    folder = tmp_path / "prom"
    folder.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    monkeypatch.setenv(SERVE_METRICS_ENV, str(folder))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test

    def as_worker(pid: int) -> None:
        values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid)

    return folder, as_worker


def test_one_process_apps_keep_their_own_counts(monkeypatch, tmp_path):
    monkeypatch.delenv(SERVE_METRICS_ENV, raising=False)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))  # what importing Feast does: not a worker for that
    first, second = Metrics(), Metrics()
    assert not first.multiprocess
    first.requests.labels(status="200").inc(3)
    second.requests.labels(status="200").inc(1)
    assert samples(first.exposition())[("streamrank_rerank_requests_total", (("status", "200"),))] == 3
    assert samples(second.exposition())[("streamrank_rerank_requests_total", (("status", "200"),))] == 1
    assert samples(first.exposition())[("streamrank_serving_workers", ())] == 1


def test_workers_add_up_and_gauges_combine_by_mode(shared_dir):
    folder, as_worker = shared_dir
    alive, gone = 999_999_001, dead_pid()
    as_worker(alive)
    a = Metrics()
    a.requests.labels(status="200").inc(5)
    for _ in range(5):
        a.latency.observe(0.004)
    a.swaps.set(2)
    a.healthy.set(1)
    a.queued.set(4)
    a.emitted.set(10)
    as_worker(gone)
    b = Metrics()
    b.requests.labels(status="200").inc(7)
    b.requests.labels(status="422").inc()
    b.latency.observe(0.5)
    b.swaps.set(3)
    b.healthy.set(0)
    b.queued.set(6)
    b.emitted.set(20)

    got = samples(a.exposition())  # any worker's /metrics reads every worker's files
    assert got == samples(b.exposition())
    assert got[("streamrank_rerank_requests_total", (("status", "200"),))] == 12
    assert got[("streamrank_rerank_requests_total", (("status", "422"),))] == 1
    assert got[("streamrank_rerank_seconds_count", ())] == 6
    assert got[("streamrank_rerank_seconds_bucket", (("le", "0.005"),))] == 5
    assert got[("streamrank_model_swaps", (("pid", str(alive)),))] == 2  # liveall: one series per worker
    assert got[("streamrank_model_swaps", (("pid", str(gone)),))] == 3
    assert got[("streamrank_healthy", ())] == 0  # livemin: one degraded worker makes the server degraded
    assert got[("streamrank_impressions_queued", ())] == 10  # livesum
    assert got[("streamrank_impressions_acked", ())] == 30  # sum
    assert got[("streamrank_serving_workers", ())] == 2

    # ``gone`` has no process (``alive`` is not a real pid either, so only mark ``gone``'s here)
    assert {alive, gone} <= live_gauge_pids(folder)
    mark_process_dead(gone, str(folder))
    after = samples(a.exposition())
    assert after[("streamrank_rerank_requests_total", (("status", "200"),))] == 12  # its answers were answered
    assert after[("streamrank_impressions_acked", ())] == 30  # and its impressions acknowledged
    assert ("streamrank_model_swaps", (("pid", str(gone)),)) not in after
    assert after[("streamrank_healthy", ())] == 1
    assert after[("streamrank_impressions_queued", ())] == 4
    assert after[("streamrank_serving_workers", ())] == 1


def test_mark_dead_workers_removes_only_processes_that_are_gone(shared_dir):
    folder, as_worker = shared_dir
    gone = dead_pid()
    for pid in (os.getpid(), gone):
        as_worker(pid)
        Metrics().requests.labels(status="200").inc()
    assert mark_dead_workers(folder) == [gone]
    assert live_gauge_pids(folder) == {os.getpid()}
    assert (folder / f"counter_{gone}.db").exists()
    assert samples(Metrics().exposition())[("streamrank_rerank_requests_total", (("status", "200"),))] == 2


def test_multiproc_dir_set_after_import_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setenv(SERVE_METRICS_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    with pytest.raises(RuntimeError, match="before the server starts"):
        Metrics()


def test_a_workers_folder_other_than_prometheus_s_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "feast_metrics"))
    monkeypatch.setenv(SERVE_METRICS_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="needs PROMETHEUS_MULTIPROC_DIR set to the same folder"):
        Metrics()


def test_prepare_empties_only_the_metric_files(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "counter_12.db").write_bytes(b"x")
    (folder / "gauge_livesum_12.db").write_bytes(b"x")
    (folder / "notes.txt").write_text("keep")
    assert prepare_multiproc_dir(folder) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert prepare_multiproc_dir(tmp_path / "new" / "dir").is_dir()


def test_workers_setting_from_env_and_its_bounds():
    settings = load_settings({})
    assert load_serve_config(settings, env={}).workers == 1
    assert load_serve_config(settings, env={"STREAMRANK_SERVE_WORKERS": "3"}).workers == 3
    assert load_serve_config(settings, env={"STREAMRANK_SERVE_WORKERS": "3"}, workers=2).workers == 2
    with pytest.raises(ValueError, match="workers must be >= 1"):
        ServeConfig(workers=0)


def test_worker_config_round_trips_and_bad_json_names_the_variable():
    config = ServeConfig(workers=2, tasks=("click",), explore_rate=0.5, default_fusion_weights={"click": 2.0})
    assert config_from_json(config_to_json(config)) == config
    with pytest.raises(ValueError, match=CONFIG_ENV):
        config_from_json('{"workers": 2}')
    with pytest.raises(ValueError, match="workers must be >= 1"):
        config_from_json(config_to_json(config).replace('"workers": 2', '"workers": 0'))


def test_worker_environment_empties_a_folder_per_port(tmp_path):
    settings = load_settings({"STREAMRANK_HOME": str(tmp_path)})
    config = ServeConfig(port=18123, workers=2)
    stale = tmp_path / "serving-metrics" / "18123" / "counter_1.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old run")
    env = worker_environment(settings, config, "info", env={})
    assert env[MULTIPROC_ENV] == env[SERVE_METRICS_ENV] == str(tmp_path / "serving-metrics" / "18123")
    assert not stale.exists()
    assert config_from_json(env[CONFIG_ENV]) == config
    assert metrics_dir(settings, config, {SERVE_METRICS_ENV: "/x/y"}).as_posix() == "/x/y"
    # a PROMETHEUS_MULTIPROC_DIR inherited from a Feast import is not the workers' folder
    assert metrics_dir(settings, config, {MULTIPROC_ENV: "/tmp/feast_metrics_x"}) == tmp_path / "serving-metrics" / "18123"


def test_impression_linger_setting_reaches_the_producer_and_its_bound():
    from serving.app import build_runtime

    settings = load_settings({})
    assert load_serve_config(settings, env={}).emit_linger_ms == 50.0
    config = load_serve_config(settings, env={"STREAMRANK_SERVE_EMIT_LINGER_MS": "5"})
    runtime = build_runtime(settings, config, with_watcher=False)
    assert runtime.emitter._producer_config["linger_ms"] == 5
    assert build_runtime(settings, ServeConfig(), with_watcher=False).emitter._producer_config["linger_ms"] == 50
    with pytest.raises(ValueError, match="emit_linger_ms must be >= 0"):
        ServeConfig(emit_linger_ms=-1)
