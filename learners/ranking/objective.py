r"""LDRO's rank-weighted list policy-gradient loss (and the plain GRPO form as a special case).

Dual-Rerank (arXiv 2604.07420) names a "rank-weighted policy"; RECONSTRUCTION (DESIGN.md):
each step of a sampled list is weighted by the DCG discount of the rank it fills, so the
gradient concentrates on the top of the list where the reward is decided:

.. math:: \mathcal L_{PG} = -\frac{1}{|\mathcal G|}\sum_{(b,i)\in\mathcal G} A_{b,i}
          \sum_{k} w_k \log \pi(y^{(b,i)}_k \mid y^{(b,i)}_{<k}),
          \qquad w_k = \frac{1}{\log_2(k+1)}

With ``rank_weighted=False`` every :math:`w_k = 1` and the loss is the REINFORCE/GRPO
list log-likelihood :math:`-A\,\log\pi(y)` (Williams, 1992; Shao et al., 2024).
"""

from __future__ import annotations

import torch

from learners.policy.plackett_luce import step_logprobs, step_valid


def rank_weights(n: int, rank_weighted: bool, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None) -> torch.Tensor:
    """:math:`w_k = 1/\\log_2(k+1)` for ranks 1..n, or all ones."""
    if not rank_weighted:
        return torch.ones(n, dtype=dtype, device=device)
    return 1.0 / torch.log2(torch.arange(2, n + 2, dtype=dtype, device=device))


def list_policy_loss(scores: torch.Tensor, orders: torch.Tensor, advantages: torch.Tensor,
                     mask: torch.Tensor | None = None, rank_weighted: bool = True,
                     group_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``scores`` ``[B, n]``, ``orders`` ``[B, G, n]``, ``advantages`` ``[B, G]`` -> scalar loss."""
    return weighted_policy_loss(list_logprobs(scores, orders, mask, rank_weighted), advantages, group_mask)


def list_logprobs(scores: torch.Tensor, orders: torch.Tensor, mask: torch.Tensor | None = None,
                  rank_weighted: bool = True) -> torch.Tensor:
    """The (rank-weighted) PL log-probability of each sampled order, ``[B, G]``: the part of
    :func:`list_policy_loss` that does not read the advantages."""
    logp = step_logprobs(scores, orders, mask)  # [B, G, n]
    weights = rank_weights(orders.shape[-1], rank_weighted, scores.dtype, scores.device) * step_valid(orders, mask)
    return (weights * logp).sum(-1)


def weighted_policy_loss(per_list: torch.Tensor, advantages: torch.Tensor,
                         group_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``-mean(advantage * log-probability)`` over the sampled lists (``group_mask``: the real ones)."""
    if group_mask is None:
        group_mask = torch.ones_like(advantages, dtype=torch.bool)
    contrib = (advantages.detach() * per_list).masked_fill(~group_mask, 0.0)
    return -contrib.sum() / group_mask.sum().clamp_min(1)
