"""Snapshot publish and load time for realistic LDRO learner states, against raw Redis SET/GET of the same bytes.

The states are real: ``learners.registry.build_learner("ldro", ...)`` trained for two
micro-batches on simulated LETOR+KuaiRand sessions, so they carry the student, the AR teacher,
the reward model and the Adam moments (what the learner process publishes). Two sizes: the
project default (hidden 32) and a production-sized one (hidden 256, 8 heads).

Per state and per Redis (its own loopback redis-server: ``volatile`` without persistence, and
``durable`` with AOF ``appendfsync always``, what the snapshot store should run on):

* ``publish``: :meth:`SnapshotRegistry.publish` (safetensors + MULTI/EXEC write + read-back
  verification + Lua pointer move + pub/sub; the Kafka announcement is off: no broker here);
* ``load``: :meth:`SnapshotRegistry.load` (read + sha256 + safetensors decode + finiteness);
* ``raw_set`` / ``raw_get``: one SET / GET of the same blob bytes, the floor, measured in the
  same run; the printed ratios are against it (the machine is shared and noisy).

    .venv/bin/python bench/snapshot_bench.py --reps 30
"""

from __future__ import annotations

import argparse
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
from feature_store.snapshots import SnapshotRegistry, serialize_state  # noqa: E402
from learners.registry import build_learner  # noqa: E402
from simulator.examples import feature_examples  # noqa: E402

SIZES = {"ldro-default": {}, "ldro-h256": {"hidden": 256, "heads": 8}}


def start_redis(directory: Path, durable: bool) -> tuple[subprocess.Popen, str]:
    port = stack.free_port()
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    proc = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             *persistence, "--dir", str(directory)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    stack.wait_until(lambda: stack.redis_ready(url), 20, "redis", proc.pid)
    return proc, url


def p(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()

    examples = feature_examples(32, seed=0, with_features=True)
    states = {}
    for name, config in tqdm(SIZES.items(), desc="training LDRO states"):
        learner = build_learner("ldro", **config)
        learner.learn_many(examples[:16])
        learner.learn_many(examples[16:])
        states[name] = learner.state_dict()

    rows = []
    work = Path(tempfile.mkdtemp(prefix="snapshot-bench-"))
    try:
        for durable in (False, True):
            directory = work / ("durable" if durable else "volatile")
            directory.mkdir()
            proc, url = start_redis(directory, durable)
            try:
                settings = load_settings({"STREAMRANK_HOME": str(work), "STREAMRANK_REDIS": url})
                client = redis.Redis.from_url(url)
                registry = SnapshotRegistry(client, settings, keep=3, announce_kafka=False)
                for name, state in states.items():
                    blob = serialize_state(state)
                    t = {"publish": [], "load": [], "raw_set": [], "raw_get": []}
                    for rep in tqdm(range(args.reps + 2), desc=f"{name} {'durable' if durable else 'volatile'}"):
                        timed = []
                        start = time.perf_counter()
                        registry.publish(name, state, metrics={"rep": rep})
                        timed.append(("publish", time.perf_counter() - start))
                        start = time.perf_counter()
                        registry.load(name)
                        timed.append(("load", time.perf_counter() - start))
                        start = time.perf_counter()
                        client.set("bench:raw", blob)
                        timed.append(("raw_set", time.perf_counter() - start))
                        start = time.perf_counter()
                        client.get("bench:raw")
                        timed.append(("raw_get", time.perf_counter() - start))
                        if rep >= 2:  # warm-up
                            for key, seconds in timed:
                                t[key].append(seconds * 1000)
                    rows.append((name, "durable" if durable else "volatile", len(blob), len(state.tensors), t))
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nsnapshot publish/load, {args.reps} reps after 2 warm-up (ms; ratio = p50 / p50 of raw SET or GET)")
    print(f"{'state':<14}{'redis':<10}{'MB':>7}{'tensors':>8}{'publish p50':>13}{'p99':>8}{'x raw SET':>10}"
          f"{'load p50':>10}{'p99':>8}{'x raw GET':>10}{'raw SET':>9}{'raw GET':>9}")
    for name, kind, size, n_tensors, t in rows:
        print(f"{name:<14}{kind:<10}{size / 1e6:>7.2f}{n_tensors:>8}{p(t['publish'], 50):>13.2f}"
              f"{p(t['publish'], 99):>8.2f}{p(t['publish'], 50) / p(t['raw_set'], 50):>10.1f}"
              f"{p(t['load'], 50):>10.2f}{p(t['load'], 99):>8.2f}{p(t['load'], 50) / p(t['raw_get'], 50):>10.1f}"
              f"{p(t['raw_set'], 50):>9.2f}{p(t['raw_get'], 50):>9.2f}")


if __name__ == "__main__":
    main()
