"""Throughput of ``streamrank serve --workers 2`` against ``--workers 1``, same run, same clients.

Starts its own embedded stack (temporary home), publishes cold-start UMNN / DRPO / LDRO snapshots
(the full calibrate -> fuse -> rerank path), and starts **both** servers at once: one process on
one port, two workers on another (their metric files in a folder of this run, so the split of
requests over the workers is read from each worker's own counter file). Then, in ``--rounds``
interleaved rounds (the order alternating), ``--clients`` client threads post ``POST /rerank``
with ``--candidates`` candidates x ``--features`` inline features for ``--seconds`` to one server
while the other is paused (SIGSTOP on its process group, so its background threads cost the
measured one nothing). The bodies are encoded once up front (only the request id changes), so the
client spends little CPU next to the server it measures.

Reports per server: requests/s, client-side p50/p99, failed requests (must be 0), and server CPU
seconds per request (user + system of every process in the server's group, from /proc: the
uvicorn parent and its workers); then the ratios 2 workers / 1 worker measured in this run. On a
machine with C cores, N workers can use up to min(N, C) of them where one process is held to one
core by the GIL; the client, the broker and Redis share the same cores.

    .venv/bin/python bench/serving_workers.py --quick --json
    .venv/bin/python bench/serving_workers.py --rounds 3 --seconds 20 --output out/bench/serving_workers.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import stack  # noqa: E402
from common.config import load_settings  # noqa: E402
from serving.metrics import answered_by_worker  # noqa: E402

MODELS = ("umnn", "drpo", "ldro")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def group_cpu_s(pgid: int) -> tuple[float, int]:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``,
    and how many processes that is (uvicorn's spawned workers stay in their parent's group)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
            count += 1
    return total / tick, count


def encoded_bodies(n_candidates: int, n_features: int, count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(prefix, rest) of each body's JSON: ``prefix + request_id + rest`` is a complete body."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        doc = {"user_id": f"u{int(rng.integers(1000))}", "query": f"q{int(rng.integers(200))}",
               "candidates": [{"item_id": f"d{int(rng.integers(100_000))}-{j}",
                               "scores": {"click": float(rng.uniform(0.05, 0.9)),
                                          "long_view": float(rng.uniform(0.01, 0.5)),
                                          "watch_time": float(rng.uniform(0.1, 0.9))},
                               "features": np.round(rng.random(n_features), 4).tolist()}
                              for j in range(n_candidates)]}
        rest = json.dumps(doc, separators=(",", ":"))[1:]  # drop "{"
        out.append((b'{"request_id":"', ('",' + rest).encode()))
    return out


def drive(url: str, bodies: list[tuple[bytes, bytes]], clients: int, seconds: float, label: str) -> list[tuple]:
    """``clients`` threads, each on its own keep-alive connection; (latency s, ok) per request."""
    import httpx  # noqa: PLC0415

    stop_at = time.monotonic() + seconds
    records: list[tuple] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        local = []
        with httpx.Client(timeout=10.0, headers={"content-type": "application/json"}) as session:
            i = k
            while time.monotonic() < stop_at:
                prefix, rest = bodies[i % len(bodies)]
                content = prefix + f"{label}-{k}-{i}".encode() + rest
                i += clients
                t0 = time.monotonic()
                try:
                    ok = session.post(url, content=content).status_code == 200
                except Exception:  # noqa: BLE001 - a failed request is counted, never hidden
                    ok = False
                local.append((time.monotonic() - t0, ok))
        with lock:
            records.extend(local)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


@contextmanager
def paused(proc: subprocess.Popen):
    """The server's whole process group stopped for the duration (SIGSTOP / SIGCONT)."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def metric_samples(url: str) -> dict[tuple[str, tuple], float]:
    import httpx  # noqa: PLC0415
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def start_server(env: dict[str, str], workers: int, port: int, home: Path) -> subprocess.Popen:
    logfile = open(home / f"server-{workers}w.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "streamrank.cli.main", "serve", "--workers", str(workers)],
                            env=dict(env, STREAMRANK_SERVE_PORT=str(port)), stdout=logfile, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)
    logfile.close()
    return proc


def wait_ready(url: str, workers: int, proc: subprocess.Popen) -> None:
    """Until ``workers`` workers serve and each has loaded the three snapshots."""
    import httpx  # noqa: PLC0415

    def ready() -> bool:
        try:
            samples = metric_samples(url)
        except httpx.HTTPError:
            return False
        swaps = [v for (name, _), v in samples.items() if name == "streamrank_model_swaps"]
        return samples.get(("streamrank_serving_workers", ())) == workers and len(swaps) == workers \
            and min(swaps) >= len(MODELS)

    stack.wait_until(ready, 180, f"{workers}-worker server with its snapshots", proc.pid)


def summarise(records: list[tuple], seconds: float, cpu_s: float) -> dict[str, float]:
    ok = [lat for lat, good in records if good]
    arr = np.asarray(ok or [0.0]) * 1000.0
    return {"requests": len(records), "failed": len(records) - len(ok), "requests_per_s": len(ok) / seconds,
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "server_cpu_s": cpu_s, "server_cpu_ms_per_request": 1000.0 * cpu_s / max(1, len(ok))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 8 s per server (~2 minutes with start-up)")
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--features", type=int, default=300, help="inline features per candidate")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="per server per round")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 8.0

    home = Path(tempfile.mkdtemp(prefix="serving-workers-"))
    env = dict(os.environ, STREAMRANK_HOME=str(home))
    env.pop("STREAMRANK_KAFKA", None)
    env.pop("STREAMRANK_REDIS", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    base = load_settings(env)
    state = stack.up(base)
    settings = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
    servers: dict[int, subprocess.Popen] = {}
    prom = home / "prom-2w"
    try:
        log(f"stack up: kafka {settings.kafka} redis {settings.redis}")
        from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415
        from learners.registry import build_learner  # noqa: PLC0415

        registry = SnapshotRegistry(settings.redis_url, settings)
        for model in MODELS:
            registry.publish(model, build_learner(model).state_dict())
        registry.close()
        server_env = dict(env, STREAMRANK_KAFKA=settings.kafka or "", STREAMRANK_REDIS=settings.redis or "",
                          STREAMRANK_SERVE_FEATURE_SOURCE="request", STREAMRANK_SERVE_GATE_ENABLED="0",
                          OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        urls = {}
        for workers in (1, 2):
            port = stack.free_port()
            extra = {"STREAMRANK_SERVE_METRICS_DIR": str(prom)} if workers > 1 else {}
            servers[workers] = start_server(dict(server_env, **extra), workers, port, home)
            urls[workers] = f"http://127.0.0.1:{port}"
        for workers, url in urls.items():
            wait_ready(url, workers, servers[workers])
        bodies = encoded_bodies(args.candidates, args.features, 64, seed=0)
        warm_ok = {}
        for workers, url in urls.items():  # warm-up, the other server paused
            with paused(servers[3 - workers]):
                warm = drive(f"{url}/rerank", bodies, args.clients, 3.0, f"warm{workers}")
            warm_ok[workers] = sum(1 for _, good in warm if good)
        records: dict[int, list] = {1: [], 2: []}
        cpu = {1: 0.0, 2: 0.0}
        processes = {1: 0, 2: 0}
        split_before = answered_by_worker(prom)
        for r in range(args.rounds):
            for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                with paused(servers[3 - workers]):
                    cpu0, processes[workers] = group_cpu_s(servers[workers].pid)
                    records[workers] += drive(f"{urls[workers]}/rerank", bodies, args.clients, args.seconds,
                                              f"r{r}w{workers}")
                    cpu[workers] += group_cpu_s(servers[workers].pid)[0] - cpu0
                log(f"round {r + 1}/{args.rounds}, {workers} worker(s): {len(records[workers])} requests so far")
        split_after = answered_by_worker(prom)
        total_s = args.rounds * args.seconds
        one, two = (summarise(records[w], total_s, cpu[w]) for w in (1, 2))
        for workers, summary in ((1, one), (2, two)):
            samples = metric_samples(urls[workers])  # what the server did besides answering (same for both)
            summary.update(server_processes=processes[workers], **{
                f"impressions_{what}": samples.get((f"streamrank_impressions_{what}", ()), 0.0)
                for what in ("acked", "dropped", "failed")})
        split = sorted(int(split_after[pid] - split_before.get(pid, 0.0)) for pid in split_after)
        metrics_total = metric_samples(urls[2]).get(("streamrank_rerank_requests_total", (("status", "200"),)), 0.0)
        result = {"args": {k: str(v) for k, v in vars(args).items()}, "cores": os.cpu_count(),
                  "one_worker": one, "two_workers": two,
                  "ratio_requests_per_s": two["requests_per_s"] / one["requests_per_s"],
                  "ratio_cpu_per_request": two["server_cpu_ms_per_request"] / one["server_cpu_ms_per_request"],
                  "two_workers_split": split,
                  # /metrics of the 2-worker server (summed over its workers) against the client's count
                  "two_workers_metrics_ok": metrics_total,
                  "two_workers_client_ok": warm_ok[2] + two["requests"] - two["failed"]}
    finally:
        for proc in servers.values():
            stack.stop_pid(proc.pid, grace=10)
        stack.down(base)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text)
    if not args.json:
        print(f"\n{args.clients} clients, {args.candidates} x {args.features} inline features, {args.rounds} interleaved "
              f"rounds of {args.seconds:.0f} s: 1 worker {one['requests_per_s']:.1f} req/s (p99 {one['p99_ms']:.1f} ms, "
              f"{one['server_cpu_ms_per_request']:.2f} server CPU ms/request), 2 workers {two['requests_per_s']:.1f} "
              f"req/s (p99 {two['p99_ms']:.1f} ms, {two['server_cpu_ms_per_request']:.2f} CPU ms/request, split "
              f"{split}) -> 2 / 1: {result['ratio_requests_per_s']:.2f}x throughput, "
              f"{result['ratio_cpu_per_request']:.2f}x CPU per request; failed {one['failed'] + two['failed']}")
    return 0 if one["failed"] + two["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
