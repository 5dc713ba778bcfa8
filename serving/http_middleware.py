"""Pure ASGI middleware of the reranker: the request-body limit and the arrival stamp.

* :class:`BodyLimit` refuses a ``POST`` body larger than ``max_bytes`` with HTTP 413 naming the
  limit, before FastAPI parses it: a declared ``Content-Length`` over the limit is answered
  without reading a byte of the body, and a chunked body is cut off as soon as the bytes read
  pass the limit (so a 50 MB body costs at most the limit in memory, never a JSON parse).
* :class:`ArrivalStamp` stamps when each request reached the app, for ``Server-Timing``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import HTTPException


class BodyTooLarge(HTTPException):
    """Raised from the body stream when a chunked body passes the limit (an HTTPException, so FastAPI
    passes it through instead of calling it a parse error; the app turns it into :func:`too_large_body`)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


def too_large_body(max_bytes: int) -> dict[str, Any]:
    """The 413 document (same shape as the 422 ones: error, field, reason, message)."""
    return {"error": "request_too_large", "field": "<body>", "reason": "body_too_large", "max_bytes": max_bytes,
            "message": f"request body larger than the limit of {max_bytes} bytes (ServeConfig.max_body_bytes, "
                       f"STREAMRANK_SERVE_MAX_BODY_BYTES)"}


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` on the methods that carry one (413)."""

    def __init__(self, app: Any, max_bytes: int, methods: tuple[str, ...] = ("POST", "PUT", "PATCH")) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.methods = methods

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in self.methods:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)  # the body is never read
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Any) -> None:
        payload = json.dumps(too_large_body(self.max_bytes)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ArrivalStamp:
    """Pure ASGI middleware: stamps when each HTTP request reached the app (``scope["state"]["arrived"]``,
    ``time.perf_counter``), so ``POST /rerank`` can say in its ``Server-Timing`` header how long the
    request waited before the handler ran (body read and validation, other requests ahead of it
    on the event loop) apart from the handler itself. A client comparing its own latency with the
    two sees what the transport and the scheduling of the machine add."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["arrived"] = time.perf_counter()
        await self.app(scope, receive, send)


#: The handler's parts in ``Server-Timing``, in this order (see :func:`server_timing`).
STAGES = ("queue", "batch", "read", "calibrate", "fuse", "rerank")


def server_timing(arrived: float | None, started: float, finished: float,
                  stages: dict[str, float] | None = None) -> str:
    """The ``Server-Timing`` value of one rerank (milliseconds): ``wait`` from arrival to the
    handler, ``handler`` for the handler (feature read, models, response body), then the parts of
    the handler that ``stages`` (milliseconds) names, in :data:`STAGES` order: ``queue`` (from
    handing the request to the micro-batcher until its answer is back, less ``batch``: waiting for
    the batch to close or for the batch ahead, and the thread hand-offs), ``batch`` (scoring the
    micro-batch this request was in, :func:`serving.scoring.score_batch`), within it ``calibrate``,
    ``fuse`` and ``rerank``, and ``read`` (the feature-store read, which overlaps ``calibrate`` and
    ``fuse``). The stages are the batch's, shared by every request scored in it."""
    parts = [] if arrived is None else [f"wait;dur={max(0.0, started - arrived) * 1000:.3f}"]
    parts.append(f"handler;dur={(finished - started) * 1000:.3f}")
    for name in STAGES:
        if stages and name in stages:
            parts.append(f"{name};dur={max(0.0, stages[name]):.3f}")
    return ", ".join(parts)
