"""The run's ``summary.json``: errors, swaps, staleness (with its split), reward curves, throughput, costs.

Pure arithmetic lives in :mod:`loop.metrics`; this module gathers what the run left (users'
records, the topics read back, the server's decisions and metrics, the stages' status files)
and writes ``staleness.csv`` and the plots beside the summary.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Settings
from loop import metrics as dm
from loop.children import Child, process_cpu_s
from loop.config import DemoConfig
from loop.readback import (
    announcements,
    example_offsets,
    join_counts,
    learner_timings,
    prometheus_value,
)
from loop.users import Users
from streams.metrics import status_dir

#: reward-curve columns summarised as first-third and last-third means
CURVE_KEYS = ("reward", "reward_upstream", "ndcg10", "ndcg10_upstream", "expected_clicks", "expected_clicks_upstream", "ece")

def summarise(config: DemoConfig, settings: Settings, users: Users, models: dict, metrics_text: str, started: float,
              crashed: list[Child], feast_status: str, children_list: list[Child]) -> dict[str, Any]:
    """The whole summary of a finished run (the README lists its fields)."""
    served = users.served
    ok = [s for s in served if s.ok]
    failed = [s for s in served if not s.ok]
    curve = dm.curves(served, started, config.bucket_s)
    examples, closed_by, window_end = example_offsets(settings)
    updates = announcements(settings)
    by_model: dict[str, list[dict]] = {}
    for doc in updates:
        by_model.setdefault(doc.get("name", "?"), []).append(doc)
    feedback_done = {s.request_id: dm.learned_feedback_done(s, window_end.get(s.request_id)) for s in ok}
    served_at = {m: dm.first_served(ok, m) for m in by_model}
    rows = dm.staleness_rows(examples, feedback_done, by_model, served_at, closed_by, window_end)
    _write_staleness_csv(Path(config.output) / "staleness.csv", started, rows)
    elapsed = max(1e-9, max((s.t for s in served), default=started) - started)
    third = max(1, len(curve) // 3)
    errors = len(failed) + users.produce_errors + len(crashed)
    details = [s.error for s in failed[:10]]
    details += [f"{c.name} exited with {c.exited_early} (log {c.log_path})" for c in crashed]
    if users.produce_errors:
        details.append(f"{users.produce_errors} feedback events not produced")
    swaps_at = [d["at"] - started for d in models.get("decisions", []) if d.get("action") == "swapped"]
    latencies = [s.latency_s * 1000 for s in ok]
    applied = {m: max((int(((d.get("meta") or {}).get("runtime") or {}).get("applied", 0)) for d in docs), default=0)
               for m, docs in by_model.items()}

    def mean(rows, key):
        vals = [r[key] for r in rows if r[key] == r[key]]
        return float(np.mean(vals)) if vals else None

    summary = {
        "errors": errors,
        "error_details": details,
        "swaps": int(models.get("swaps", 0)),
        "refusals": int(models.get("refusals", 0)),
        **staleness_summary(rows, started, config.warmup_s),
        "reward_curve": curve,
        **{f"{key}_{part}_third": mean(rows_, key) for key in CURVE_KEYS
           for part, rows_ in (("first", curve[:third]), ("last", curve[-third:]))},
        "requests": len(served),
        "latency_p50_ms": dm.percentile(latencies, 50),
        "latency_p99_ms": dm.percentile(latencies, 99),
        "throughput_per_s": {
            "simulator_requests": len(ok) / elapsed,
            "feedback_events": users.feedback_events / elapsed,
            "impressions_acked": prometheus_value(metrics_text, "streamrank_impressions_acked") / elapsed,
            "examples_joined": len(examples) / elapsed,
            **{f"learner_{m}_examples": n / elapsed for m, n in applied.items()},
            **{f"snapshots_{m}": len(docs) / elapsed for m, docs in by_model.items()},
        },
        "impressions": {"acked": prometheus_value(metrics_text, "streamrank_impressions_acked"),
                        "dropped": prometheus_value(metrics_text, "streamrank_impressions_dropped"),
                        "failed": prometheus_value(metrics_text, "streamrank_impressions_failed")},
        "snapshots_published": {m: len(docs) for m, docs in by_model.items()},
        "learner_timings_s": learner_timings(Path(config.output) / "checkpoints", config.learners),
        "join": join_counts(status_dir(settings) / "demo-worker.json"),
        "serving": models.get("serving"),
        "decisions": models.get("decisions", [])[-20:],
        "feast": feast_status,
        "duration_s": elapsed,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "topic_prefix": settings.topics.prefix,
        "pids": {c.name: c.proc.pid for c in children_list},
        "cpu_s": {c.name: process_cpu_s(c.proc.pid) for c in children_list},
    }
    output = Path(config.output)
    summary["plots"] = [str(p) for p in dm.plot(curve, output, swaps_at)] if curve else []
    return summary

def staleness_summary(rows: list[dict[str, Any]], started: float, warmup_s: float) -> dict[str, Any]:
    """Staleness p50/p99, its split by stage and by close reason, and the same after warm-up."""
    stale, unserved = dm.staleness(rows)
    parts = dm.staleness_breakdown(rows)
    return {
        "staleness_p50_s": dm.percentile(stale, 50),
        "staleness_p99_s": dm.percentile(stale, 99),
        "staleness_examples": len(stale),
        "staleness_breakdown_p50_s": {k: dm.percentile(v, 50) for k, v in parts.items()},
        "staleness_breakdown_p99_s": {k: dm.percentile(v, 99) for k, v in parts.items()},
        "staleness_by_close": dm.staleness_by_close(rows),
        # the loop's steady state: examples whose feedback ended after the first warmup_s seconds
        # (start-up: first snapshots, first canaries and the gate's first 60 explored rounds)
        "staleness_after_warmup": {"warmup_s": warmup_s, **dm.staleness_by_close(rows, since=started + warmup_s)},
        "examples_not_yet_served": unserved,
    }


def _write_staleness_csv(path: Path, started: float, rows: list[dict[str, Any]]) -> None:
    """Per example, seconds since the run started (empty: not served by the end of the run);
    ``window_end_s``: its join window's end (impression ts + window, event time = wall time here).
    ``bench/staleness_split.py`` reads it back."""
    import csv  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["request_id", "closed_by", "feedback_done_s", "example_s", "snapshot_created_s",
                         "first_served_s", "staleness_s", "window_end_s"])
        for row in sorted(rows, key=lambda r: r["feedback_done_at"]):
            rel = [None if row.get(k) is None else round(row[k] - started, 3)
                   for k in ("feedback_done_at", "example_at", "snapshot_created_at", "first_served_at", "window_end_at")]
            stale = None if row["first_served_at"] is None else round(max(0.0, row["first_served_at"]
                                                                                - row["feedback_done_at"]), 3)
            writer.writerow([row["request_id"], row["closed_by"], *("" if v is None else v for v in rel[:4]),
                             "" if stale is None else stale, "" if rel[4] is None else rel[4]])

def headline(summary: dict[str, Any]) -> str:
    keys = ("errors", "swaps", "refusals", "staleness_p50_s", "staleness_p99_s", "reward_first_third",
            "reward_last_third", "ndcg10_first_third", "ndcg10_last_third", "ndcg10_upstream_first_third",
            "ndcg10_upstream_last_third", "expected_clicks_first_third", "expected_clicks_last_third",
            "ece_first_third", "ece_last_third",
            "requests", "latency_p50_ms", "latency_p99_ms")
    return json.dumps({k: summary.get(k) for k in keys}, indent=2, default=str)
