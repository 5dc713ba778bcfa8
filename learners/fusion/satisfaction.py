r"""DRPO's satisfaction reward model :math:`R_\phi(\text{list}, ctx)`, learned from ``examples``.

SaFRO (arXiv 2603.19585) trains "a satisfaction-aware reward model on query-level behaviour
proxies". RECONSTRUCTION (DESIGN.md): the target is the labelled list's ``query_reward``
(:func:`streams.rewards.query_satisfaction`: 1 for a long view without reformulation, partial
credit for a click, 0 after a reformulation). The model sees the top of the ranked list and
the context:

.. math:: \phi(y) = \Big[\tfrac{\sum_{k\le L} d_k\, p_{y_k}}{\sum_{k\le L} d_k},\; p_{y_1},\;
          \tfrac{\sum_{k\le L} d_k\, W x_{y_k}}{\sum_{k\le L} d_k},\; ctx\Big],\quad d_k = \frac{1}{\log_2(k+1)}

.. math:: R_\phi(y, ctx) = \sigma(\mathrm{MLP}(\phi(y))),\qquad
          \mathcal L = \mathrm{BCE}(R_\phi(y_{served}, ctx),\; \text{query\_reward})

(:math:`p` the task probabilities, :math:`W x` a learned low-dimensional projection of the item
features, :math:`L` = ``top_k``). Soft-label BCE because the target is in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from learners.fusion.satisfaction_cascade import CascadeSatisfactionModel
from learners.fusion.satisfaction_contextual import ContextualSatisfactionModel


class SatisfactionModel(nn.Module):
    def __init__(self, n_features: int, n_tasks: int, context_dim: int, hidden: int = 32, projection: int = 8,
                 top_k: int = 10) -> None:
        super().__init__()
        self.top_k = top_k
        self.project = nn.Linear(max(1, n_features), projection, bias=False)
        self.n_features = n_features
        self.mlp = nn.Sequential(nn.Linear(2 * n_tasks + projection + context_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def logits(self, features: torch.Tensor, task_logits: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor,
               orders: torch.Tensor) -> torch.Tensor:
        """``orders`` ``[B, G, n]`` -> satisfaction logits ``[B, G]``."""
        B, G, n = orders.shape
        L = min(self.top_k, n)
        top = orders[..., :L]  # [B, G, L]
        valid = mask.unsqueeze(1).expand(B, G, n).gather(-1, top).to(task_logits.dtype)
        discount = (1.0 / torch.log2(torch.arange(2, L + 2, dtype=task_logits.dtype, device=task_logits.device))) * valid
        weights = discount / discount.sum(-1, keepdim=True).clamp_min(1e-6)  # [B, G, L]
        probs = torch.sigmoid(task_logits)  # [B, n, K]
        projected = (self.project(features) if self.n_features > 0
                     else torch.zeros(*features.shape[:2], self.project.out_features, device=features.device))

        def pooled(values: torch.Tensor) -> torch.Tensor:  # [B, n, D] -> [B, G, D] discounted mean over the top
            gathered = values.unsqueeze(1).expand(B, G, n, values.shape[-1]).gather(
                2, top.unsqueeze(-1).expand(B, G, L, values.shape[-1]))
            return (gathered * weights.unsqueeze(-1)).sum(2)

        first = probs.unsqueeze(1).expand(B, G, n, probs.shape[-1]).gather(
            2, top[..., :1].unsqueeze(-1).expand(B, G, 1, probs.shape[-1])).squeeze(2)
        phi = torch.cat([pooled(probs), first, pooled(projected), ctx.unsqueeze(1).expand(B, G, ctx.shape[-1])], -1)
        return self.mlp(phi).squeeze(-1)

    def loss(self, features: torch.Tensor, task_logits: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
        """BCE of the served lists (index order = served order) against ``query_reward``."""
        served = torch.arange(mask.shape[1], device=mask.device).expand(mask.shape[0], 1, -1)
        logits = self.logits(features, task_logits, mask, ctx, served).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, target.clamp(0.0, 1.0))


#: ``DRPOConfig.reward_model`` -> the reward model it builds.
REWARD_MODELS: tuple[str, ...] = ("pooled", "contextual", "cascade")


def satisfaction_model(kind: str, n_features: int, n_tasks: int, context_dim: int) -> nn.Module:
    """The reward model ``kind`` names: ``pooled`` (:class:`SatisfactionModel`, the default),
    ``contextual`` (:class:`learners.fusion.satisfaction_contextual.ContextualSatisfactionModel`) or
    ``cascade`` (:class:`learners.fusion.satisfaction_cascade.CascadeSatisfactionModel`, which also
    learns from the item-level click and long-view labels)."""
    if kind == "pooled":
        return SatisfactionModel(n_features, n_tasks, context_dim)
    if kind == "contextual":
        return ContextualSatisfactionModel(n_tasks, context_dim)
    if kind == "cascade":
        return CascadeSatisfactionModel(n_tasks, context_dim)
    raise ValueError(f"unknown reward_model {kind!r}; known: {list(REWARD_MODELS)}")
