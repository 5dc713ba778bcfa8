r"""DRPO's serving pass as one TorchScript call: task logits in, fusion weights and their log-density out.

What: :func:`fusion_pass` computes, for a padded batch of lists, what
:meth:`~learners.fusion.learner.DRPOLearner.fusion_weights_many` computes eagerly: the task
statistics and request context (:mod:`learners.fusion.context`), the
:class:`~learners.fusion.policy.TaskRelationPolicy` forward (task tokens, self-attention across
them, feed-forward, mean head, clamped log-std), the exploration noise of the rows that explore
(drawn by the caller, so the learner's serving generator is consumed exactly as before) and the
diagonal-Gaussian log-density of the served weights. The policy's weights are arguments
(:func:`policy_params`, read from the module at every call), so a snapshot loaded into the module
(``load_state_dict`` writes the same tensors, a new learner has new ones) is what the graph runs:
there is no copy or trace to go stale on a hot swap.

Why: at serving sizes (3 task tokens of 16 units) the eager pass is ~80 tiny torch ops, each
returning to Python. In the server the scoring thread gives up the GIL around every op and
waits to take it back while the event loop and the Kafka client threads run Python; one
scripted call runs the ops in the TorchScript interpreter and takes the GIL back once.
``tests/unit/learners/test_serving_graphs.py`` holds the outputs to the eager pass's.
Scripted once per process and run by :mod:`learners.scripted`.
"""

from __future__ import annotations

import math
from typing import List, Optional  # TorchScript reads these annotations

import torch
from torch import nn
from torch.nn import functional as F

from learners.attention import covered
from learners.fusion.policy import LOG_STD_RANGE, TaskRelationPolicy
from learners.policy.batch import ACTIVITY_LEVELS, QUERY_TYPES
from learners.scripted import run

_LOG_2PI = math.log(2 * math.pi)


def fusion_pass(task_logits: torch.Tensor, mask: torch.Tensor, activity: torch.Tensor,
                query_type: Optional[torch.Tensor], noise: torch.Tensor, params: List[torch.Tensor],
                heads: int, task_relation: bool, n_activity: int, n_query: int, log_std_lo: float, log_std_hi: float,
                log_2pi: float) -> List[torch.Tensor]:
    """``[B, n, K]`` logits, ``[B, n]`` mask, ``[B]`` activity (and query type), ``[B, K]`` standard-normal
    noise (0 on greedy rows) -> ``[weights [B, K], log-density [B]]``; ``params`` in :func:`policy_params` order
    (TorchScript reads no float globals, so the log-std range and log 2 pi come as arguments)."""
    # task statistics: mean, std, max of each task over the real items (learners.fusion.context)
    m = mask.unsqueeze(-1).to(task_logits.dtype)
    count = m.sum(1).clamp_min(1.0)
    mean = (task_logits * m).sum(1) / count
    std = ((((task_logits - mean.unsqueeze(1)) * m) ** 2).sum(1) / count).sqrt()
    peak = task_logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    stats = torch.stack([mean, std, peak], dim=-1) / 4.0
    # request context: activity one-hot, log length, pairwise task correlations (, query type)
    centred = (task_logits - mean.unsqueeze(1)) * m
    norm = (centred ** 2).sum(1).sqrt().clamp_min(1e-6)
    K = task_logits.shape[-1]
    parts = [F.one_hot(activity, n_activity).to(task_logits.dtype), torch.log(count[:, :1])]
    corr: List[torch.Tensor] = []
    for a in range(K):
        for b in range(a + 1, K):
            corr.append((centred[..., a] * centred[..., b]).sum(1) / (norm[:, a] * norm[:, b]))
    if len(corr) > 0:
        parts.append(torch.stack(corr, dim=-1))
    if query_type is not None:
        parts.append(F.one_hot(query_type, n_query).to(task_logits.dtype))
    ctx = torch.cat(parts, dim=-1)
    # the policy (learners.fusion.policy.TaskRelationPolicy.forward)
    tokens = params[0] + F.linear(stats, params[1], params[2]) + F.linear(ctx, params[3], params[4]).unsqueeze(1)
    hidden = tokens.shape[-1]
    if task_relation:
        batch, n_tok = tokens.shape[0], tokens.shape[1]
        qkv = F.linear(tokens, params[5], params[6]).view(batch, n_tok, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        attended = F.linear(out.transpose(1, 2).reshape(batch, n_tok, hidden), params[7], params[8])
        tokens = F.layer_norm(tokens + attended, [hidden], params[9], params[10], 1e-5)
    ff = F.linear(torch.relu(F.linear(tokens, params[11], params[12])), params[13], params[14])
    tokens = F.layer_norm(tokens + ff, [hidden], params[15], params[16], 1e-5)
    mu = F.linear(tokens, params[17], params[18]).squeeze(-1)
    log_std = params[19].clamp(log_std_lo, log_std_hi).expand_as(mu)
    weights = mu + noise * torch.exp(log_std)  # noise 0: exactly the mean
    z = (weights - mu) * torch.exp(-log_std)
    logprob = (-0.5 * z ** 2 - log_std - 0.5 * log_2pi).sum(-1)
    return [weights, logprob]


def policy_params(policy: TaskRelationPolicy) -> list[torch.Tensor]:
    """The policy's current weights in :func:`fusion_pass` order (read at every call: hot swaps write them)."""
    a = policy.attn
    return [policy.task_embed, policy.stats.weight, policy.stats.bias, policy.context.weight, policy.context.bias,
            a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias, policy.norm1.weight, policy.norm1.bias,
            policy.ff[0].weight, policy.ff[0].bias, policy.ff[2].weight, policy.ff[2].bias,
            policy.norm2.weight, policy.norm2.bias, policy.mean_head.weight, policy.mean_head.bias, policy.log_std]


def graph_covers(policy: nn.Module) -> bool:
    """Whether :func:`fusion_pass` computes exactly what ``policy`` does (else serve eagerly)."""
    if type(policy) is not TaskRelationPolicy:
        return False
    ff = policy.ff
    return (covered(policy.attn) and len(ff) == 3 and isinstance(ff[0], nn.Linear) and isinstance(ff[1], nn.ReLU)
            and isinstance(ff[2], nn.Linear) and policy.norm1.eps == 1e-5 and policy.norm2.eps == 1e-5
            and policy.norm1.elementwise_affine and policy.norm2.elementwise_affine)


def run_fusion_pass(policy: TaskRelationPolicy, task_logits: torch.Tensor, mask: torch.Tensor, activity: torch.Tensor,
                    query_type: torch.Tensor | None, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fusion_pass` of ``policy``'s current weights, as one scripted call."""
    weights, logprob = run(fusion_pass, task_logits, mask, activity, query_type, noise, policy_params(policy),
                           int(policy.attn.num_heads), bool(policy.task_relation), len(ACTIVITY_LEVELS),
                           len(QUERY_TYPES), LOG_STD_RANGE[0], LOG_STD_RANGE[1], _LOG_2PI)
    return weights, logprob
