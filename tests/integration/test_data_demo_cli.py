"""`streamrank data-demo` as a user runs it: it reads back only its own run's records, and it leaves
a stack it did not start running (and stops one it started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def cli(home, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRANK_")}
    env.update(STREAMRANK_HOME=str(home), STREAMRANK_TOPIC_PREFIX="ddtest.", STREAMRANK_PARTITIONS="2",
               STREAMRANK_DATA=os.environ.get("STREAMRANK_DATA", ""))
    if not env["STREAMRANK_DATA"]:
        env.pop("STREAMRANK_DATA")
    return subprocess.run([sys.executable, "-m", "streamrank.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300, check=check)


def run_data_demo(home, output) -> dict:
    cli(home, "data-demo", "--sessions", "20", "--output", str(output))
    return json.loads((output / "summary.json").read_text())


def test_data_demo_reads_back_its_own_records_and_leaves_a_running_stack_running(tmp_path):
    home = tmp_path / "home"
    alone = run_data_demo(home, tmp_path / "alone")
    assert alone["stack"] == "started" and alone["errors"] == 0
    assert cli(home, "status", check=False).returncode == 1  # the stack it started is stopped again

    cli(home, "up")
    try:
        runs = [run_data_demo(home, tmp_path / f"run{k}") for k in range(2)]
        assert cli(home, "status").returncode == 0  # still up after both runs
        for run in runs:
            assert run["stack"] == "already running" and run["errors"] == 0
            assert run["topic_prefix"].startswith("ddtest.datademo")
            for topic, n in run["replay"]["by_topic"].items():
                assert run["read_back"][topic]["records"] == n == run["read_back"][topic]["valid"]
        assert runs[0]["topic_prefix"] != runs[1]["topic_prefix"]
        assert runs[1]["read_back"] == runs[0]["read_back"]  # not doubled by the first run's records
    finally:
        cli(home, "down", "--purge")
