"""The streams worker on the real broker: real-data logs in, one correct example per impression out."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from streams_expect import (
    assert_matches_expected,
    expected_from_log,
    impression_request_ids,
    log_events,
    start_worker,
    wait_for_examples,
    worker_env,
)
from support import fresh_topics

from simulator.logs import write_log, write_simulated_log
from simulator.obd import obd_events
from streams.app import app_id
from streams.consume import read_topic
from streams.labeling import example_id_for
from streams.replay import replay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def letor_log(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("streams-logs") / "letor.jsonl"
    write_simulated_log(path, shared_data, 150, seed=11, namespace="letor", click_model="pbm", max_candidates=12,
                        with_features=False)
    return path


@pytest.fixture(scope="module")
def obd_log(tmp_path_factory, shared_data) -> Path:
    """300 rows of the real OBD log (bts policy, all campaign) with a few clicks in them."""
    folder = tmp_path_factory.mktemp("streams-obd")
    rows = (shared_data / "obd" / "bts" / "all" / "all.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    clicked = [r for r in body if r.split(",")[4] == "1"][:20]
    plain = [r for r in body[:400] if r not in clicked][:280]
    csv_path = folder / "obd.csv"
    csv_path.write_text("\n".join([header, *sorted(clicked + plain, key=lambda r: r.split(",")[1])]) + "\n")
    path = folder / "obd.jsonl"
    write_log(obd_events(csv_path), path)
    return path


def check_one_correct_example_per_impression(settings, log: Path, examples) -> dict:
    events = log_events(log)
    expected = expected_from_log(events)
    by_request = Counter(e.request_id for e in examples)
    assert set(by_request) == set(expected)
    assert max(by_request.values()) == 1, "a clean run emits exactly one example per impression"
    impressions = {d["request_id"]: d for d in events if d["schema"] == "streamrank.impression.v1"}
    for example in examples:
        assert example.impression.event_id == impressions[example.request_id]["event_id"]
        assert example.example_id == example_id_for(example.impression)
        assert_matches_expected(example, expected[example.request_id])
    return expected


def test_letor_replay_gives_one_example_per_impression_with_independently_computed_rewards(
        settings, tmp_path, letor_log):
    worker = start_worker(settings, tmp_path, "letor-w1")
    try:
        summary = replay([letor_log], settings, progress=False)
        assert summary.errors == []
        n_imp = summary.by_topic["impressions"]
        examples = wait_for_examples(settings, impression_request_ids(letor_log), workers=(worker,))
        assert len(examples) == n_imp
        expected = check_one_correct_example_per_impression(settings, letor_log, examples)
        # the log exercises every reward path
        assert any(e["reformulated"] for e in expected.values())
        assert any(e["query_reward"] == 1.0 for e in expected.values())
        closed_by = Counter(e.join.closed_by for e in examples)
        assert closed_by["session_end"] > 0 and closed_by["window"] + closed_by["idle"] > 0

        # the join state's changelog (what a restarted worker recovers) ends with one closed tombstone
        # per request: no open entry was written over a tombstone, and no tombstone keeps the impression
        final: dict[bytes, dict | None] = {}
        read_topic(settings.kafka_bootstrap, f"{app_id(settings)}-join-state-changelog",
                   lambda r: final.__setitem__(r.key, None if r.value is None else json.loads(r.value)),
                   idle_s=1.5, timeout_s=30)
        assert {k.decode() for k in final} == {e.request_id for e in examples}
        assert all(doc is not None and doc["closed"] is not None and "raw" not in doc for doc in final.values())

        # metrics: Prometheus text on the worker's loopback web port, and the status command
        status = worker.status()
        text = httpx.get(f"http://127.0.0.1:{status['web_port']}/metrics", timeout=10).text
        assert f'streamrank_streams_examples_out_total{{worker="letor-w1"}} {n_imp}' in text
        assert "streamrank_streams_lag{" in text
        assert status["counts"]["events_in"] == summary.events
        cli = subprocess.run([sys.executable, "-m", "streamrank.cli.main", "worker", "--status"],
                             env=worker_env(settings, tmp_path), capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0 and "letor-w1" in cli.stdout and f"examples_out={n_imp}" in cli.stdout
        assert "running" in cli.stdout and "STOPPED" not in cli.stdout
    finally:
        worker.stop()
    cli = subprocess.run([sys.executable, "-m", "streamrank.cli.main", "worker", "--status"],
                         env=worker_env(settings, tmp_path), capture_output=True, text=True, timeout=60)
    assert "letor-w1" in cli.stdout and "STOPPED (last counters)" in cli.stdout  # its file outlives it


def test_obd_replay_gives_one_example_per_impression_with_click_labels(settings, tmp_path, obd_log):
    worker = start_worker(settings, tmp_path, "obd-w1")
    try:
        summary = replay([obd_log], settings, progress=False)
        assert summary.by_topic["impressions"] == 300 and summary.by_topic["feedback"] == 20
        request_ids = impression_request_ids(obd_log)
        examples = wait_for_examples(settings, request_ids, workers=(worker,))
        expected = check_one_correct_example_per_impression(settings, obd_log, examples)
        clicks = sum(e.labels[0].click for e in examples)
        assert clicks == sum(x["labels"][0]["click"] for x in expected.values()) >= 15
        assert all(e.impression.items[0].propensity is not None for e in examples)
    finally:
        worker.stop()


def test_examples_do_not_depend_on_replay_speed(embedded_stack, tmp_path, letor_log):
    """Max-speed replay into a stopped worker vs a paced replay into a running one: same examples."""
    events = log_events(letor_log)
    request_ids = {d["request_id"] for d in events if d["schema"] == "streamrank.impression.v1"}
    span = events[-1]["ts"] - events[0]["ts"]
    results = []
    for speed, worker_first in ((None, False), (span / 6.0, True)):
        settings = fresh_topics(embedded_stack)
        worker = start_worker(settings, tmp_path, f"speed-{len(results)}") if worker_first else None
        try:
            replay([letor_log], settings, speed=speed, progress=False)
            worker = worker or start_worker(settings, tmp_path, f"speed-{len(results)}")
            examples = wait_for_examples(settings, request_ids, workers=(worker,))
        finally:
            worker.stop()
        results.append({e.request_id: (tuple(e.labels), e.list_reward, e.query_reward, e.reformulated,
                                       e.example_id) for e in examples})
    assert len(results[0]) == len(request_ids)
    assert results[0] == results[1]
