r"""Baseline calibrators, incremental so they run behind the same learner protocol.

* **Platt scaling** (Platt 1999): :math:`p = \sigma(a\,l + c)` on :math:`l = \mathrm{logit}(\hat p)`,
  one :math:`(a, c)` per task, fitted online by Adam on BCE (initialised at the identity
  :math:`a = 1, c = 0`). :math:`a` is kept positive through :math:`a = e^{\alpha}` so the map stays
  monotone.
* **Isotonic regression over a streaming histogram** (Zadrozny & Elkan 2002; histogram
  binning is the same without the monotone fit): per task, fixed equal-width bins on
  :math:`l \in [-L, L]` accumulate counts :math:`n_k`, positives :math:`y_k` and the summed raw
  prediction :math:`s_k`; the calibrated value of bin :math:`k` is the pool-adjacent-violators
  fit (weights :math:`n_k + m`) of the smoothed rates
  :math:`r_k = (y_k + m\,\bar p_k)/(n_k + m)` with :math:`\bar p_k = s_k/n_k` and a small prior
  strength :math:`m` (so a bin with few rows starts at the raw prediction instead of 0 or 1).
  Bins never seen take the value of the nearest seen bin below (above, when none below),
  which keeps the map monotone. ``monotone=False`` gives plain histogram binning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class PlattHead(nn.Module):
    """:math:`z = e^{\\alpha} l + c` (context is ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.shift = nn.Parameter(torch.zeros(1))

    def forward(self, logit: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        return torch.exp(self.log_scale) * logit.detach() + self.shift


def pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of ``values`` (PAV, O(n))."""
    blocks_v: list[float] = []
    blocks_w: list[float] = []
    blocks_n: list[int] = []
    for v, w in zip(values.tolist(), weights.tolist()):
        blocks_v.append(v)
        blocks_w.append(w)
        blocks_n.append(1)
        while len(blocks_v) > 1 and blocks_v[-2] > blocks_v[-1]:
            w_sum = blocks_w[-2] + blocks_w[-1]
            merged = (blocks_v[-2] * blocks_w[-2] + blocks_v[-1] * blocks_w[-1]) / w_sum
            n_sum = blocks_n[-2] + blocks_n[-1]
            for lst in (blocks_v, blocks_w, blocks_n):
                lst.pop()
            blocks_v[-1], blocks_w[-1], blocks_n[-1] = merged, w_sum, n_sum
    return np.repeat(np.asarray(blocks_v, dtype=np.float64), blocks_n)


class StreamingIsotonic:
    """Histogram statistics of one task plus the monotone map fitted from them."""

    def __init__(self, bins: int = 200, logit_range: float = 12.0, prior_strength: float = 1.0,
                 monotone: bool = True) -> None:
        self.bins = int(bins)
        self.logit_range = float(logit_range)
        self.prior_strength = float(prior_strength)
        self.monotone = monotone
        self.count = torch.zeros(self.bins, dtype=torch.float64)
        self.positives = torch.zeros(self.bins, dtype=torch.float64)
        self.sum_p = torch.zeros(self.bins, dtype=torch.float64)
        self._table: torch.Tensor | None = None

    def bin_of(self, logit: torch.Tensor) -> torch.Tensor:
        scaled = (logit.to(torch.float64) + self.logit_range) / (2 * self.logit_range) * self.bins
        return scaled.floor().clamp(0, self.bins - 1).long()

    def update(self, logit: torch.Tensor, p_hat: torch.Tensor, y: torch.Tensor) -> None:
        idx = self.bin_of(logit)
        self.count.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
        self.positives.index_add_(0, idx, y.to(torch.float64))
        self.sum_p.index_add_(0, idx, p_hat.to(torch.float64))
        self._table = None

    def table(self) -> torch.Tensor | None:
        """Calibrated probability per bin (``None`` before any data)."""
        if self._table is not None:
            return self._table
        seen = (self.count > 0).numpy()
        if not seen.any():
            return None
        n = self.count.numpy()[seen]
        mean_p = self.sum_p.numpy()[seen] / n
        m = self.prior_strength
        rate = (self.positives.numpy()[seen] + m * mean_p) / (n + m)
        fitted = pool_adjacent_violators(rate, n + m) if self.monotone else rate
        full = np.empty(self.bins)
        seen_idx = np.flatnonzero(seen)
        # nearest seen bin below, else the first seen bin
        pos = np.searchsorted(seen_idx, np.arange(self.bins), side="right") - 1
        full[:] = fitted[np.clip(pos, 0, None)]
        self._table = torch.tensor(full, dtype=torch.float64)
        return self._table

    def predict(self, logit: torch.Tensor, p_hat: torch.Tensor) -> torch.Tensor:
        table = self.table()
        if table is None:
            return p_hat.to(torch.float32)
        return table[self.bin_of(logit)].to(torch.float32)

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}count": self.count.clone(), f"{prefix}positives": self.positives.clone(),
                f"{prefix}sum_p": self.sum_p.clone()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        for name in ("count", "positives", "sum_p"):
            value = tensors[f"{prefix}{name}"]
            if value.shape != (self.bins,):
                raise ValueError(f"{prefix}{name}: shape {tuple(value.shape)} != ({self.bins},)")
            setattr(self, name, value.to(torch.float64).clone())
        self._table = None
