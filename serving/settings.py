"""Serving settings: which model fills each role, limits, exploration, gate and watcher intervals.

Read from (lowest to highest precedence) the defaults below, the ``[serving]`` section of the
``STREAMRANK_CONFIG`` file (when the config module supports it) and ``STREAMRANK_SERVE_*``
environment variables; endpoints and topics always come from :func:`common.config.load_settings`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from common.config import Settings
from serving.gate import GateConfig

DEFAULT_FUSION_WEIGHTS = {"click": 1.0, "long_view": 1.0, "watch_time": 1.0}


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_candidates: int = 200
    #: Largest ``POST /rerank`` body in bytes (413 beyond it, before parsing). 4 MiB holds 200
    #: candidates x 300 features as JSON with room to spare.
    max_body_bytes: int = 4 * 1024 * 1024
    calibrator: str = "umnn"
    fusion: str = "drpo"
    reranker: str = "ldro"
    #: Default for requests that do not say. On by default: the promotion gate (on by default)
    #: scores a candidate snapshot only on explored rounds (it needs ``gate.min_samples`` of
    #: them), so a server that never explores never promotes a reranker snapshot.
    explore: bool = True
    #: With ``explore`` on, the share of requests (that do not say) served by one Gumbel-Max sample;
    #: the rest get the greedy order (list log-prob 0). Exploring every request pays the sampling
    #: noise on every list; a share keeps the logged propensities the gate and OPE need on the
    #: explored rounds (an explored round's sample is independent of the coin, so IPS over the
    #: explored rounds stays unbiased) while most users see the model's best order. 0.2 is the
    #: demo's rate.
    explore_rate: float = 0.2
    tasks: tuple[str, ...] = ("click", "long_view", "watch_time")
    default_fusion_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FUSION_WEIGHTS))
    emit_queue: int = 10_000
    #: How long the impression producer holds records to send them together (kafka-python's
    #: ``linger_ms``). At 5 ms and a few hundred requests/s nearly every impression went out in a
    #: produce request of its own; at 50 ms the producer's I/O thread used 0.33 instead of 0.43 ms
    #: of CPU per request (``/proc`` per-thread CPU in two ``bench/serving_load.py --quick`` runs,
    #: BENCHMARKS.md "Serving"). An impression reaches the log at most that much later (the
    #: learners join it with feedback that comes seconds later).
    emit_linger_ms: float = 50.0
    log_features: bool = True
    #: Copy item features fetched from the feature store into each impression. Off: the
    #: impression names the feature instead (``context["item_features"]``) and the learners
    #: read the rows back by item id (learners.runtime.feature_fill). A copy is 112 KB of JSON per
    #: 50 x 300 request, built and encoded on the server's emitter thread, and the embedded noida
    #: broker rewrites its whole log as one JSON file (docs/brokers.md).
    #: Turn it on for item features that change faster than the learners read them back.
    log_fetched_features: bool = False
    poll_interval_s: float = 1.0
    watch_pubsub: bool = True
    watch_kafka: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    torch_threads: int = 1
    #: Micro-batching (serving.microbatch): a batch being formed waits at most this long after its
    #: first request for requests that have already arrived and are being parsed (never for ones
    #: that have not arrived: a lone client does not wait). 0: score whatever is queued at once.
    batch_window_ms: float = 1.0
    #: The most requests scored in one padded batch (1: every request alone).
    max_batch: int = 16
    #: Python's GIL switch interval in the server (``sys.setswitchinterval``; 0: Python's 5 ms).
    #: A thread that wakes up (the scoring thread, the event loop after a socket read) waits up to
    #: this long for the GIL while another thread runs Python: a snapshot load on the watcher's
    #: thread, the Kafka clients' threads, the emitter building an impression.
    gil_switch_ms: float = 1.0
    feature_source: str = "request"  # "feast": fetch item features the request does not carry
    #: with ``feature_source="feast"``: run the repair job that re-materializes the online store's rows
    #: when they are lost (feature_store.scheduling.MaterializeRepair)
    repair_features: bool = True
    #: ``GET /dashboard`` and its data (serving.dashboard): a time bucket per request costs one float.
    dashboard: bool = True
    #: Server processes on the port (serving.workers). 1: one process, today's server. N > 1: uvicorn
    #: runs N workers, each with its own models, watcher and emitter (each hot-swaps on its own),
    #: ``/metrics`` summed over them (Prometheus multiprocess mode, serving.metrics); ``/healthz``,
    #: ``/models`` and ``/dashboard`` answer for the worker that takes the connection.
    workers: int = 1

    def roles(self) -> dict[str, str]:
        return {"calibrator": self.calibrator, "fusion": self.fusion, "reranker": self.reranker}

    def __post_init__(self) -> None:
        if self.host != "127.0.0.1" and not os.environ.get("STREAMRANK_ALLOW_PUBLIC_BIND"):
            raise ValueError(f"serving binds to 127.0.0.1 only (got {self.host!r}); deploy/ sets up public access")
        if not 0.0 <= self.explore_rate <= 1.0:
            raise ValueError(f"explore_rate must be in [0, 1], got {self.explore_rate}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if self.emit_linger_ms < 0:
            raise ValueError(f"emit_linger_ms must be >= 0, got {self.emit_linger_ms}")
        if self.gil_switch_ms < 0:
            raise ValueError(f"gil_switch_ms must be >= 0, got {self.gil_switch_ms}")
        if self.batch_window_ms < 0 or self.max_batch < 1:
            raise ValueError(f"batch_window_ms must be >= 0 and max_batch >= 1, got {self.batch_window_ms}, "
                             f"{self.max_batch}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


def _coerce(kind: Any, raw: Any) -> Any:
    if isinstance(raw, str):
        if kind in (bool, "bool"):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in ("tuple[str, ...]",):
            return tuple(t.strip() for t in raw.split(",") if t.strip())
        if kind in ("dict[str, float]",):
            return {k: float(v) for k, v in json.loads(raw).items()}
    if kind in ("tuple[str, ...]",) and isinstance(raw, list):
        return tuple(raw)
    return raw


def load_serve_config(settings: Settings, env: dict[str, str] | None = None, **overrides: Any) -> ServeConfig:
    """Defaults < ``[serving]`` config section < ``STREAMRANK_SERVE_<FIELD>`` env < explicit ``overrides``."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {"max_candidates": settings.max_list_size}
    try:
        from common.config import config_section  # noqa: PLC0415 - newer config modules only

        values.update(config_section(settings, "serving"))
    except ImportError:
        pass
    gate_values = dict(values.pop("gate", {}) or {})
    by_name = {f.name: f for f in fields(ServeConfig)}
    for name, f in by_name.items():
        key = f"STREAMRANK_SERVE_{name.upper()}"
        if key in env and name != "gate":
            values[name] = env[key]
    for gf in fields(GateConfig):
        key = f"STREAMRANK_SERVE_GATE_{gf.name.upper()}"
        if key in env:
            gate_values[gf.name] = _coerce(gf.type, env[key])
    values.update({k: v for k, v in overrides.items() if v is not None and k != "gate"})
    values = {k: _coerce(by_name[k].type, v) for k, v in values.items() if k in by_name}
    config = ServeConfig(**values, gate=GateConfig(**gate_values) if gate_values else GateConfig())
    if overrides.get("gate") is not None:
        config = replace(config, gate=overrides["gate"])
    return config
