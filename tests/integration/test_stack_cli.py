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
from common.waiting import wait_for

pytestmark = pytest.mark.integration


def cli(home, *args, check=True, **extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRANK_")}
    env.update(STREAMRANK_HOME=str(home), STREAMRANK_TOPIC_PREFIX="clitest.", STREAMRANK_PARTITIONS="3", **extra_env)
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
        # the deployment's facts: consumers' lag and dead letters from the status files, versions from Redis
        assert report["model_versions"] == {} and report["consumers"] == []
        workers = tmp_path / "workers" / "clitest"
        (workers / "learners").mkdir(parents=True)
        (workers / "w1.json").write_text(json.dumps({"worker": "w1", "total_lag": 12, "counts": {"dead_lettered": 3},
                                                     "dead_letter_reasons": {"bad_json": 2, "not_finite": 1}}))
        (workers / "learners" / "ldro.json").write_text(json.dumps({"model": "ldro", "lag": 4, "dead_lettered": 0}))
        report = json.loads(cli(tmp_path, "status", "--json").stdout)
        assert [(c["name"], c["lag"]) for c in report["consumers"]] == [("w1", 12), ("learner-ldro", 4)]
        assert report["dead_letter_reasons"] == {"bad_json": 2, "not_finite": 1}
        text = cli(tmp_path, "status").stdout
        assert "learner-ldro" in text and "lag 4" in text and "bad_json=2, not_finite=1" in text
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


def test_topics_are_bounded_by_time_and_down_purge_leaves_a_fresh_start(tmp_path):
    """Every topic gets ``retention.ms`` from STREAMRANK_RETENTION_HOURS (re-applied on each ``up``); the
    embedded broker then drops older records, and its data file shrinks with them."""
    import time

    from kafka import KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    cli(tmp_path, "up")
    try:
        kafka = json.loads(cli(tmp_path, "status", "--json").stdout)["kafka"]
        admin = KafkaAdminClient(bootstrap_servers=kafka)
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "clitest.impressions")])
        assert configs["topic"]["clitest.impressions"]["retention.ms"]["value"] == str(24 * 3_600_000)
        producer = KafkaProducer(bootstrap_servers=kafka)
        for _ in range(500):
            producer.send("clitest.impressions", value=b"x" * 2000, partition=0)
        producer.flush()
        producer.close()
        data_file = tmp_path / "noida" / "kafka.json"
        assert wait_for(lambda: data_file.exists() and data_file.stat().st_size > 1_000_000, 30)
        big = data_file.stat().st_size

        cli(tmp_path, "up", STREAMRANK_RETENTION_HOURS=str(2 / 3600))  # a running stack: re-applies the bound
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "clitest.impressions")])
        assert configs["topic"]["clitest.impressions"]["retention.ms"]["value"] == "2000"
        admin.close()
        consumer = KafkaConsumer(bootstrap_servers=kafka)
        tp = TopicPartition("clitest.impressions", 0)
        time.sleep(2.5)
        assert wait_for(lambda: consumer.beginning_offsets([tp])[tp] == 500, 30)  # all 500 are past retention
        consumer.close()
        producer = KafkaProducer(bootstrap_servers=kafka)  # noida rewrites its data file on the next write
        producer.send("clitest.feedback", value=b"y", partition=0)
        producer.flush()
        producer.close()
        assert wait_for(lambda: data_file.stat().st_size < big / 10, 30), (big, data_file.stat().st_size)
    finally:
        out = cli(tmp_path, "down", "--purge").stdout
    assert "purged" in out and not (tmp_path / "noida").exists() and not (tmp_path / "redis").exists()


def test_the_storage_keeper_holds_the_broker_log_under_its_size_bound(tmp_path):
    """STREAMRANK_RETENTION_MB bounds the embedded broker's data folder: ``up`` starts the keeper
    (common.retention) beside noida, which deletes the oldest records of the data topics when the log
    is over the bound; the newest records and the untrimmed topics (model-updates) stay readable,
    ``status`` reports the trims, ``down`` stops the keeper with the rest."""
    from kafka import KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    from kafka.structs import OffsetAndMetadata

    bound = dict(STREAMRANK_RETENTION_MB="2", STREAMRANK_RETENTION_CHECK_S="0.5")
    cli(tmp_path, "up", **bound)
    try:
        report = json.loads(cli(tmp_path, "status", "--json").stdout)
        kafka = report["kafka"]
        assert report["processes"]["retention"]["alive"]
        admin = KafkaAdminClient(bootstrap_servers=kafka)
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "clitest.examples")])
        assert configs["topic"]["clitest.examples"]["retention.bytes"]["value"] == str(2_000_000 // (4 * 3))
        admin.close()
        reader = KafkaConsumer(bootstrap_servers=kafka, group_id="slow-reader", enable_auto_commit=False)
        reader.commit({TopicPartition("clitest.impressions", 0): OffsetAndMetadata(900, "", -1)})  # 100 unread
        reader.close()
        producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=5)
        for i in range(3):
            producer.send("clitest.model-updates", key=b"ldro", value=b"u%d" % i, partition=0)  # compacted: keyed
        sent = [producer.send("clitest.impressions", value=b"%06d" % i + b"x" * 2000, partition=i % 3)
                for i in range(3000)]  # ~6 MB of payload, ~4x that in noida's JSON log
        producer.flush()
        producer.close()
        assert all(f.succeeded() for f in sent), [f.exception for f in sent if not f.succeeded()][:3]
        data = tmp_path / "noida"
        status = tmp_path / "retention.json"
        keeper_log = tmp_path / "logs" / "retention.log"
        assert wait_for(lambda: status.exists() and json.loads(status.read_text())["trims"] >= 1, 60), (
            keeper_log.read_text() if keeper_log.exists() else "no keeper log",
            status.read_text() if status.exists() else "no status", [(f.name, f.stat().st_size) for f in data.iterdir()])
        consumer = KafkaConsumer(bootstrap_servers=kafka)
        parts = [TopicPartition("clitest.impressions", p) for p in range(3)]

        def offsets():
            return consumer.beginning_offsets(parts), consumer.end_offsets(parts)

        # the broker persists acknowledged writes about a second late, so the keeper may trim more than
        # once while the log catches up: wait for the state it must reach, not for its first trim
        assert wait_for(lambda: offsets()[0][parts[0]] == 900 and offsets()[0][parts[1]] > 900, 60), offsets()
        assert wait_for(lambda: json.loads(status.read_text())["log_bytes"] <= 2_000_000, 60), status.read_text()
        kept = json.loads(status.read_text())
        assert kept["records_deleted"]["clitest.impressions"] > 0 and set(kept["records_deleted"]) == {
            "clitest.impressions"}
        assert sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) <= 2_000_000 * 1.5  # + the last writes
        low, high = offsets()
        assert all(high[tp] == 1000 for tp in parts)  # none lost at the head
        assert low[parts[0]] == 900  # a group's unread records are never trimmed
        updates = TopicPartition("clitest.model-updates", 0)
        assert consumer.beginning_offsets([updates])[updates] == 0  # never trimmed
        consumer.assign([parts[0]])
        consumer.seek(parts[0], high[parts[0]] - 1)
        newest = consumer.poll(timeout_ms=5000)[parts[0]][0].value
        assert newest.startswith(b"002997")  # the newest record is the one kept
        consumer.close()
        text = cli(tmp_path, "status", **bound).stdout
        assert "MB of a 2 MB bound" in text and "oldest records deleted" in text
        keeper_pid = report["processes"]["retention"]["pid"]
    finally:
        cli(tmp_path, "down", "--purge")
    assert not pid_alive(keeper_pid) and not status.exists()


def test_redis_data_survives_down_and_up(tmp_path):
    """The embedded Redis keeps an append-only file in STREAMRANK_HOME/redis: snapshots, pointers and
    Feast rows written before `down` are there after the next `up` (issue 17: it came back empty)."""
    cli(tmp_path, "up")
    try:
        first = json.loads(cli(tmp_path, "status", "--json").stdout)["redis"]
        client = redis.Redis.from_url(f"redis://{first}")
        client.set("clitest.snapshots:ldro:current", "7")
        client.close()
        cli(tmp_path, "down")
        cli(tmp_path, "up")
        again = json.loads(cli(tmp_path, "status", "--json").stdout)["redis"]
        client = redis.Redis.from_url(f"redis://{again}")
        assert client.get("clitest.snapshots:ldro:current") == b"7"
        client.close()
    finally:
        cli(tmp_path, "down", "--purge")
