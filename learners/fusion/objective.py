r"""DRPO's clipped-ratio policy objective (PPO with a dual clip) and its KL-to-snapshot penalty.

PPO (Schulman et al., 2017, arXiv 1707.06347) with the dual clip of Ye et al. (2020, "Mastering
Complex Control in MOBA Games", arXiv 1912.09729) for negative advantages, averaged over the
real group slots:

.. math:: \mathcal L_{clip} = -\frac{1}{|\mathcal G|}\sum_{\mathcal G}
          \begin{cases} \min(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A) & A \ge 0 \\
          \max\big(\min(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A),\ c A\big) & A < 0 \end{cases},
          \qquad \rho = \exp(\log\pi_\theta - \log\pi_{behaviour})

(the log-ratio is clamped to ±20 so a far-off behaviour log-prob cannot overflow).
"""

from __future__ import annotations

import torch


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantage: torch.Tensor,
                        mask: torch.Tensor | None = None, clip: float = 0.2, dual_clip: float = 3.0) -> torch.Tensor:
    """``[B, G]`` log-probs (current, behaviour), advantages and slot mask -> scalar loss."""
    if mask is None:
        mask = torch.ones_like(advantage, dtype=torch.bool)
    advantage = advantage.detach()
    ratio = torch.exp((logp - old_logp.detach()).clamp(-20.0, 20.0))
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    if dual_clip > 0:
        surrogate = torch.where(advantage < 0, torch.maximum(surrogate, dual_clip * advantage), surrogate)
    return -(surrogate * mask).sum() / mask.sum().clamp_min(1)
