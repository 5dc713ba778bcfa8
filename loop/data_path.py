"""The data-path demo: stack up → real data to event logs → replay → read back → summary.

The end-to-end check of the foundation (events, logs, broker) behind ``streamrank data-demo``.
Each run writes to topics of its own (prefix ``<prefix>datademo<time>.``), so its read-back
counts only its own records however many earlier runs the broker holds; a stack that was
running before (or an external one) is left running, one it started is stopped unless
``keep_stack``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from common import stack
from common.config import Settings, Topics
from common.paths import shared_data
from common.topics import ensure_project_topics


def run_data_demo(settings: Settings, output: Path, sessions: int = 2000, keep_stack: bool = False,
                  data_dir: Path | None = None) -> dict:
    """Run the data path once and write ``summary.json`` (``data_dir``: the real data, default ``shared_data()``)."""
    from simulator.kuairand import load_kuairand  # noqa: PLC0415
    from simulator.letor import load_letor  # noqa: PLC0415
    from simulator.logs import simulated_sessions, write_log  # noqa: PLC0415
    from simulator.obd import obd_events  # noqa: PLC0415
    from simulator.session import SessionSimulator  # noqa: PLC0415
    from streams.consume import summarize_topics  # noqa: PLC0415
    from streams.replay import replay  # noqa: PLC0415

    data_dir = Path(data_dir) if data_dir else shared_data()
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    was_running = bool(os.environ.get("STREAMRANK_KAFKA")) or stack.running(settings.home)
    state = stack.up(settings)
    settings = replace(settings.with_endpoints(kafka=state["kafka"], redis=state["redis"]),
                       topics=Topics(prefix=f"{settings.topics.prefix}datademo{int(time.time() * 1000)}."))
    try:
        ensure_project_topics(settings)
        obd_log, letor_log = output / "obd.jsonl", output / "letor.jsonl"
        obd = write_log(obd_events(data_dir / "obd" / "random" / "all" / "all.csv"), obd_log, desc="obd")
        sim = SessionSimulator(load_letor(data_dir / "letor" / "rank.train"), load_kuairand(data_dir / "kuairand"),
                               seed=0, namespace="letor")
        letor = write_log(simulated_sessions(sim, sessions), letor_log, desc="letor")
        replayed = replay([obd_log, letor_log], settings)
        read = summarize_topics(settings, ["impressions", "feedback"], idle_s=3)
        summary = {
            "kafka": settings.kafka, "redis": settings.redis, "broker": state["broker"],
            "topic_prefix": settings.topics.prefix, "stack": "already running" if was_running else "started",
            "logs": {"obd": obd.__dict__, "letor": letor.__dict__},
            "replay": replayed.as_dict(),
            "read_back": {k: v.as_dict() for k, v in read.items()},
            "errors": len(replayed.errors) + sum(sum(v.invalid.values()) for v in read.values()),
            "seconds": round(time.monotonic() - started, 1),
        }
        (output / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        if not keep_stack and not was_running:
            stack.down(settings)
