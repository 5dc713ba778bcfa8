r"""DRPO's context-weighted satisfaction reward model (``DRPOConfig.reward_model="contextual"``).

SaFRO (arXiv 2603.19585) trains "a satisfaction-aware reward model on query-level behaviour
proxies" and uses it to compare the fusion policy's sampled weight vectors. RECONSTRUCTION
(ours; the paper's abstract gives no form): satisfaction is a *context-dependent weighting of
order-dependent behaviour proxies* on top of a context baseline,

.. math:: \phi(y) = \Big[\sum_{k\le L} \tilde d_k\, p_{y_k} - \bar p,\;\; p_{y_1} - \bar p\Big],\qquad
          \tilde d_k = \frac{1/\log_2(k+1)}{\sum_{j\le L} 1/\log_2(j+1)}

.. math:: R_\phi(y, ctx) = \sigma\big(b_\phi(ctx, \bar p, p_{max}) + \beta_\phi(ctx)^\top \phi(y)\big),
          \qquad \mathcal L = \mathrm{BCE}(R_\phi(y_{served}, ctx),\; \text{query\_reward})

with :math:`p` the task probabilities, :math:`\bar p` and :math:`p_{max}` their mean and max
over the list (per task), :math:`L` = ``top_k`` and :math:`b_\phi`, :math:`\beta_\phi` small
MLPs. Why this form: the served lists' ``query_reward`` varies far more between queries
(how many good candidates a query has) than between orders of one query, so the pooled MLP of
:mod:`learners.fusion.satisfaction` mostly learns *which queries* satisfy and ranks the G
weight vectors of one request badly (``eval fusion`` diagnostics in BENCHMARKS.md). Here the
order-independent part (the baseline) is separated from the part the fusion policy controls,
the proxies are centred on the list mean so a query's composition does not leak into them,
and the context (user activity, query type) scales each task's proxy: the per-context
trade-off the policy needs to learn.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ContextualSatisfactionModel(nn.Module):
    def __init__(self, n_tasks: int, context_dim: int, hidden: int = 32, top_k: int = 10) -> None:
        super().__init__()
        self.top_k = top_k
        self.n_tasks = n_tasks
        self.baseline = nn.Sequential(nn.Linear(context_dim + 2 * n_tasks, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.weights = nn.Sequential(nn.Linear(context_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * n_tasks))

    def logits(self, features: torch.Tensor, task_logits: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor,
               orders: torch.Tensor) -> torch.Tensor:
        """``orders`` ``[B, G, n]`` -> satisfaction logits ``[B, G]`` (``features`` unused: the
        proxies are the task predictions)."""
        B, G, n = orders.shape
        K, L = self.n_tasks, min(self.top_k, n)
        top = orders[..., :L]  # [B, G, L]
        valid = mask.unsqueeze(1).expand(B, G, n).gather(-1, top).to(task_logits.dtype)
        discount = (1.0 / torch.log2(torch.arange(2, L + 2, dtype=task_logits.dtype))) * valid
        discount = discount / discount.sum(-1, keepdim=True).clamp_min(1e-6)
        probs = torch.sigmoid(task_logits)  # [B, n, K]
        real = mask.unsqueeze(-1).to(probs.dtype)
        mean = (probs * real).sum(1) / real.sum(1).clamp_min(1.0)  # [B, K]
        peak = probs.masked_fill(~mask.unsqueeze(-1), 0.0).amax(1)
        shown = probs.unsqueeze(1).expand(B, G, n, K).gather(2, top.unsqueeze(-1).expand(B, G, L, K))
        pooled = (shown * discount.unsqueeze(-1)).sum(2) - mean.unsqueeze(1)
        phi = torch.cat([pooled, shown[:, :, 0] - mean.unsqueeze(1)], dim=-1)  # [B, G, 2K]
        baseline = self.baseline(torch.cat([ctx, mean, peak], dim=-1))  # [B, 1]
        return baseline + (self.weights(ctx).unsqueeze(1) * phi).sum(-1)

    def loss(self, features: torch.Tensor, task_logits: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
        """BCE of the served lists (index order = served order) against ``query_reward``."""
        served = torch.arange(mask.shape[1]).expand(mask.shape[0], 1, -1)
        logits = self.logits(features, task_logits, mask, ctx, served).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, target.clamp(0.0, 1.0))
