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

``--stats-agent`` measures the streaming stats agent's freshness instead: on an embedded stack
(broker + Redis, started in a temporary home), one example at a time is produced to ``examples``
and the time until its item's decayed impression count changes in Redis is recorded, next to
the same record's produce -> consume time for a plain kafka-python consumer (the broker floor),
measured in the same run, and the configured batching bound ``STREAMRANK_STATS_LATENCY_MS``.

    .venv/bin/python bench/feature_bench.py --stats-agent --samples 40
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

from common import stack  # noqa: E402
from common.config import load_settings  # noqa: E402
from feature_store.feast_repo import apply, materialize_all  # noqa: E402
from feature_store.online_read import DEFAULT_FEATURES, DirectFeatureReader, FeastSdkReader  # noqa: E402
from feature_store.settings import FeatureStoreSettings  # noqa: E402
from feature_store.stats_push import StatsPusher  # noqa: E402
from feature_store.stream_stats import StatsBook  # noqa: E402
from simulator.examples import feature_examples  # noqa: E402
from simulator.letor import load_letor  # noqa: E402

FEAST_PUBLISHED_P99_MS_50_ROWS = 50.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def stats_agent_bench(samples: int, latency_ms: float) -> None:
    """Produce -> visible-in-Redis latency of the stats agent vs produce -> consumed of a plain consumer."""
    import os  # noqa: PLC0415

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: PLC0415

    from contracts.events import encode  # noqa: PLC0415

    home = Path(tempfile.mkdtemp(prefix="stats-agent-bench-"))
    base = load_settings({"STREAMRANK_HOME": str(home)})
    state = stack.up(base)
    agent = None
    try:
        settings = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
        fs = FeatureStoreSettings(feast_project="agentbench", stats_latency_ms=latency_ms)
        repo = apply(settings, fs, limit=50, progress=False)
        reader = DirectFeatureReader(repo.store(), ["item_stats:impressions"])
        env = {**os.environ, "STREAMRANK_HOME": str(home), "STREAMRANK_KAFKA": settings.kafka_bootstrap,
               "STREAMRANK_REDIS": settings.redis, "STREAMRANK_FEAST_PROJECT": fs.feast_project,
               "STREAMRANK_STATS_LATENCY_MS": str(latency_ms)}
        agent = subprocess.Popen([sys.executable, "-m", "feature_store.stats_agent"], env=env, cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0)
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False)
        topic = settings.topics.examples
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        examples = feature_examples(samples + 1, seed=7, max_candidates=10)

        def impressions(item_id: str) -> float:
            return reader.read(None, None, [item_id]).items[0]["item_stats__impressions"] or 0.0

        def visible_after(example, deadline_s: float) -> tuple[float, float]:
            item = example.labels[0].item_id
            before = impressions(item)
            start = time.perf_counter()
            producer.send(topic, key=example.request_id.encode(), value=encode(example)).get(timeout=30)
            consumed = None
            while time.perf_counter() - start < deadline_s:
                if consumed is None and consumer.poll(timeout_ms=5, max_records=10):
                    consumed = time.perf_counter() - start
                if impressions(item) > before:
                    return consumed if consumed is not None else float("nan"), time.perf_counter() - start
                time.sleep(0.002)
            raise SystemExit(f"the agent did not update {item} within {deadline_s}s")

        visible_after(examples[0], 300.0)  # waits for the agent to start and join its group
        plain, agent_ms = [], []
        for example in tqdm(examples[1:], desc="freshness"):
            consumed, visible = visible_after(example, 60.0)
            plain.append(consumed * 1000)
            agent_ms.append(visible * 1000)
            time.sleep(0.05)
        consumer.close()
        producer.close()
        p50, p99 = percentile(agent_ms, 50), percentile(agent_ms, 99)
        c50, c99 = percentile([x for x in plain if x == x], 50), percentile([x for x in plain if x == x], 99)
        print(f"\nstats agent freshness, {samples} single-example samples, STREAMRANK_STATS_LATENCY_MS={latency_ms:g}")
        print(f"{'path':<34}{'p50 ms':>9}{'p99 ms':>9}{'p50 / plain':>13}")
        print(f"{'plain consumer (produce->consumed)':<34}{c50:>9.1f}{c99:>9.1f}{1.0:>13.2f}")
        print(f"{'stats agent (produce->in Redis)':<34}{p50:>9.1f}{p99:>9.1f}{p50 / c50:>13.2f}")
        print(f"configured batching bound: {latency_ms:g} ms (+ one Feast push)")
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        stack.down(base)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stats-agent", action="store_true", help="measure the stats agent's freshness instead")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="STREAMRANK_STATS_LATENCY_MS for the agent")
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--limit", type=int, default=None, help="rows per real file (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.stats_agent:
        stats_agent_bench(args.samples, args.latency_ms)
        return

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
        book.add_all(feature_examples(400, seed=args.seed, max_candidates=None))
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
