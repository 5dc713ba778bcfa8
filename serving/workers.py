"""Several server processes on one port: ``streamrank serve --workers N`` (``ServeConfig.workers``).

uvicorn's supervisor binds the port once and spawns N worker processes that accept on that
socket; the kernel spreads connections over them, so N workers use up to N cores where one
process is held to one by the GIL. A spawned worker imports the app anew and cannot be handed a
built one (no pickle across processes), so each builds its own from the environment it inherits
(:func:`app_from_env`, the app factory uvicorn calls in each worker):

* settings: :func:`common.config.load_settings` on that environment, as the parent did;
* the :class:`~serving.settings.ServeConfig` the parent resolved (defaults, config file, env and
  CLI flags) as JSON in ``STREAMRANK_SERVE_WORKER_CONFIG``;
* ``PROMETHEUS_MULTIPROC_DIR`` and ``STREAMRANK_SERVE_METRICS_DIR``: the folder of the workers' metric
  files (serving.metrics), emptied
  by the parent before any worker starts, so ``/metrics`` adds up this run's workers only.

Each worker runs its own runtime (holder, snapshot watcher, impression emitter, examples reader,
dashboard recorder): each hears every snapshot announcement (Redis pub/sub and the model-updates
topic are read without a consumer group, plus polling) and hot-swaps on its own, through its own
promotion gate. Two workers can serve different versions for the moment between their swaps;
each response names the versions that scored it. ``/healthz``, ``/models`` and ``/dashboard``
answer for the worker that takes the connection.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.config import Settings
from serving.gate import GateConfig
from serving.metrics import MULTIPROC_ENV, SERVE_METRICS_ENV, prepare_multiproc_dir
from serving.settings import ServeConfig

#: The parent's resolved ServeConfig, as JSON, for the workers.
CONFIG_ENV = "STREAMRANK_SERVE_WORKER_CONFIG"
#: The parent's ``--log-level`` for the workers' logging.
LOG_LEVEL_ENV = "STREAMRANK_SERVE_WORKER_LOG_LEVEL"
#: The factory uvicorn imports in each worker.
FACTORY = "serving.workers:app_from_env"


def config_to_json(config: ServeConfig) -> str:
    """``config`` as JSON (every field, the gate's included)."""
    return json.dumps(asdict(config), sort_keys=True)


def config_from_json(raw: str) -> ServeConfig:
    """The ServeConfig :func:`config_to_json` wrote; a clear ValueError for anything else."""
    try:
        doc = json.loads(raw)
        gate = GateConfig(**doc.pop("gate"))
        doc["tasks"] = tuple(doc["tasks"])
        return ServeConfig(**doc, gate=gate)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{CONFIG_ENV} is not a serving config written by serving.workers: {exc}") from exc


def metrics_dir(settings: Settings, config: ServeConfig, env: dict[str, str] | None = None) -> Path:
    """Where the workers keep their metric files: ``STREAMRANK_SERVE_METRICS_DIR`` when set, else
    ``<STREAMRANK_HOME>/serving-metrics/<port>`` (one folder per port: two servers on one host
    must not add up each other's requests). Never an inherited ``PROMETHEUS_MULTIPROC_DIR``: Feast
    sets that to a temporary folder of its own (serving.metrics)."""
    raw = (os.environ if env is None else env).get(SERVE_METRICS_ENV, "")
    return Path(raw) if raw else Path(settings.home) / "serving-metrics" / str(config.port)


def worker_environment(settings: Settings, config: ServeConfig, log_level: str,
                       env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables the parent sets for its workers (after emptying the metrics folder)."""
    folder = prepare_multiproc_dir(metrics_dir(settings, config, env))
    return {CONFIG_ENV: config_to_json(config), LOG_LEVEL_ENV: log_level, MULTIPROC_ENV: str(folder),
            SERVE_METRICS_ENV: str(folder)}


def app_from_env() -> Any:
    """The app of one worker: its own runtime from the inherited settings and the parent's config."""
    from common.config import load_settings  # noqa: PLC0415
    from common.logs import quiet_understood_noise  # noqa: PLC0415
    from serving.app import build_runtime, create_app  # noqa: PLC0415

    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{CONFIG_ENV} is not set: {FACTORY} builds the workers of `streamrank serve --workers N`")
    level = os.environ.get(LOG_LEVEL_ENV, "warning")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    quiet_understood_noise()
    return create_app(build_runtime(load_settings(), config_from_json(raw)))


def run(settings: Settings, config: ServeConfig, log_level: str) -> None:
    """Serve with ``config.workers`` processes on ``config.host:config.port`` until stopped."""
    import uvicorn  # noqa: PLC0415

    os.environ.update(worker_environment(settings, config, log_level))  # inherited by the spawned workers
    uvicorn.run(FACTORY, factory=True, workers=config.workers, host=config.host, port=config.port,
                log_level=log_level, access_log=False)
