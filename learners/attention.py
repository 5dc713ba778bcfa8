r"""Self-attention of an ``nn.MultiheadAttention`` without its per-call Python overhead.

What: :func:`self_attention` computes ``attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]``
for the batch-first, dropout-free modules of the LDRO scorer (:mod:`learners.ranking.network`)
and the DRPO fusion policy (:mod:`learners.fusion.policy`) from the module's own parameters:

.. math:: [Q\,K\,V] = x W_{in}^\top + b_{in},\quad
          O_h = \mathrm{softmax}\big(Q_h K_h^\top / \sqrt{d_h} + M\big) V_h,\quad
          \mathrm{out} = [O_1 \ldots O_H] W_{out}^\top + b_{out}

(Vaswani et al., 2017; :math:`M = -\infty` on padded keys), through
``F.scaled_dot_product_attention``.

Why: at serving sizes (one list of 50 items, 32 hidden units; a DRPO context of 3 task tokens)
the module's ``forward`` is mostly argument checks and reshapes in Python
(``F.multi_head_attention_forward``): ~2.5x the time of this function for one 50-item list in a
one-off timing here, a tenth of a request's model time for LDRO and DRPO each. The outputs are
the same numbers (the same matmuls in the same order; ``tests/unit/learners/test_attention.py``
holds outputs and gradients to the module's), so snapshots, training and serving are unchanged.
A module this function does not cover (dropout, ``bias_k``, separate q/k/v weights, not
batch-first) falls back to the module call.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def covered(attn: nn.MultiheadAttention) -> bool:
    """Whether :func:`self_attention` computes exactly what ``attn`` would."""
    return (attn.batch_first and attn._qkv_same_embed_dim and attn.in_proj_weight is not None
            and attn.in_proj_bias is not None and attn.bias_k is None and not attn.add_zero_attn
            and float(attn.dropout) == 0.0)


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor,
                   key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]`` for ``x`` ``[B, n, E]``.

    ``key_padding_mask`` ``[B, n]`` is True at padded keys (the module's convention)."""
    if not covered(attn) or x.dim() != 3:
        return attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
    batch, n, embed = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(batch, n, 3, heads, embed // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, n, d_h]
    keep = None if key_padding_mask is None else (~key_padding_mask).view(batch, 1, 1, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return F.linear(out.transpose(1, 2).reshape(batch, n, embed), attn.out_proj.weight, attn.out_proj.bias)
