"""Replay throughput vs a plain kafka-python producer loop, same broker, same run.

    .venv/bin/python bench/replay_bench.py [--sessions 3000] [--rounds 3] [--features]

Baseline: the log's lines already in memory, sent with ``KafkaProducer.send`` in a loop with
the same producer settings (idempotent, acks=all, linger 5 ms) — the floor of what any
replay can do with this client. Ours: ``streams.replay.replay`` on the file (read, validate
each line through the event contract, route to its topic, key by request_id). Rounds
alternate so drift on the shared machine hits both. Prints events/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import stack  # noqa: E402
from common.topics import ensure_project_topics  # noqa: E402
from common.config import Topics, load_settings  # noqa: E402
from contracts.events import decode  # noqa: E402
from simulator.kuairand import load_kuairand  # noqa: E402
from simulator.letor import load_letor  # noqa: E402
from simulator.logs import simulated_sessions, write_log  # noqa: E402
from simulator.session import SessionSimulator, SimulatorConfig  # noqa: E402
from streams.replay import make_producer, replay  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def plain_loop(bootstrap: str, lines: list[tuple[str, bytes, bytes]]) -> float:
    producer = make_producer(bootstrap)
    start = time.perf_counter()
    for topic, key, value in lines:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed = time.perf_counter() - start
    producer.close()
    return len(lines) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--features", action="store_true", help="include 300-dim item features (bigger events)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    base = load_settings({**os.environ, "STREAMRANK_HOME": str(home)})
    state = stack.up(base) if not os.environ.get("STREAMRANK_KAFKA") else {"kafka": base.kafka, "redis": base.redis}
    settings = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
    try:
        sim = SessionSimulator(load_letor(DATA / "letor" / "rank.train"), load_kuairand(DATA / "kuairand"),
                               SimulatorConfig(with_features=args.features), seed=0)
        log = home / "bench.jsonl"
        summary = write_log(simulated_sessions(sim, args.sessions), log)
        raw_lines = log.read_bytes().splitlines()
        size = sum(map(len, raw_lines)) / len(raw_lines)
        ours, plain = [], []
        for round_no in range(args.rounds):
            prefix = f"b{uuid.uuid4().hex[:6]}."
            topics = Topics(prefix)
            run_settings = replace(settings, topics=topics)
            ensure_project_topics(run_settings)
            routed = []
            for line in raw_lines:
                event = decode(line)
                logical = "impressions" if event.schema_.endswith("impression.v1") else "feedback"
                routed.append((topics.name(logical), event.request_id.encode(), line))
            def run_ours() -> None:
                result = replay([log], run_settings, progress=False)
                assert result.events == len(raw_lines) and not result.errors
                ours.append(result.rate)

            # Alternate which goes first: the broker's state grows during the run.
            if round_no % 2 == 0:
                plain.append(plain_loop(settings.kafka_bootstrap, routed))
                run_ours()
            else:
                run_ours()
                plain.append(plain_loop(settings.kafka_bootstrap, routed))
        report = {
            "broker": state.get("broker", base.broker), "events": summary.events, "mean_event_bytes": round(size),
            "rounds": args.rounds, "plain_producer_ev_s": round(statistics.median(plain)),
            "replay_ev_s": round(statistics.median(ours)),
            "ratio_median": round(statistics.median(ours) / statistics.median(plain), 3),
            "ratio_per_round": [round(o / p, 3) for o, p in zip(ours, plain)],
        }
        print(json.dumps(report, indent=2))
    finally:
        if not os.environ.get("STREAMRANK_KAFKA"):
            stack.down(base)


if __name__ == "__main__":
    main()
