r"""Promotion gate: a new reranker snapshot serves only if its off-policy value is not clearly worse.

On the most recent logged examples that serving produced **with exploration** (so every shown
order had a known, non-degenerate probability, logged as ``impression.list_logprob``), both the
serving reranker and the candidate are evaluated as Plackett--Luce policies over their candidate
scores. The list-wise importance weight of round :math:`i` is
:math:`w_i = \min(\exp(\log\pi(y_i) - \log\pi_b(y_i)), \lambda)` and the value estimate is
SNIPS (default) or IPS over the list rewards (:mod:`evaluation.ope`).

Whole-list weights of 20-30 item permutations have enormous variance (log-prob differences of
tens of nats), so by default (``prefix_k = 3``) the weight uses only the PL probability of the
**top-k placements** (logged by serving as ``impression.context["logprob_top<k>"]``): the
top-k "prefix" estimator, unbiased when the list reward is determined by the top k (as the
position-discounted rewards mostly are) and far less variable (cf. Li et al., "Offline
Evaluation of Ranking Policies with Click Models", KDD 2018). The candidate is blocked when

.. math:: \hat V(\text{candidate}) < \hat V(\text{current}) - \delta\,\max(|\hat V(\text{current})|, \epsilon)

with :math:`\delta` = ``max_relative_drop``, or when (``confidence`` > 0) the one-sided
paired-bootstrap lower bound of :math:`\hat V(\text{candidate}) - \hat V(\text{current})` at that
confidence is below :math:`-\delta\,\max(|\hat V(\text{current})|, \epsilon)`: a candidate must be
*confidently* not worse, so a lucky estimate on a few hundred noisy rounds does not promote it.
With ``floor_cold_start`` the reference value is the better of the current snapshot's and the
cold-start policy's, so successive small "not worse" steps cannot drift below the fallback. With fewer than ``min_samples`` usable examples
the gate keeps the serving policy (``accept_without_data=False``, the default) or lets the
snapshot through (``True``), and says "insufficient data" in the decision either way.

The policies are scored on the inputs they served with. A server that fetches item features
from the feature store logs only the feature's name (``context["item_features"]``,
``ServeConfig.log_fetched_features`` off), so the gate reads those rows back by item id
(``item_features``, the server's feature source) before it scores a logged list, as the learners
do. Scored with zero features instead, a feature-using reranker (LDRO reads 300) is judged as a
different policy than the one serving: its weights no longer describe it, and the log-probs of
the serving snapshot do not reproduce the logged ones. A logged list whose named features cannot
be read is left out of the window (and tried again at the next decision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from contracts.events import LabeledList, features_to_fill, item_feature_count, item_feature_matrix
from contracts.learner import RerankRequest
from evaluation.ope import ESTIMATORS
from serving.baseline import pl_logprob
from serving.components import Component, candidate_scores_many


@dataclass(frozen=True)
class GateConfig:
    enabled: bool = True
    estimator: str = "snipw"
    max_relative_drop: float = 0.05
    min_samples: int = 30
    clip: float = 50.0
    window: int = 2000  # most recent usable examples considered
    prefix_k: int = 3  # 0: whole-list weights
    confidence: float = 0.9  # one-sided paired-bootstrap confidence that the drop is within bounds (0: point estimates)
    n_bootstrap: int = 300
    seed: int = 0
    floor_cold_start: bool = True  # the reference is the better of the current snapshot and the cold-start policy
    accept_without_data: bool = False  # fewer than min_samples explored examples: keep serving what serves

    def __post_init__(self) -> None:
        if self.estimator not in ("ipw", "snipw"):
            raise ValueError(f"gate estimator must be 'ipw' or 'snipw', got {self.estimator!r}")
        if self.max_relative_drop < 0:
            raise ValueError("max_relative_drop must be >= 0")
        if self.prefix_k < 0:
            raise ValueError("prefix_k must be >= 0")
        if not 0.0 <= self.confidence < 1.0:
            raise ValueError("confidence must be in [0, 1)")


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str
    n: int
    current_value: float | None = None
    candidate_value: float | None = None
    estimator: str = "snipw"
    #: the one-sided lower confidence bound of V(candidate) - V(current) (None: not computed)
    lower_bound: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "reason": self.reason, "n": self.n, "estimator": self.estimator,
                "current_value": self.current_value, "candidate_value": self.candidate_value,
                "lower_bound": self.lower_bound}


def prefix_key(k: int) -> str:
    return f"logprob_top{k}"


def usable(example: LabeledList, prefix_k: int = 0) -> bool:
    """Served by us with exploration and a logged list log-prob (and top-k log-prob when asked)."""
    imp = example.impression
    if prefix_k and not isinstance(imp.context.get(prefix_key(prefix_k)), float):
        return False
    return imp.list_logprob is not None and float(imp.context.get("explored", 0.0) or 0.0) > 0 and len(imp.items) > 1


def logged_logprob(example: LabeledList, prefix_k: int = 0) -> float:
    imp = example.impression
    return float(imp.context[prefix_key(prefix_k)]) if prefix_k else float(imp.list_logprob)


#: ``(feature, item_ids) -> [n, d]`` rows of the named item feature (zeros for unknown items),
#: ``None`` when they cannot be read (the server's :class:`serving.features.FeastItemFeatures`)
ItemFeatures = Callable[[str, Sequence[str]], "np.ndarray | None"]


class FeaturesUnavailable(LookupError):
    """A logged list names its item features and they could not be read back."""


def request_from_example(example: LabeledList, item_features: ItemFeatures | None = None) -> RerankRequest:
    """The candidates as served (in shown order), with the task scores and fusion weights logged,
    and the item features: carried by the items, or read by ``item_features`` when the impression
    names them (:class:`FeaturesUnavailable` when it names them and they cannot be read)."""
    imp = example.impression
    tasks = list(imp.items[0].scores)
    task_scores = {}
    for t in tasks:
        task_scores[t] = torch.tensor([(it.calibrated or it.scores).get(t, it.scores.get(t, 0.5)) for it in imp.items],
                                      dtype=torch.float64)
    counts = [item_feature_count(it) for it in imp.items]
    ref = features_to_fill(example)
    if len(set(counts)) == 1 and counts[0] is not None:
        features = torch.from_numpy(item_feature_matrix(imp.items))
    elif ref is not None:
        rows = item_features(ref, [it.item_id for it in imp.items]) if item_features is not None else None
        if rows is None or len(rows) != len(imp.items):
            raise FeaturesUnavailable(f"example {example.example_id}: item features {ref!r} cannot be read")
        features = torch.as_tensor(np.asarray(rows, dtype=np.float32))
    else:
        features = torch.zeros((len(imp.items), 0))
    context: dict[str, Any] = dict(imp.context)
    context.update(user_id=imp.user_id, query=imp.query)
    if imp.fusion is not None:
        context["fusion_weights"] = dict(imp.fusion.weights)
    upstream = {t: torch.tensor([it.scores.get(t, 0.5) for it in imp.items], dtype=torch.float64) for t in tasks}
    return RerankRequest(item_ids=tuple(it.item_id for it in imp.items), features=features, task_scores=task_scores,
                         context=context, upstream_scores=upstream)


def policy_logprobs(component: Component | None, examples: Sequence[LabeledList], prefix_k: int = 0,
                    requests: Sequence[RerankRequest] | None = None) -> np.ndarray:
    """Log-prob of each logged (shown) order (or of its top ``prefix_k``) under ``component``'s PL policy.

    ``requests``: the examples' :func:`request_from_example`, when the caller keeps them."""
    if requests is None:
        requests = [request_from_example(ex) for ex in examples]
    scores = candidate_scores_many(component, requests)
    # the logged requests list their items in shown order: the shown order is 0..n-1
    return np.array([pl_logprob(s, range(len(s)), prefix_k or None) for s in scores], dtype=np.float64)


class PromotionGate:
    """Compares candidate and current reranker on recent logged data (see the module docstring)."""

    def __init__(self, config: GateConfig | None = None, item_features: ItemFeatures | None = None) -> None:
        self.config = config or GateConfig()
        self.item_features = item_features  # reads back the item features impressions name (module docstring)
        # Log-probs of the serving policy per example, reused while that version serves (the
        # candidate changes every snapshot, the current one only on a swap).
        self._cache: dict[tuple[str, str, str], float] = {}
        # The logged requests of the window, rebuilt only for examples new since the last decision.
        self._requests: dict[str, RerankRequest] = {}

    def requests_for(self, examples: Sequence[LabeledList]) -> list[RerankRequest]:
        known = self._requests
        self._requests = {ex.example_id: known.get(ex.example_id) or request_from_example(ex, self.item_features)
                          for ex in examples}
        return [self._requests[ex.example_id] for ex in examples]

    def scorable(self, examples: Sequence[LabeledList]) -> list[LabeledList]:
        """``examples`` whose request can be built (their named item features read); the others are
        left out of this decision and tried again at the next."""
        out = []
        for ex in examples:
            if ex.example_id not in self._requests:
                try:
                    self._requests[ex.example_id] = request_from_example(ex, self.item_features)
                except FeaturesUnavailable:
                    continue
            out.append(ex)
        return out

    def _logprobs(self, component: Component | None, examples: Sequence[LabeledList], cache: bool) -> np.ndarray:
        k = self.config.prefix_k
        requests = self.requests_for(examples)
        if not cache:
            return policy_logprobs(component, examples, k, requests)
        tag = (component.name, component.version) if component is not None else ("cold-start", "")
        keys = [(*tag, ex.example_id) for ex in examples]
        if len(self._cache) > 20 * self.config.window:
            self._cache.clear()  # before the lookup: clearing after it lost entries it had found (KeyError)
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            fresh = policy_logprobs(component, [examples[i] for i in missing], k, [requests[i] for i in missing])
            self._cache.update({keys[i]: float(v) for i, v in zip(missing, fresh)})
        return np.array([self._cache[k] for k in keys])

    def weights(self, component: Component | None, examples: Sequence[LabeledList], cache: bool = False) -> np.ndarray:
        """Clipped importance weights of ``component`` on the logged rounds."""
        logged = np.array([logged_logprob(ex, self.config.prefix_k) for ex in examples], dtype=np.float64)
        new = self._logprobs(component, examples, cache)
        return np.minimum(np.exp(np.clip(new - logged, -700, 700)), self.config.clip)

    def estimate(self, component: Component | None, examples: Sequence[LabeledList], cache: bool = False) -> float:
        reward = np.array([ex.list_reward for ex in examples], dtype=np.float64)
        w = self.weights(component, examples, cache)
        # Weights are ratios already: pass them as evaluation_prob with pscore 1.
        estimator = ESTIMATORS[self.config.estimator]()
        if self.config.estimator == "snipw" and w.sum() <= 0:
            return 0.0
        return estimator.estimate_policy_value(reward, np.ones_like(w), w)

    def _value(self, reward: np.ndarray, w: np.ndarray) -> np.ndarray:
        """IPS or SNIPS along the last axis (rows = bootstrap resamples)."""
        if self.config.estimator == "ipw":
            return (reward * w).mean(axis=-1)
        return (reward * w).sum(axis=-1) / np.maximum(w.sum(axis=-1), 1e-300)

    def difference_lower_bound(self, reward: np.ndarray, w_new: np.ndarray, w_cur: np.ndarray) -> float:
        """One-sided lower confidence bound of V(candidate) - V(current) by a paired bootstrap
        (both estimates on the same resampled rounds, so their shared noise cancels)."""
        rng = np.random.default_rng(self.config.seed)
        idx = rng.integers(0, reward.shape[0], size=(self.config.n_bootstrap, reward.shape[0]))
        diff = self._value(reward[idx], w_new[idx]) - self._value(reward[idx], w_cur[idx])
        return float(np.quantile(diff, 1.0 - self.config.confidence))

    def decide(self, current: Component | None, candidate: Component,
               examples: Sequence[LabeledList]) -> GateDecision:
        cfg = self.config
        if not cfg.enabled:
            return GateDecision(True, "gate disabled", 0, estimator=cfg.estimator)
        data = self.scorable([ex for ex in examples if usable(ex, cfg.prefix_k)][-cfg.window:])
        if len(data) < cfg.min_samples:
            # Without evidence the serving policy stays (default): a first, barely trained snapshot
            # must not replace the cold start before the logs can judge it.
            return GateDecision(cfg.accept_without_data,
                                f"insufficient data ({len(data)} < {cfg.min_samples} explored examples)",
                                len(data), estimator=cfg.estimator)
        reward = np.array([ex.list_reward for ex in data], dtype=np.float64)
        try:
            w_cur = self.weights(current, data, cache=True)
            w_new = self.weights(candidate, data)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot score logged lists is refused
            return GateDecision(False, f"candidate could not be evaluated: {type(exc).__name__}: {str(exc)[:200]}",
                                len(data), estimator=cfg.estimator)
        reference = "current"
        if current is not None and cfg.floor_cold_start:
            # Never promote below the fallback policy either: comparing only with the current
            # snapshot lets a chain of small, noisy "not worse" steps drift downwards.
            w_cold = self.weights(None, data, cache=True)
            if float(self._value(reward, w_cold)) > float(self._value(reward, w_cur)):
                w_cur, reference = w_cold, "cold-start"
        v_cur, v_new = float(self._value(reward, w_cur)), float(self._value(reward, w_new))
        if not (math.isfinite(v_cur) and math.isfinite(v_new)):
            return GateDecision(False, "non-finite estimate", len(data), v_cur, v_new, cfg.estimator)
        allowed = cfg.max_relative_drop * max(abs(v_cur), 1e-9)
        if v_new < v_cur - allowed:
            return GateDecision(False, f"estimated value {v_new:.4f} < {reference} {v_cur:.4f} - {cfg.max_relative_drop:.0%}",
                                len(data), v_cur, v_new, cfg.estimator)
        lower = None
        if cfg.confidence > 0:
            lower = self.difference_lower_bound(reward, w_new, w_cur)
            if lower < -allowed:
                return GateDecision(False, f"estimated value {v_new:.4f} vs {reference} {v_cur:.4f}, but the "
                                           f"{cfg.confidence:.0%} lower bound of the difference {lower:.4f} is below "
                                           f"-{allowed:.4f}", len(data), v_cur, v_new, cfg.estimator, lower)
        return GateDecision(True, f"estimated value {v_new:.4f} vs {reference} {v_cur:.4f}", len(data), v_cur, v_new,
                            cfg.estimator, lower)
