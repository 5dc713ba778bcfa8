r"""A click stream with known truth and a deliberately miscalibrated, context-dependent backbone.

Grounded in the LETOR/KuaiRand simulator (:mod:`simulator.session`): the same real data and
the same click model. Request :math:`t` draws a user :math:`u` (from a fixed pool of real
KuaiRand-Pure users, with their real ``user_active_degree``) and a LETOR query; up to
``list_size`` of its documents are shown in a uniformly random order (random logging, so position
carries no relevance) at positions :math:`k = 1..n`.

**Truth** (PBM of :mod:`simulator.click_models`, with the user's KuaiRand engagement
:math:`e_u` scaling examination as in :meth:`~simulator.click_models.ClickModel.sample_clicks`):

.. math:: p^\ast_{ik} = \min\big(1,\ e_u\,k^{-\eta}\big)\;\alpha(r_i), \qquad C_{ik} \sim \mathrm{Bernoulli}(p^\ast_{ik})

**Backbone** (the upstream score the calibrators see; a distortion of the truth):

.. math:: \operatorname{logit}\hat p_{ik} = T\,\operatorname{logit} p^\ast_{ik} + b_{g(u)} + \gamma \ln k + \sigma\,\varepsilon_{ik},
          \qquad \varepsilon_{ik} \sim \mathcal N(0, 1)

* :math:`T = 1.3` (over-confident everywhere): a *context-free* distortion, which Platt,
  isotonic and histogram binning can undo;
* :math:`b_g`, by user group (the group is a coarsening of the KuaiRand activity degree):

  ======== ============================ ======================== ========== ==================================
  group    KuaiRand ``user_active_degree`` share of KuaiRand users  :math:`b_g` backbone for this group
  ======== ============================ ======================== ========== ==================================
  active   ``full_active``               66 %                     +0.8       over-predicts (biased up)
  high     ``high_active``               23 %                     -0.8       under-predicts (biased down)
  casual   every other degree            11 %                     -0.4       under-predicts
  ======== ============================ ======================== ========== ==================================

* :math:`\gamma = 0.3`: the backbone under-estimates the position decay, so it over-predicts
  more the lower an item is shown (+0.69 in logit at position 10);
* :math:`\sigma = 0.3`: per-row noise, so even a perfect calibrator keeps some
  :math:`\lvert \hat p - p^\ast \rvert` (the floor of ``mae_true``).

A calibrator that sees no context applies one monotone map to every group: it can remove
:math:`T` and the *average* shift, not a shift whose sign differs by group or by position.
A context-aware one (UMNN with position and user group) can. The table and
:math:`\gamma` are the simulator's choices, stated here and checked by
``tests/unit/learners/test_calibration_sim.py``; they are not estimated from data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.paths import data_path
from simulator.click_models import ClickModel
from simulator.kuairand import KuaiRandMarginals, load_kuairand
from simulator.letor import LetorDataset, load_letor

START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z, as simulator.session
GROUP_OF_ACTIVITY = {"full_active": "active", "high_active": "high"}  # everything else: "casual"
GROUP_BIAS = {"active": 0.8, "high": -0.8, "casual": -0.4}
COLUMNS = ("request", "ts", "user_id", "user_group", "activity", "query", "item_id", "position", "relevance",
           "p_true", "p_hat", "click")


def user_group(activity: str) -> str:
    """The simulator's user group of a KuaiRand activity degree."""
    return GROUP_OF_ACTIVITY.get(activity, "casual")


@dataclass(frozen=True)
class CalibrationSimConfig:
    """The knobs of the stream (defaults: the module docstring's values)."""

    requests: int = 15_000
    list_size: int = 10
    users: int = 2_000
    temperature: float = 1.3
    group_bias: tuple[tuple[str, float], ...] = tuple(GROUP_BIAS.items())
    position_bias: float = 0.3
    noise: float = 0.3
    eta: float = 1.0
    mean_interarrival_s: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.requests < 1 or self.list_size < 1 or self.users < 1:
            raise ValueError(f"requests, list_size and users must be >= 1, got "
                             f"{self.requests}, {self.list_size}, {self.users}")
        if self.noise < 0 or self.temperature <= 0:
            raise ValueError(f"need noise >= 0 and temperature > 0, got {self.noise}, {self.temperature}")
        missing = set(GROUP_BIAS) - dict(self.group_bias).keys()
        if missing:
            raise ValueError(f"group_bias lacks groups {sorted(missing)}")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def simulate_calibration_stream(config: CalibrationSimConfig, letor: LetorDataset,
                                users: KuaiRandMarginals) -> pd.DataFrame:
    """One row per shown item, in time order (``COLUMNS``); ``p_true`` is the click probability."""
    rng = np.random.default_rng(config.seed)
    click_model = ClickModel(kind="pbm", eta=config.eta, max_grade=max(letor.max_grade, 1))
    bias = dict(config.group_bias)
    pool = rng.choice(len(users.user_ids), size=min(config.users, len(users.user_ids)), replace=False)
    user_of_request = pool[rng.integers(0, len(pool), size=config.requests)]
    query_of_request = rng.integers(0, len(letor.queries), size=config.requests)
    ts = START_TS + np.cumsum(rng.exponential(config.mean_interarrival_s, size=config.requests))
    parts: dict[str, list] = {c: [] for c in COLUMNS}
    for t in range(config.requests):
        query = letor.queries[int(query_of_request[t])]
        n = min(config.list_size, len(query.doc_ids))
        shown = rng.permutation(len(query.doc_ids))[:n]
        u = int(user_of_request[t])
        activity = users.user_activity[u]
        group = user_group(activity)
        position = np.arange(1, n + 1)
        exam = np.minimum(1.0, users.engagement(activity) * click_model.examination(n))
        p_true = exam * click_model.attractiveness(query.relevance[shown].astype(np.float64))
        logit_hat = (config.temperature * _logit(p_true) + bias[group] + config.position_bias * np.log(position)
                     + config.noise * rng.standard_normal(n))
        parts["request"].append(np.full(n, t))
        parts["ts"].append(np.full(n, ts[t]))
        parts["user_id"].append(np.full(n, f"kr-{int(users.user_ids[u])}"))
        parts["user_group"].append(np.full(n, group))
        parts["activity"].append(np.full(n, activity))
        parts["query"].append(np.full(n, query.qid))
        parts["item_id"].append(np.asarray(query.doc_ids)[shown])
        parts["position"].append(position)
        parts["relevance"].append(query.relevance[shown])
        parts["p_true"].append(p_true)
        parts["p_hat"].append(1.0 / (1.0 + np.exp(-logit_hat)))
        parts["click"].append((rng.random(n) < p_true).astype(np.int64))
    return pd.DataFrame({c: np.concatenate(v) for c, v in parts.items()})


def load_sources(letor_path: str | Path | None = None,
                 kuairand_dir: str | Path | None = None) -> tuple[LetorDataset, KuaiRandMarginals]:
    """The real LETOR queries and KuaiRand users (defaults: ``../shared/data``)."""
    return load_letor(letor_path or data_path("letor", "rank.train")), load_kuairand(kuairand_dir)
