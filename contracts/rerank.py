"""Request and response bodies of ``POST /rerank`` (pydantic; also the OpenAPI schema at ``/docs``).

Validation happens here, before any model runs: missing fields, wrong types (strict: ``"1"`` or
``true`` is not a number), NaN/inf scores or features, numbers beyond float32 in ``features``
and ``context`` (the models compute in float32), strings and ``context`` beyond their length
limits, duplicate item ids, too many candidates (the configured maximum, checked in the app
because it is a deployment setting) all become HTTP 422 with the offending field named (see
:func:`serving.app.validation_error_body`). A body larger than the server's ``max_body_bytes``
is refused with 413 before it is parsed (:mod:`serving.http_middleware`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from contracts.strict import FLOAT32_MAX, Float32, Id, StrictModel

_Strict = StrictModel

#: ``context``: at most this many entries, keys and string values at most these lengths.
MAX_CONTEXT_ENTRIES = 64
MAX_CONTEXT_KEY = 128
MAX_CONTEXT_STRING = 1024
ContextKey = Annotated[str, Field(min_length=1, max_length=MAX_CONTEXT_KEY)]
ContextString = Annotated[str, Field(max_length=MAX_CONTEXT_STRING)]


class Candidate(_Strict):
    """One candidate item with its upstream multi-task predictions (task -> p_hat in [0, 1])."""

    item_id: Id
    scores: dict[str, Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]] = Field(min_length=1)
    features: list[Float32] | None = Field(
        default=None, max_length=4096,
        description=f"dense item features, each within float32 (|x| <= {FLOAT32_MAX:.4g}); omitted: fetched from "
                    "the feature store")
    duration_ms: float | None = Field(default=None, ge=0.0, le=FLOAT32_MAX, allow_inf_nan=False)


class RerankBody(_Strict):
    """``POST /rerank``: one request's candidates."""

    request_id: Id
    user_id: Id
    query: str | None = Field(default=None, max_length=1024)
    candidates: list[Candidate] = Field(min_length=1)
    context: dict[ContextKey, Float32 | ContextString] = Field(
        default_factory=dict, max_length=MAX_CONTEXT_ENTRIES,
        description=f"at most {MAX_CONTEXT_ENTRIES} entries; keys up to {MAX_CONTEXT_KEY} characters, strings up to "
                    f"{MAX_CONTEXT_STRING}, numbers within float32")
    explore: bool | None = Field(default=None, description="sample with Gumbel noise (default: server setting)")

    @field_validator("candidates")
    @classmethod
    def _unique(cls, candidates: list[Candidate]) -> list[Candidate]:
        seen: set[str] = set()
        for c in candidates:
            if c.item_id in seen:
                raise ValueError(f"duplicate item_id {c.item_id!r}")
            seen.add(c.item_id)
        tasks = set(candidates[0].scores)
        for c in candidates[1:]:
            if set(c.scores) != tasks:
                raise ValueError(f"candidate {c.item_id!r} has tasks {sorted(c.scores)}, the first has {sorted(tasks)}")
        return candidates


class RankedItem(BaseModel):
    item_id: str
    position: int
    score: float
    calibrated: dict[str, float]


class RerankResponse(BaseModel):
    request_id: str
    items: list[RankedItem]
    model_versions: dict[str, str]
    fusion_weights: dict[str, float]
    fusion_logprob: float | None
    list_logprob: float | None
    explored: bool
    impression_logged: bool = Field(description="queued for the impressions topic (false: buffer full, dropped)")
    degraded: str | None = Field(default=None, description='"features": the feature store did not supply the item '
                                 'features (unreachable or rows missing); they came from the local cache or were '
                                 'left out (ranked by the task scores). null: not degraded')
