"""Load test of the reranker while snapshots are published every second (bounded in time).

Starts its own embedded stack (broker + Redis on free loopback ports, temporary home), applies
the Feast repo and materialises the real LETOR document features, publishes initial UMNN /
DRPO / LDRO snapshots (the full calibrate -> fuse -> rerank path), starts ``streamrank serve``
as a **second process** on 127.0.0.1 (item features fetched from Feast's Redis keys, not sent
in the request), then drives it from this process:

1. ``single``: one client, ``--single-s`` seconds: rerank p50/p99 for ``--candidates`` candidates
   including the feature fetch (goal: p99 <= 10 ms), then the same client on ``GET /healthz``
   (the HTTP floor of this machine at that moment: no body, no feature read, no model);
2. ``steady``: ``--clients`` concurrent clients, no publishing (``--steady-s`` seconds, half
   before and half after the swap phase so that drift on the shared machine cancels);
3. ``swaps``: the same clients for ``--swap-s`` (>= 60) seconds while a new LDRO snapshot is
   published every ``--publish-interval`` seconds (promotion gate off: there is no logged
   traffic to judge the snapshots by, and the gate would keep version 1).

With ``--baseline-ref REF`` (e.g. the previous release) a second server runs the code of that git
ref (``git archive``, same venv, same stack) and the single-client phase alternates between the
two in ``--rounds`` rounds, the server not being measured paused with SIGSTOP so that its
background threads cost the measured one nothing; the ratio this tree / baseline is printed.
Both share the broker, so whatever the baseline's impressions cost the broker shows up in both.

Prints client-side latency percentiles, failures (must be 0), swaps done, and the ratio
p99(swaps) / p99(steady) (goal <= 1.25), measured in the same run. ``--output`` writes JSON.

    .venv/bin/python bench/serving_load.py --clients 8 --swap-s 60 --output out/bench/serving_load.json
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
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import stack  # noqa: E402
from common.config import load_settings  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values) * 1000.0
    return {"n": int(arr.size), "p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
            "p99_ms": float(np.percentile(arr, 99)), "max_ms": float(arr.max())}


def parse_server_timing(value: str | None) -> dict[str, float]:
    """``"wait;dur=0.1, handler;dur=2.5"`` -> ``{"wait": 0.1, "handler": 2.5}`` (milliseconds)."""
    out: dict[str, float] = {}
    for part in (value or "").split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, num = param.strip().partition("=")
            if key == "dur" and name:
                out[name] = float(num)
    return out


def split_latency(records: list[tuple]) -> dict[str, dict[str, float]]:
    """Per ok request with a ``Server-Timing`` header: where its client-side latency went.
    ``wait`` (arrival -> handler) and ``handler`` as the server measured them, and ``outside``:
    the rest (client, HTTP, the event loop, sockets; all of it on the same shared cores)."""
    rows = [(r[1] * 1000.0, r[4]) for r in records if r[2] and r[4]]
    if not rows:
        return {}
    parts = {"wait": [t.get("wait", 0.0) for _, t in rows], "handler": [t.get("handler", 0.0) for _, t in rows],
             "outside": [lat - t.get("wait", 0.0) - t.get("handler", 0.0) for lat, t in rows]}
    return {k: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99))} for k, v in parts.items()}


class Clients:
    """``n`` client threads posting rerank requests (or, with no ``bodies``, plain GETs of ``url``);
    records (start, latency, ok, label, server timing in ms) per request."""

    def __init__(self, url: str, bodies: list[dict], n: int) -> None:
        self.url, self.bodies, self.n = url, bodies, n
        self.records: list[tuple] = []
        self._lock = threading.Lock()

    def run(self, seconds: float, label: str) -> list[tuple]:
        import httpx  # noqa: PLC0415

        stop_at = time.monotonic() + seconds
        out: list[tuple] = []

        def worker(k: int) -> None:
            local = []
            with httpx.Client(timeout=10.0) as client:
                i = k
                while time.monotonic() < stop_at:
                    body = dict(self.bodies[i % len(self.bodies)], request_id=f"{label}-{k}-{i}") if self.bodies else None
                    i += self.n
                    t0 = time.monotonic()
                    timing: dict[str, float] = {}
                    try:
                        response = client.post(self.url, json=body) if body is not None else client.get(self.url)
                        ok = response.status_code == 200
                        elapsed = time.monotonic() - t0
                        timing = parse_server_timing(response.headers.get("server-timing"))
                    except Exception:  # noqa: BLE001 - a failed request is counted, never hidden
                        ok = False
                        elapsed = time.monotonic() - t0
                    local.append((t0, elapsed, ok, label, timing))
            with self._lock:
                out.extend(local)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.records.extend(out)
        return out


def make_bodies(n_candidates: int, count: int, seed: int) -> list[dict]:
    from simulator.letor import load_letor  # noqa: PLC0415

    dataset = load_letor(ROOT.parent / "shared" / "data" / "letor" / "rank.train")
    doc_ids = [d for q in dataset.queries for d in q.doc_ids]
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(count):
        items = rng.choice(len(doc_ids), size=n_candidates, replace=False)
        bodies.append({"request_id": f"b{i}", "user_id": f"kr{int(rng.integers(1000))}", "query": f"q{int(rng.integers(200))}",
                       "candidates": [{"item_id": doc_ids[j], "scores": {"click": float(rng.uniform(0.05, 0.9)),
                                                                           "long_view": float(rng.uniform(0.01, 0.5)),
                                                                           "watch_time": float(rng.uniform(0.1, 0.9))}}
                                      for j in items]})
    return bodies


def export_tree(ref: str, dest: Path) -> Path:
    """The files of git ``ref`` under ``dest`` (``git archive``; run with ``dest`` as cwd, its modules win)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def publisher(registry, model: str, base_state, interval: float, stop: threading.Event, published: list) -> None:
    """Publish ``model`` every ``interval`` s with slightly perturbed weights (a new version each time)."""
    import torch  # noqa: PLC0415

    from contracts.learner import LearnerState  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    next_at = time.monotonic()
    while not stop.is_set():
        tensors = {k: (v + 1e-3 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
                   for k, v in base_state.tensors.items()}
        t0 = time.monotonic()
        manifest = registry.publish(model, LearnerState(tensors=tensors, meta=base_state.meta))
        published.append((t0, manifest.version))
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--single-s", type=float, default=20.0)
    ap.add_argument("--steady-s", type=float, default=60.0)
    ap.add_argument("--swap-s", type=float, default=60.0)
    ap.add_argument("--publish-interval", type=float, default=1.0)
    ap.add_argument("--features", choices=("feast", "request"), default="feast")
    ap.add_argument("--calibrator", default="umnn", help="'' to serve without a calibrator")
    ap.add_argument("--fusion", default="drpo", help="'' to serve without a fusion policy")
    ap.add_argument("--baseline-ref", default=None,
                    help="also serve this git ref (e.g. a previous release) and interleave single-client rounds "
                         "between the two servers, the idle one paused with SIGSTOP")
    ap.add_argument("--rounds", type=int, default=3, help="single-client rounds per server with --baseline-ref")
    ap.add_argument("--single-only", action="store_true", help="stop after the single-client phase and the HTTP floor")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="serving-load-"))
    env = dict(os.environ, STREAMRANK_HOME=str(home))
    env.pop("STREAMRANK_KAFKA", None)
    env.pop("STREAMRANK_REDIS", None)
    base = load_settings(env)
    state = stack.up(base)
    settings = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
    server = None
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        print(f"stack up: kafka {settings.kafka} redis {settings.redis}", flush=True)
        if args.features == "feast":
            from feature_store.feast_repo import apply, materialize_all  # noqa: PLC0415

            t0 = time.monotonic()
            repo = apply(settings, limit=3005, progress=True)
            materialize_all(repo, store=repo.store())
            print(f"feast apply + materialize: {time.monotonic() - t0:.1f}s", flush=True)

        from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415
        from learners.registry import build_learner  # noqa: PLC0415

        registry = SnapshotRegistry(settings.redis_url, settings)
        states = {}
        for model in [m for m in (args.calibrator, args.fusion) if m] + ["ldro"]:
            states[model] = build_learner(model).state_dict()
            registry.publish(model, states[model])
        port = stack.free_port()
        server_env = dict(env, STREAMRANK_KAFKA=settings.kafka, STREAMRANK_REDIS=settings.redis,
                          STREAMRANK_SERVE_PORT=str(port), STREAMRANK_SERVE_FEATURE_SOURCE=args.features,
                          STREAMRANK_SERVE_FUSION=args.fusion, STREAMRANK_SERVE_CALIBRATOR=args.calibrator,
                          STREAMRANK_SERVE_POLL_INTERVAL_S="1.0",
                          # No logged traffic to judge snapshots by: the gate would (rightly) keep
                          # version 1; this bench measures the swap path, so the gate is off.
                          STREAMRANK_SERVE_GATE_ENABLED="0",
                          OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        log = open(home / "server.log", "ab")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, "-m", "streamrank.cli.main", "serve"], env=server_env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        stack.wait_until(lambda: stack.port_open("127.0.0.1", port), 120, "server", server.pid)
        import httpx  # noqa: PLC0415

        stack.wait_until(lambda: httpx.get(f"{url}/models").json()["serving"]["reranker"]["version"] == "1", 60,
                         "initial snapshots")
        bodies = make_bodies(args.candidates, 200, seed=0)
        if args.features == "request":
            import torch  # noqa: PLC0415

            gen = torch.Generator().manual_seed(0)
            for b in bodies:
                for c in b["candidates"]:
                    c["features"] = [round(float(x), 4) for x in torch.rand(300, generator=gen)]
        Clients(f"{url}/rerank", bodies, 2).run(5.0, "warmup")

        if args.baseline_ref:
            baseline_tree = export_tree(args.baseline_ref, home / "baseline-tree")
            base_port = stack.free_port()
            baseline = subprocess.Popen([sys.executable, "-m", "streamrank.cli.main", "serve"],
                                        env=dict(server_env, STREAMRANK_SERVE_PORT=str(base_port)),
                                        stdout=open(home / "baseline-server.log", "ab"),  # noqa: SIM115
                                        stderr=subprocess.STDOUT, start_new_session=True, cwd=baseline_tree)
            base_url = f"http://127.0.0.1:{base_port}"
            stack.wait_until(lambda: stack.port_open("127.0.0.1", base_port), 120, "baseline server", baseline.pid)
            stack.wait_until(lambda: httpx.get(f"{base_url}/models").json()["serving"]["reranker"]["version"] == "1",
                             60, "baseline snapshots")
            Clients(f"{base_url}/rerank", bodies, 2).run(5.0, "warmup")
            single, single_baseline = [], []
            for _ in range(args.rounds):  # interleaved; only the measured server runs
                for target, pause, sink in ((url, baseline, single), (base_url, server, single_baseline)):
                    os.killpg(pause.pid, signal.SIGSTOP)
                    try:
                        sink += Clients(f"{target}/rerank", bodies, 1).run(args.single_s / args.rounds, "single")
                    finally:
                        os.killpg(pause.pid, signal.SIGCONT)
            stack.stop_pid(baseline.pid, grace=10)
            result["single_client_baseline"] = {"ref": args.baseline_ref,
                                                **percentiles([r[1] for r in single_baseline if r[2]])}
        else:
            single = Clients(f"{url}/rerank", bodies, 1).run(args.single_s, "single")
        # The floor under any endpoint on this machine at this moment: the same client and HTTP
        # stack on GET /healthz (no body, no feature read, no model).
        floor = Clients(f"{url}/healthz", [], 1).run(min(10.0, args.single_s / 2), "floor")
        result["http_floor_single_client"] = percentiles([r[1] for r in floor if r[2]])
        result["single_client_split"] = split_latency(single)
        if args.single_only:
            result.update(single_client=percentiles([r[1] for r in single if r[2]]),
                          failed_requests=sum(1 for r in single if not r[2]), requests=len(single))
            return _report(args, result)
        clients = Clients(f"{url}/rerank", bodies, args.clients)
        steady = clients.run(args.steady_s / 2, "steady")
        stop, published = threading.Event(), []
        pub = threading.Thread(target=publisher, args=(registry, "ldro", states["ldro"], args.publish_interval, stop,
                                                       published))
        swap_start = time.monotonic()
        pub.start()
        swaps = clients.run(args.swap_s, "swaps")
        stop.set()
        pub.join()
        swap_end = time.monotonic()
        time.sleep(2.0)
        steady += clients.run(args.steady_s / 2, "steady")
        models = httpx.get(f"{url}/models").json()
        health = httpx.get(f"{url}/healthz").json()
        registry.close()

        def lat(records):
            return [r[1] for r in records if r[2]]

        swap_decisions = [d for d in models["decisions"] if d["model"] == "ldro" and d["action"] == "swapped"]
        result.update({
            "single_client": percentiles(lat(single)),
            "steady": percentiles(lat(steady)),
            "during_swaps": percentiles(lat(swaps)),
            "failed_requests": sum(1 for r in single + steady + swaps if not r[2]),
            "requests": len(single) + len(steady) + len(swaps),
            "snapshots_published": len(published),
            "swaps_seen_by_server": models["swaps"],
            "refusals": models["refusals"],
            "swap_phase_s": swap_end - swap_start,
            "load_s_p50": float(np.median([d["details"].get("load_s", 0) for d in swap_decisions] or [0])),
            "features_missing": health.get("features_missing"),
            "throughput_rps": {"steady": len(steady) / args.steady_s, "swaps": len(swaps) / args.swap_s},
        })
        result["p99_ratio_swaps_over_steady"] = result["during_swaps"]["p99_ms"] / result["steady"]["p99_ms"]
        result["p50_ratio_swaps_over_steady"] = result["during_swaps"]["p50_ms"] / result["steady"]["p50_ms"]
    finally:
        if server is not None:
            stack.stop_pid(server.pid, grace=10)
        stack.down(replace(base))
    return _report(args, result)


def _report(args: argparse.Namespace, result: dict) -> int:
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    print(f"\nsingle client, {args.candidates} candidates (features via {args.features}): "
          f"p50 {result['single_client']['p50_ms']:.2f} ms  p99 {result['single_client']['p99_ms']:.2f} ms (goal p99 <= 10)")
    fl = result["http_floor_single_client"]
    print(f"HTTP floor (GET /healthz, one client, same run): p50 {fl['p50_ms']:.2f} ms  p99 {fl['p99_ms']:.2f} ms")
    for part, v in result.get("single_client_split", {}).items():
        print(f"  {part:8s} p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms (Server-Timing: wait and handler)")
    if "single_client_baseline" in result:
        b = result["single_client_baseline"]
        print(f"single client on {b['ref']} (same run, interleaved): p50 {b['p50_ms']:.2f} ms  p99 {b['p99_ms']:.2f} ms"
              f" -> this tree / baseline: p50 {result['single_client']['p50_ms'] / b['p50_ms']:.2f}x"
              f"  p99 {result['single_client']['p99_ms'] / b['p99_ms']:.2f}x")
    if "steady" not in result:
        return 0 if result["failed_requests"] == 0 else 1
    print(f"{args.clients} clients: steady p99 {result['steady']['p99_ms']:.2f} ms, during swaps p99 "
          f"{result['during_swaps']['p99_ms']:.2f} ms -> ratio {result['p99_ratio_swaps_over_steady']:.3f} (goal <= 1.25); "
          f"{result['snapshots_published']} snapshots published, {result['swaps_seen_by_server']} swaps, "
          f"{result['failed_requests']} failed of {result['requests']} requests")
    return 0 if result["failed_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
