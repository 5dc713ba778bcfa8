"""How ``POST /rerank`` reads its body: parsed in the handler, documented in OpenAPI as before.

Why not a FastAPI body parameter: FastAPI reads and validates a declared body *before* the
handler runs, so the micro-batcher (:mod:`serving.microbatch`) could not know that a request
has arrived and is being parsed, and would close a batch without it. The handler calls
:func:`parse_body` itself instead. Nothing else changes: the same pydantic model
(:class:`contracts.rerank.RerankBody`) validates, its errors become the same
:class:`~fastapi.exceptions.RequestValidationError` (locations under ``body``, so the 422
document names the same field), and :func:`document_body` puts the model's schema in
``/openapi.json`` as the request body of ``POST /rerank`` (``#/components/schemas/RerankBody``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError

from contracts.rerank import RerankBody

#: ``openapi_extra`` of the route: the body is a RerankBody, required, JSON.
BODY_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/RerankBody"}}}}}


def parse_body(raw: bytes) -> RerankBody:
    """The validated body; :class:`RequestValidationError` (HTTP 422 naming the field) when it is not one."""
    try:
        return RerankBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error.get("loc", ()))} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def document_body(app: FastAPI) -> None:
    """Make ``app.openapi()`` carry RerankBody and the models it nests under ``components.schemas``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            body = RerankBody.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(body.pop("$defs", {}))
            schemas["RerankBody"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
