"""Test helpers for the streams stage: worker config, reading examples, and an independent
computation of the expected labels straight from a JSONL log (not via streams.rewards)."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

from support import settings_env

from common.config import Settings
from contracts.events import IMPRESSION_SCHEMA, LabeledList, decode
from streams.consume import read_topic
from streams.labeling import example_id_for
from streams.worker_process import WorkerProcess

WINDOW_S = 20.0
#: Deliberately not the defaults, so a test fails if the worker ignores the config file.
WEIGHTS = {"click": 1.5, "long_view": 2.5, "watch_ratio": 0.7, "like": 1.0, "follow": 3.0, "share": 2.0,
           "reference_play_ms": 30000.0, "partial_credit": 0.25}
CONFIG_TOML = f"""
[join]
window_s = {WINDOW_S}
allowed_lateness_s = 1.0
idle_timeout_s = 2.0
orphan_timeout_s = 5.0

[rewards]
""" + "\n".join(f"{k} = {v}" for k, v in WEIGHTS.items()) + "\n"


def worker_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "streamrank.toml"
    config.write_text(CONFIG_TOML)
    env = settings_env(settings)
    env["STREAMRANK_CONFIG"] = str(config)
    return env


def start_worker(settings: Settings, tmp_path: Path, name: str, timeout: float = 60.0) -> WorkerProcess:
    worker = WorkerProcess(settings, worker_env(settings, tmp_path), name, tmp_path / "logs",
                           extra_args=("--log-level", "info")).start()
    try:
        worker.wait_ready(timeout)
    except BaseException:
        worker.stop(grace=5)
        raise
    return worker


def read_examples(settings: Settings, expected: int | None = None, idle_s: float = 3.0,
                  timeout_s: float = 60.0) -> list[LabeledList]:
    out: list[LabeledList] = []
    read_topic(settings.kafka_bootstrap, settings.topics.examples, lambda r: out.append(decode(r.value)),
               expected=expected, idle_s=idle_s, timeout_s=timeout_s)
    return out


def wait_for_examples(settings: Settings, request_ids: set[str], timeout_s: float = 60.0,
                      workers: tuple[WorkerProcess, ...] = ()) -> list[LabeledList]:
    """Re-read ``examples`` until every request id has an example (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    examples: list[LabeledList] = []
    while time.monotonic() < deadline:
        examples = read_examples(settings, expected=len(request_ids), idle_s=1.0, timeout_s=10.0)
        if request_ids <= {e.request_id for e in examples}:
            return read_examples(settings, idle_s=1.5, timeout_s=20.0)  # and any duplicates behind them
        time.sleep(1.0)
    missing = request_ids - {e.request_id for e in examples}
    logs = "\n".join(w.log_tail(15) for w in workers)
    raise AssertionError(f"{len(missing)} of {len(request_ids)} impressions have no example, e.g. "
                         f"{sorted(missing)[:5]}\n{logs}")


def log_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def impression_request_ids(path: Path) -> set[str]:
    """The request ids of a log's impressions: the requests that must each get an example."""
    return {d["request_id"] for d in log_events(path) if d["schema"] == IMPRESSION_SCHEMA}


def expected_from_log(events: list[dict], window_s: float = WINDOW_S, weights: dict = WEIGHTS) -> dict[str, dict]:
    """Per request_id: item labels, item/list/query rewards, computed directly from the log."""
    impressions: dict[str, dict] = {}
    feedback: dict[str, dict[str, dict]] = defaultdict(dict)
    for doc in events:
        if doc["schema"] == "streamrank.impression.v1":
            impressions[doc["request_id"]] = doc
        else:
            feedback[doc["request_id"]][doc["event_id"]] = doc  # same event_id counts once
    out = {}
    for rid, imp in impressions.items():
        in_window = [f for f in feedback[rid].values() if f["ts"] <= imp["ts"] + window_s]
        reformulated = any(f["kind"] == "reformulate" for f in in_window)
        labels = []
        for item in imp["items"]:
            mine = [f for f in in_window if f.get("item_id") == item["item_id"]]
            flag = {k: int(any(f["kind"] == k and f.get("value", 1.0) > 0 for f in mine))
                    for k in ("click", "long_view", "like", "follow", "share")}
            play = max([f["value"] for f in mine if f["kind"] == "play_time_ms"], default=0.0)
            duration = item.get("duration_ms") or 0.0
            ratio = min(1.0, play / (duration if duration > 0 else weights["reference_play_ms"]))
            reward = (weights["click"] * flag["click"] + weights["long_view"] * flag["long_view"]
                      + weights["watch_ratio"] * ratio + weights["like"] * flag["like"]
                      + weights["follow"] * flag["follow"] + weights["share"] * flag["share"])
            labels.append({"item_id": item["item_id"], "position": item["position"], **flag, "play_time_ms": play,
                           "reward": reward})
        list_reward = sum(lab["reward"] / math.log2(1 + lab["position"]) for lab in labels)
        if reformulated:
            query = 0.0
        elif any(lab["long_view"] for lab in labels):
            query = 1.0
        elif any(lab["click"] for lab in labels):
            query = weights["partial_credit"]
        else:
            query = 0.0
        out[rid] = {"labels": labels, "list_reward": list_reward, "query_reward": query,
                    "reformulated": reformulated, "feedback_count": len(in_window)}
    return out


def assert_matches_expected(example: LabeledList, expected: dict) -> None:
    """The example's labels and rewards are those computed from the log; a mismatch names what
    differs and how the example was closed (the evidence a rare fault-test failure needs)."""
    got = [{"item_id": lab.item_id, "position": lab.position, "click": lab.click, "long_view": lab.long_view,
            "like": lab.like, "follow": lab.follow, "share": lab.share, "play_time_ms": lab.play_time_ms,
            "reward": lab.reward} for lab in example.labels]
    context = f"{example.request_id}: join {example.join!r}"
    assert len(got) == len(expected["labels"]), context
    for g, e in zip(got, expected["labels"]):
        assert {k: v for k, v in g.items() if k != "reward"} == {k: v for k, v in e.items() if k != "reward"}, \
            f"{context}\ngot labels      {got}\nexpected labels {expected['labels']}"
        assert math.isclose(g["reward"], e["reward"], rel_tol=1e-9, abs_tol=1e-9), context
    assert math.isclose(example.list_reward, expected["list_reward"], rel_tol=1e-9, abs_tol=1e-9), context
    assert example.query_reward == expected["query_reward"], context
    assert example.reformulated == expected["reformulated"], context
    assert example.join.feedback_count == expected["feedback_count"], context


def assert_copies_agree(example_id: str, copies: list[LabeledList], expected: dict[str, dict]) -> None:
    """Every copy of one example (re-deliveries after a crash) is the same example: one request, the
    id of its impression, the same labels and rewards, and those computed from the log."""
    assert {c.request_id for c in copies} == {copies[0].request_id}
    assert example_id == example_id_for(copies[0].impression)
    assert len({(tuple(c.labels), c.list_reward, c.query_reward) for c in copies}) == 1, example_id
    assert_matches_expected(copies[0], expected[copies[0].request_id])
