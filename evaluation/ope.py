r"""Off-policy estimators (IPS, SNIPS, DR) with bootstrap confidence intervals.

Used by the promotion gate (is a new snapshot's estimated value worse than the serving one's?)
and by ``streamrank eval ope``. The estimators follow the Open Bandit Pipeline (Saito et al.,
"Open Bandit Dataset and Pipeline", NeurIPS 2021 Datasets & Benchmarks; ``obp`` 0.5.7,
``obp.ope.estimators``) round for round, so on the same inputs they give the same numbers.

Notation: logged rounds :math:`i = 1..n` with reward :math:`r_i`, logging propensity
:math:`\pi_b(a_i|x_i)` and the evaluated policy's probability :math:`\pi_e(a_i|x_i)`;
importance weight :math:`w_i = \pi_e(a_i|x_i) / \pi_b(a_i|x_i)` (optionally clipped at
:math:`\lambda`). For list-wise policies the "action" is the whole shown order and
:math:`w_i = \exp(\log\pi_e(y_i) - \log\pi_b(y_i))` from the Plackett--Luce list log-probs.

* **IPS** (Horvitz & Thompson, 1952; Precup et al., 2000):
  :math:`\hat V_{IPS} = \frac1n\sum_i w_i r_i`.
* **SNIPS** (Swaminathan & Joachims, NeurIPS 2015):
  :math:`\hat V_{SNIPS} = \sum_i w_i r_i / \sum_i w_i`.
* **DR** (Dudík, Langford & Li, ICML 2011):
  :math:`\hat V_{DR} = \frac1n\sum_i \big[\hat q_\pi(x_i) + w_i\,(r_i - \hat q(x_i, a_i))\big]`
  with :math:`\hat q_\pi(x_i) = \mathbb{E}_{a\sim\pi_e}\hat q(x_i, a)`.

Confidence intervals are percentile bootstrap intervals of the mean of the per-round values
(``obp.utils.estimate_confidence_interval_by_bootstrap``: resample rounds with replacement with
``sklearn.utils.check_random_state(seed)``, i.e. ``numpy.random.RandomState``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from common.errors import StreamrankError


class OpeInputError(StreamrankError, ValueError):
    """Inputs an estimator cannot use; the message names the argument."""


def _as_1d(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise OpeInputError(f"{name} must be a 1-dimensional array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise OpeInputError(f"{name} has {arr.shape[0]} rounds, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise OpeInputError(f"{name} contains NaN or infinite values")
    return arr


def check_inputs(reward, pscore, evaluation_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the three per-round arrays every estimator takes."""
    reward = _as_1d("reward", reward)
    if reward.shape[0] == 0:
        raise OpeInputError("reward is empty: need at least one logged round")
    pscore = _as_1d("pscore", pscore, reward.shape[0])
    evaluation_prob = _as_1d("evaluation_prob", evaluation_prob, reward.shape[0])
    if np.any(pscore <= 0):
        raise OpeInputError("pscore must be > 0 (a logged action had zero logging probability)")
    if np.any(evaluation_prob < 0):
        raise OpeInputError("evaluation_prob must be >= 0")
    return reward, pscore, evaluation_prob


def bootstrap_ci(samples: np.ndarray, alpha: float = 0.05, n_bootstrap_samples: int = 10_000,
                 random_state: int | None = None) -> dict[str, float]:
    """Percentile bootstrap CI of ``mean(samples)`` (obp's ``estimate_confidence_interval_by_bootstrap``)."""
    if not 0.0 < alpha < 1.0:
        raise OpeInputError(f"alpha must be in (0, 1), got {alpha}")
    if n_bootstrap_samples < 1:
        raise OpeInputError(f"n_bootstrap_samples must be >= 1, got {n_bootstrap_samples}")
    samples = np.asarray(samples, dtype=np.float64)
    rng = np.random.RandomState(random_state)
    boot = [np.mean(rng.choice(samples, size=samples.shape[0])) for _ in range(n_bootstrap_samples)]
    return {"mean": float(np.mean(boot)), "lower": float(np.percentile(boot, 100 * (alpha / 2))),
            "upper": float(np.percentile(boot, 100 * (1.0 - alpha / 2)))}


@dataclass(frozen=True)
class Estimate:
    """One estimator's result: the point estimate and its bootstrap interval."""

    estimator: str
    value: float
    lower: float
    upper: float
    n: int
    alpha: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {"estimator": self.estimator, "value": self.value, "ci_lower": self.lower, "ci_upper": self.upper,
                "n": self.n, "alpha": self.alpha}


@dataclass(frozen=True)
class InverseProbabilityWeighting:
    r"""IPS: :math:`\frac1n\sum_i \min(w_i, \lambda)\, r_i` (obp ``InverseProbabilityWeighting``)."""

    lambda_: float = np.inf
    name: ClassVar[str] = "ipw"

    def __post_init__(self) -> None:
        if not self.lambda_ > 0:
            raise OpeInputError(f"lambda_ must be > 0, got {self.lambda_}")

    def weights(self, pscore: np.ndarray, evaluation_prob: np.ndarray) -> np.ndarray:
        return np.minimum(evaluation_prob / pscore, self.lambda_)

    def round_rewards(self, reward, pscore, evaluation_prob, **_: np.ndarray) -> np.ndarray:
        reward, pscore, evaluation_prob = check_inputs(reward, pscore, evaluation_prob)
        return reward * self.weights(pscore, evaluation_prob)

    def estimate_policy_value(self, reward, pscore, evaluation_prob, **kwargs: np.ndarray) -> float:
        return float(np.mean(self.round_rewards(reward, pscore, evaluation_prob, **kwargs)))

    def estimate(self, reward, pscore, evaluation_prob, alpha: float = 0.05, n_bootstrap_samples: int = 10_000,
                 random_state: int | None = None, **kwargs: np.ndarray) -> Estimate:
        rounds = self.round_rewards(reward, pscore, evaluation_prob, **kwargs)
        ci = bootstrap_ci(rounds, alpha, n_bootstrap_samples, random_state)
        return Estimate(self.name, float(np.mean(rounds)), ci["lower"], ci["upper"], int(rounds.shape[0]), alpha)


@dataclass(frozen=True)
class SelfNormalizedInverseProbabilityWeighting(InverseProbabilityWeighting):
    r"""SNIPS: :math:`\sum_i w_i r_i / \sum_i w_i`; per-round values :math:`w_i r_i / \bar w` as obp."""

    name: ClassVar[str] = "snipw"

    def round_rewards(self, reward, pscore, evaluation_prob, **_: np.ndarray) -> np.ndarray:
        reward, pscore, evaluation_prob = check_inputs(reward, pscore, evaluation_prob)
        w = self.weights(pscore, evaluation_prob)
        mean_w = w.mean()
        if mean_w <= 0:
            raise OpeInputError("evaluation_prob is 0 on every logged round: SNIPS is undefined")
        return reward * w / mean_w


@dataclass(frozen=True)
class DoublyRobust(InverseProbabilityWeighting):
    r"""DR: :math:`\hat q_\pi(x_i) + w_i (r_i - \hat q(x_i,a_i))` averaged over rounds.

    Extra inputs: ``q_hat_factual`` (:math:`\hat q(x_i, a_i)`, the reward model at the logged
    action) and ``q_hat_expected`` (:math:`\sum_a \pi_e(a|x_i)\hat q(x_i,a)`).
    """

    name: ClassVar[str] = "dr"

    def round_rewards(self, reward, pscore, evaluation_prob, q_hat_factual=None, q_hat_expected=None,
                      **_: np.ndarray) -> np.ndarray:
        reward, pscore, evaluation_prob = check_inputs(reward, pscore, evaluation_prob)
        if q_hat_factual is None or q_hat_expected is None:
            raise OpeInputError("DR needs q_hat_factual and q_hat_expected (a reward model's predictions)")
        q_fact = _as_1d("q_hat_factual", q_hat_factual, reward.shape[0])
        q_exp = _as_1d("q_hat_expected", q_hat_expected, reward.shape[0])
        return q_exp + self.weights(pscore, evaluation_prob) * (reward - q_fact)


ESTIMATORS: dict[str, type[InverseProbabilityWeighting]] = {
    "ipw": InverseProbabilityWeighting,
    "snipw": SelfNormalizedInverseProbabilityWeighting,
    "dr": DoublyRobust,
}


# -- adapters from obp's array layout --------------------------------------------------------
def evaluation_prob_from_action_dist(action: np.ndarray, position: np.ndarray, action_dist: np.ndarray) -> np.ndarray:
    """``action_dist[i, action_i, position_i]``: the evaluated policy's probability of each logged action."""
    action_dist = np.asarray(action_dist, dtype=np.float64)
    if action_dist.ndim != 3:
        raise OpeInputError(f"action_dist must be [n_rounds, n_actions, len_list], got shape {action_dist.shape}")
    action = np.asarray(action, dtype=np.int64)
    position = np.asarray(position, dtype=np.int64)
    if action.shape != (action_dist.shape[0],) or position.shape != action.shape:
        raise OpeInputError("action and position must have one entry per round of action_dist")
    if action.min() < 0 or action.max() >= action_dist.shape[1]:
        raise OpeInputError(f"action out of range [0, {action_dist.shape[1]})")
    if position.min() < 0 or position.max() >= action_dist.shape[2]:
        raise OpeInputError(f"position out of range [0, {action_dist.shape[2]}) (0-based)")
    return action_dist[np.arange(action.shape[0]), action, position]


def expected_q_from_action_dist(position: np.ndarray, action_dist: np.ndarray, q_hat: np.ndarray) -> np.ndarray:
    r""":math:`\sum_a \pi_e(a|x_i, k_i)\,\hat q(x_i, a, k_i)` at each round's logged position ``k_i``."""
    rows = np.arange(action_dist.shape[0])
    position = np.asarray(position, dtype=np.int64)
    return np.average(q_hat[rows, :, position], weights=action_dist[rows, :, position], axis=1)


def list_importance_weights(new_logprob, logged_logprob, clip: float = np.inf) -> np.ndarray:
    r"""List-wise weights :math:`\min(\exp(\log\pi_e(y) - \log\pi_b(y)), \lambda)` from log-probs."""
    new = _as_1d("new_logprob", new_logprob)
    old = _as_1d("logged_logprob", logged_logprob, new.shape[0])
    return np.minimum(np.exp(np.clip(new - old, -700.0, 700.0)), clip)


@dataclass
class OpeReport:
    """Estimates of several estimators on one dataset and policy."""

    policy: str
    n_rounds: int
    on_policy_value: float
    estimates: dict[str, Estimate] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"policy": self.policy, "n_rounds": self.n_rounds, "logged_policy_value": self.on_policy_value,
                "estimates": {k: v.as_dict() for k, v in self.estimates.items()}}


def evaluate(reward, pscore, evaluation_prob, *, policy: str, q_hat_factual=None, q_hat_expected=None,
             estimators: tuple[str, ...] = ("ipw", "snipw", "dr"), alpha: float = 0.05,
             n_bootstrap_samples: int = 2000, random_state: int = 12345, clip: float = np.inf) -> OpeReport:
    """Run the named estimators (DR only when q-hat inputs are given) and collect their estimates."""
    reward = _as_1d("reward", reward)
    report = OpeReport(policy=policy, n_rounds=int(reward.shape[0]), on_policy_value=float(reward.mean()))
    for name in estimators:
        if name not in ESTIMATORS:
            raise OpeInputError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}")
        if name == "dr" and (q_hat_factual is None or q_hat_expected is None):
            continue
        est = ESTIMATORS[name](lambda_=clip)
        report.estimates[name] = est.estimate(reward, pscore, evaluation_prob, alpha=alpha,
                                              n_bootstrap_samples=n_bootstrap_samples, random_state=random_state,
                                              q_hat_factual=q_hat_factual, q_hat_expected=q_hat_expected)
    return report
