"""Join workers 1 vs 2 on the same 4-partition topics: steady combined events/s, and what limits it.

    .venv/bin/python bench/join_scaling.py [--sessions 30000] [--rounds 1]

Per round and per worker count (1, then 2) the simulated log is replayed into fresh topics
before any worker starts; then the workers start together. Their status files are sampled
every 0.25 s; the rate is the slope of the group's ``events_in`` over the samples in which
every worker holds its share of the partitions and input is still left (start-up, group join
and a rebalance are excluded the same way for both counts). Alongside: CPU seconds per event
of the workers, of the embedded broker (its process group) and of the whole machine
(``/proc/stat``, both cores), over the same window: when the machine is busy on both cores
with the broker taking most of it, a second worker cannot add throughput here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from join_bench import CONFIG, DATA, group_cpu_s  # noqa: E402
from support import fresh_topics, settings_env  # noqa: E402

from common import stack  # noqa: E402
from common.stack import process_cpu_s  # noqa: E402
from common.config import load_settings  # noqa: E402
from simulator.logs import write_simulated_log  # noqa: E402
from streams.replay import replay  # noqa: E402
from streams.worker_process import WorkerProcess  # noqa: E402


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores; /proc/stat, idle and iowait excluded)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def sample(workers: list[WorkerProcess], broker_pgid: int | None) -> dict:
    docs = [w.status() or {} for w in workers]
    return {"t": time.monotonic(), "events": sum(d.get("counts", {}).get("events_in", 0) for d in docs),
            "examples": sum(d.get("counts", {}).get("examples_out", 0) for d in docs),
            "assigned": [len(d.get("assigned", [])) for d in docs],
            "worker_cpu": sum(process_cpu_s(w.proc.pid) for w in workers),
            "broker_cpu": group_cpu_s(broker_pgid), "machine_cpu": machine_cpu_s()}


def steady_rate(settings, env: dict, n_workers: int, expected: int, n_impressions: int, log_dir: Path,
                broker_pgid: int | None) -> dict:
    workers = [WorkerProcess(settings, env, f"scale-{n_workers}-{i}", log_dir) for i in range(n_workers)]
    for worker in workers:
        worker.start()
    samples = []
    try:
        for worker in workers:
            worker.wait_ready(120)
        share = settings.partitions // n_workers
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            samples.append(sample(workers, broker_pgid))
            if samples[-1]["examples"] >= n_impressions and samples[-1]["events"] >= expected:
                break
            time.sleep(0.25)
    finally:
        for worker in workers:
            worker.stop()
    window = [s for s in samples if all(a == share for a in s["assigned"]) and 0 < s["events"] < expected]
    if len(window) < 2 or window[-1]["t"] - window[0]["t"] < 1.0:
        return {"workers": n_workers, "error": "no steady window of >= 1 s", "samples": len(samples)}
    first, last = window[0], window[-1]
    events = last["events"] - first["events"]
    span = last["t"] - first["t"]
    return {"workers": n_workers, "events_per_s": events / span, "window_s": span, "window_events": events,
            "worker_cpu_us_per_event": 1e6 * (last["worker_cpu"] - first["worker_cpu"]) / events,
            "broker_cpu_us_per_event": 1e6 * (last["broker_cpu"] - first["broker_cpu"]) / events,
            "machine_cores_busy": (last["machine_cpu"] - first["machine_cpu"]) / span,
            "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="join-scaling-"))
    base = load_settings({**os.environ, "STREAMRANK_HOME": str(home)})
    state = stack.up(base)
    base = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
    results = []
    try:
        log = home / "letor.jsonl"
        summary = write_simulated_log(log, DATA, args.sessions, seed=0, namespace="scale", max_candidates=10,
                                      with_features=False)
        config = home / "bench.toml"
        config.write_text(CONFIG)
        for round_no in range(args.rounds):
            for n_workers in (1, 2):
                settings = fresh_topics(base)
                replay([log], settings, progress=False)
                env = settings_env(settings) | {"STREAMRANK_CONFIG": str(config)}
                result = steady_rate(settings, env, n_workers, summary.events, summary.impressions,
                                     home / f"logs-{round_no}-{n_workers}", state["pids"].get("kafka"))
                result["round"] = round_no + 1
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
    finally:
        stack.down(base)
        shutil.rmtree(home, ignore_errors=True)
    ones = [r["events_per_s"] for r in results if r["workers"] == 1 and "events_per_s" in r]
    twos = [r["events_per_s"] for r in results if r["workers"] == 2 and "events_per_s" in r]
    out = {"events": summary.events, "partitions": base.partitions, "results": results,
           "two_vs_one": (sum(twos) / len(twos)) / (sum(ones) / len(ones)) if ones and twos else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
