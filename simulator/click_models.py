r"""Click models that turn graded relevance into clicks, as unbiased learning-to-rank papers do.

Attractiveness of a document of grade r (Chapelle et al., 2009; Joachims et al., 2017):

.. math:: \alpha(r) = \epsilon + (\alpha_{max}-\epsilon)\,\frac{2^r - 1}{2^{r_{max}} - 1}

* **PBM** (position-based model, Craswell et al., 2008): examination depends on the rank only,
  :math:`P(E_k) = (1/k)^{\eta}`; a click is :math:`C_k = E_k \wedge A_k`.
* **Cascade / DCM** (Craswell et al., 2008; Guo et al., 2009): the user scans top-down, clicks
  an attractive document, and after a click stops with probability
  :math:`\lambda(r) = \lambda_0 + (1-\lambda_0)\,r/r_{max}` (satisfied); plain cascade is
  :math:`\lambda \equiv 1`.

``relevance_weight`` lets a simulation shift the reward mid-stream (e.g. make users value
relevance less and position more), which is how the reward-shift experiment is run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class ClickModel:
    kind: Literal["pbm", "cascade"] = "pbm"
    eta: float = 1.0
    epsilon: float = 0.1
    max_attractiveness: float = 0.9
    max_grade: int = 4
    stop_base: float = 0.3
    relevance_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("pbm", "cascade"):
            raise ValueError(f"click model must be 'pbm' or 'cascade', got {self.kind!r}")
        if not 0.0 <= self.epsilon < self.max_attractiveness <= 1.0:
            raise ValueError("need 0 <= epsilon < max_attractiveness <= 1")

    def shifted(self, **changes: float) -> "ClickModel":
        return replace(self, **changes)

    def attractiveness(self, relevance: np.ndarray) -> np.ndarray:
        gain = (np.power(2.0, relevance) - 1.0) / (2.0 ** self.max_grade - 1.0)
        gain = np.clip(gain * self.relevance_weight, 0.0, 1.0)
        return self.epsilon + (self.max_attractiveness - self.epsilon) * gain

    def examination(self, n: int) -> np.ndarray:
        return np.power(1.0 / np.arange(1, n + 1, dtype=np.float64), self.eta)

    def click_probabilities(self, shown_relevance: np.ndarray) -> np.ndarray:
        """Marginal click probability at each rank for a list shown in this order."""
        attr = self.attractiveness(np.asarray(shown_relevance, dtype=np.float64))
        if self.kind == "pbm":
            return self.examination(len(attr)) * attr
        stop = self.stop_base + (1.0 - self.stop_base) * np.asarray(shown_relevance) / self.max_grade
        p_reach, out = 1.0, np.empty_like(attr)
        for k, a in enumerate(attr):
            out[k] = p_reach * a
            p_reach *= 1.0 - a * stop[k]
        return out

    def sample_clicks(self, shown_relevance: np.ndarray, rng: np.random.Generator, engagement: float = 1.0) -> np.ndarray:
        """Clicks (bool per rank) for one impression; ``engagement`` scales examination."""
        rel = np.asarray(shown_relevance, dtype=np.float64)
        attr = self.attractiveness(rel)
        if self.kind == "pbm":
            exam = self.examination(len(rel)) * engagement
            return (rng.random(len(rel)) < exam) & (rng.random(len(rel)) < attr)
        stop = self.stop_base + (1.0 - self.stop_base) * rel / self.max_grade
        clicks = np.zeros(len(rel), dtype=bool)
        if rng.random() >= engagement:
            return clicks
        for k in range(len(rel)):
            if rng.random() < attr[k]:
                clicks[k] = True
                if rng.random() < stop[k]:
                    break
        return clicks
