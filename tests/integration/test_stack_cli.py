"""`streamrank up | status | down` as a user runs them: real processes, real ports, clean shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis
from kafka import KafkaConsumer

from common.stack import pid_alive

pytestmark = pytest.mark.integration


def cli(home, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRANK_")}
    env.update(STREAMRANK_HOME=str(home), STREAMRANK_TOPIC_PREFIX="clitest.", STREAMRANK_PARTITIONS="3")
    return subprocess.run([sys.executable, "-m", "streamrank.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=check)


def test_up_status_down(tmp_path):
    cli(tmp_path, "up")
    try:
        report = json.loads(cli(tmp_path, "status", "--json").stdout)
        assert report["kafka_up"] and report["redis_up"] and report["broker"] == "noida"
        assert report["topics"]["examples"] == "clitest.examples"
        assert all(p["alive"] for p in report["processes"].values())
        assert report["kafka"].startswith("127.0.0.1:") and report["redis"].startswith("127.0.0.1:")
        text = cli(tmp_path, "status").stdout
        assert "clitest.dead-letter" in text and report["kafka"] in text
        assert report["topic_partitions"]["clitest.examples"] == 3  # read from the broker, not the settings
        assert "clitest.examples  (3 partitions)" in text
        consumer = KafkaConsumer(bootstrap_servers=report["kafka"])
        partitions = {name: consumer.partitions_for_topic(f"clitest.{name}") for name in ("impressions", "examples")}
        consumer.close()
        assert partitions == {"impressions": {0, 1, 2}, "examples": {0, 1, 2}}
        assert redis.Redis.from_url(f"redis://{report['redis']}").ping()
        again = cli(tmp_path, "up").stdout  # idempotent: reuses the running stack
        assert report["kafka"] in again
        pids = [p["pid"] for p in report["processes"].values()]
    finally:
        cli(tmp_path, "down")
    assert not any(pid_alive(pid) for pid in pids)
    assert not (tmp_path / "stack.json").exists()
    down = cli(tmp_path, "status", check=False)
    assert down.returncode == 1
    assert "(broker down)" in down.stdout and "partitions)" not in down.stdout  # no topics claimed that are not there
