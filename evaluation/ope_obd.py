r"""Off-policy evaluation on the Open Bandit Dataset: data arrays, evaluation policies, reward model.

Loads one OBD CSV (``simulator.obd.read_obd``) into obp's array layout (``action``,
``position`` 0-based, ``reward`` = click, ``pscore``), builds the evaluated policy's
``action_dist[n, n_actions, len_list]`` and a reward model :math:`\hat q(x, a, k)` for DR:

* ``uniform``: :math:`\pi_e(a|x,k) = 1/|A|` (obp's ``Random`` policy).
* ``affinity-softmax[:T]``: :math:`\pi_e(a|x,k) \propto \exp(\mathrm{aff}(x,a)/T)`, the same
  distribution at every position (a context-aware policy built from OBD's
  ``user-item_affinity_*`` columns, logged per row as the affinity of the shown item).
* ``item-ctr-softmax[:T]``: softmax over per-(item, position) click rates estimated on the
  other folds (cross-fitted, so the policy never sees the round it is evaluated on).

The reward model is the cross-fitted, Beta-smoothed click rate per (item, position):
:math:`\hat q(a,k) = (c_{a,k} + m\,\bar c_k) / (n_{a,k} + m)` (Dudík et al. 2011 use any
regression; cross-fitting follows Chernozhukov et al. 2018 / obp's ``RegressionModel`` with
``n_folds``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.ope import (
    OpeInputError,
    OpeReport,
    evaluate,
    evaluation_prob_from_action_dist,
    expected_q_from_action_dist,
)

POLICIES = ("uniform", "affinity-softmax", "item-ctr-softmax")


@dataclass(frozen=True)
class ObdBandit:
    """One OBD file as arrays in obp's layout."""

    action: np.ndarray  # int [n]
    position: np.ndarray  # int [n], 0-based
    reward: np.ndarray  # float [n] (click)
    pscore: np.ndarray  # float [n]
    affinity: np.ndarray  # float [n, n_actions] (user-item affinity for every item)
    n_actions: int
    len_list: int

    @property
    def n_rounds(self) -> int:
        return int(self.action.shape[0])


def load_obd_bandit(path: str | Path, n_actions: int | None = None, len_list: int = 3) -> ObdBandit:
    """Read an OBD CSV (``<policy>/<campaign>/<campaign>.csv``) into arrays."""
    path = Path(path)
    if not path.exists():
        raise OpeInputError(f"OBD file not found: {path}")
    actions, positions, rewards, pscores, affinities = [], [], [], [], []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        for needed in ("item_id", "position", "click", "propensity_score"):
            if needed not in fields:
                raise OpeInputError(f"{path}: missing column {needed!r} (is this an OBD CSV?)")
        aff_cols = sorted((f for f in fields if f.startswith("user-item_affinity_")),
                          key=lambda f: int(f.rsplit("_", 1)[1]))
        for row in reader:
            actions.append(int(row["item_id"]))
            positions.append(int(row["position"]) - 1)
            rewards.append(float(row["click"]))
            pscores.append(float(row["propensity_score"]))
            affinities.append([float(row[c] or 0.0) for c in aff_cols])
    action = np.asarray(actions, dtype=np.int64)
    n_actions = n_actions or int(max(action.max() + 1, len(aff_cols)))
    affinity = np.zeros((len(actions), n_actions))
    if aff_cols:
        affinity[:, : len(aff_cols)] = np.asarray(affinities)
    return ObdBandit(action, np.asarray(positions, dtype=np.int64), np.asarray(rewards), np.asarray(pscores),
                     affinity, n_actions, len_list)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def fold_ids(n: int, n_folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) % n_folds


def cross_fitted_ctr(data: ObdBandit, n_folds: int = 3, prior_strength: float = 20.0, seed: int = 0) -> np.ndarray:
    """``q_hat[n, n_actions, len_list]``: per-(item, position) click rate from the other folds."""
    folds = fold_ids(data.n_rounds, n_folds, seed)
    q_hat = np.zeros((data.n_rounds, data.n_actions, data.len_list))
    for f in range(n_folds):
        train = folds != f
        clicks = np.zeros((data.n_actions, data.len_list))
        counts = np.zeros((data.n_actions, data.len_list))
        np.add.at(clicks, (data.action[train], data.position[train]), data.reward[train])
        np.add.at(counts, (data.action[train], data.position[train]), 1.0)
        base = clicks.sum(axis=0) / np.maximum(counts.sum(axis=0), 1.0)  # per-position mean
        table = (clicks + prior_strength * base) / (counts + prior_strength)
        q_hat[folds == f] = table
    return q_hat


def policy_action_dist(data: ObdBandit, policy: str, seed: int = 0) -> np.ndarray:
    """``action_dist[n, n_actions, len_list]`` of an evaluation policy spec (``name[:temperature]``)."""
    name, _, arg = policy.partition(":")
    if name not in POLICIES:
        raise OpeInputError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)} (softmax ones take :T)")
    temperature = float(arg) if arg else 1.0
    if temperature <= 0:
        raise OpeInputError(f"policy temperature must be > 0, got {temperature}")
    n, a, k = data.n_rounds, data.n_actions, data.len_list
    if name == "uniform":
        return np.full((n, a, k), 1.0 / a)
    if name == "affinity-softmax":
        probs = _softmax(data.affinity / temperature, axis=1)
        return np.repeat(probs[:, :, None], k, axis=2)
    q = cross_fitted_ctr(data, seed=seed + 1)
    scaled = q / max(float(q.mean()), 1e-9)  # relative click rate, so T is scale-free
    return _softmax(scaled / temperature, axis=1)


def evaluate_obd(path: str | Path, policy: str, alpha: float = 0.05, n_bootstrap_samples: int = 2000,
                 random_state: int = 12345, clip: float = np.inf) -> OpeReport:
    """IPS, SNIPS and DR (cross-fitted click-rate reward model) of ``policy`` on one OBD file."""
    data = load_obd_bandit(path)
    action_dist = policy_action_dist(data, policy)
    evaluation_prob = evaluation_prob_from_action_dist(data.action, data.position, action_dist)
    q_hat = cross_fitted_ctr(data)
    q_fact = q_hat[np.arange(data.n_rounds), data.action, data.position]
    q_exp = expected_q_from_action_dist(data.position, action_dist, q_hat)
    return evaluate(data.reward, data.pscore, evaluation_prob, policy=policy, q_hat_factual=q_fact,
                    q_hat_expected=q_exp, alpha=alpha, n_bootstrap_samples=n_bootstrap_samples,
                    random_state=random_state, clip=clip)
