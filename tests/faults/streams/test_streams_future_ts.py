"""A far-future but schema-valid impression (and its click) on one partition, then normal traffic (issue 17).

Before the event-time bound, the bad impression moved its partition's watermark, so every later
example of that partition closed at once and lost its labels, with nothing dead-lettered. Now
it is dead-lettered as ``future_ts`` and every example keeps the labels an independent
computation from the log gives.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streams_expect import assert_matches_expected, expected_from_log, log_events, start_worker, wait_for_examples

from simulator.logs import write_simulated_log
from streams.consume import read_topic
from streams.dead_letter import DeadLetter
from streams.records import partition_for_key
from streams.replay import make_producer, replay

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def log(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("streams-future") / "letor.jsonl"
    write_simulated_log(path, shared_data, 60, seed=9, namespace="future", click_model="pbm", max_candidates=6,
                        with_features=False)
    return path


def test_a_far_future_impression_is_dead_lettered_and_its_partitions_examples_keep_their_labels(
        settings, tmp_path, log):
    events = log_events(log)
    impressions = [d for d in events if d["schema"] == "streamrank.impression.v1"]
    poisoned = partition_for_key(impressions[0]["request_id"], settings.partitions)
    rid = next(f"future-{n}" for n in range(1000) if partition_for_key(f"future-{n}", settings.partitions) == poisoned)
    far = time.time() + 30 * 86400.0  # a month ahead of the broker's clock
    bad_impression = dict(impressions[0], event_id=f"{rid}:imp", request_id=rid, ts=far)
    bad_click = {"schema": "streamrank.feedback.v1", "event_id": f"{rid}:fb0", "request_id": rid,
                 "item_id": bad_impression["items"][0]["item_id"], "ts": far + 1.0, "kind": "click", "value": 1.0}
    producer = make_producer(settings.kafka_bootstrap)
    for logical, doc in (("impressions", bad_impression), ("feedback", bad_click)):
        producer.send(settings.topics.name(logical), key=rid.encode(), value=json.dumps(doc).encode()).get(30)
    producer.close()

    worker = start_worker(settings, tmp_path, "future-w1")
    try:
        replay([log], settings, progress=False)
        expected = expected_from_log(events)
        examples = wait_for_examples(settings, set(expected), workers=(worker,))
        letters: list[DeadLetter] = []
        read_topic(settings.kafka_bootstrap, settings.topics.dead_letter,
                   lambda r: letters.append(DeadLetter.from_record(r)), expected=2, idle_s=3, timeout_s=30)
        status = worker.status()
    finally:
        worker.stop()

    assert sorted((d.topic, d.reason, d.field, d.key) for d in letters) == sorted(
        (settings.topics.name(t), "future_ts", "ts", rid.encode()) for t in ("impressions", "feedback"))
    assert all("after the record's broker timestamp" in d.detail for d in letters)
    assert status["counts"]["dead_lettered"] == 2
    assert {e.request_id for e in examples} == set(expected) and len(examples) == len(expected)
    on_poisoned = [e for e in examples if partition_for_key(e.request_id, settings.partitions) == poisoned]
    assert len(on_poisoned) >= 5 and sum(lab.click for e in on_poisoned for lab in e.labels) > 0
    for example in examples:
        assert_matches_expected(example, expected[example.request_id])
