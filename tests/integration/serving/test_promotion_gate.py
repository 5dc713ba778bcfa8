"""The promotion gate on the real path: served impressions (with exploration) -> labelled examples on
the ``examples`` topic -> the server's recent-examples reader -> IPS/SNIPS of current vs candidate."""

from __future__ import annotations

import numpy as np
import pytest
from kafka import KafkaProducer
from serving_kit import N_FEATURES, TASKS, scorer, serve_config, served, served_version, wait_for

from contracts.events import IMPRESSION_SCHEMA, JoinInfo, decode, encode
from feature_store.snapshots import SnapshotRegistry
from serving.gate import GateConfig
from streams.consume import read_topic
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights

pytestmark = pytest.mark.integration
N_REQUESTS = 60


def request_body(i: int, rng: np.random.Generator) -> tuple[dict, dict[str, float]]:
    relevance = {f"r{i}-{k}": float(rng.random()) for k in range(6)}
    return ({"request_id": f"r{i}", "user_id": "u", "explore": True,
             "candidates": [{"item_id": item, "scores": {t: 0.3 for t in TASKS},
                             "features": [rel] + [0.5] * (N_FEATURES - 1)} for item, rel in relevance.items()]},
            relevance)


def log_examples(client, runtime, settings) -> None:
    """Serve requests with exploration, then label the logged impressions as users would have clicked."""
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(N_REQUESTS):
        body, relevance = request_body(i, rng)
        truth.update(relevance)
        assert client.post("/rerank", json=body).status_code == 200
    assert runtime.emitter.flush(15)
    impressions = []
    read_topic(settings.kafka_bootstrap, settings.topics.impressions,
               lambda r: impressions.append(decode(r.value, expected=IMPRESSION_SCHEMA)), expected=N_REQUESTS)
    assert len(impressions) == N_REQUESTS
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for imp in impressions:
        outcome = ListOutcome()
        for item in imp.items:  # examined top-3, clicked when relevant
            if item.position <= 3 and truth[item.item_id] > 0.5:
                outcome.add(item.item_id, "click", 1.0)
        example = label_impression(imp, outcome, RewardWeights(),
                                   JoinInfo(closed_by="window", window_s=1.0, feedback_count=0, closed_at_ts=imp.ts))
        producer.send(settings.topics.examples, key=imp.request_id.encode(), value=encode(example))
    producer.flush()
    producer.close()


def test_the_gate_blocks_a_worse_snapshot_and_lets_a_good_one_through(settings):
    registry = SnapshotRegistry(settings.redis_url, settings)
    registry.publish("linear-pl", scorer([3.0, 0, 0, 0]).state_dict())
    config = serve_config(gate=GateConfig(enabled=True, min_samples=30, max_relative_drop=0.05))
    with served(settings, config) as (client, runtime):
        assert served_version(client) == "1"
        log_examples(client, runtime, settings)
        assert wait_for(lambda: len(runtime.examples) >= N_REQUESTS, timeout=30)

        worse = registry.publish("linear-pl", scorer([-3.0, 0, 0, 0]).state_dict()).version
        assert wait_for(lambda: any(d["version"] == worse for d in client.get("/models").json()["decisions"]))
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["action"] == "blocked-by-gate"
        gate = decision["details"]["gate"]
        assert gate["n"] == N_REQUESTS and gate["candidate_value"] < gate["current_value"]
        assert served_version(client) == "1"

        better = registry.publish("linear-pl", scorer([4.0, 0, 0, 0]).state_dict()).version
        assert wait_for(lambda: served_version(client) == better)
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["action"] == "swapped" and decision["details"]["gate"]["accepted"] is True
    registry.close()


@pytest.mark.parametrize("accept", [False, True], ids=["keeps serving", "lets through"])
def test_without_enough_logged_data_the_gate_decides_by_config_and_says_why(settings, accept):
    registry = SnapshotRegistry(settings.redis_url, settings)
    registry.publish("linear-pl", scorer([3.0, 0, 0, 0]).state_dict())
    config = serve_config(gate=GateConfig(enabled=True, min_samples=30, accept_without_data=accept))
    with served(settings, config) as (client, _):
        registry.publish("linear-pl", scorer([-3.0, 0, 0, 0]).state_dict())
        assert wait_for(lambda: any(d["version"] == "2" for d in client.get("/models").json()["decisions"]))
        decision = client.get("/models").json()["decisions"][-1]
        assert "insufficient data" in decision["details"]["gate"]["reason"]
        assert decision["action"] == ("swapped" if accept else "blocked-by-gate")
        assert served_version(client) == ("2" if accept else "1")
    registry.close()


def test_an_explicit_rollback_reaches_the_server_within_5_s_even_to_a_version_the_gate_blocked(settings):
    """``snapshots rollback`` is an operator's decision: the running server applies it (announced on
    model-updates, the gate bypassed, the other checks kept) and says so in /models."""
    import time

    registry = SnapshotRegistry(settings.redis_url, settings)
    registry.publish("linear-pl", scorer([3.0, 0, 0, 0]).state_dict())
    config = serve_config(gate=GateConfig(enabled=True, min_samples=30), poll_interval_s=60.0)  # no polling help
    with served(settings, config) as (client, _):
        blocked = registry.publish("linear-pl", scorer([2.0, 0, 0, 0]).state_dict()).version
        assert wait_for(lambda: any(d["version"] == blocked and d["action"] == "blocked-by-gate"
                                    for d in client.get("/models").json()["decisions"]))
        assert served_version(client) == "1"
        assert registry.current_pointer("linear-pl") == (blocked, "publish")

        registry.rollback("linear-pl", "1")  # the pointer moves back: the server already serves v1
        started = time.monotonic()
        registry.rollback("linear-pl", blocked)
        assert registry.current_pointer("linear-pl") == (blocked, "rollback")
        assert wait_for(lambda: served_version(client) == blocked, timeout=5)
        assert time.monotonic() - started < 5
        decision = client.get("/models").json()["decisions"][-1]
        assert decision["action"] == "swapped" and decision["reason"].startswith("rollback:")
        assert decision["details"]["gate"]["reason"] == "explicit rollback: the gate is bypassed"

        newer = registry.publish("linear-pl", scorer([1.0, 0, 0, 0]).state_dict()).version  # a publish is gated again
        assert wait_for(lambda: any(d["version"] == newer and d["action"] == "blocked-by-gate"
                                    for d in client.get("/models").json()["decisions"]))
        assert served_version(client) == blocked
    registry.close()
