r"""The non-autoregressive, set-aware list scorer that defines LDRO's Plackett–Luce policy.

Dual-Rerank (arXiv 2604.07420) serves a non-autoregressive (NAR) reranker: every candidate
gets a score in one pass of an encoder over the whole candidate set, so the score of an item
depends on what it competes with. RECONSTRUCTION of the architecture (the paper's exact
layers were not readable): per-item MLP embedding, one Transformer encoder block (multi-head
self-attention across the candidates with a padding mask, Vaswani et al., 2017), and a score
head, plus a linear skip term on the raw inputs so linear signals (task scores) are learned
fast:

.. math:: h_i = \mathrm{MLP}(x_i),\quad \tilde h = \mathrm{Block}(h; \text{mask}),\quad
          s_i = v^\top \tilde h_i + u^\top x_i

The scores define :math:`\pi(y) = \prod_k \exp s_{y_k} / \sum_{j\ge k}\exp s_{y_j}`
(:mod:`learners.policy.plackett_luce`).
"""

from __future__ import annotations

import torch
from torch import nn

from learners.attention import self_attention


class SetScorer(nn.Module):
    """``[B, n, d_in]`` item inputs + ``[B, n]`` mask -> ``[B, n]`` scores."""

    def __init__(self, d_in: int, hidden: int = 32, heads: int = 2, set_aware: bool = True) -> None:
        super().__init__()
        self.set_aware = set_aware
        self.embed = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)
        self.skip = nn.Linear(d_in, 1)
        with torch.no_grad():  # start close to the uniform PL policy
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.skip.weight.zero_()
            self.skip.bias.zero_()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if self.set_aware:
            attended = self_attention(self.attn, h, key_padding_mask=~mask)
            h = self.norm1(h + attended)
            h = self.norm2(h + self.ff(h))
        scores = (self.head(h) + self.skip(x)).squeeze(-1)
        return scores.masked_fill(~mask, 0.0)
