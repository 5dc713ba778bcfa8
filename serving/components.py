"""Turn snapshots into serving components and give each role one calling convention.

A served policy has three roles (DESIGN.md): **calibrator** (UMNN: task p_hat -> calibrated p),
**fusion** (DRPO: context -> fusion weights over tasks + their log-prob), **reranker** (LDRO:
candidates -> order + list log-prob). Each role is filled by a model name from config; the
snapshot of that name is rebuilt with :func:`learners.registry.build_learner` (or this
package's :mod:`serving.baseline` for ``linear-pl``) and ``load_state_dict``.

The learners' inference methods differ by family, so the adapters below accept the names the
learner families expose and fall back to the cold-start policy when a role has no snapshot:

* calibrator: ``calibrate(task_scores: dict[str, Tensor], context) -> dict[str, Tensor]``
* fusion: ``fusion_weights(task_scores, context, explore=...) -> (dict[str, float], logprob)``
  or ``fuse(...)`` with the same signature
* reranker: ``rerank(RerankRequest, explore=...) -> RerankResult`` and, for the promotion gate,
  ``candidate_scores(RerankRequest) -> Tensor[n]`` (else ``rerank(explore=False).scores``)

``RerankResult.scores`` are per candidate (index = the request's candidate index, as LDRO
returns them), not per rank.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from common.errors import StreamrankError
from contracts.learner import LearnerState, RerankRequest, RerankResult
from serving.baseline import FusedScoreReranker, LinearListScorer

log = logging.getLogger(__name__)
ROLES = ("calibrator", "fusion", "reranker")
SERVING_BUILTINS = {"linear-pl": LinearListScorer}


class ComponentError(StreamrankError, RuntimeError):
    """A snapshot could not be turned into a working component (wrong shapes, bad outputs...)."""


@dataclass(frozen=True)
class Component:
    """One loaded model: its role, name, version and the object that runs it."""

    role: str
    name: str
    version: str
    model: Any
    sha256: str = ""
    loaded_at: float = 0.0


def build_component_model(name: str, state: LearnerState) -> Any:
    """Rebuild a model object from a snapshot's tensors and meta (config in ``meta['config']``)."""
    config = dict(state.meta.get("config") or {})
    if name in SERVING_BUILTINS or state.meta.get("family") == "serving.baseline":
        model = SERVING_BUILTINS[state.meta.get("model", name)](**config)
    else:
        from learners.registry import build_learner  # noqa: PLC0415 - learners are optional at import time

        try:
            model = build_learner(name, **config)
        except TypeError:
            model = build_learner(name)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ComponentError(f"{name}: weights do not fit the model: {str(exc)[:300]}") from None
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model


def warm_up(names: Sequence[str]) -> dict[str, float]:
    """Build each named model family once and throw it away; returns the seconds per name.

    A family's first build pays one-off costs: the first ``torch.optim`` optimizer imports
    ``torch._dynamo`` (2.2 s here). The watcher calls this at start-up. Without it, the first hot
    swap of a demo took 4.1 s where the next ones took 0.05-0.3 s, and every example learned
    before it waited. Names that are not learner families (serving built-ins) are skipped."""
    from learners.registry import build_learner  # noqa: PLC0415

    took: dict[str, float] = {}
    for name in names:
        if not name or name in SERVING_BUILTINS:
            continue
        started = time.perf_counter()
        try:
            build_learner(name)
        except Exception as exc:  # noqa: BLE001 - an unknown name is refused later, per snapshot
            log.warning("warm-up of %s failed: %s", name, exc)
            continue
        took[name] = time.perf_counter() - started
    return took


# -- role calls -----------------------------------------------------------------------------------
def calibrate(component: Component | None, task_scores: dict[str, torch.Tensor],
              context: dict[str, Any]) -> dict[str, torch.Tensor]:
    if component is None:
        return task_scores
    out = component.model.calibrate(task_scores, context)
    return {task: torch.as_tensor(out.get(task, task_scores[task]), dtype=torch.float64) for task in task_scores}


def fusion(component: Component | None, task_scores: dict[str, torch.Tensor], context: dict[str, Any],
           explore: bool, default_weights: dict[str, float]) -> tuple[dict[str, float], float | None]:
    if component is None:
        # Tasks the configured weights leave out get weight 0 ({"click": 1} is the click order);
        # no configured weights at all is equal weights.
        missing = 0.0 if default_weights else 1.0
        return {t: float(default_weights.get(t, missing)) for t in task_scores}, None
    method = getattr(component.model, "fusion_weights", None) or getattr(component.model, "fuse")
    weights, logprob = method(task_scores, context, explore=explore)
    return {str(k): float(v) for k, v in dict(weights).items()}, (None if logprob is None else float(logprob))


def calibrate_many(component: Component | None, items: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]]
                   ) -> list[dict[str, torch.Tensor]]:
    """:func:`calibrate` of several requests: one pass when the model has ``calibrate_many``."""
    many = getattr(component.model, "calibrate_many", None) if component is not None else None
    if many is None or len(items) == 1:
        return [calibrate(component, scores, context) for scores, context in items]
    outs = many(list(items))
    return [{task: torch.as_tensor(out.get(task, scores[task]), dtype=torch.float64) for task in scores}
            for out, (scores, _) in zip(outs, items)]


def fusion_many(component: Component | None, items: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]],
                explores: Sequence[bool], default_weights: dict[str, float]) -> list[tuple[dict[str, float], float | None]]:
    """:func:`fusion` of several requests: one policy pass when the model has ``fusion_weights_many``."""
    many = getattr(component.model, "fusion_weights_many", None) if component is not None else None
    if many is None:
        return [fusion(component, scores, context, explore, default_weights)
                for (scores, context), explore in zip(items, explores)]
    return [({str(k): float(v) for k, v in dict(weights).items()}, None if logprob is None else float(logprob))
            for weights, logprob in many(list(items), list(explores))]


def rerank_many(component: Component | None, requests: Sequence[RerankRequest],
                explores: Sequence[bool]) -> list[RerankResult]:
    """:func:`rerank` of several requests: one padded pass when the model has ``rerank_many``."""
    model = _COLD_START if component is None else component.model
    many = getattr(model, "rerank_many", None)
    if many is None or len(requests) == 1:
        return [rerank(component, r, e) for r, e in zip(requests, explores)]
    with torch.no_grad():
        return list(many(list(requests), list(explores)))


_COLD_START = FusedScoreReranker()


def rerank(component: Component | None, request: RerankRequest, explore: bool) -> RerankResult:
    model = _COLD_START if component is None else component.model
    with torch.no_grad():
        return model.rerank(request, explore=explore)


def candidate_scores(component: Component | None, request: RerankRequest) -> torch.Tensor:
    """Per-candidate scores (for PL log-probs in the promotion gate)."""
    model = _COLD_START if component is None else component.model
    with torch.no_grad():
        if hasattr(model, "candidate_scores"):
            return torch.as_tensor(model.candidate_scores(request), dtype=torch.float64)
        result = model.rerank(request, explore=False)
    return torch.as_tensor(result.scores, dtype=torch.float64)


def candidate_scores_many(component: Component | None, requests: Sequence[RerankRequest]) -> list[torch.Tensor]:
    """:func:`candidate_scores` of many requests; one batched pass when the model has
    ``candidate_scores_many`` (LDRO), one call per request otherwise."""
    model = _COLD_START if component is None else component.model
    many = getattr(model, "candidate_scores_many", None)
    if many is None or not requests:
        return [candidate_scores(component, r) for r in requests]
    with torch.no_grad():
        return [torch.as_tensor(s, dtype=torch.float64) for s in many(requests)]


# -- canary -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CanaryRequest:
    """A fixed request every new component must answer sensibly before it may serve."""

    request: RerankRequest
    context: dict[str, Any] = field(default_factory=dict)


def canary_request(n_features: int, tasks: tuple[str, ...], n: int = 8, seed: int = 1234) -> RerankRequest:
    gen = torch.Generator().manual_seed(seed)
    return RerankRequest(item_ids=tuple(f"canary-{i}" for i in range(n)),
                         features=torch.rand((n, n_features), generator=gen) if n_features else torch.zeros((n, 0)),
                         task_scores={t: torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05 for t in tasks},
                         context={"user_id": "canary", "query": "canary"})


def check_component(component: Component, request: RerankRequest) -> None:
    """Run the role's call on the canary; raise :class:`ComponentError` on errors or non-finite output."""
    n = len(request.item_ids)
    try:
        if component.role == "calibrator":
            out = calibrate(component, request.task_scores, request.context)
            for task, values in out.items():
                if values.shape != (n,) or not bool(torch.isfinite(values).all()) or bool(((values < 0) | (values > 1)).any()):
                    raise ComponentError(f"calibrator {component.name} v{component.version}: bad output for {task}")
        elif component.role == "fusion":
            weights, logprob = fusion(component, request.task_scores, request.context, False, {})
            if not weights or not all(math.isfinite(w) for w in weights.values()) or \
                    (logprob is not None and not math.isfinite(logprob)):
                raise ComponentError(f"fusion {component.name} v{component.version}: non-finite weights {weights}")
        else:
            result = rerank(component, request, explore=False)
            if sorted(result.order) != list(range(n)):
                raise ComponentError(f"reranker {component.name} v{component.version}: order is not a permutation")
            if len(result.scores) != n or not all(math.isfinite(s) for s in result.scores) or \
                    (result.logprob is not None and not math.isfinite(result.logprob)):
                raise ComponentError(f"reranker {component.name} v{component.version}: non-finite scores on the canary")
            scores = candidate_scores(component, request)
            if not bool(torch.isfinite(scores).all()):
                raise ComponentError(f"reranker {component.name} v{component.version}: non-finite candidate scores")
    except ComponentError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on the canary refuses the snapshot
        raise ComponentError(f"{component.role} {component.name} v{component.version} failed the canary: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from None
