"""Feature read for 1 user + 1 query + N candidate items: Feast SDK vs direct pipelined Redis read.

Sets up its own loopback redis-server (no persistence) and a Feast repo in a temporary
STREAMRANK_HOME, applies it with Feast's CLI, materializes the real data (KuaiRand users and
videos, OBD users/items, LETOR documents; ``--limit`` slices it) and pushes streaming item/query
stats computed from simulated sessions, so every read hits real Feast-written keys. Then, per
request (a random KuaiRand user, a random LETOR query, N random LETOR documents), the two
readers run back to back in alternating order:

* ``feast_sdk``: ``FeatureStore.get_online_features`` with N entity rows (user, query, item);
* ``direct``: :class:`feature_store.online_read.DirectFeatureReader` (one pipeline of N+2 HMGETs);
* ``ping``: one Redis PING round trip (the floor any read pays), measured in the same run.

It prints p50/p99 (ms) and ratios against ``feast_sdk`` measured in the same run (the machine is
shared and noisy; compare ratios, not absolute numbers), next to Feast's published Python
feature server p99 for 50 rows (50 ms, INFRA.md).

    .venv/bin/python bench/feature_bench.py --items 50 --requests 400
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_store.feast_repo import apply, materialize_all  # noqa: E402
from feature_store.online_read import DEFAULT_FEATURES, DirectFeatureReader, FeastSdkReader  # noqa: E402
from feature_store.settings import FeatureStoreSettings  # noqa: E402
from feature_store.simulated_examples import simulated_labeled_lists  # noqa: E402
from feature_store.stats_push import StatsPusher  # noqa: E402
from feature_store.stream_stats import StatsBook  # noqa: E402
from simulator.letor import load_letor  # noqa: E402
from streamrank import stack  # noqa: E402
from streamrank.config import load_settings  # noqa: E402

FEAST_PUBLISHED_P99_MS_50_ROWS = 50.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--limit", type=int, default=None, help="rows per real file (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="feature-bench-"))
    port = stack.free_port()
    server = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(home)], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        stack.wait_until(lambda: stack.redis_ready(url), 20, "redis", server.pid)
        settings = load_settings({"STREAMRANK_HOME": str(home), "STREAMRANK_REDIS": f"127.0.0.1:{port}"})
        t0 = time.perf_counter()
        repo = apply(settings, FeatureStoreSettings(feast_project="bench"), limit=args.limit, progress=True)
        store = repo.store()
        materialize_all(repo, store=store)
        book = StatsBook(86_400.0)
        book.add_all(simulated_labeled_lists(400, seed=args.seed, max_candidates=None))
        StatsPusher(store).push(*book.pending_rows())
        print(f"setup (apply + materialize + stats push): {time.perf_counter() - t0:.1f}s; "
              f"redis keys: {redis.Redis.from_url(url).dbsize()}")

        letor = load_letor(ROOT.parent / "shared" / "data" / "letor" / "rank.train")
        docs = [d for q in letor.queries for d in q.doc_ids]
        queries = [f"q{q.qid}" for q in letor.queries]
        users = [f"kr{u}" for u in range(min(args.limit or 27_000, 27_000))]
        rng = random.Random(args.seed)
        requests = [(rng.choice(users), rng.choice(queries), rng.sample(docs, args.items))
                    for _ in range(args.requests + args.warmup)]

        direct, sdk = DirectFeatureReader(store), FeastSdkReader(store)
        ping_client = redis.Redis.from_url(url)
        a, b = direct.read(*requests[0]), sdk.read(*requests[0])
        if a != b:
            raise SystemExit("the two readers disagree: refusing to benchmark")
        timings: dict[str, list[float]] = {"feast_sdk": [], "direct": [], "ping": []}
        for n, (user, query, items) in enumerate(tqdm(requests, desc="reads")):
            order = [("feast_sdk", sdk), ("direct", direct)]
            if n % 2:
                order.reverse()
            for name, reader in order:
                start = time.perf_counter()
                reader.read(user, query, items)
                elapsed = (time.perf_counter() - start) * 1000
                if n >= args.warmup:
                    timings[name].append(elapsed)
            start = time.perf_counter()
            ping_client.ping()
            if n >= args.warmup:
                timings["ping"].append((time.perf_counter() - start) * 1000)

        base50, base99 = percentile(timings["feast_sdk"], 50), percentile(timings["feast_sdk"], 99)
        print(f"\nfeature read: 1 user + 1 query + {args.items} items, {len(DEFAULT_FEATURES)} features, "
              f"{args.requests} requests (after {args.warmup} warm-up)")
        print(f"{'path':<12}{'p50 ms':>9}{'p99 ms':>9}{'p50 / feast_sdk':>17}{'p99 / feast_sdk':>17}")
        for name, values in timings.items():
            p50, p99 = percentile(values, 50), percentile(values, 99)
            print(f"{name:<12}{p50:>9.3f}{p99:>9.3f}{p50 / base50:>17.3f}{p99 / base99:>17.3f}")
        print(f"{'feast server':<12}{'':>9}{FEAST_PUBLISHED_P99_MS_50_ROWS:>9.1f}   (Feast's published Python feature "
              f"server p99 for 50 rows; not measured here)")
        print(f"direct speed-up over Feast SDK: p50 x{base50 / percentile(timings['direct'], 50):.1f}, "
              f"p99 x{base99 / percentile(timings['direct'], 99):.1f}")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
