"""``streamrank demo``: the closed loop serve -> log -> join -> learn -> snapshot -> swap -> serve.

What it starts (and stops again, in reverse order, whatever happens):

1. the embedded stack (broker + Redis) unless one is running or ``STREAMRANK_KAFKA``/
   ``STREAMRANK_REDIS`` point at external ones; a fresh topic prefix per run;
2. the Feast repo, applied against that Redis (when ``feature_store`` provides it);
3. subprocesses (:mod:`loop.children`): the streams worker (``streamrank worker``: impressions ⋈
   feedback -> ``examples``), one learner worker per model (``streamrank learn --model NAME
   --publish``: a snapshot every ``snapshot_interval_s``), and the reranker (``streamrank serve``)
   with exploration on;
4. the LETOR/KuaiRand simulator as users (:mod:`loop.users`): ``rate`` requests/s over HTTP from
   ``concurrency`` threads, each answered with the simulator's feedback events on ``feedback``.

At the end it reads ``examples`` and ``model-updates`` back, computes the summary
(:mod:`loop.summary`), writes ``summary.json`` and PNG plots to ``output`` and prints the
headline numbers. While it runs, the reranker's ``GET /dashboard`` shows the loop live (the
simulator's curves come from :mod:`loop.live`), and a terminal gets a progress panel; at the end
``report.html`` (:mod:`loop.report`) puts the plots and the summary on one page.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from common import stack
from common.config import Settings, Topics
from common.topics import ensure_project_topics
from loop.children import Children, stack_settings, wait_assigned, wait_http
from loop.config import DemoConfig, stage_config
from loop.live import LiveView
from loop.readback import get_json
from loop.report import write_report
from loop.summary import summarise
from loop.users import Users
from serving.dashboard import SIMULATOR_STATUS
from streams.metrics import status_dir

log = logging.getLogger(__name__)

__all__ = ["DemoConfig", "run_demo"]


def run_demo(config: DemoConfig, settings: Settings, announce: Callable[[str], None] | None = None,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Run the closed loop once (module docstring) and return its summary, also written to ``summary.json``
    with ``report.html`` beside it. ``announce`` gets the dashboard's URL once the server answers;
    ``show_progress`` draws the live panel (default: when stderr is a terminal)."""
    output = Path(config.output)
    (output / "logs").mkdir(parents=True, exist_ok=True)
    base, started_stack = stack_settings(settings)
    settings = replace(base, topics=Topics(prefix=f"demo{int(time.time())}."))
    ensure_project_topics(settings)
    children: Children | None = None
    users: Users | None = None
    live: LiveView | None = None
    summary: dict[str, Any] = {"errors": 0, "error_details": []}
    try:
        feast_status = _apply_feast(settings, config) if config.feast else "skipped (--no-feast)"
        port = stack.free_port()
        demo_config = output / "streamrank-demo.json"
        demo_config.write_text(json.dumps(stage_config(config)))
        env = child_env(settings, config, demo_config, port, use_feast=feast_status.startswith("applied"))
        children = Children(env, output / "logs")
        base_url = _start_stages(children, settings, config, output / "checkpoints", port)
        users = Users(settings, config, base_url, send_features=not feast_status.startswith("applied"))
        if announce is not None:
            announce(f"{base_url}/dashboard")
        live = LiveView(lambda: users.served, status_dir(settings) / SIMULATOR_STATUS, base_url,
                        config.duration_s + config.drain_s, show=show_progress, fetch=get_json)
        live.start()
        started = time.time()
        users.run(config.duration_s, config.rate, config.concurrency)
        time.sleep(config.drain_s)  # let the last examples be learned, published and swapped
        models = get_json(f"{base_url}/models?limit=1000")
        # every swap, refusal and gate verdict with its timing (the summary keeps the last 20)
        (output / "decisions.json").write_text(json.dumps(models.get("decisions", []), indent=1, default=str))
        import httpx  # noqa: PLC0415

        metrics_text = httpx.get(f"{base_url}/metrics", timeout=5).text
        summary = summarise(config, settings, users, models, metrics_text, started, children.crashed(), feast_status,
                            children.children)
    finally:
        if live is not None:
            live.stop()
        if users is not None:
            users.close()
        if children is not None:
            children.stop_all()
        if started_stack:
            stack.down(base)
            shutil.rmtree(Path(base.home) / "noida", ignore_errors=True)  # the broker's log of this run
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["report"] = str(write_report(summary, output))
    return summary


def child_env(settings: Settings, config: DemoConfig, demo_config: Path, port: int, use_feast: bool) -> dict[str, str]:
    """The environment every stage runs with: this run's endpoints, topics, config file and serving knobs."""
    env = dict(os.environ)
    env.update(STREAMRANK_KAFKA=settings.kafka_bootstrap, STREAMRANK_REDIS=settings.redis or "",
               STREAMRANK_TOPIC_PREFIX=settings.topics.prefix, STREAMRANK_HOME=str(settings.home),
               STREAMRANK_PARTITIONS=str(settings.partitions), STREAMRANK_CONFIG=str(demo_config.resolve()),
               STREAMRANK_SNAPSHOT_INTERVAL_S=str(config.snapshot_interval_s), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               STREAMRANK_SERVE_PORT=str(port), STREAMRANK_SERVE_EXPLORE="1",
               STREAMRANK_SERVE_EXPLORE_RATE=str(config.explore_rate),
               STREAMRANK_SERVE_RERANKER=config.reranker, STREAMRANK_SERVE_CALIBRATOR=config.calibrator,
               STREAMRANK_SERVE_FUSION=config.fusion, STREAMRANK_SERVE_POLL_INTERVAL_S="0.5",
               STREAMRANK_SERVE_GATE_WINDOW=str(config.gate_window), STREAMRANK_SERVE_GATE_MIN_SAMPLES="60",
               STREAMRANK_SERVE_DEFAULT_FUSION_WEIGHTS=json.dumps(config.cold_start_weights),
               STREAMRANK_SERVE_FEATURE_SOURCE="feast" if use_feast else "request")
    return env


def _start_stages(children: Children, settings: Settings, config: DemoConfig, checkpoints: Path, port: int) -> str:
    """Start the streams worker, the learners and the server; return the server's URL once all consume.

    Users start only when every stage has its partitions: a worker or learner still joining its
    group would leave the first examples unlearned (on a loaded machine that took 30 s).
    """
    worker = children.start("streams-worker", "worker", "--name", "demo-worker", "--within", str(config.join_within_s))
    status_files = {worker.name: (worker, status_dir(settings) / "demo-worker.json")}
    for model in config.learners:
        learner = children.start(
            f"learner-{model}", "learn", "--model", model, "--checkpoint-dir", str(checkpoints),
            "--batch-size", str(config.learner_batch), "--within", str(config.learner_within_s),
            *([] if config.learner_max_wait_s is None else ["--max-wait", str(config.learner_max_wait_s)]),
            "--checkpoint-every", "1", "--idle-flush", "1.0", "--progress", "10", "--publish")
        status_files[learner.name] = (learner, checkpoints / model / "status.json")
    children.start("server", "serve")
    base_url = f"http://127.0.0.1:{port}"
    wait_http(f"{base_url}/healthz", config.startup_timeout_s, children)
    ready_after = wait_assigned(status_files, config.startup_timeout_s, children)
    log.info("all stages assigned their partitions after %.1f s", ready_after)
    return base_url


def _apply_feast(settings: Settings, config: DemoConfig) -> str:
    """``feast apply`` + materialise (all 3,005 LETOR documents); the server then fetches item features."""
    try:
        from feature_store.feast_repo import apply, materialize_all  # noqa: PLC0415
    except ImportError as exc:
        return f"skipped (feature_store not available: {exc})"
    try:
        repo = apply(settings, limit=3005, progress=True)
        materialize_all(repo, store=repo.store())
        return f"applied ({repo.path})"
    except Exception as exc:  # noqa: BLE001 - the loop serves with request features without it
        log.warning("feast apply failed: %s", exc)
        return f"failed: {type(exc).__name__}: {str(exc)[:300]}"
