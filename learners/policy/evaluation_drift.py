r"""``streamrank eval drift``: list-wise rerankers on a stream whose click model shifts mid-run.

The stream is the default LETOR + KuaiRand simulator (:class:`~simulator.session.SessionSimulator`)
with a PBM click model; at ``shift_at`` lists the users change
(:func:`learners.policy.evaluation.default_shift`: relevance weighs half as much in the
attractiveness, :math:`\alpha(r) = \epsilon + (\alpha_{max}-\epsilon)\min(1, 0.5\,gain(r))`, and
the position bias steepens from :math:`(1/k)^{1}` to :math:`(1/k)^{1.5}`). The true relevance
does not change, so the best order does not either: what moves is the signal every learner
gets (weaker, more position-biased clicks) and its reward model's calibration. Dual-Rerank
(arXiv 2604.07420) claims LDRO (decoupled advantage, rank weights, AR-teacher distillation)
stays stable under such a streaming reward shift where GRPO does not.

Per method and seed, every ``eval_every`` lists:

* ``ndcg@10``: held-out NDCG@10 (true LETOR grades) of the current model (the logged order's
  is constant);
* ``reward``: the mean list reward of the lists served in the window, and ``reward_lift``:
  that divided by the logged order's list reward on the same requests (the shift's mechanical
  effect on every policy cancels; the logged order's lift is 1).

Curves are smoothed by a trailing mean over ``smooth`` points, then :func:`evaluation.drift.shift_response`
gives ``dip`` and ``recovery_lists`` (NDCG@10: back to the pre-shift level within ``ndcg_tol``;
reward lift: back to the pre-shift level or the new steady state within ``reward_tol``).
Methods: ``ldro``, ``grpo``, ``ldro@nokd`` (``distill=False``, the AR-teacher ablation) and ``logged``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from contracts.events import LabeledList
from evaluation.drift import shift_response
from evaluation.intervals import SEED_METHOD, seed_interval
from learners.policy.evaluation import HeldOut, default_shift, labeled_example, rerank_request
from learners.registry import build_learner
from simulator.click_models import ClickModel
from simulator.kuairand import KuaiRandMarginals, load_kuairand
from simulator.letor import LetorDataset
from simulator.session import SessionSimulator, SimulatorConfig

DRIFT_METHODS: dict[str, dict[str, Any]] = {"ldro": {}, "grpo": {}, "ldro@nokd": {"distill": False}}
CURVES = ("ndcg@10", "reward", "reward_lift")


@dataclass
class DriftRun:
    """One method on one seed: ``(lists, value)`` points of every curve."""

    curves: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: {k: [] for k in CURVES})


def smoothed(curve: Sequence[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing mean over ``window`` points (causal: a point sees only the past)."""
    values = [v for _, v in curve]
    return [(step, float(np.mean(values[max(0, i - window + 1):i + 1]))) for i, (step, _) in enumerate(curve)]


def run_drift(method: str, sim: SessionSimulator, held_out: HeldOut, *, interactions: int, batch_size: int,
              warmup: int, seed: int, eval_every: int, shift_at: int, shifted: ClickModel,
              learner_config: dict[str, Any] | None = None, progress: bool = True) -> DriftRun:
    """Serve ``interactions`` requests with ``method`` (``logged``: the upstream order), shift at ``shift_at``."""
    learner = None if method == "logged" else build_learner(method.split("@")[0], n_features=sim.dataset.n_features,
                                                            seed=seed, **(learner_config or {}))
    run = DriftRun()
    buffer: list[LabeledList] = []
    served: list[float] = []
    logged: list[float] = []
    logged_ndcg = held_out.logged_ndcg()["ndcg@10"]
    for i in tqdm(range(interactions), desc=f"{method} seed {seed}", leave=False, disable=not progress):
        if i == shift_at:
            sim.config = replace(sim.config, click_model=shifted)
        request = sim.next_request()
        upstream = labeled_example(sim, request, range(len(request.candidates)), source="logged")
        if learner is None or i < warmup:
            example = upstream
        else:
            result = learner.rerank(rerank_request(request), explore=True)
            example = labeled_example(sim, request, result.order, source=method, list_logprob=result.logprob,
                                      model_versions={method: str(learner.updates)})
        served.append(example.list_reward)
        logged.append(upstream.list_reward)
        if learner is not None:
            buffer.append(example)
            if len(buffer) == batch_size:
                learner.learn_many(buffer)
                buffer = []
        if (i + 1) % eval_every == 0:
            ndcg = logged_ndcg if learner is None else held_out.ndcg(learner.scores_for(held_out.batch))["ndcg@10"]
            run.curves["ndcg@10"].append((i + 1, ndcg))
            run.curves["reward"].append((i + 1, float(np.mean(served))))
            run.curves["reward_lift"].append((i + 1, float(np.sum(served) / max(np.sum(logged), 1e-9))))
            served, logged = [], []
    return run


def _responses(run: DriftRun, shift_at: int, smooth: int, ndcg_tol: float, reward_tol: float) -> dict[str, float]:
    ndcg = shift_response(smoothed(run.curves["ndcg@10"], smooth), shift_at, ndcg_tol)
    lift = shift_response(smoothed(run.curves["reward_lift"], smooth), shift_at, reward_tol, steady=True)
    raw = shift_response(smoothed(run.curves["reward"], smooth), shift_at, 0.0)
    return {"dip": ndcg.dip, "recovery_lists": float(ndcg.censored_lists), "recovered": float(ndcg.recovered),
            "level": ndcg.level, "reward_lift_dip": lift.dip, "reward_lift_recovery_lists": float(lift.censored_lists),
            "reward_lift_recovered": float(lift.recovered), "reward_dip": raw.dip,
            "ndcg@10_final": run.curves["ndcg@10"][-1][1]}


def summarise_drift(per_seed: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per method: ``{value, ci95}`` over seeds of every response; ``recovered`` as a count of seeds."""
    out: dict[str, dict[str, Any]] = {}
    for method, rows in per_seed.items():
        entry: dict[str, Any] = {"seeds": len(rows)}
        for key in rows[0]:
            values = [r[key] for r in rows]
            entry[key] = int(sum(values)) if key.endswith("recovered") else seed_interval(values)
        out[method] = entry
    return out


def paired_difference(per_seed: dict[str, list[dict[str, float]]], a: str, b: str, key: str) -> dict[str, Any]:
    """``a - b`` of ``key`` per seed (same stream and held-out set), mean and t interval over seeds."""
    return seed_interval([x[key] - y[key] for x, y in zip(per_seed[a], per_seed[b])])


def evaluate_drift(train: LetorDataset, test: LetorDataset, kuairand: KuaiRandMarginals | None = None, *,
                   seeds: Sequence[int] = (0, 1, 2, 3, 4), interactions: int = 4000, batch_size: int = 32,
                   warmup: int = 500, held_out_requests: int = 300, eval_every: int = 100, smooth: int = 3,
                   ndcg_tol: float = 0.005, reward_tol: float = 0.03,
                   methods: dict[str, dict[str, Any]] | None = None, progress: bool = True,
                   curves: dict[str, list] | None = None) -> dict[str, Any]:
    """LDRO vs GRPO vs LDRO without distillation vs logged under a mid-run click-model shift."""
    kuairand = kuairand or load_kuairand()
    methods = dict(DRIFT_METHODS if methods is None else methods)
    cm = ClickModel(kind="pbm", max_grade=max(1, train.max_grade))
    shift_at = interactions // 2
    per_seed: dict[str, list[dict[str, float]]] = {m: [] for m in (*methods, "logged")}
    for seed in tqdm(seeds, desc="drift seeds", disable=not progress):
        test_sim = SessionSimulator(test, kuairand, SimulatorConfig(click_model=cm), seed=10_000 + seed,
                                    namespace="heldout")
        held_out = HeldOut.build(test_sim, held_out_requests, train.n_features)
        for method in (*methods, "logged"):
            sim = SessionSimulator(train, kuairand, SimulatorConfig(click_model=cm), seed=seed, namespace="train")
            run = run_drift(method, sim, held_out, interactions=interactions, batch_size=batch_size, warmup=warmup,
                            seed=seed, eval_every=eval_every, shift_at=shift_at, shifted=default_shift(cm),
                            learner_config=methods.get(method), progress=progress)
            per_seed[method].append(_responses(run, shift_at, smooth, ndcg_tol, reward_tol))
            if curves is not None:
                curves.setdefault(method, []).append(run.curves)
    summary = summarise_drift(per_seed)
    comparison = {}
    if "ldro" in per_seed and "grpo" in per_seed:
        comparison = {f"ldro_minus_grpo_{k}": paired_difference(per_seed, "ldro", "grpo", k)
                      for k in ("dip", "recovery_lists", "reward_lift_dip")}
    return {**summary, "methods": summary, "comparison": comparison, "seeds": len(seeds), "shift_at": shift_at,
            "interactions": interactions, "eval_every": eval_every, "ci95_method": SEED_METHOD,
            "definition": {"dip": "pre-shift level (mean of the last 3 smoothed points) minus the minimum after the shift",
                           "recovery_lists": f"lists after the shift until NDCG@10 is back within {ndcg_tol} of its "
                                             "pre-shift level for good (censored at the run's end if never)",
                           "reward_lift_recovery_lists": f"the same for the reward lift over the logged order, to "
                                                         f"min(pre-shift, new steady state) within {reward_tol}",
                           "smoothing": f"trailing mean over {smooth} points of {eval_every} lists"}}
