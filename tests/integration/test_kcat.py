"""Any Kafka client can read and write our topics: kcat (librdkafka) against the real broker."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from contracts.events import EventError, Feedback, decode
from streams.consume import read_topic
from streams.replay import replay

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat missing: scripts/setup.sh --test installs it")]

HAND_WRITTEN = ('{"schema": "streamrank.feedback.v1", "event_id": "kc-1", "request_id": "req-9", '
                '"item_id": "item-3", "ts": 1767225700.5, "kind": "long_view", "value": 1}')


def test_kcat_consumes_replayed_topics_as_valid_json(settings, tmp_path, shared_data):
    from simulator.kuairand import load_kuairand
    from simulator.letor import load_letor
    from simulator.logs import simulated_sessions, write_log
    from simulator.session import SessionSimulator, SimulatorConfig

    sim = SessionSimulator(load_letor(shared_data / "letor" / "rank.train"), load_kuairand(shared_data / "kuairand"),
                           SimulatorConfig(with_features=False), seed=11)
    log = tmp_path / "log.jsonl"
    summary = write_log(simulated_sessions(sim, 40), log)
    replay([log], settings, progress=False)
    out = subprocess.run(["kcat", "-C", "-b", settings.kafka_bootstrap, "-t", settings.topics.impressions, "-e",
                          "-q", "-f", "%k\t%s\n"], capture_output=True, timeout=60, check=True).stdout
    lines = [line for line in out.decode().splitlines() if line]
    assert len(lines) == summary.impressions
    for line in lines:
        key, value = line.split("\t", 1)
        doc = json.loads(value)
        assert doc["request_id"] == key and doc["schema"] == "streamrank.impression.v1"


def test_event_produced_by_kcat_passes_validation(settings):
    bad = HAND_WRITTEN.replace('"long_view"', '"longview"')
    payload = f"req-9\t{HAND_WRITTEN}\nreq-9\t{bad}\n"
    subprocess.run(["kcat", "-P", "-b", settings.kafka_bootstrap, "-t", settings.topics.feedback, "-K", "\t"],
                   input=payload.encode(), timeout=60, check=True)
    records = []
    read_topic(settings.kafka_bootstrap, settings.topics.feedback, records.append, expected=2, idle_s=5)
    assert len(records) == 2
    good = [r for r in records if b"longview" not in r.value][0]
    event = decode(good.value)
    assert isinstance(event, Feedback) and event.kind == "long_view" and good.key == b"req-9"
    with pytest.raises(EventError) as info:
        decode([r for r in records if b"longview" in r.value][0].value)
    assert (info.value.reason, info.value.field) == ("unknown_kind", "kind")
