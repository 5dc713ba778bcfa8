r"""The list reward model that scores LDRO's sampled lists (position-factorised item rewards).

Dual-Rerank scores each sampled list with a learned list reward model (plus the logged reward
of the list that was actually served). RECONSTRUCTION, documented: the logged item reward of
``streams.rewards`` (click, long view, watch ratio, ...) is, under a position-based
examination model (Craswell et al., 2008), close to a product of an item term and a position
term, so the model is log-additive:

.. math:: \log \mathbb{E}[r_i \mid x_i, k] = u_\phi(x_i) + c_k

fitted with the Poisson deviance (rewards are non-negative). The value of an order ``y`` has
the same DCG form as the logged list reward (:func:`streams.rewards.list_reward`):

.. math:: \hat R(y) = \sum_k \frac{\exp(u_\phi(x_{y_k}) + c_k)}{\log_2(1 + k)}
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ItemRewardModel(nn.Module):
    """Item term ``u(x)`` (MLP) and per-position log-factors ``c_k`` (positions past the last share it)."""

    def __init__(self, d_in: int, hidden: int = 32, max_positions: int = 64) -> None:
        super().__init__()
        self.item = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.position = nn.Parameter(-torch.log(torch.arange(1, max_positions + 1, dtype=torch.float32)))
        self.max_positions = max_positions

    def item_log_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.item(x).squeeze(-1)

    def position_log_factor(self, n: int) -> torch.Tensor:
        idx = torch.arange(n, device=self.position.device).clamp(max=self.max_positions - 1)
        return self.position[idx]

    def loss(self, x: torch.Tensor, mask: torch.Tensor, item_rewards: torch.Tensor) -> torch.Tensor:
        """Poisson deviance of the served lists (items in served order: index k at position k+1)."""
        log_rate = self.item_log_value(x) + self.position_log_factor(x.shape[1])
        per_item = F.poisson_nll_loss(log_rate, item_rewards, log_input=True, full=False, reduction="none")
        return (per_item * mask).sum() / mask.sum().clamp_min(1)

    def list_value(self, x: torch.Tensor, mask: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """:math:`\\hat R(y)` for ``orders`` ``[B, G, n]`` -> ``[B, G]``."""
        n = x.shape[1]
        u = self.item_log_value(x)  # [B, n]
        placed = u.unsqueeze(1).expand(*orders.shape).gather(-1, orders)
        valid = mask.unsqueeze(1).expand(*orders.shape).gather(-1, orders)
        discount = 1.0 / torch.log2(torch.arange(2, n + 2, dtype=x.dtype, device=x.device))
        value = torch.exp(placed + self.position_log_factor(n)) * discount
        return (value * valid).sum(-1)
