r"""LDRO's greedy serving pass as one TorchScript call: item inputs in, scores, order and list log-prob out.

What: :func:`rank_pass` computes for a padded batch what
:meth:`~learners.ranking.learner.LDROLearner.rerank_many` computes eagerly for its greedy rows:
the :class:`~learners.ranking.network.SetScorer` forward (item embedding, self-attention over the
list with padded keys masked, feed-forward, head plus linear skip term, padding scored 0), the
PL mode (candidates by decreasing score, padding last, stable) and its Plackett-Luce log-prob
(:func:`learners.policy.plackett_luce.list_logprob`). The scorer's weights are arguments
(:func:`scorer_params`, read from the module at every call), so a loaded snapshot is what runs.
Exploring rows take their Gumbel-Max sample from the scores afterwards, eagerly, with the
learner's serving generator as before.

Why: the eager pass is ~60 small torch ops on a 50 x 32 list, and in the server the scoring
thread takes the GIL back after each one (:mod:`learners.scripted`). The outputs equal the
eager pass's (``tests/unit/learners/test_serving_graphs.py``).
"""

from __future__ import annotations

from typing import List, Optional  # TorchScript reads these annotations

import torch
from torch import nn
from torch.nn import functional as F

from learners.attention import covered
from learners.policy.plackett_luce import PAD_SCORE
from learners.ranking.network import SetScorer
from learners.scripted import run


def rank_pass(x: torch.Tensor, mask: torch.Tensor, params: List[torch.Tensor], heads: int, set_aware: bool,
              pad_score: float) -> List[torch.Tensor]:
    """``x`` ``[B, n, d_in]``, ``mask`` ``[B, n]`` -> ``[scores [B, n], greedy orders [B, n], their log-prob [B]]``;
    ``params`` in :func:`scorer_params` order."""
    h = F.linear(torch.relu(F.linear(x, params[0], params[1])), params[2], params[3])
    if set_aware:
        batch, n, hidden = h.shape[0], h.shape[1], h.shape[2]
        keep: Optional[torch.Tensor] = mask.view(batch, 1, 1, n)
        qkv = F.linear(h, params[4], params[5]).view(batch, n, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep)
        attended = F.linear(out.transpose(1, 2).reshape(batch, n, hidden), params[6], params[7])
        h = F.layer_norm(h + attended, [hidden], params[8], params[9], 1e-5)
        ff = F.linear(torch.relu(F.linear(h, params[10], params[11])), params[12], params[13])
        h = F.layer_norm(h + ff, [hidden], params[14], params[15], 1e-5)
    scores = (F.linear(h, params[16], params[17]) + F.linear(x, params[18], params[19])).squeeze(-1)
    scores = scores.masked_fill(~mask, 0.0)
    orders = torch.argsort(scores.masked_fill(~mask, float("-inf")), dim=-1, descending=True, stable=True)
    placed = scores.gather(-1, orders)
    valid = mask.gather(-1, orders)
    placed = placed.masked_fill(~valid, pad_score)
    tail = torch.logcumsumexp(placed.flip(-1), dim=-1).flip(-1)
    logprob = (placed - tail).masked_fill(~valid, 0.0).sum(-1)
    return [scores, orders, logprob]


def scorer_params(scorer: SetScorer) -> list[torch.Tensor]:
    """The scorer's current weights in :func:`rank_pass` order (read at every call: hot swaps write them)."""
    a = scorer.attn
    return [scorer.embed[0].weight, scorer.embed[0].bias, scorer.embed[2].weight, scorer.embed[2].bias,
            a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias, scorer.norm1.weight, scorer.norm1.bias,
            scorer.ff[0].weight, scorer.ff[0].bias, scorer.ff[2].weight, scorer.ff[2].bias,
            scorer.norm2.weight, scorer.norm2.bias, scorer.head.weight, scorer.head.bias, scorer.skip.weight,
            scorer.skip.bias]


def graph_covers(scorer: nn.Module) -> bool:
    """Whether :func:`rank_pass` computes exactly what ``scorer`` does (else serve eagerly)."""
    if type(scorer) is not SetScorer:
        return False
    seqs = (scorer.embed, scorer.ff)
    return (covered(scorer.attn) and all(len(s) == 3 and isinstance(s[0], nn.Linear) and isinstance(s[1], nn.ReLU)
                                         and isinstance(s[2], nn.Linear) for s in seqs)
            and scorer.norm1.eps == 1e-5 and scorer.norm2.eps == 1e-5
            and scorer.norm1.elementwise_affine and scorer.norm2.elementwise_affine)


def run_rank_pass(scorer: SetScorer, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`rank_pass` of ``scorer``'s current weights, as one scripted call."""
    scores, orders, logprob = run(rank_pass, x, mask, scorer_params(scorer), int(scorer.attn.num_heads),
                                  bool(scorer.set_aware), PAD_SCORE)
    return scores, orders, logprob
