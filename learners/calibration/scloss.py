r"""Smooth Calibration Loss (SCLoss) with streaming EMA bins.

Source: UMC (Bai et al., SIGIR 2025, arXiv 2504.14243), training loop of baiyimeng/UMC
(``train_neu_*.py``). :math:`K` equal-width bins on the calibrated probability :math:`p`; for
each bin :math:`k` that is non-empty in the current batch, with batch accuracy
:math:`a_k = \overline{y}`, confidence :math:`c_k = \overline{p}` and count :math:`n_k`:

.. math::
    \tilde a_k \leftarrow \beta\tilde a_k + (1-\beta)a_k,\quad
    \tilde c_k \leftarrow \beta\tilde c_k + (1-\beta)c_k,\quad
    \tilde n_k \leftarrow \beta\tilde n_k + (1-\beta)n_k,\qquad
    L_{SC} = \sum_k (\tilde a_k - \tilde c_k)^2\,\tilde n_k

Gradients flow through this batch's :math:`c_k` only; the caches are stored detached. The
training loss is :math:`\mathrm{BCE} + \lambda L_{SC}`. Paper defaults (UMC's "best
hyper-parameters"): :math:`K = 10`, :math:`\beta = 0.95`, :math:`\lambda = 10^{-2}`.
Vectorised over bins (``bincount``/``index_add``) instead of UMC's Python loop: same values.

**Bins** (``binning``):

* ``"uniform"`` (the paper's, the default of :class:`SCLossConfig`): edges :math:`k/K`. On a
  click task with a 0.4 % rate every prediction falls in the first bin, and :math:`L_{SC}` is then
  only the global gap :math:`(\bar y - \bar p)^2 n`: it cannot see *where* in the range of
  :math:`p` the calibration is off.
* ``"quantile"`` (adaptive; the calibration learners' default, :mod:`learners.calibration.learner`):
  the :math:`K-1` inner edges are a running estimate of the :math:`k/K` quantiles of :math:`p`,
  :math:`e \leftarrow \beta e + (1-\beta)\,q_{k/K}(p_{batch})` (the first batch sets
  :math:`e = q`), updated before the batch is binned, so the bins hold about :math:`n/K` rows each
  wherever :math:`p` lives (equal-mass bins, as the adaptive ECE of Nixon et al. 2019). The edges
  and the number of batches folded into them are part of the state (``edges``, ``edge_batches``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BINNINGS = ("uniform", "quantile")


@dataclass(frozen=True)
class SCLossConfig:
    bins: int = 10
    beta: float = 0.95
    weight: float = 1e-2  # lambda
    binning: str = "uniform"  # or "quantile" (adaptive, see the module docstring)

    def __post_init__(self) -> None:
        if self.binning not in BINNINGS:
            raise ValueError(f"SCLoss binning must be one of {', '.join(BINNINGS)}, got {self.binning!r}")
        if self.bins < 1:
            raise ValueError(f"SCLoss bins must be >= 1, got {self.bins}")
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"SCLoss beta must be in [0, 1), got {self.beta}")
        if self.weight < 0:
            raise ValueError(f"SCLoss weight (lambda) must be >= 0, got {self.weight}")


class SmoothCalibrationLoss:
    """Holds the EMA caches (accuracy, confidence, count per bin) of one task."""

    def __init__(self, config: SCLossConfig | None = None) -> None:
        self.config = config or SCLossConfig()
        k = self.config.bins
        self.accuracy = torch.zeros(k)
        self.confidence = torch.zeros(k)
        self.count = torch.zeros(k)
        self.edges = torch.zeros(max(k - 1, 0), dtype=torch.float64)
        self.edge_batches = torch.zeros(1, dtype=torch.float64)

    def boundaries(self, p: torch.Tensor) -> torch.Tensor:
        """The inner bin edges for this batch (``quantile``: after folding in its quantiles)."""
        k = self.config.bins
        if self.config.binning == "uniform":
            return torch.linspace(0.0, 1.0, k + 1, dtype=p.dtype)[1:-1]
        if k > 1:
            levels = torch.arange(1, k, dtype=torch.float64) / k
            q = torch.quantile(p.detach().to(torch.float64), levels)
            beta = self.config.beta
            self.edges = q if float(self.edge_batches) == 0 else beta * self.edges + (1 - beta) * q
            self.edge_batches = self.edge_batches + 1
        return self.edges.to(p.dtype)

    def __call__(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:math:`L_{SC}` for this batch; updates the caches (detached)."""
        cfg = self.config
        if p.numel() == 0:
            return p.new_zeros(())
        if p.device.type != "cpu":  # K bins of statistics: the caches stay on the CPU, autograd follows .to()
            return self(p.to("cpu"), y.to("cpu")).to(p.device)
        idx = torch.bucketize(p.detach(), self.boundaries(p))
        n = torch.bincount(idx, minlength=cfg.bins).to(p.dtype)
        present = n > 0
        safe_n = n.clamp_min(1.0)
        acc = torch.zeros(cfg.bins, dtype=p.dtype).index_add(0, idx, y.to(p.dtype)) / safe_n
        con = torch.zeros(cfg.bins, dtype=p.dtype).index_add(0, idx, p) / safe_n
        beta = cfg.beta
        acc_new = acc * (1 - beta) + self.accuracy * beta
        con_new = con * (1 - beta) + self.confidence * beta
        num_new = n * (1 - beta) + self.count * beta
        loss = (((acc_new - con_new) ** 2) * num_new)[present].sum()
        with torch.no_grad():
            self.accuracy = torch.where(present, acc_new.detach(), self.accuracy)
            self.confidence = torch.where(present, con_new.detach(), self.confidence)
            self.count = torch.where(present, num_new.detach(), self.count)
        return loss

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The caches (and, for ``quantile`` bins only, the edges: uniform states are as before)."""
        out = {f"{prefix}accuracy": self.accuracy.clone(), f"{prefix}confidence": self.confidence.clone(),
               f"{prefix}count": self.count.clone()}
        if self.config.binning == "quantile":
            out[f"{prefix}edges"] = self.edges.clone()
            out[f"{prefix}edge_batches"] = self.edge_batches.clone()
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        shapes = {"accuracy": self.config.bins, "confidence": self.config.bins, "count": self.config.bins}
        if self.config.binning == "quantile":
            shapes["edges"] = max(self.config.bins - 1, 0)
            shapes["edge_batches"] = 1
        for name, size in shapes.items():
            key = f"{prefix}{name}"
            if key not in tensors:
                raise ValueError(f"SCLoss state has no {key} ({self.config.binning} bins need it)")
            value = tensors[key]
            if value.shape != (size,):
                raise ValueError(f"SCLoss cache {key} has shape {tuple(value.shape)}, expected ({size},)")
            setattr(self, name, value.clone())
