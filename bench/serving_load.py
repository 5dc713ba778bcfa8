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

Requests per server core: the steady phase's answered requests over the CPU seconds the server
process used meanwhile (``/proc/PID/stat``), so the clients' own CPU on the shared cores does not
count against the server. With ``--baseline-ref`` the baseline server's steady phase is measured
the same way, alternating with this tree's (the idle server paused), and the ratio is printed.

What the machine can do, first: ``details.machine`` names the CPU (the VM type changes between
sessions, and with it every absolute figure) and ``details.model_floor`` times the three served
models alone in this process before any server starts (``bench/compute_floor.py``): one request's
latency cannot go below ``one_request_ms`` on this machine, whatever the HTTP path does.

Contract (issue 19): ``--quick --json`` (about 3 minutes; with ``--baseline-ref`` about 4) prints
one JSON object with ``one_client: {p50_ms, p99_ms}``, ``eight_clients: {requests_per_core,
p99_ms}``, ``http_floor: {p50_ms, p99_ms}`` and ``swaps: {failed, p99_ratio}``; the rest of the
figures under ``details``. Progress goes to stderr.

    .venv/bin/python bench/serving_load.py --quick --json --baseline-ref a784f3e

    .venv/bin/python bench/serving_load.py --clients 8 --swap-s 60 --output out/bench/serving_load.json
"""

from __future__ import annotations

import argparse
import http.client
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
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import stack  # noqa: E402
from common.config import load_settings  # noqa: E402
from compute_floor import machine_info, model_floor  # noqa: E402
from serving.http_middleware import STAGES  # noqa: E402


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
    the rest (client, HTTP, the event loop, sockets; all of it on the same shared cores); then the
    handler's parts the server named (``queue``, ``batch``, ``read``, ``calibrate``, ``fuse``,
    ``rerank``: :func:`serving.http_middleware.server_timing`)."""
    rows = [(r[1] * 1000.0, r[4]) for r in records if r[2] and r[4]]
    if not rows:
        return {}
    parts = {"wait": [t.get("wait", 0.0) for _, t in rows], "handler": [t.get("handler", 0.0) for _, t in rows],
             "outside": [lat - t.get("wait", 0.0) - t.get("handler", 0.0) for lat, t in rows]}
    for stage in STAGES:
        values = [t[stage] for _, t in rows if stage in t]
        if values:
            parts[stage] = values
    return {k: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99))} for k, v in parts.items()}


class Clients:
    """``n`` client threads posting rerank requests (or, with no ``bodies``, plain GETs of ``url``);
    records (start, latency, ok, label, server timing in ms) per request."""

    def __init__(self, url: str, bodies: list[dict], n: int) -> None:
        self.url, self.bodies, self.n = url, bodies, n
        self.records: list[tuple] = []
        self._lock = threading.Lock()

    def run(self, seconds: float, label: str) -> list[tuple]:
        """Each thread keeps one HTTP/1.1 connection (stdlib ``http.client``, reopened after a failure).

        Why not httpx: the client threads share the 2 cores with the server, and httpx's
        per-request Python cost (~0.3 ms against ~0.1 ms for ``http.client``, one-off timing of a
        trivial endpoint here) was CPU taken from the server under 8 clients and latency added to
        every figure; the issue's own first measurement used wrk, a C load generator."""
        split = urlsplit(self.url)
        path = split.path or "/"
        stop_at = time.monotonic() + seconds
        out: list[tuple] = []

        def worker(k: int) -> None:
            local = []
            conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10.0)
            i = k
            while time.monotonic() < stop_at:
                body = dict(self.bodies[i % len(self.bodies)], request_id=f"{label}-{k}-{i}") if self.bodies else None
                payload = json.dumps(body).encode() if body is not None else None
                i += self.n
                t0 = time.monotonic()
                timing: dict[str, float] = {}
                try:
                    if payload is not None:
                        conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
                    else:
                        conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                    elapsed = time.monotonic() - t0
                    timing = parse_server_timing(response.getheader("server-timing"))
                except Exception:  # noqa: BLE001 - a failed request is counted, never hidden
                    ok = False
                    elapsed = time.monotonic() - t0
                    conn.close()
                    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10.0)
                local.append((t0, elapsed, ok, label, timing))
            conn.close()
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
                    help="also serve this git ref (e.g. a previous release) and interleave the single-client and "
                         "steady rounds between the two servers, the idle one paused with SIGSTOP")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server with --baseline-ref")
    ap.add_argument("--single-only", action="store_true", help="stop after the single-client phase and the HTTP floor")
    ap.add_argument("--quick", action="store_true", help="short phases: single 20 s, steady 30 s, swaps 30 s")
    ap.add_argument("--json", action="store_true", help="print only the contract's JSON object on stdout")
    ap.add_argument("--py-spy", type=Path, default=None, dest="py_spy",
                    help="record the server's stacks with py-spy during the first steady phase, or with "
                         "--single-only during the single-client phase (raw collapsed stacks to this file; see the "
                         "profile notes in serving/scoring.py)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    if args.py_spy and args.baseline_ref:  # the profile samples the steady phase, which alternates two servers then
        ap.error("--py-spy profiles one server: run it without --baseline-ref")
    if args.quick:
        args.single_s, args.steady_s, args.swap_s, args.rounds = 20.0, 30.0, 30.0, 2
    if args.json:  # progress and the human summary go to stderr
        sys.stdout = sys.stderr
    result = run(args)
    if args.json:
        sys.stdout = sys.__stdout__
        print(json.dumps(contract(result)))
    return 0 if result.get("failed_requests", 1) == 0 else 1


def contract(result: dict) -> dict:
    """The issue's keys (``one_client``, ``eight_clients``, ``http_floor``, ``swaps``) and the rest under ``details``."""
    def pick(d: dict, *keys: str) -> dict:
        return {k: d.get(k) for k in keys}

    eight = {"requests_per_core": result.get("steady_requests_per_core"), **pick(result.get("steady", {}), "p99_ms", "p50_ms"),
             "requests_per_s": result.get("throughput_rps", {}).get("steady")}
    if "steady_baseline" in result:
        eight.update(baseline_ref=result["steady_baseline"]["ref"],
                     baseline_requests_per_core=result["steady_baseline"]["requests_per_core"],
                     baseline_p99_ms=result["steady_baseline"]["p99_ms"],
                     requests_per_core_ratio=result["steady_requests_per_core"]
                     / result["steady_baseline"]["requests_per_core"])
    one = pick(result.get("single_client", {}), "p50_ms", "p99_ms")
    if "single_client_baseline" in result:
        one.update(baseline_p50_ms=result["single_client_baseline"]["p50_ms"],
                   baseline_p99_ms=result["single_client_baseline"]["p99_ms"])
    return {"one_client": one, "eight_clients": eight,
            "http_floor": pick(result.get("http_floor_single_client", {}), "p50_ms", "p99_ms"),
            "swaps": {"failed": result.get("failed_requests"), "p99_ratio": result.get("p99_ratio_swaps_over_steady"),
                      "published": result.get("snapshots_published"), "swapped": result.get("swaps_seen_by_server")},
            "details": result}


def start_server(env: dict, port: int, cwd: Path, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the server's lifetime
    return subprocess.Popen([sys.executable, "-m", "streamrank.cli.main", "serve"],
                            env=dict(env, STREAMRANK_SERVE_PORT=str(port)), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=cwd)


def wait_ready(url: str, server: subprocess.Popen, port: int, what: str, roles: tuple[str, ...] = ("reranker",)) -> None:
    """Wait until the server serves version 1 of every role in ``roles``.

    Every role, not only the reranker: a baseline tree that refuses a snapshot (an older release
    and a newer snapshot format) serves that role uncalibrated or with static weights, and would be
    timed doing less work than this tree (it happened: a784f3e refused the UMNN snapshot once
    the calibration settings grew)."""
    import httpx  # noqa: PLC0415

    stack.wait_until(lambda: stack.port_open("127.0.0.1", port), 120, what, server.pid)
    stack.wait_until(lambda: all((httpx.get(f"{url}/models").json()["serving"].get(role) or {}).get("version") == "1"
                                 for role in roles), 60,
                     f"{what}: version 1 of {', '.join(roles)} (a refused snapshot is in its server.log)")


class Round(NamedTuple):
    """One steady round against one server: the client's records, the server's CPU seconds and minor faults."""

    records: list[tuple]
    cpu_s: float
    faults: int


def steady_round(clients: "Clients", server: subprocess.Popen, seconds: float) -> Round:
    """``seconds`` of the clients against one server, with the server's CPU and page faults meanwhile."""
    cpu0, faults0 = stack.group_cpu_s(server.pid), stack.group_minor_faults(server.pid)
    records = clients.run(seconds, "steady")
    return Round(records, stack.group_cpu_s(server.pid) - cpu0, stack.group_minor_faults(server.pid) - faults0)


def merged(rounds: list[Round]) -> Round:
    return Round([r for part in rounds for r in part.records], sum(p.cpu_s for p in rounds),
                 sum(p.faults for p in rounds))


def per_core(records: list[tuple], cpu: float) -> float:
    return sum(1 for r in records if r[2]) / max(cpu, 1e-9)


def _py_spy(args: argparse.Namespace, pid: int, seconds: float) -> subprocess.Popen | None:
    """py-spy sampling the server for ``seconds`` into ``--py-spy`` (None without the flag).

    ``--nonblocking`` samples without pausing the server, so the profile does not slow what it measures."""
    if not args.py_spy:
        return None
    args.py_spy.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                             "--duration", str(int(seconds)), "--rate", "250", "--format", "raw",
                             "--nonblocking", "--output", str(args.py_spy)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> dict:
    """Stack, Feast, snapshots, the server (and the baseline's), then the phases; the result dict."""
    home = Path(tempfile.mkdtemp(prefix="serving-load-"))
    env = dict(os.environ, STREAMRANK_HOME=str(home))
    env.pop("STREAMRANK_KAFKA", None)
    env.pop("STREAMRANK_REDIS", None)
    base = load_settings(env)
    state = stack.up(base)
    settings = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
    servers: list[subprocess.Popen] = []
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info()}
    try:
        # Before anything else runs: what the models alone cost on this machine (bench/compute_floor.py).
        result["model_floor"] = model_floor(args.candidates, calls=10 if args.quick else 20)
        print(f"models alone in process (one torch thread): {result['model_floor']['one_request_ms']:.2f} ms for one "
              f"request, {result['model_floor']['batched_ms_per_request']:.2f} ms per request in a batch of 8", flush=True)
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
        server_env = dict(env, STREAMRANK_KAFKA=settings.kafka, STREAMRANK_REDIS=settings.redis,
                          STREAMRANK_SERVE_FEATURE_SOURCE=args.features,
                          STREAMRANK_SERVE_FUSION=args.fusion, STREAMRANK_SERVE_CALIBRATOR=args.calibrator,
                          STREAMRANK_SERVE_POLL_INTERVAL_S="1.0",
                          # No logged traffic to judge snapshots by: the gate would (rightly) keep
                          # version 1; this bench measures the swap path, so the gate is off.
                          STREAMRANK_SERVE_GATE_ENABLED="0",
                          OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        port = stack.free_port()
        server = start_server(server_env, port, ROOT, home / "server.log")
        servers.append(server)
        url = f"http://127.0.0.1:{port}"
        roles = ("reranker",) + (("calibrator",) if args.calibrator else ()) + (("fusion",) if args.fusion else ())
        wait_ready(url, server, port, "server", roles)
        bodies = make_bodies(args.candidates, 200, seed=0)
        if args.features == "request":
            import torch  # noqa: PLC0415

            gen = torch.Generator().manual_seed(0)
            for b in bodies:
                for c in b["candidates"]:
                    c["features"] = [round(float(x), 4) for x in torch.rand(300, generator=gen)]
        Clients(f"{url}/rerank", bodies, 2).run(5.0, "warmup")
        baseline = base_url = None
        if args.baseline_ref:
            baseline_tree = export_tree(args.baseline_ref, home / "baseline-tree")
            base_port = stack.free_port()
            baseline = start_server(server_env, base_port, baseline_tree, home / "baseline-server.log")
            servers.append(baseline)
            base_url = f"http://127.0.0.1:{base_port}"
            wait_ready(base_url, baseline, base_port, "baseline server", roles)
            Clients(f"{base_url}/rerank", bodies, 2).run(5.0, "warmup")
        phases(args, result, url, server, base_url, baseline, bodies, registry, states)
        registry.close()
    finally:
        for proc in servers:
            stack.stop_pid(proc.pid, grace=10)
        stack.down(replace(base))
    _report(args, result)
    return result


def alternate(args: argparse.Namespace, server: subprocess.Popen, baseline: subprocess.Popen, seconds: float,
              measure) -> tuple[list, list]:
    """``args.rounds`` rounds of ``measure(target_is_baseline)``, this tree then the baseline, the other paused."""
    mine, theirs = [], []
    for _ in range(args.rounds):
        for is_baseline, pause, sink in ((False, baseline, mine), (True, server, theirs)):
            os.killpg(pause.pid, signal.SIGSTOP)
            try:
                sink.append(measure(is_baseline, seconds / args.rounds))
            finally:
                os.killpg(pause.pid, signal.SIGCONT)
    return mine, theirs


def phases(args, result, url, server, base_url, baseline, bodies, registry, states) -> None:
    """Single client (and the floor), steady, swaps, steady; fills ``result``."""
    import httpx  # noqa: PLC0415

    def lat(records):
        return [r[1] for r in records if r[2]]

    if baseline is not None:
        mine, theirs = alternate(args, server, baseline, args.single_s, lambda b, s: Clients(
            f"{base_url if b else url}/rerank", bodies, 1).run(s, "single"))
        single = [r for part in mine for r in part]
        result["single_client_baseline"] = {"ref": args.baseline_ref,
                                            **percentiles(lat([r for part in theirs for r in part]))}
    else:
        spy = _py_spy(args, server.pid, args.single_s) if args.single_only else None
        single = Clients(f"{url}/rerank", bodies, 1).run(args.single_s, "single")
        if spy is not None:
            spy.wait(30)
    # The floor under any endpoint on this machine at this moment: the same client and HTTP
    # stack on GET /healthz (no body, no feature read, no model).
    floor = Clients(f"{url}/healthz", [], 1).run(min(10.0, args.single_s / 2), "floor")
    result["http_floor_single_client"] = percentiles(lat(floor))
    result["single_client_split"] = split_latency(single)
    result["single_client"] = percentiles(lat(single))
    if args.single_only:
        result.update(failed_requests=sum(1 for r in single if not r[2]), requests=len(single))
        return
    clients = Clients(f"{url}/rerank", bodies, args.clients)
    if baseline is not None:
        base_clients = Clients(f"{base_url}/rerank", bodies, args.clients)
        mine, theirs = alternate(args, server, baseline, args.steady_s / 2, lambda b, s: steady_round(
            base_clients if b else clients, baseline if b else server, s))
        base = merged(theirs)
        result["steady_baseline"] = {"ref": args.baseline_ref, **percentiles(lat(base.records)),
                                     "requests_per_core": per_core(base.records, base.cpu_s),
                                     "minor_faults_per_request": base.faults / max(len(base.records), 1)}
        first = merged(mine)
        stack.stop_pid(baseline.pid, grace=10)  # the swap phase measures this tree alone
    else:
        spy = _py_spy(args, server.pid, args.steady_s / 2)
        first = steady_round(clients, server, args.steady_s / 2)
        if spy is not None:
            spy.wait(30)
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
    steady, cpu, faults = merged([first, steady_round(clients, server, args.steady_s / 2)])
    models = httpx.get(f"{url}/models").json()
    health = httpx.get(f"{url}/healthz").json()
    swap_decisions = [d for d in models["decisions"] if d["model"] == "ldro" and d["action"] == "swapped"]
    result.update({
        "steady": percentiles(lat(steady)),
        "steady_requests_per_core": per_core(steady, cpu),
        "steady_server_cpu_s": cpu,
        "steady_minor_faults_per_request": faults / max(len(steady), 1),
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


def _report(args: argparse.Namespace, result: dict) -> None:
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    m, floor = result["machine"], result.get("model_floor")
    print(f"\nmachine: {m['cpu']}, {m['logical_cpus']} logical CPUs, flags {' '.join(m['flags']) or '-'}, "
          f"load average {m['load_average']} at the start")
    if floor:
        print(f"models alone (UMNN -> DRPO -> LDRO in process, no HTTP, no feature read): one request "
              f"{floor['one_request_ms']:.2f} ms, {floor['batched_ms_per_request']:.2f} ms per request in a batch of "
              f"{floor['batch']}")
    print(f"single client, {args.candidates} candidates (features via {args.features}): "
          f"p50 {result['single_client']['p50_ms']:.2f} ms  p99 {result['single_client']['p99_ms']:.2f} ms (goal p99 <= 10)")
    fl = result["http_floor_single_client"]
    print(f"HTTP floor (GET /healthz, one client, same run): p50 {fl['p50_ms']:.2f} ms  p99 {fl['p99_ms']:.2f} ms")
    for part, v in result.get("single_client_split", {}).items():
        print(f"  {part:9s} p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms (Server-Timing)")
    if "single_client_baseline" in result:
        b = result["single_client_baseline"]
        print(f"single client on {b['ref']} (same run, interleaved): p50 {b['p50_ms']:.2f} ms  p99 {b['p99_ms']:.2f} ms"
              f" -> this tree / baseline: p50 {result['single_client']['p50_ms'] / b['p50_ms']:.2f}x"
              f"  p99 {result['single_client']['p99_ms'] / b['p99_ms']:.2f}x")
    if "steady" not in result:
        return
    print(f"{args.clients} clients: {result['steady_requests_per_core']:.0f} requests per server core-second; steady p99 "
          f"{result['steady']['p99_ms']:.2f} ms, during swaps p99 {result['during_swaps']['p99_ms']:.2f} ms -> ratio "
          f"{result['p99_ratio_swaps_over_steady']:.3f} (goal <= 1.25); {result['snapshots_published']} snapshots "
          f"published, {result['swaps_seen_by_server']} swaps, {result['failed_requests']} failed of "
          f"{result['requests']} requests; {result['steady_minor_faults_per_request']:.0f} minor page faults a request")
    if "steady_baseline" in result:
        b = result["steady_baseline"]
        print(f"{args.clients} clients on {b['ref']} (same run, interleaved): {b['requests_per_core']:.0f} requests per "
              f"server core-second, p99 {b['p99_ms']:.2f} ms, {b['minor_faults_per_request']:.0f} minor page faults a "
              f"request -> this tree / baseline: {result['steady_requests_per_core'] / b['requests_per_core']:.2f}x per core")


if __name__ == "__main__":
    sys.exit(main())
