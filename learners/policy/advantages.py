r"""Advantages for group-sampled policy gradients: group-normalised, decoupled and dual-relative.

Rewards come as ``[B, G]``: ``G`` candidate actions (lists or fusion-weight vectors) for each
of ``B`` requests, with a ``[B, G]`` bool ``mask`` of which slots are real.

* **Group-normalised** (GRPO, Shao et al., 2024, DeepSeekMath, arXiv 2402.03300):

  .. math:: A_{b,i} = \frac{r_{b,i} - \mathrm{mean}_i\, r_{b,\cdot}}{\mathrm{std}_i\, r_{b,\cdot} + \epsilon}

* **Decoupled** (Dual-Rerank's LDRO, arXiv 2604.07420; RECONSTRUCTION, see DESIGN.md): the
  centre comes from the request's own group but the scale from batch/running statistics, so a
  group whose rewards barely differ is not blown up to unit variance (GRPO's instability
  under reward noise and reward shift):

  .. math:: A_{b,i} = \frac{r_{b,i} - \mathrm{mean}_i\, r_{b,\cdot}}{\sigma_{run} + \epsilon},
            \quad \sigma^2_{run} \leftarrow \beta\,\sigma^2_{run} + (1-\beta)\,\mathrm{Var}_{batch}(r - \mathrm{mean}_{group})

* **Dual-relative** (SaFRO's DRPO, arXiv 2603.19585; RECONSTRUCTION): relative within the
  group *and* across batches, with EMA statistics :math:`\mu_{run}, \sigma_{run}` of the raw
  rewards:

  .. math:: A_{b,i} = \frac{r_{b,i} - \mathrm{mean}_{group}}{\mathrm{std}_{group} + \epsilon}
            + \frac{r_{b,i} - \mu_{run}}{\sigma_{run} + \epsilon}

Groups with one real slot get advantage 0 from the within-group term (nothing to compare).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch


class PendingSums(Protocol):
    """An all-reduce of ``(count, sum, sum of squares)`` in flight (:class:`learners.distributed.sync.PendingSums`)."""

    def wait(self) -> tuple[float, ...]: ...


@dataclass
class RunningMoments:
    """Exponential moving mean and variance of a scalar stream (bias-corrected like Adam).

    ``decay`` close to 1 remembers long; the state is three floats so it fits the JSON meta
    of a checkpoint exactly (Python floats round-trip through JSON bit-for-bit).
    """

    decay: float = 0.99
    mean: float = 0.0
    var: float = 0.0
    weight: float = 0.0  # 1 - decay^t: the bias correction
    #: data-parallel ranks: ``values ->`` an all-reduce in flight whose ``wait()`` gives ``(count, sum, sum of
    #: squares)`` over all ranks (:meth:`learners.distributed.sync.GradientSync.start_moments`); not state
    reducer: Callable[[torch.Tensor], PendingSums] | None = field(default=None, compare=False, repr=False)

    def update(self, values: torch.Tensor) -> None:
        self.begin_update(values)()

    def begin_update(self, values: torch.Tensor) -> Callable[[], None]:
        """Start folding ``values`` in; the returned call finishes it. On data-parallel ranks the union's
        sums are being all-reduced in between, so compute that does not read the moments can overlap the
        wait (every rank calls this, even with no values); elsewhere the update is already done."""
        values = values.detach().double().flatten()
        if self.reducer is not None:
            pending = self.reducer(values)
            return lambda: self._fold_sums(*pending.wait())
        if values.numel() > 0:
            self._fold(float(values.mean()), float(values.var(unbiased=False)))
        return lambda: None

    def _fold_sums(self, count: float, total: float, squares: float) -> None:
        """The union batch's sums from the ranks (nothing when no rank had values)."""
        if count > 0:
            mean = total / count
            self._fold(mean, max(squares / count - mean ** 2, 0.0))

    def _fold(self, batch_mean: float, batch_var: float) -> None:
        """One batch's mean and (population) variance into the exponential moments."""
        d = self.decay
        self.mean = d * self.mean + (1.0 - d) * batch_mean
        self.var = d * self.var + (1.0 - d) * (batch_var + batch_mean ** 2)  # running E[x^2]
        self.weight = d * self.weight + (1.0 - d)

    @property
    def corrected_mean(self) -> float:
        return self.mean / self.weight if self.weight > 0 else 0.0

    @property
    def corrected_std(self) -> float:
        if self.weight <= 0:
            return 1.0
        second = self.var / self.weight
        return math.sqrt(max(second - self.corrected_mean ** 2, 0.0))

    def as_dict(self) -> dict[str, float]:
        return {"decay": self.decay, "mean": self.mean, "var": self.var, "weight": self.weight}

    @classmethod
    def from_dict(cls, doc: dict[str, float]) -> "RunningMoments":
        return cls(decay=float(doc["decay"]), mean=float(doc["mean"]), var=float(doc["var"]),
                   weight=float(doc["weight"]))


def _mask(rewards: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask


def group_mean(rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over each request's real slots, ``[B, 1]``."""
    m = _mask(rewards, mask).to(rewards.dtype)
    return (rewards * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1.0)


def group_std(rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Population std over each request's real slots, ``[B, 1]`` (0 for a single slot)."""
    m = _mask(rewards, mask).to(rewards.dtype)
    centred = (rewards - group_mean(rewards, mask)) * m
    return ((centred ** 2).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1.0)).sqrt()


def group_normalised(rewards: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: centre and scale within each request's group. Padding slots get 0."""
    m = _mask(rewards, mask)
    adv = (rewards - group_mean(rewards, m)) / (group_std(rewards, m) + eps)
    return adv.masked_fill(~m, 0.0)


def decoupled(rewards: torch.Tensor, running: RunningMoments, mask: torch.Tensor | None = None,
              eps: float = 1e-6) -> torch.Tensor:
    """LDRO: centre within the group, scale by the running std of the centred rewards.

    ``running`` is updated with this batch's centred rewards first, so the very first batch
    is scaled by its own batch std.
    """
    return begin_decoupled(rewards, running, mask, eps)()


def begin_decoupled(rewards: torch.Tensor, running: RunningMoments, mask: torch.Tensor | None = None,
                    eps: float = 1e-6) -> Callable[[], torch.Tensor]:
    """:func:`decoupled` in two halves: the centring now, the advantages from the returned call (between
    the two, data-parallel ranks all-reduce the moments: :meth:`RunningMoments.begin_update`)."""
    m = _mask(rewards, mask)
    centred = (rewards - group_mean(rewards, m)).masked_fill(~m, 0.0)
    fold = running.begin_update(centred[m])

    def finish() -> torch.Tensor:
        fold()
        return centred / (running.corrected_std + eps)
    return finish


def dual_relative(rewards: torch.Tensor, running: RunningMoments, mask: torch.Tensor | None = None,
                  eps: float = 1e-6, within_group: bool = True, across_batches: bool = True) -> torch.Tensor:
    """DRPO: within-group z-score plus a z-score against the running (cross-batch) moments.

    ``running`` is updated with this batch's real rewards before it is used. Either term can
    be switched off for ablations.
    """
    m = _mask(rewards, mask)
    adv = torch.zeros_like(rewards)
    if within_group:
        adv = adv + group_normalised(rewards, m, eps)
    if across_batches:
        running.update(rewards[m])
        adv = adv + (rewards - running.corrected_mean) / (running.corrected_std + eps)
    return adv.masked_fill(~m, 0.0)
