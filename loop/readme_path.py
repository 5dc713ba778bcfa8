"""The README's by-hand CLI path, started from code: ``serve`` (defaults) + ``worker`` + ``learn
--model ldro --publish``, each its own process, then ``simulate`` against the server.

Why a module: two callers run this path and must run the same one, the integration test
(tests/integration/test_readme_path.py: hot swaps, no conflicting impressions, examples = requests)
and the storage bench (bench/storage_bound.py: the broker's log against its size bound while the
path runs). The stages run with ``deploy/sim.toml`` (the README's ``STREAMRANK_CONFIG`` for
simulated users); under 180 s of users, snapshots come every 15 s instead of the default 60 s so a
short run still sees swaps.
"""

from __future__ import annotations

import os
from pathlib import Path

from common import stack
from common.config import Settings
from common.paths import REPO_ROOT
from loop.children import Child, Children, wait_assigned, wait_http
from streams.metrics import status_dir

SIM_CONFIG = REPO_ROOT / "deploy" / "sim.toml"
#: shorter runs than this snapshot every ``SHORT_SNAPSHOT_S`` seconds (the default is 60 s)
SHORT_RUN_S = 180.0
SHORT_SNAPSHOT_S = 15
#: seconds the stages may take to answer and to get their partitions (a loaded 2-core machine)
HEALTHY_TIMEOUT_S = 120.0
ASSIGNED_TIMEOUT_S = 180.0
WORKER_NAME = "readme-worker"


def readme_env(settings: Settings, port: int, duration_s: float) -> dict[str, str]:
    """The environment of every stage: ``settings``' endpoints, topics and home, sim.toml, the server's port."""
    env = dict(os.environ)
    env.update(STREAMRANK_KAFKA=settings.kafka_bootstrap, STREAMRANK_REDIS=settings.redis or "",
               STREAMRANK_TOPIC_PREFIX=settings.topics.prefix, STREAMRANK_HOME=str(settings.home),
               STREAMRANK_PARTITIONS=str(settings.partitions), PYTHONUNBUFFERED="1",
               STREAMRANK_CONFIG=str(SIM_CONFIG), STREAMRANK_SERVE_PORT=str(port), OMP_NUM_THREADS="1")
    if duration_s < SHORT_RUN_S:
        env["STREAMRANK_SNAPSHOT_INTERVAL_S"] = str(SHORT_SNAPSHOT_S)
    return env


def start_stages(settings: Settings, log_dir: Path, checkpoints: Path, duration_s: float) -> tuple[Children, Child, str]:
    """Start serve, worker and learn as the README does; return them, the server's child and its URL
    once it answers and the worker and learner have their partitions. On a failure the started
    stages are stopped before the error propagates."""
    port = stack.free_port()
    children = Children(readme_env(settings, port, duration_s), log_dir)
    base_url = f"http://127.0.0.1:{port}"
    try:
        server = children.start("serve", "serve")
        worker = children.start("worker", "worker", "--name", WORKER_NAME)
        learner = children.start("learn", "learn", "--model", "ldro", "--publish", "--checkpoint-dir", str(checkpoints))
        wait_http(f"{base_url}/healthz", HEALTHY_TIMEOUT_S, children)
        wait_assigned({"worker": (worker, status_dir(settings) / f"{WORKER_NAME}.json"),
                       "learn": (learner, checkpoints / "ldro" / "status.json")}, ASSIGNED_TIMEOUT_S, children)
    except BaseException:
        children.stop_all()
        raise
    return children, server, base_url


def start_simulate(children: Children, base_url: str, duration_s: float) -> Child:
    """``streamrank simulate`` against ``base_url`` for ``duration_s`` seconds, reporting three times."""
    return children.start("simulate", "simulate", "--server", base_url, "--duration", str(duration_s),
                          "--report-every", str(duration_s / 3))


def simulate_reports(log: str) -> tuple[list[str], int]:
    """``simulate``'s report lines in its ``log`` and the requests the server answered over them
    (each line: ``simulate: <sent> requests, <failed> failed ...``)."""
    reports = [line for line in log.splitlines() if line.startswith("simulate: ") and "requests," in line]
    served = sum(int(line.split()[1]) - int(line.split("requests, ")[1].split()[0]) for line in reports)
    return reports, served
