"""The reranker's read-only routes: ``GET /healthz``, ``GET /models``, ``GET /metrics``.

``/healthz`` always answers HTTP 200 while the process serves (a degraded server still answers
every request); its ``status`` is ``ok`` or ``degraded``, with the reasons in ``degraded``: the
feature store unreachable or missing most rows (:meth:`serving.features.FeastItemFeatures.health`),
impressions dropped or not acknowledged (:meth:`serving.emitter.ImpressionEmitter.health`), each
over the last 30 s, so the status goes back to ``ok`` by itself once the cause is gone.

``/metrics`` is the sum over worker processes when the server runs several (serving.metrics);
``/healthz`` and ``/models`` answer for the one worker that took the connection.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST


def degraded_reasons(runtime: Any) -> list[str]:
    """Why the server is degraded now (empty: it is not)."""
    reasons = list(runtime.features.health()) if runtime.features is not None else []
    return reasons + runtime.emitter.health()


def add_read_routes(app: FastAPI, runtime: Any, metrics: Any) -> None:
    """``GET /healthz``, ``GET /models`` (what serves, swaps, refusals, gate decisions) and ``GET /metrics``."""
    config = runtime.config

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        reasons = degraded_reasons(runtime)
        features = runtime.features
        return {"status": "degraded" if reasons else "ok", "degraded": reasons,
                "models": runtime.holder.bundle.versions(),
                "impressions": runtime.emitter.stats.as_dict(), "feature_source": config.feature_source,
                "features_missing": getattr(features, "missing", 0),
                "features_unavailable": getattr(features, "unavailable", 0),
                "features_from_cache": getattr(features, "from_cache", 0),
                "features_cached_items": len(features.cache) if features is not None else 0}

    @app.get("/models")
    def models(limit: int = 50) -> dict[str, Any]:
        bundle = runtime.holder.bundle
        serving = {}
        for role in ("calibrator", "fusion", "reranker"):
            comp = bundle.component(role)
            serving[role] = {"model": comp.name, "version": comp.version, "sha256": comp.sha256,
                             "loaded_at": comp.loaded_at} if comp else {"model": config.roles()[role],
                                                                        "version": None, "cold_start": True}
        return {"serving": serving, "generation": bundle.generation, "swaps": runtime.holder.swaps,
                "refusals": runtime.holder.refusals,
                "decisions": runtime.holder.recent_decisions(max(0, min(limit, 1000))),
                "explore": {"default": config.explore, "rate": config.explore_rate},
                "gate": {"enabled": config.gate.enabled, "estimator": config.gate.estimator,
                         "max_relative_drop": config.gate.max_relative_drop, "min_samples": config.gate.min_samples,
                         "recent_examples": len(runtime.examples) if runtime.examples is not None else 0}}

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.refresh(runtime)  # this worker's gauges; with several workers the others refresh themselves
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
