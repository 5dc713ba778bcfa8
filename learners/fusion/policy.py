r"""DRPO's fusion policy :math:`\pi_\theta(w \mid ctx)`: a diagonal Gaussian over the K task weights.

SaFRO (arXiv 2603.19585) uses "a task-relation-aware fusion module" in which tasks attend to
each other to give context-dependent weights. RECONSTRUCTION (DESIGN.md): one token per task,

.. math:: t_k = e_k + W_s\,\mathrm{stats}_k + W_c\,ctx, \qquad
          \tilde t = \mathrm{Block}(t) \;(\text{self-attention across the K task tokens}),\qquad
          \mu_k = v^\top \tilde t_k + b

and :math:`w \sim \mathcal N(\mu, \mathrm{diag}(\sigma^2))` with a learned, state-independent
:math:`\log\sigma` (clamped to ``[-3, 1]``). The ranking score of item :math:`i` is
:math:`\sum_k w_k\, g(\hat p_{ik})` (:mod:`learners.policy.batch`). With
``task_relation=False`` the attention is skipped (each task token alone): the ablation.

Closed forms used by the learner (diagonal Gaussians):

.. math:: \log \pi(w) = -\sum_k \Big[\frac{(w_k-\mu_k)^2}{2\sigma_k^2} + \log\sigma_k + \tfrac12\log 2\pi\Big]

.. math:: \mathrm{KL}(\mathcal N_r \,\|\, \mathcal N_\theta) = \sum_k \Big[\log\frac{\sigma_{\theta,k}}{\sigma_{r,k}}
          + \frac{\sigma_{r,k}^2 + (\mu_{r,k}-\mu_{\theta,k})^2}{2\sigma_{\theta,k}^2} - \tfrac12\Big]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learners.attention import self_attention
from learners.fusion.context import TASK_STATS

LOG_STD_RANGE = (-3.0, 1.0)


class TaskRelationPolicy(nn.Module):
    def __init__(self, n_tasks: int, context_dim: int, hidden: int = 16, heads: int = 2, task_relation: bool = True,
                 init_mean: float = 1.0, init_std: float = 0.3) -> None:
        super().__init__()
        self.task_relation = task_relation
        self.task_embed = nn.Parameter(torch.randn(n_tasks, hidden) * 0.1)
        self.stats = nn.Linear(TASK_STATS, hidden)
        self.context = nn.Linear(context_dim, hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.mean_head = nn.Linear(hidden, 1)
        self.log_std = nn.Parameter(torch.full((n_tasks,), math.log(init_std)))
        with torch.no_grad():  # start at equal fusion weights
            self.mean_head.weight.mul_(0.05)
            self.mean_head.bias.fill_(init_mean)

    def forward(self, stats: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``stats`` ``[B, K, 3]``, ``ctx`` ``[B, C]`` -> mean ``[B, K]``, log-std ``[B, K]``."""
        tokens = self.task_embed + self.stats(stats) + self.context(ctx).unsqueeze(1)
        if self.task_relation:
            attended = self_attention(self.attn, tokens)
            tokens = self.norm1(tokens + attended)
        tokens = self.norm2(tokens + self.ff(tokens))
        mean = self.mean_head(tokens).squeeze(-1)
        log_std = self.log_std.clamp(*LOG_STD_RANGE).expand_as(mean)
        return mean, log_std


def gaussian_logprob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Diagonal-Gaussian log-density; ``actions`` ``[B, G, K]`` (or ``[B, K]``), summed over K."""
    if actions.dim() == mean.dim() + 1:
        mean, log_std = mean.unsqueeze(1), log_std.unsqueeze(1)
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean_ref: torch.Tensor, log_std_ref: torch.Tensor, mean: torch.Tensor,
                log_std: torch.Tensor) -> torch.Tensor:
    """KL(reference ‖ current) per request, ``[B]``."""
    var_ref, var = torch.exp(2 * log_std_ref), torch.exp(2 * log_std)
    return (log_std - log_std_ref + (var_ref + (mean_ref - mean) ** 2) / (2 * var) - 0.5).sum(-1)
