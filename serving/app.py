"""The reranker service (FastAPI): ``POST /rerank``, ``GET /healthz``, ``GET /models``, ``GET /metrics``.

``POST /rerank`` validates the body (:mod:`contracts.rerank`; 422 naming the field, the
model is never called), reads the current :class:`~serving.holder.Bundle` once, then runs
calibrator -> fusion weights -> reranker (greedy, or a Gumbel-Max sample when exploring, with
the list log-prob and fusion log-prob kept), answers, and hands the Impression to the
non-blocking emitter (:mod:`serving.emitter`): building and encoding the event happen on the
emitter's thread, not in the response path.

Build with :func:`create_app`; the :class:`ServingRuntime` it returns in ``app.state.runtime``
owns the holder, watcher, emitter and examples reader, started/stopped by the app lifespan.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from common.config import Settings
from common.errors import StreamrankError
from common.heap import freeze_startup_heap
from contracts.events import IMPRESSION_SCHEMA, ITEM_FEATURES_KEY, FusionDecision, Impression, ShownItem, encode
from contracts.learner import RerankRequest
from contracts.rerank import RerankBody, RerankResponse
from serving import components
from serving.baseline import pl_logprob
from serving.dashboard import DashboardFeeds, DashboardRecorder
from serving.dashboard_routes import add_dashboard_routes
from serving.emitter import ImpressionEmitter
from serving.gate import prefix_key
from serving.gate import usable as gate_usable
from serving.holder import Bundle, ModelHolder
from serving.http_middleware import ArrivalStamp, BodyLimit, BodyTooLarge, server_timing, too_large_body
from serving.metrics import Metrics
from serving.read_routes import add_read_routes
from serving.recent_examples import RecentExamples
from serving.settings import ServeConfig
from streams.metrics import status_dir

_EXPLORE_COIN = random.Random()  # which requests explore (ServeConfig.explore_rate)

log = logging.getLogger(__name__)


class InputError(StreamrankError, ValueError):
    """A request the service refuses (HTTP 422) with the field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


#: Union branch names pydantic puts in an error's location (``context.a.constrained-float``): not fields.
_UNION_TAGS = frozenset({"float", "str", "int", "bool", "constrained-float", "constrained-str", "constrained-int"})


def _loc_to_field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p != "body" and p not in _UNION_TAGS]
    return ".".join(parts) or "<body>"


def validation_error_body(exc: RequestValidationError) -> dict[str, Any]:
    """The 422 document: the first error's field and reason, and up to 20 errors. Of a union's errors
    (a context value is a number or a string) the one that is not a plain type mismatch comes first."""
    errors = sorted(exc.errors(), key=lambda e: str(e.get("type", "")).endswith("_type"))
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    return {"error": "invalid_request", "field": _loc_to_field(first.get("loc", ())), "reason": first.get("type"),
            "message": str(first.get("msg")),
            "errors": [{"field": _loc_to_field(e.get("loc", ())), "reason": e.get("type"), "message": str(e.get("msg"))}
                       for e in errors[:20]]}


@dataclass
class ServingRuntime:
    """Everything the app runs besides request handling."""

    settings: Settings
    config: ServeConfig
    holder: ModelHolder
    emitter: ImpressionEmitter
    examples: RecentExamples | None = None
    watcher: Any = None  # serving.watcher.SnapshotWatcher (None: no snapshot registry, cold start only)
    registry: Any = None
    features: Any = None  # serving.features.FeastItemFeatures (None: features only from the request)
    dashboard: Any = None  # serving.dashboard.DashboardRecorder (None: ServeConfig.dashboard off)
    feeds: Any = None  # serving.dashboard.DashboardFeeds
    status_folder: Any = None  # the deployment's status files (streams.metrics.status_dir)
    repair: Any = None  # feature_store.scheduling.MaterializeRepair (None: features not from Feast, or off)

    def start(self) -> None:
        self.emitter.start()
        if self.feeds is not None:
            self.feeds.start()
        if self.examples is not None:
            self.examples.start()
        if self.watcher is not None:
            self.watcher.start()
        if self.repair is not None:
            self.repair.start()

    def close(self) -> None:
        if self.repair is not None:
            self.repair.shutdown()
        if self.watcher is not None:
            self.watcher.close()
        if self.examples is not None:
            self.examples.close()
        self.emitter.close(timeout=3)
        if self.feeds is not None:
            self.feeds.close()
        if self.registry is not None:
            self.registry.close()


def build_runtime(settings: Settings, config: ServeConfig, with_watcher: bool = True) -> ServingRuntime:
    """Wire holder, emitter, examples reader and snapshot watcher from settings."""
    holder = ModelHolder()
    emitter = ImpressionEmitter(settings.kafka, settings.topics.impressions, max_queue=config.emit_queue,
                                max_record_bytes=settings.max_event_bytes)
    recorder = DashboardRecorder() if config.dashboard else None
    feeds = DashboardFeeds(recorder, settings.kafka, settings.topics.dead_letter) if recorder is not None else None
    examples = RecentExamples(settings.kafka, settings.topics.examples, maxlen=config.gate.window,
                              keep=partial(gate_usable, prefix_k=config.gate.prefix_k),
                              observe=feeds.example if feeds is not None else None) \
        if settings.kafka and (config.gate.enabled or config.dashboard) else None
    watcher = registry = None
    if with_watcher and settings.redis:
        from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415
        from serving.gate import PromotionGate  # noqa: PLC0415
        from serving.watcher import SnapshotWatcher  # noqa: PLC0415

        registry = SnapshotRegistry(settings.redis_url, settings, announce_kafka=False)
        watcher = SnapshotWatcher(registry, holder, config.roles(), gate=PromotionGate(config.gate), examples=examples,
                                  poll_interval_s=config.poll_interval_s, use_pubsub=config.watch_pubsub,
                                  use_kafka=config.watch_kafka, tasks=config.tasks,
                                  on_swap=feeds.swap if feeds is not None else None)
    from serving.features import build_feature_source  # noqa: PLC0415

    features = build_feature_source(config.feature_source, settings)
    repair = None
    if features is not None and config.repair_features:
        from feature_store.scheduling import MaterializeRepair  # noqa: PLC0415

        repair = MaterializeRepair.for_repo(settings)
    return ServingRuntime(settings, config, holder, emitter, examples, watcher, registry, features, recorder, feeds,
                          status_dir(settings), repair)


# -- the request path ---------------------------------------------------------------------------
def _features(body: RerankBody, source=None) -> tuple[torch.Tensor, str | None]:
    """The candidates' features and what degraded them (``"features"``: the store did not supply them)."""
    feats = [c.features for c in body.candidates]
    if all(f is None for f in feats):
        if source is not None:
            item_ids = [c.item_id for c in body.candidates]
            if not hasattr(source, "read"):  # a plain source: only fetch(), never degraded
                return source.fetch(body.user_id, body.query, item_ids), None
            read = source.read(body.user_id, body.query, item_ids)
            return read.features, read.degraded
        return torch.zeros((len(feats), 0)), None
    dims = {len(f) for f in feats if f is not None}
    if any(f is None for f in feats) or len(dims) != 1:
        bad = next(i for i, f in enumerate(feats) if f is None or len(f) != len(feats[0] or []))
        raise InputError(f"candidates.{bad}.features", "every candidate needs features of the same length, or none")
    return torch.from_numpy(np.asarray(feats, dtype=np.float32)), None  # ~3x faster than torch.tensor on lists


def rerank_once(bundle: Bundle, body: RerankBody, config: ServeConfig, feature_source=None) -> dict[str, Any]:
    """Calibrate -> fuse -> rerank on one bundle; pure apart from the models' own RNG."""
    n = len(body.candidates)
    explore = config.explore if body.explore is None else body.explore
    if body.explore is None and explore and config.explore_rate < 1.0:
        explore = _EXPLORE_COIN.random() < config.explore_rate
    tasks = list(body.candidates[0].scores)
    raw = {t: torch.from_numpy(np.fromiter((c.scores[t] for c in body.candidates), dtype=np.float64, count=n))
           for t in tasks}
    context: dict[str, Any] = dict(body.context)
    context.update(user_id=body.user_id, query=body.query)
    # Calibrator context fields (learners.calibration): per-item id, the user, and the upstream
    # position (the final position is not known before reranking).
    calibration_context = {**context, "item": [c.item_id for c in body.candidates], "user": body.user_id,
                           "position": list(range(1, n + 1))}
    calibrated = components.calibrate(bundle.calibrator, raw, calibration_context)
    weights, fusion_logprob = components.fusion(bundle.fusion, calibrated, context, explore,
                                                config.default_fusion_weights)
    features, degraded = _features(body, feature_source)
    request = RerankRequest(item_ids=tuple(c.item_id for c in body.candidates), features=features,
                            task_scores=calibrated, context={**context, "fusion_weights": weights},
                            upstream_scores=raw)
    result = components.rerank(bundle.reranker, request, explore)
    if sorted(result.order) != list(range(n)):
        raise RuntimeError("reranker returned an order that is not a permutation of the candidates")
    list_logprob = result.logprob if explore else 0.0  # greedy: the shown order had probability 1
    if list_logprob is not None:
        list_logprob = min(0.0, float(list_logprob))
    prefix_logprob = None
    if explore and config.gate.prefix_k and len(result.scores) == n:
        # The PL log-prob of the top-k placements (the promotion gate's low-variance estimator).
        prefix_logprob = min(0.0, pl_logprob(torch.tensor(result.scores), result.order, config.gate.prefix_k))
    fetched = feature_source is not None and all(c.features is None for c in body.candidates)
    # Calibrated scores as Python floats, one ``tolist`` per task, shared by the response and the
    # impression (instead of indexing a tensor once per item and task, twice).
    calibrated_values = {t: torch.as_tensor(v).tolist() for t, v in calibrated.items()}
    return {"order": list(result.order), "scores": list(result.scores), "calibrated": calibrated_values,
            "weights": weights,
            "feature_ref": getattr(feature_source, "reference", None) if fetched else None,
            "fusion_logprob": fusion_logprob, "list_logprob": list_logprob, "explored": explore,
            "prefix_logprob": prefix_logprob, "versions": bundle.model_versions(), "request": request,
            "degraded": degraded}


def response_json(body: RerankBody, out: dict[str, Any], logged: bool) -> bytes:
    """The ``RerankResponse`` document of one answered request, as JSON bytes.

    Built as plain dicts and ``json.dumps`` (the request path's single largest cost after the
    models was constructing and re-validating 50 ``RankedItem`` models). Non-finite numbers
    cannot be JSON: then the pydantic model serialises it as before (``null``).
    """
    calibrated = out["calibrated"]
    items = [{"item_id": body.candidates[idx].item_id, "position": pos, "score": float(out["scores"][idx]),
              "calibrated": {t: v[idx] for t, v in calibrated.items()}}
             for pos, idx in enumerate(out["order"], 1)]
    doc = {"request_id": body.request_id, "items": items, "model_versions": out["versions"],
           "fusion_weights": out["weights"], "fusion_logprob": out["fusion_logprob"],
           "list_logprob": out["list_logprob"], "explored": bool(out["explored"]), "impression_logged": logged,
           "degraded": out.get("degraded")}
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError:
        return RerankResponse.model_validate(doc).model_dump_json().encode("utf-8")


def impression_factory(body: RerankBody, out: dict[str, Any], config: ServeConfig, ts: float):
    """A closure building the Impression bytes (runs on the emitter thread)."""

    def build() -> bytes:
        items = []
        calibrated = out["calibrated"]
        fetched = out["request"].features
        rounded = None
        copy_fetched = config.log_fetched_features or not out.get("feature_ref")
        if config.log_features and copy_fetched and fetched.shape[1] and any(c.features is None for c in body.candidates):
            # one vectorised rounding of the fetched matrix (per-float round() cost ~5 ms of GIL
            # time per 50 x 300 request, competing with the request path)
            rounded = np.round(fetched.numpy().astype(np.float64), 4).tolist()
        for pos, idx in enumerate(out["order"], 1):
            cand = body.candidates[idx]
            features = None
            if config.log_features:  # as served: from the request, or as fetched from the feature store
                features = cand.features if cand.features is not None else (rounded[idx] if rounded else None)
            items.append(ShownItem(item_id=cand.item_id, position=pos, scores=cand.scores,
                                   calibrated={t: v[idx] for t, v in calibrated.items()},
                                   duration_ms=cand.duration_ms, features=features))
        context: dict[str, float | str] = {k: v for k, v in body.context.items()}
        context["explored"] = 1.0 if out["explored"] else 0.0
        if out["prefix_logprob"] is not None:
            context[prefix_key(config.gate.prefix_k)] = out["prefix_logprob"]
        if config.log_features and not copy_fetched:
            # the learners read these rows back from the feature store (learners.runtime.feature_fill)
            context[ITEM_FEATURES_KEY] = out["feature_ref"]
        event = Impression(schema=IMPRESSION_SCHEMA, event_id=f"{body.request_id}:imp:{uuid.uuid4().hex[:8]}",
                           request_id=body.request_id, ts=ts, user_id=body.user_id, query=body.query, items=items,
                           fusion=FusionDecision(weights=out["weights"], logprob=out["fusion_logprob"]),
                           list_logprob=out["list_logprob"], model_versions=out["versions"], context=context,
                           source="serving")
        return encode(event)

    return build


def create_app(runtime: ServingRuntime) -> FastAPI:
    """The service around ``runtime``: lifespan, 422 handlers, ``POST /rerank`` and the read-only routes."""
    config = runtime.config
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        torch.set_num_threads(max(1, config.torch_threads))
        runtime.start()
        stop_metrics = metrics.keep_fresh(runtime)  # several workers: each refreshes its own gauges
        freeze_startup_heap()
        try:
            yield
        finally:
            stop_metrics()
            runtime.close()

    app = FastAPI(title="streamrank reranker", version="1", lifespan=lifespan,
                  description="Calibrate -> fuse -> rerank with hot-swapped model snapshots.")
    app.state.runtime = runtime
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.requests.labels(status="422").inc()
        return JSONResponse(status_code=422, content=validation_error_body(exc))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, exc: BodyTooLarge) -> JSONResponse:
        metrics.requests.labels(status="413").inc()
        return JSONResponse(status_code=413, content=too_large_body(exc.max_bytes))

    @app.exception_handler(InputError)
    async def _input_error(_request: Request, exc: InputError) -> JSONResponse:
        metrics.requests.labels(status="422").inc()
        return JSONResponse(status_code=422, content={"error": "invalid_request", "field": exc.field,
                                                      "reason": exc.reason, "message": str(exc)})

    # response_model documents the answer in OpenAPI; the handler returns the JSON itself
    # (response_json), which skips FastAPI's re-validation of 50 RankedItem models per request.
    # ``async def``: the handler runs on the event loop, not on a thread-pool thread. The work is
    # CPU under one GIL either way; without the hop, 8 concurrent clients got 0.76x the p99 and
    # 1.15x the throughput (BENCHMARKS.md, fifth session). The feature read is the one blocking
    # call in it, with a 1 s Redis timeout (feature_store.online_read.DirectFeatureReader).
    @app.post("/rerank", response_model=RerankResponse, responses={
        413: {"description": f"body larger than max_body_bytes ({config.max_body_bytes} bytes here), refused "
                             "before parsing"},
        422: {"description": "invalid body: `field` names the first offending field, `errors` lists them"}})
    async def rerank(body: RerankBody, request: Request) -> Response:
        started = time.perf_counter()
        if len(body.candidates) > config.max_candidates:
            raise InputError("candidates", f"{len(body.candidates)} candidates > the maximum {config.max_candidates}")
        bundle = runtime.holder.bundle  # read once: this request finishes on this bundle
        out = rerank_once(bundle, body, config, runtime.features)
        if runtime.watcher is not None:
            runtime.watcher.canary = out["request"]
        logged = runtime.emitter.offer(body.request_id.encode(), impression_factory(body, out, config, time.time()))
        content = response_json(body, out, logged)
        finished = time.perf_counter()
        metrics.latency.observe(finished - started)
        if runtime.dashboard is not None:
            runtime.dashboard.observe_request(finished - started)
        metrics.requests.labels(status="200").inc()
        if out["degraded"]:
            metrics.degraded.labels(reason=out["degraded"]).inc()
        timing = server_timing(request.scope.get("state", {}).get("arrived"), started, finished)
        return Response(content, media_type="application/json", headers={"Server-Timing": timing})

    add_read_routes(app, runtime, metrics)
    add_dashboard_routes(app, runtime)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(ArrivalStamp)
    return app
