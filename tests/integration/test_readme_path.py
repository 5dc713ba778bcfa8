"""The README's CLI path outside `demo`, as a user runs it: `serve` (defaults) + `worker` +
`learn --model ldro --publish` + `simulate`, each its own process on the real broker and Redis.

What it must show (issue 23): hot swaps of ldro visible in the server's ``/models``, no
``conflicting_impression`` dead letters (simulate's request ids are unique for its whole run),
and as many examples as requests served (within 5 %).

CI runs a short form: ``STREAMRANK_README_PATH_S`` seconds of simulated users (default 75)
with snapshots every 15 s. ``--long`` (or ``STREAMRANK_README_PATH_S=180``) runs the issue's three
minutes with the default snapshot interval (60 s). Either way the stages run with ``deploy/sim.toml`` (the
README's ``STREAMRANK_CONFIG`` for simulated users: a join window to match simulate's
time-compressed sessions, LDRO warm-started at the server's cold-start order), started by
:mod:`loop.readme_path` (which bench/storage_bound.py runs too).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from long_runs import long_tests

from common.retention import read_status as storage_status
from loop.readback import join_totals
from loop.readme_path import simulate_reports, start_simulate, start_stages
from streams.metrics import status_dir

DURATION_S = float(os.environ.get("STREAMRANK_README_PATH_S", "180" if long_tests() else "75"))

#: the long forms run past pytest's default 600 s per test
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(max(600, int(DURATION_S) + 600))]


def ldro_decisions(base_url: str) -> list[dict]:
    doc = httpx.get(f"{base_url}/models?limit=1000", timeout=10).json()
    return [d for d in doc["decisions"] if d["model"] == "ldro"]


def test_serve_worker_learn_publish_and_simulate_hot_swap_ldro(settings, tmp_path: Path):
    children, server, base_url = start_stages(settings, tmp_path, tmp_path / "checkpoints", DURATION_S)
    try:
        simulate = start_simulate(children, base_url, DURATION_S)
        simulate.proc.wait(timeout=DURATION_S + 180)
        assert simulate.proc.returncode == 0, simulate.log_path.read_text()[-3000:]
        time.sleep(20)  # the last windows close and the last examples are joined
        totals = join_totals(status_dir(settings))
        decisions = ldro_decisions(base_url)
        health = httpx.get(f"{base_url}/healthz", timeout=10).json()
        storage = storage_status(settings.home)  # the embedded broker's storage keeper (common/retention.py)
        assert server.proc.poll() is None
    finally:
        children.stop_all()
    log = simulate.log_path.read_text()
    reports, served = simulate_reports(log)
    summary = {"served": served, "join": totals, "impressions": health["impressions"], "storage": storage,
               "ldro": [(d["version"], d["action"], d["reason"][:80]) for d in decisions]}
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    assert len(reports) == 3 and served > 0.8 * 20 * DURATION_S, log[-2000:]
    assert totals["reasons"].get("conflicting_impression", 0) == 0, summary
    # the broker's log stays under its size bound (+ what one check interval writes); 75 s stay far below it
    assert storage["checks"] >= 1 and storage["max_log_bytes"] <= 1.25 * storage["max_bytes"], storage
    assert abs(totals["examples"] - served) <= 0.05 * served, summary
    swaps = [d for d in decisions if d["action"] == "swapped"]
    assert len(swaps) >= 2, summary
    assert "join: " in reports[-1] and "server: " in reports[-1]  # each report says what the loop saw
