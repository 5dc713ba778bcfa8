r"""``streamrank eval fusion``: DRPO on a fusion task with headroom (:mod:`simulator.contextual`).

Per seed, on held-out LETOR queries played by real KuaiRand users whose satisfaction depends
on their group and the query's type:

1. **Headroom first.** Every weight vector :math:`w` of the simplex grid
   (:func:`learners.policy.evaluation.weight_grid`) ranks each request by
   :math:`\sum_k w_k\,g(p_k)`; its value is the exact expected query satisfaction
   (:meth:`~simulator.contextual.ContextualSimulator.expected_satisfaction`). On *grid* requests
   (training queries) we pick ``best_static`` (one vector for all), ``per_group_static`` (one
   per KuaiRand user group) and ``oracle`` (one per group x query type: the best any
   context-keyed linear fusion can do on the grid); all are then scored on the *evaluation*
   requests (held-out queries), so no choice is made on the requests it is judged on.
2. **The methods.** ``drpo`` (every switch on, with the request context production would
   give it: the KuaiRand activity degree, the query-type class and the task-score summaries;
   :mod:`learners.fusion.context`) and the item-level cascade satisfaction reward model
   (:mod:`learners.fusion.satisfaction_cascade`; :data:`FUSION_SETTINGS`) learns online from
   the labelled lists of the simulated stream, as it would from ``examples``; ``no_dual`` is the
   same learner without the cross-batch term of SaFRO's dual-relative advantage
   (``across_batches=False``: GRPO-style group-relative updates); ``drpo_no_query`` drops the
   query-type feature. Each serves the
   policy mean on the evaluation requests.

Gains are :math:`\sum a / \sum s - 1` against ``best_static`` on the same requests, with a
hierarchical paired bootstrap interval over seeds and requests (:mod:`evaluation.intervals`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from contracts.events import FusionDecision, LabeledList
from contracts.learner import RerankRequest
from evaluation.intervals import BOOTSTRAP_METHOD, relative_gain
from learners.policy.evaluation import fused_order, labeled_example, rerank_request, weight_grid
from learners.registry import build_learner
from simulator.contextual import GROUPS, ContextRequest, ContextualSimulator, contextual_simulator
from simulator.kuairand import KuaiRandMarginals, load_kuairand
from simulator.letor import LetorDataset

#: DRPO's settings for this task (over :class:`~learners.fusion.learner.DRPOConfig`'s defaults):
#: the query-type feature, the item-level cascade reward model (the pooled one cannot rank a
#: request's weight vectors, the list-level contextual one only coarsely: BENCHMARKS.md,
#: ``bench/fusion_diagnostics.py``) and faster policy
#: and reward-model steps (the stream is short: a few hundred updates).
FUSION_SETTINGS: dict[str, Any] = {"query_context": True, "reward_model": "cascade", "lr": 1e-2,
                                   "reward_lr": 1e-2, "reward_steps": 4}
#: The learned methods and their DRPO settings; ``drpo`` is the full method.
FUSION_LEARNERS: dict[str, dict[str, Any]] = {
    "drpo": FUSION_SETTINGS,
    "no_dual": {**FUSION_SETTINGS, "across_batches": False},
    "drpo_no_query": {**FUSION_SETTINGS, "query_context": False},
}
STATIC_METHODS = ("best_static", "per_group_static", "oracle", "click_only")


def context_request(request: ContextRequest) -> RerankRequest:
    """What serving hands the fusion policy: scores plus ``user_activity`` and ``query_type``."""
    base = rerank_request(request)
    return replace(base, context={**base.context, "query_type": request.query_type})


def train_fusion(sim: ContextualSimulator, *, interactions: int, batch_size: int, seed: int,
                 learner_config: dict[str, Any], progress: bool = True, label: str = "drpo"):
    """DRPO serves every request (sampled weights) and learns from the labelled lists."""
    learner = build_learner("drpo", n_features=sim.dataset.n_features, seed=seed, **learner_config)
    buffer: list[LabeledList] = []
    for _ in tqdm(range(interactions), desc=f"{label} seed {seed}", leave=False, disable=not progress):
        request = sim.next_request()
        result = learner.rerank(context_request(request), explore=True)
        fusion = FusionDecision(weights=result.extras["fusion"], logprob=result.extras["fusion_logprob"])
        buffer.append(labeled_example(sim, request, result.order, source="drpo", fusion=fusion,
                                      model_versions={"drpo": str(learner.updates)}))
        if len(buffer) == batch_size:
            learner.learn_many(buffer)
            buffer = []
    return learner


def satisfaction_matrix(sim: ContextualSimulator, requests: Sequence[ContextRequest],
                        grid: Sequence[tuple[float, ...]]) -> np.ndarray:
    """``[requests, grid]`` expected satisfaction of ranking each request by each weight vector."""
    return np.array([[sim.expected_satisfaction(r, fused_order(r, w)) for w in grid] for r in requests])


def keyed_choice(train: np.ndarray, train_keys: np.ndarray, test: np.ndarray, test_keys: np.ndarray,
                 fallback: int) -> tuple[np.ndarray, dict[str, int]]:
    """Per key, the grid column with the best mean on ``train``, applied to ``test``'s rows of that key."""
    out = test[:, fallback].copy()
    chosen: dict[str, int] = {}
    for key in np.unique(test_keys):
        rows = train_keys == key
        col = int(train[rows].mean(0).argmax()) if rows.any() else fallback
        chosen[str(key)] = col
        out[test_keys == key] = test[test_keys == key, col]
    return out, chosen


def _per_group(values: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    return {g: float(values[groups == g].mean()) for g in GROUPS if (groups == g).any()}


def fusion_seed(train: LetorDataset, test: LetorDataset, kuairand: KuaiRandMarginals, seed: int, *,
                interactions: int, batch_size: int, eval_requests: int, grid_requests: int, grid_steps: int,
                learners: dict[str, dict[str, Any]], progress: bool) -> dict[str, Any]:
    """One seed: per-request satisfaction of every method on the evaluation requests, and the chosen weights."""
    grid = weight_grid(3, grid_steps)
    grid_sim = contextual_simulator(train, kuairand, seed=30_000 + seed, namespace="grid")
    eval_sim = contextual_simulator(test, kuairand, seed=10_000 + seed, namespace="heldout")
    grid_reqs = [grid_sim.request(i, 1.767e9 + i) for i in range(grid_requests)]
    eval_reqs = [eval_sim.request(i, 1.767e9 + i) for i in range(eval_requests)]
    G, E = satisfaction_matrix(grid_sim, grid_reqs, grid), satisfaction_matrix(eval_sim, eval_reqs, grid)
    best = int(G.mean(0).argmax())
    groups_g, groups_e = np.array([r.group for r in grid_reqs]), np.array([r.group for r in eval_reqs])
    ctx_g, ctx_e = np.array([r.context_key for r in grid_reqs]), np.array([r.context_key for r in eval_reqs])
    per_group, group_w = keyed_choice(G, groups_g, E, groups_e, best)
    oracle, oracle_w = keyed_choice(G, ctx_g, E, ctx_e, best)
    values: dict[str, np.ndarray] = {"best_static": E[:, best], "per_group_static": per_group, "oracle": oracle,
                                     "click_only": E[:, grid.index((1.0, 0.0, 0.0))]}
    for label, config in learners.items():
        sim = contextual_simulator(train, kuairand, seed=seed, namespace="train")
        learner = train_fusion(sim, interactions=interactions, batch_size=batch_size, seed=seed,
                               learner_config=config, progress=progress, label=label)
        values[label] = np.array([eval_sim.expected_satisfaction(r, learner.rerank(context_request(r)).order)
                                  for r in eval_reqs])
    return {"values": values, "groups": groups_e, "best_static_weights": grid[best],
            "per_group_weights": {k: grid[v] for k, v in group_w.items()},
            "oracle_weights": {k: grid[v] for k, v in oracle_w.items()}}


def evaluate_fusion(train: LetorDataset, test: LetorDataset, kuairand: KuaiRandMarginals | None = None, *,
                    seeds: Sequence[int] = (0, 1, 2, 3, 4), interactions: int = 6000, batch_size: int = 32,
                    eval_requests: int = 2000, grid_requests: int = 2000, grid_steps: int = 6,
                    learner_config: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """The headroom, then DRPO and its ablations against the best static vector (see the module doc).

    ``learner_config`` overrides DRPO settings in every learned method (e.g. ``{"lr": 1e-2}``).
    """
    kuairand = kuairand or load_kuairand()
    learners = {k: {**v, **(learner_config or {})} for k, v in FUSION_LEARNERS.items()}
    runs = [fusion_seed(train, test, kuairand, s, interactions=interactions, batch_size=batch_size,
                        eval_requests=eval_requests, grid_requests=grid_requests, grid_steps=grid_steps,
                        learners=learners, progress=progress)
            for s in tqdm(seeds, desc="fusion seeds", disable=not progress)]
    base = [r["values"]["best_static"] for r in runs]
    methods: dict[str, Any] = {}
    for name in (*STATIC_METHODS, *learners):
        vals = [r["values"][name] for r in runs]
        pooled, groups = np.concatenate(vals), np.concatenate([r["groups"] for r in runs])
        methods[name] = {"satisfaction": float(pooled.mean()), "by_group": _per_group(pooled, groups),
                         "vs_best_static": relative_gain(vals, base)}
    headroom = methods["oracle"]["vs_best_static"]
    return {
        "oracle_headroom": headroom["value"], "oracle_headroom_ci95": headroom["ci95"],
        "drpo_vs_best_static": methods["drpo"]["vs_best_static"],
        "per_group_static_vs_best_static": methods["per_group_static"]["vs_best_static"],
        "no_dual_vs_best_static": methods["no_dual"]["vs_best_static"],
        "drpo_no_query_vs_best_static": methods["drpo_no_query"]["vs_best_static"],
        "drpo_vs_no_dual": relative_gain([r["values"]["drpo"] for r in runs], [r["values"]["no_dual"] for r in runs]),
        "ci95_method": BOOTSTRAP_METHOD, "seeds": len(runs), "eval_requests": eval_requests,
        "interactions": interactions, "methods": methods,
        "weights": {"best_static": [r["best_static_weights"] for r in runs],
                    "per_group_static": runs[0]["per_group_weights"], "oracle": runs[0]["oracle_weights"]},
    }
