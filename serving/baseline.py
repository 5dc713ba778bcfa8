r"""The cold-start policy and a small real list-wise learner that serving can run without the learners.

Until a learner has published a snapshot, serving still has to answer, and tests of the
hot-swap path need a real model with real weights. Both come from here:

* **Fused-score Plackett--Luce policy** (cold start): candidate score
  :math:`s_i = \sum_k w_k\,\mathrm{logit}(p_{ik})` over the (calibrated) task predictions with
  static fusion weights :math:`w` (the usual multi-task fusion of industrial rankers, SaFRO §1),
  ranked greedily or sampled with Gumbel noise.
* :class:`LinearListScorer` (model name ``linear-pl``): :math:`s_i = \theta^\top
  \mathrm{logit}(p_i) + v^\top x_i + b`, trained by ListNet (Cao et al., ICML 2007): cross-entropy
  between :math:`\mathrm{softmax}(r/\tau)` of the item rewards and :math:`\mathrm{softmax}(s)`.
  Implements :class:`contracts.learner.Learner` (``learn_many``/``state_dict``/``load_state_dict``)
  and ``rerank``, so it goes through the snapshot registry like any learner.

Sampling and log-probabilities use the Plackett--Luce model (Plackett 1975; Luce 1959):
:math:`\log\pi(y) = \sum_k [s_{y_k} - \log\sum_{j\ge k} e^{s_{y_j}}]`, with Gumbel-Max
sampling :math:`y = \mathrm{argsort}(s + g)`, :math:`g_i\sim\mathrm{Gumbel}(0,1)` (Yellott 1977).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from contracts.events import LabeledList, item_feature_count, item_feature_matrix
from contracts.learner import LearnerState, RerankRequest, RerankResult

DEFAULT_TASKS: tuple[str, ...] = ("click", "long_view", "watch_time")
EPS = 1e-6


def logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(EPS, 1.0 - EPS)
    return torch.log(p) - torch.log1p(-p)


def pl_logprob(scores: torch.Tensor, order: Sequence[int], top_k: int | None = None) -> float:
    r"""Plackett--Luce log-probability of ``order`` (candidate indices, best first) under ``scores``.

    With ``top_k``: the log-probability of the first ``top_k`` placements only,
    :math:`\sum_{k \le K} [s_{y_k} - \log\sum_{j \ge k} e^{s_{y_j}}]` (the prefix of the same sum).
    """
    placed = torch.as_tensor(scores, dtype=torch.float64)[torch.as_tensor(list(order), dtype=torch.long)]
    tail = torch.logcumsumexp(placed.flip(0), dim=0).flip(0)
    steps = placed - tail
    return float(steps[:top_k].sum() if top_k else steps.sum())


def pl_order(scores: torch.Tensor, explore: bool, generator: torch.Generator | None = None) -> list[int]:
    """Greedy order (``explore=False``) or one Gumbel-Max sample of the PL distribution."""
    if explore:
        u = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp(1e-20, 1.0 - 1e-12)
        keys = scores.double() - torch.log(-torch.log(u))
    else:
        keys = scores.double()
    return torch.argsort(keys, descending=True, stable=True).tolist()


def fused_scores(task_scores: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    r""":math:`\sum_k w_k\,\mathrm{logit}(p_k)` over the tasks present in both."""
    n = len(next(iter(task_scores.values())))
    out = torch.zeros(n, dtype=torch.float64)
    for task, w in weights.items():
        if task in task_scores:
            out += float(w) * logit(task_scores[task].double())
    return out


class FusedScoreReranker:
    """Cold-start reranker: PL over the fused score (no weights to learn)."""

    name = "fused-score"

    def __init__(self, temperature: float = 1.0, seed: int = 0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self._generator = torch.Generator().manual_seed(seed)

    def candidate_scores(self, request: RerankRequest) -> torch.Tensor:
        weights = request.context.get("fusion_weights") or {t: 1.0 for t in request.task_scores}
        return fused_scores(request.task_scores, weights) / self.temperature

    def rerank(self, request: RerankRequest, explore: bool = False) -> RerankResult:
        scores = self.candidate_scores(request)
        order = pl_order(scores, explore, self._generator)
        return RerankResult(order=order, scores=scores.tolist(), logprob=pl_logprob(scores, order))


class LinearListScorer(torch.nn.Module):
    """``linear-pl``: a linear PL scorer over logit task scores and dense features, trained by ListNet."""

    name = "linear-pl"

    def __init__(self, n_features: int = 0, tasks: Sequence[str] = DEFAULT_TASKS, lr: float = 0.05,
                 reward_temperature: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.n_features = int(n_features)
        self.lr = lr
        self.reward_temperature = reward_temperature
        self.seed = seed
        self.task_weight = torch.nn.Parameter(torch.ones(len(self.tasks), dtype=torch.float32))
        self.feature_weight = torch.nn.Parameter(torch.zeros(self.n_features, dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.zeros(1, dtype=torch.float32))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.updates = 0
        self.examples_seen = 0
        self.offsets: dict[str, int] = {}
        self._generator = torch.Generator().manual_seed(seed)

    # -- scoring ------------------------------------------------------------------------------
    def _inputs(self, task_scores: dict[str, torch.Tensor], features: torch.Tensor | None, n: int) -> torch.Tensor:
        cols = [logit(task_scores[t].float()) if t in task_scores else torch.zeros(n) for t in self.tasks]
        z = torch.stack(cols, dim=1) @ self.task_weight + self.bias
        if self.n_features and features is not None and features.numel():
            if features.shape != (n, self.n_features):
                raise ValueError(f"features have shape {tuple(features.shape)}, the model expects ({n}, {self.n_features})")
            z = z + features.float() @ self.feature_weight
        return z

    def candidate_scores(self, request: RerankRequest) -> torch.Tensor:
        with torch.no_grad():
            return self._inputs(request.task_scores, request.features, len(request.item_ids)).double()

    def rerank(self, request: RerankRequest, explore: bool = False) -> RerankResult:
        scores = self.candidate_scores(request)
        order = pl_order(scores, explore, self._generator)
        return RerankResult(order=order, scores=scores.tolist(), logprob=pl_logprob(scores, order))

    # -- learning -------------------------------------------------------------------------------
    def learn_many(self, batch: Sequence[LabeledList]) -> dict[str, float]:
        """One Adam step on the mean ListNet loss of ``batch`` (lists with no reward are skipped)."""
        losses = []
        for example in batch:
            items = example.impression.items
            rewards = torch.tensor([lab.reward for lab in example.labels], dtype=torch.float32)
            if len(items) < 2 or float(rewards.abs().sum()) == 0.0:
                continue
            task_scores = {t: torch.tensor([it.scores.get(t, 0.5) for it in items]) for t in self.tasks}
            feats = None
            if self.n_features and all(item_feature_count(it) == self.n_features for it in items):
                feats = torch.from_numpy(item_feature_matrix(items))
            scores = self._inputs(task_scores, feats, len(items))
            target = torch.softmax(rewards / self.reward_temperature, dim=0)
            losses.append(-(target * torch.log_softmax(scores, dim=0)).sum())
        self.examples_seen += len(batch)
        if not losses:
            return {"loss": 0.0, "lists": 0.0}
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return {"loss": float(loss), "lists": float(len(losses))}

    # -- checkpoint -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "tasks": list(self.tasks), "lr": self.lr,
                "reward_temperature": self.reward_temperature, "seed": self.seed}

    def state_dict(self, *args: Any, **kwargs: Any) -> LearnerState:  # type: ignore[override]
        if args or kwargs:  # torch internals (optimizer, deepcopy) call the nn.Module form
            return super().state_dict(*args, **kwargs)
        tensors = {k: v.detach().clone() for k, v in super().state_dict().items()}
        return LearnerState(tensors=tensors, meta={"family": "serving.baseline", "model": self.name,
                                                   "config": self.config(), "updates": self.updates,
                                                   "examples_seen": self.examples_seen, "offsets": dict(self.offsets)})

    def load_state_dict(self, state: LearnerState | dict, strict: bool = True) -> Any:  # type: ignore[override]
        if isinstance(state, LearnerState):
            result = super().load_state_dict(state.tensors, strict=True)
            self.updates = int(state.meta.get("updates", 0))
            self.examples_seen = int(state.meta.get("examples_seen", 0))
            self.offsets = dict(state.meta.get("offsets") or {})
            return result
        return super().load_state_dict(state, strict=strict)


def build_linear_pl(**config: Any) -> LinearListScorer:
    return LinearListScorer(**config)


def list_discounted_gain(rewards: Sequence[float]) -> float:
    """:math:`\\sum_k r_k / \\log_2(k+1)` of rewards in shown order (the list reward of streams/rewards.py)."""
    return float(sum(r / math.log2(k + 1.0) for k, r in enumerate(rewards, 1)))
