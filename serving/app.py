"""The reranker service (FastAPI): ``POST /rerank``, ``GET /healthz``, ``GET /models``, ``GET /metrics``.

``POST /rerank`` parses and validates the body (:mod:`serving.request_body`, the model of
:mod:`contracts.rerank`; 422 naming the field, the model is never called), reads the current
:class:`~serving.holder.Bundle` once, prepares the request (:func:`serving.scoring.prepare`) and
hands it to the micro-batcher (:mod:`serving.microbatch`), whose thread scores it together with
the requests in the server at the same time on the same bundle: calibrator -> fusion weights ->
reranker (greedy, or a Gumbel-Max sample when exploring, with the list log-prob and fusion
log-prob kept; :func:`serving.scoring.score_batch`). The handler then answers and hands the
Impression to the non-blocking emitter (:mod:`serving.emitter`): building and encoding the
event happen on the emitter's thread, not in the response path.

Build with :func:`create_app`; the :class:`ServingRuntime` it returns in ``app.state.runtime``
owns the holder, watcher, emitter, examples reader and micro-batcher, started/stopped by the app
lifespan.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from common.config import Settings
from common.heap import freeze_startup_heap
from contracts.rerank import RerankResponse
from serving.dashboard import DashboardFeeds, DashboardRecorder
from serving.dashboard_routes import add_dashboard_routes
from serving.emitter import ImpressionEmitter
from serving.gate import usable as gate_usable
from serving.holder import ModelHolder
from serving.http_middleware import ArrivalStamp, BodyLimit, BodyTooLarge, server_timing, too_large_body
from serving.metrics import Metrics
from serving.microbatch import MicroBatcher
from serving.read_routes import add_read_routes
from serving.recent_examples import RecentExamples
from serving.request_body import BODY_OPENAPI, document_body, parse_body
from serving.scoring import InputError, impression_factory, prepare, response_json, score_batch
from serving.settings import ServeConfig
from streams.metrics import status_dir

log = logging.getLogger(__name__)


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
    _batcher: MicroBatcher | None = None

    @property
    def batcher(self) -> MicroBatcher:
        """The micro-batcher that scores requests (:mod:`serving.microbatch`), started on first use."""
        if self._batcher is None:
            self._batcher = MicroBatcher(partial(score_batch, config=self.config, feature_source=self.features),
                                         window_s=self.config.batch_window_ms / 1000.0,
                                         max_batch=self.config.max_batch)
        return self._batcher

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
        if self._batcher is not None:
            self._batcher.close()
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
                                max_record_bytes=settings.max_event_bytes,
                                producer_config={"linger_ms": int(round(config.emit_linger_ms))})
    recorder = DashboardRecorder() if config.dashboard else None
    feeds = DashboardFeeds(recorder, settings.kafka, settings.topics.dead_letter) if recorder is not None else None
    examples = RecentExamples(settings.kafka, settings.topics.examples, maxlen=config.gate.window,
                              keep=partial(gate_usable, prefix_k=config.gate.prefix_k),
                              observe=feeds.example if feeds is not None else None) \
        if settings.kafka and (config.gate.enabled or config.dashboard) else None
    from serving.features import build_feature_source  # noqa: PLC0415

    features = build_feature_source(config.feature_source, settings)
    watcher = registry = None
    if with_watcher and settings.redis:
        from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415
        from serving.gate import PromotionGate  # noqa: PLC0415
        from serving.watcher import SnapshotWatcher  # noqa: PLC0415

        registry = SnapshotRegistry(settings.redis_url, settings, announce_kafka=False)
        watcher = SnapshotWatcher(registry, holder, config.roles(), examples=examples,
                                  gate=PromotionGate(config.gate, features.rows if features is not None else None),
                                  poll_interval_s=config.poll_interval_s, use_pubsub=config.watch_pubsub,
                                  use_kafka=config.watch_kafka, tasks=config.tasks,
                                  on_swap=feeds.swap if feeds is not None else None)
    repair = None
    if features is not None and config.repair_features:
        from feature_store.scheduling import MaterializeRepair  # noqa: PLC0415

        repair = MaterializeRepair.for_repo(settings)
    return ServingRuntime(settings, config, holder, emitter, examples, watcher, registry, features, recorder, feeds,
                          status_dir(settings), repair)


def add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """422 for an invalid body or one the models cannot take (naming the field), 413 for a body too large."""

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


def create_app(runtime: ServingRuntime) -> FastAPI:
    """The service around ``runtime``: lifespan, 422 handlers, ``POST /rerank`` and the read-only routes."""
    config = runtime.config
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        torch.set_num_threads(max(1, config.torch_threads))
        if config.gil_switch_ms > 0:  # see ServeConfig.gil_switch_ms
            sys.setswitchinterval(config.gil_switch_ms / 1000.0)
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
    add_error_handlers(app, metrics)

    # response_model documents the answer in OpenAPI; the handler returns the JSON itself
    # (response_json), which skips FastAPI's re-validation of 50 RankedItem models per request.
    # The body is parsed in the handler (serving.request_body: same model, same 422s), so that the
    # micro-batcher knows a request is on its way while it is parsed. ``async def``: parsing and
    # answering run on the event loop; the models run on the batcher's scoring thread, in batches
    # of the requests that are in the server at the same time (serving.microbatch).
    @app.post("/rerank", response_model=RerankResponse, openapi_extra=BODY_OPENAPI, responses={
        413: {"description": f"body larger than max_body_bytes ({config.max_body_bytes} bytes here), refused "
                             "before parsing"},
        422: {"description": "invalid body: `field` names the first offending field, `errors` lists them"}})
    async def rerank(request: Request) -> Response:
        started = time.perf_counter()
        batcher = runtime.batcher
        batcher.expect()
        submitted = False
        try:
            body = parse_body(await request.body())
            bundle = runtime.holder.bundle  # read once: this request finishes on this bundle
            prepared = prepare(body, config)
            submitted = True
            handed = time.perf_counter()
            out = await batcher.submit(bundle, prepared)
            scored_ms = (time.perf_counter() - handed) * 1000.0
        finally:
            if not submitted:
                batcher.unexpect()
        if runtime.watcher is not None:
            runtime.watcher.canary = out["request"]
        logged = runtime.emitter.offer(body.request_id.encode(), impression_factory(body, out, config, time.time()))
        content = response_json(body, out, logged)
        finished = time.perf_counter()
        metrics.latency.observe(finished - started)
        metrics.batch_size.observe(out["batch_size"])
        if runtime.dashboard is not None:
            runtime.dashboard.observe_request(finished - started)
        metrics.requests.labels(status="200").inc()
        if out["degraded"]:
            metrics.degraded.labels(reason=out["degraded"]).inc()
        stages = {**out["stages"], "queue": scored_ms - out["stages"]["batch"]}  # score_batch's, plus the wait
        timing = server_timing(request.scope.get("state", {}).get("arrived"), started, finished, stages)
        return Response(content, media_type="application/json", headers={"Server-Timing": timing})

    add_read_routes(app, runtime, metrics)
    add_dashboard_routes(app, runtime)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(ArrivalStamp)
    document_body(app)
    return app
