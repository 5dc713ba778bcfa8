"""Online evaluation of the list-wise policies on the LETOR + KuaiRand session simulator.

The loop is the production path with the simulator standing in for users:

    request -> policy ranks (explore) -> Impression -> simulator feedback -> ListOutcome
            -> streams.labeling.label_impression(...) -> LabeledList -> learner.learn_many(batch)

so a learner trains on exactly the :class:`~contracts.events.LabeledList` it would receive from
the ``examples`` topic. The hidden truth (``SimRequest.relevance``) is used only to report
NDCG on held-out queries; the simulator's query satisfaction proxy (``query_reward``) is
DRPO's metric. Training and held-out requests come from two simulators over disjoint query
sets (a seeded split of TRAIN when no TEST file is given).

* :func:`evaluate_ldro`: ``ldro``, ``grpo`` (online, from simulated clicks only), ``logged``
  (the upstream order that produced the historical log) and ``lightgbm`` (LightGBM
  ``lambdarank`` trained offline on the *true* labels of the training queries, with the same
  inputs as the reranker: item features + upstream task scores) plus ``lightgbm_features``
  (features only, the classic LETOR setting). Optionally under a click-model shift mid-stream.
* :func:`evaluate_drpo`: ``drpo`` vs ``static_best`` (the best fusion weight vector of a grid,
  chosen on training requests) and ``logged`` (click score only), by satisfaction.

Results are ``{method: {metric: value}}`` with ``<metric>`` the mean over seeds and
``<metric>_std`` the standard deviation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from contracts.events import Feedback, FusionDecision, JoinInfo, LabeledList
from contracts.learner import RerankRequest
from evaluation.metrics import ndcg_at_k
from learners.policy.batch import DEFAULT_TASKS, ListBatch, from_examples, task_logit
from learners.registry import build_learner
from simulator.click_models import ClickModel
from simulator.kuairand import KuaiRandMarginals, load_kuairand
from simulator.letor import LetorDataset, load_letor
from simulator.session import SessionSimulator, SimRequest, SimulatorConfig
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights, query_satisfaction

NDCG_KS = (1, 5, 10)
JOIN_WINDOW_S = 300.0


# -- data -----------------------------------------------------------------------------------------
def letor_path(spec: str) -> Path:
    """``letor:PATH`` (or a bare path) -> the LibSVM file; its ``PATH.query`` group file must sit beside it."""
    kind, sep, path = spec.partition(":")
    if not sep:
        kind, path = "letor", spec
    if kind != "letor":
        raise ValueError(f"unsupported data spec {spec!r}: expected letor:PATH")
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such LETOR file")
    return Path(path)


def load_letor_spec(spec: str, n_features: int | None = None) -> LetorDataset:
    return load_letor(letor_path(spec), n_features=n_features)


def train_test(train_spec: str, test_spec: str | None, split_seed: int = 0,
               test_fraction: float = 0.25) -> tuple[LetorDataset, LetorDataset]:
    """TRAIN and TEST datasets; without TEST, a seeded split of TRAIN's queries."""
    train = load_letor_spec(train_spec)
    if test_spec:
        return train, load_letor_spec(test_spec, n_features=train.n_features)
    return train.split(test_fraction, split_seed)


# -- the production path, with the simulator as the users -----------------------------------------
def rerank_request(request: SimRequest) -> RerankRequest:
    """What serving would hand the reranker for this simulated request."""
    feats = np.stack([c.features for c in request.candidates]).astype(np.float32)
    scores = {t: torch.tensor([c.scores[t] for c in request.candidates], dtype=torch.float64) for t in DEFAULT_TASKS}
    return RerankRequest(item_ids=tuple(c.item_id for c in request.candidates), features=torch.from_numpy(feats),
                         task_scores=scores, context={"user_activity": request.user_activity})


def outcome_from_feedback(events: Iterable[Feedback]) -> ListOutcome:
    """What the join agent collects for one impression (deduplicated by event id)."""
    outcome, seen = ListOutcome(), set()
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        outcome.add(event.item_id, event.kind, event.value)
    return outcome


def labeled_example(sim: SessionSimulator, request: SimRequest, order: Sequence[int], *, source: str,
                    list_logprob: float | None = None, fusion: FusionDecision | None = None,
                    model_versions: dict[str, str] | None = None) -> LabeledList:
    """Serve ``order``, collect the simulator's feedback and label it as the streams layer does."""
    impression = sim.impression(request, order, source=source, list_logprob=list_logprob, fusion=fusion,
                                model_versions=model_versions)
    events = sim.respond(request, order)
    last = max((e.ts for e in events), default=request.ts)
    join = JoinInfo(closed_by="session_end" if any(e.kind == "session_end" for e in events) else "window",
                    window_s=JOIN_WINDOW_S, feedback_count=len(events), closed_at_ts=last)
    return label_impression(impression, outcome_from_feedback(events), RewardWeights(), join)


def satisfaction(sim: SessionSimulator, request: SimRequest, order: Sequence[int]) -> float:
    """The query satisfaction proxy the simulator's users give ``order`` (same as ``query_reward``)."""
    outcome = outcome_from_feedback(sim.respond(request, order))
    shown = list(outcome.items.values())
    return query_satisfaction(shown, outcome.reformulated, RewardWeights())


# -- held-out evaluation sets ----------------------------------------------------------------------
@dataclass
class HeldOut:
    """Fixed held-out requests, tensorised once."""

    requests: list[SimRequest]
    batch: ListBatch

    @classmethod
    def build(cls, sim: SessionSimulator, n: int, n_features: int) -> "HeldOut":
        requests = [sim.request(i, sim.config.mean_interarrival_s * i + 1.767e9) for i in range(n)]
        examples = [_as_example(sim, r) for r in requests]
        return cls(requests, from_examples(examples, n_features))

    def ndcg(self, scores: torch.Tensor) -> dict[str, float]:
        """Mean NDCG@k of ranking each held-out request by ``scores`` ``[B, n]`` (padding ignored)."""
        out = {f"ndcg@{k}": 0.0 for k in NDCG_KS}
        for b, req in enumerate(self.requests):
            n = len(req.candidates)
            order = np.argsort(-scores[b, :n].numpy(), kind="stable")
            for k in NDCG_KS:
                out[f"ndcg@{k}"] += ndcg_at_k(req.relevance[order], k)
        return {k: v / len(self.requests) for k, v in out.items()}

    def logged_ndcg(self) -> dict[str, float]:
        n = self.batch.mask.shape[1]
        return self.ndcg(-torch.arange(n, dtype=torch.float32).expand(len(self.requests), n))


def _as_example(sim: SessionSimulator, request: SimRequest) -> LabeledList:
    impression = sim.impression(request, source="heldout")
    join = JoinInfo(closed_by="flush", window_s=0.0, feedback_count=0, closed_at_ts=request.ts)
    return label_impression(impression, ListOutcome(), RewardWeights(), join)


# -- LightGBM reference ------------------------------------------------------------------------------
def _lgb_rows(requests: Sequence[SimRequest], with_scores: bool) -> tuple[np.ndarray, np.ndarray, list[int]]:
    xs, ys, groups = [], [], []
    for req in requests:
        feats = np.stack([c.features for c in req.candidates]).astype(np.float32)
        if with_scores:
            probs = np.array([[c.scores[t] for t in DEFAULT_TASKS] for c in req.candidates])
            feats = np.concatenate([feats, task_logit(probs)], axis=1)
        xs.append(feats)
        ys.append(req.relevance)
        groups.append(len(req.candidates))
    return np.concatenate(xs), np.concatenate(ys), groups


def lightgbm_reference(train_requests: Sequence[SimRequest], held_out: HeldOut, seed: int,
                       with_scores: bool = True) -> dict[str, float]:
    """LightGBM ``lambdarank`` on the true labels of the training queries, scored on held-out requests."""
    import lightgbm as lgb  # noqa: PLC0415

    x, y, groups = _lgb_rows(train_requests, with_scores)
    model = lgb.LGBMRanker(objective="lambdarank", n_estimators=200, learning_rate=0.05, num_leaves=15,
                           min_child_samples=5, random_state=seed, n_jobs=1, verbose=-1)  # 1: no OpenMP spinning on a shared box
    model.fit(x, y, group=groups)
    xt, _, gt = _lgb_rows(held_out.requests, with_scores)
    pred = model.predict(xt)
    n = held_out.batch.mask.shape[1]
    scores = torch.full((len(gt), n), -1e9)
    start = 0
    for b, size in enumerate(gt):
        scores[b, :size] = torch.from_numpy(pred[start:start + size].astype(np.float32))
        start += size
    return held_out.ndcg(scores)


# -- LDRO / GRPO online --------------------------------------------------------------------------------
@dataclass
class OnlineRun:
    final: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)  # (interactions, held-out NDCG@10)
    shift_at: int | None = None


def train_list_policy(method: str, sim: SessionSimulator, held_out: HeldOut, *, interactions: int, batch_size: int,
                      warmup: int, seed: int, eval_every: int, shift_at: int | None = None,
                      shifted: ClickModel | None = None, learner_config: dict[str, Any] | None = None,
                      progress: bool = True) -> OnlineRun:
    """Run ``method`` (ldro/grpo/...) online on ``sim`` for ``interactions`` requests.

    The first ``warmup`` requests are served in the logged (upstream) order, as a new
    reranker starts from the existing system's log; after that the learner serves with
    exploration (one PL sample) and learns from every ``batch_size`` labelled lists.
    """
    learner = build_learner(method, n_features=sim.dataset.n_features, seed=seed, **(learner_config or {}))
    buffer: list[LabeledList] = []
    curve: list[tuple[int, float]] = []
    for i in tqdm(range(interactions), desc=f"{method} seed {seed}", leave=False, disable=not progress):
        if shift_at is not None and i == shift_at and shifted is not None:
            sim.config = replace(sim.config, click_model=shifted)
        request = sim.next_request()
        if i < warmup:
            example = labeled_example(sim, request, range(len(request.candidates)), source="logged")
        else:
            result = learner.rerank(rerank_request(request), explore=True)
            example = labeled_example(sim, request, result.order, source=method, list_logprob=result.logprob,
                                      model_versions={method: str(learner.updates)})
        buffer.append(example)
        if len(buffer) == batch_size:
            learner.learn_many(buffer)
            buffer = []
        if eval_every and (i + 1) % eval_every == 0:
            curve.append((i + 1, held_out.ndcg(learner.scores_for(held_out.batch))["ndcg@10"]))
    final = held_out.ndcg(learner.scores_for(held_out.batch))
    return OnlineRun(final=final, curve=curve, shift_at=shift_at)


def summarise(per_seed: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of every metric, per method."""
    out: dict[str, dict[str, float]] = {}
    for method, runs in per_seed.items():
        metrics: dict[str, float] = {}
        for key in runs[0]:
            values = np.array([r[key] for r in runs], dtype=np.float64)
            metrics[key] = float(values.mean())
            metrics[f"{key}_std"] = float(values.std())
        metrics["seeds"] = float(len(runs))
        out[method] = metrics
    return out


def default_shift(click_model: ClickModel) -> ClickModel:
    """The reward shift: users value relevance less and look less far down the list."""
    return click_model.shifted(relevance_weight=0.5, eta=1.5)


def evaluate_ldro(train: LetorDataset, test: LetorDataset, kuairand: KuaiRandMarginals | None = None, *,
                  seeds: Sequence[int] = (0, 1, 2), methods: Sequence[str] = ("ldro", "grpo"),
                  interactions: int = 4000, batch_size: int = 32, warmup: int = 500, held_out_requests: int = 300,
                  lgb_requests: int = 1000, click_model: str = "pbm", shift: bool = False,
                  eval_every: int = 0, learner_config: dict[str, dict[str, Any]] | None = None,
                  progress: bool = True, curves: dict[str, list] | None = None) -> dict[str, dict[str, float]]:
    """LDRO vs GRPO vs logged vs LightGBM on held-out queries; mean ± std over ``seeds``."""
    kuairand = kuairand or load_kuairand()
    cm = ClickModel(kind=click_model, max_grade=max(1, train.max_grade))
    per_seed: dict[str, list[dict[str, float]]] = {m: [] for m in (*methods, "logged", "lightgbm", "lightgbm_features")}
    for seed in seeds:
        test_sim = SessionSimulator(test, kuairand, SimulatorConfig(click_model=cm), seed=10_000 + seed,
                                    namespace="heldout")
        held_out = HeldOut.build(test_sim, held_out_requests, train.n_features)
        per_seed["logged"].append(held_out.logged_ndcg())
        lgb_sim = SessionSimulator(train, kuairand, SimulatorConfig(click_model=cm), seed=20_000 + seed,
                                   namespace="lgb")
        lgb_train = [lgb_sim.request(i, 0.0) for i in range(lgb_requests)]
        per_seed["lightgbm"].append(lightgbm_reference(lgb_train, held_out, seed, with_scores=True))
        per_seed["lightgbm_features"].append(lightgbm_reference(lgb_train, held_out, seed, with_scores=False))
        for method in methods:
            sim = SessionSimulator(train, kuairand, SimulatorConfig(click_model=cm), seed=seed, namespace="train")
            run = train_list_policy(method.split("@")[0], sim, held_out, interactions=interactions,
                                    batch_size=batch_size, warmup=warmup, seed=seed,
                                    eval_every=eval_every or (interactions // 10 if shift else 0),
                                    shift_at=interactions // 2 if shift else None,
                                    shifted=default_shift(cm) if shift else None,
                                    learner_config=(learner_config or {}).get(method), progress=progress)
            metrics = dict(run.final)
            if shift and run.curve:
                before = [v for step, v in run.curve if step <= interactions // 2]
                after = [v for step, v in run.curve if step > interactions // 2]
                metrics["ndcg@10_before_shift"] = before[-1] if before else float("nan")
                metrics["ndcg@10_min_after_shift"] = min(after) if after else float("nan")
            per_seed[method].append(metrics)
            if curves is not None:
                curves.setdefault(method, []).append(run.curve)
    return summarise(per_seed)


# -- DRPO ---------------------------------------------------------------------------------------------
def weight_grid(k: int, steps: int) -> list[tuple[float, ...]]:
    """Non-negative weight vectors on the simplex with resolution ``1/steps`` (scale does not change a ranking)."""
    return [tuple(c / steps for c in combo) for combo in itertools.product(range(steps + 1), repeat=k)
            if sum(combo) == steps]


def fused_order(request: SimRequest, weights: Sequence[float]) -> list[int]:
    """Rank by :math:`\\sum_k w_k g(p_k)` with the upstream scores (no calibrator in the loop)."""
    probs = np.array([[c.scores[t] for t in DEFAULT_TASKS] for c in request.candidates])
    fused = task_logit(probs).astype(np.float64) @ np.asarray(weights, dtype=np.float64)
    return np.argsort(-fused, kind="stable").tolist()


def policy_metrics(sim: SessionSimulator, requests: Sequence[SimRequest],
                   order_fn: Callable[[SimRequest], Sequence[int]]) -> dict[str, float]:
    sat, ndcg = 0.0, {k: 0.0 for k in NDCG_KS}
    for req in requests:
        order = list(order_fn(req))
        sat += satisfaction(sim, req, order)
        for k in NDCG_KS:
            ndcg[k] += ndcg_at_k(req.relevance[order], k)
    n = max(1, len(requests))
    return {"satisfaction": sat / n, **{f"ndcg@{k}": v / n for k, v in ndcg.items()}}


def static_best_weights(sim: SessionSimulator, requests: Sequence[SimRequest], steps: int = 6,
                        progress: bool = True) -> tuple[tuple[float, ...], float]:
    """Grid search of the fusion weights on ``requests`` (common random numbers across candidates)."""
    best, best_sat = None, -1.0
    for weights in tqdm(weight_grid(len(DEFAULT_TASKS), steps), desc="static grid", leave=False,
                        disable=not progress):
        sat = policy_metrics(sim, requests, lambda r, w=weights: fused_order(r, w))["satisfaction"]
        if sat > best_sat:
            best, best_sat = weights, sat
    assert best is not None
    return best, best_sat


def train_drpo(sim: SessionSimulator, *, interactions: int, batch_size: int, seed: int,
               learner_config: dict[str, Any] | None = None, progress: bool = True):
    """DRPO serves every request (sampled weights) and learns from the labelled lists."""
    learner = build_learner("drpo", n_features=sim.dataset.n_features, seed=seed, **(learner_config or {}))
    buffer: list[LabeledList] = []
    for _ in tqdm(range(interactions), desc=f"drpo seed {seed}", leave=False, disable=not progress):
        request = sim.next_request()
        result = learner.rerank(rerank_request(request), explore=True)
        fusion = FusionDecision(weights=result.extras["fusion"], logprob=result.extras["fusion_logprob"])
        buffer.append(labeled_example(sim, request, result.order, source="drpo", fusion=fusion,
                                      model_versions={"drpo": str(learner.updates)}))
        if len(buffer) == batch_size:
            learner.learn_many(buffer)
            buffer = []
    return learner


def evaluate_drpo(train: LetorDataset, test: LetorDataset, kuairand: KuaiRandMarginals | None = None, *,
                  seeds: Sequence[int] = (0, 1, 2), interactions: int = 4000, batch_size: int = 32,
                  eval_requests: int = 2000, grid_requests: int = 1000, grid_steps: int = 6,
                  click_model: str = "pbm", learner_config: dict[str, Any] | None = None,
                  progress: bool = True) -> dict[str, dict[str, float]]:
    """DRPO vs the best static fusion weights (grid search on training requests) vs click-only.

    ``ideal`` ranks by the hidden true relevance: the ceiling a fusion policy could approach
    (it shows how much satisfaction headroom the simulator leaves above the static weights).
    """
    kuairand = kuairand or load_kuairand()
    cm = ClickModel(kind=click_model, max_grade=max(1, train.max_grade))
    per_seed: dict[str, list[dict[str, float]]] = {"drpo": [], "static_best": [], "logged": [], "ideal": []}
    for seed in seeds:
        test_sim = SessionSimulator(test, kuairand, SimulatorConfig(click_model=cm), seed=10_000 + seed,
                                    namespace="heldout")
        eval_reqs = [test_sim.request(i, 1.767e9 + i) for i in range(eval_requests)]
        grid_sim = SessionSimulator(train, kuairand, SimulatorConfig(click_model=cm), seed=30_000 + seed,
                                    namespace="grid")
        grid_reqs = [grid_sim.request(i, 1.767e9 + i) for i in range(grid_requests)]
        best, _ = static_best_weights(grid_sim, grid_reqs, grid_steps, progress)
        static = policy_metrics(test_sim, eval_reqs, lambda r: fused_order(r, best))
        per_seed["static_best"].append({**static, **{f"w_{t}": w for t, w in zip(DEFAULT_TASKS, best)}})
        per_seed["logged"].append(policy_metrics(test_sim, eval_reqs, lambda r: range(len(r.candidates))))
        per_seed["ideal"].append(policy_metrics(test_sim, eval_reqs,
                                                lambda r: np.argsort(-r.relevance, kind="stable").tolist()))
        sim = SessionSimulator(train, kuairand, SimulatorConfig(click_model=cm), seed=seed, namespace="train")
        learner = train_drpo(sim, interactions=interactions, batch_size=batch_size, seed=seed,
                             learner_config=learner_config, progress=progress)
        drpo = policy_metrics(test_sim, eval_reqs, lambda r: learner.rerank(rerank_request(r)).order)
        per_seed["drpo"].append(drpo)
    summary = summarise(per_seed)
    base = summary["static_best"]["satisfaction"]
    ratios = [d["satisfaction"] / s["satisfaction"] for d, s in zip(per_seed["drpo"], per_seed["static_best"])
              if s["satisfaction"] > 0]
    summary["drpo"]["satisfaction_ratio_vs_static_best"] = summary["drpo"]["satisfaction"] / base if base else 0.0
    summary["drpo"]["satisfaction_ratio_vs_static_best_std"] = float(np.std(ratios)) if ratios else 0.0
    return summary
