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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SCLossConfig:
    bins: int = 10
    beta: float = 0.95
    weight: float = 1e-2  # lambda

    def __post_init__(self) -> None:
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

    def __call__(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:math:`L_{SC}` for this batch; updates the caches (detached)."""
        cfg = self.config
        if p.numel() == 0:
            return p.new_zeros(())
        boundaries = torch.linspace(0.0, 1.0, cfg.bins + 1, dtype=p.dtype)[1:-1]
        idx = torch.bucketize(p.detach(), boundaries)
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
        return {f"{prefix}accuracy": self.accuracy.clone(), f"{prefix}confidence": self.confidence.clone(),
                f"{prefix}count": self.count.clone()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        for name in ("accuracy", "confidence", "count"):
            value = tensors[f"{prefix}{name}"]
            if value.shape != (self.config.bins,):
                raise ValueError(f"SCLoss cache {prefix}{name} has shape {tuple(value.shape)}, "
                                 f"expected ({self.config.bins},)")
            setattr(self, name, value.clone())
