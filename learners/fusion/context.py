r"""DRPO's request context: who the user is and what the task scores of this list look like.

SaFRO (arXiv 2603.19585) conditions the fusion weights on the request; RECONSTRUCTION
(DESIGN.md): the context is the user's activity degree (real KuaiRand ``user_active_degree``
in the simulator) plus summaries of the upstream task predictions over the candidate list.

* per task ``k`` (a *task token*): masked mean, std and max of :math:`g(p_k)` over the list;
* per request: activity one-hot, :math:`\log n`, and the Pearson correlation of every task
  pair across the list (how much the tasks agree on this request, which tells how noisy a
  task is here: the simulator makes the click score sharp for "browse" users and the
  long-view score sharp for "deep" users);
* optionally (``DRPOConfig.query_context``) a one-hot of the request's query-intent class
  (``context["query_type"]``, :data:`learners.policy.batch.QUERY_TYPES`), the feature a
  search system's query classifier gives serving; off by default so the context's width (and
  every existing snapshot's shapes) stay as they were.
"""

from __future__ import annotations

import itertools

import torch

from learners.policy.batch import ACTIVITY_LEVELS, QUERY_TYPES

TASK_STATS = 3


def context_dims(n_tasks: int, query_context: bool = False) -> int:
    return len(ACTIVITY_LEVELS) + 1 + n_tasks * (n_tasks - 1) // 2 + (len(QUERY_TYPES) if query_context else 0)


def task_statistics(task_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, n, K]`` -> ``[B, K, 3]``: mean, std, max of each task over the real items."""
    m = mask.unsqueeze(-1).to(task_logits.dtype)
    count = m.sum(1).clamp_min(1.0)
    mean = (task_logits * m).sum(1) / count
    std = ((((task_logits - mean.unsqueeze(1)) * m) ** 2).sum(1) / count).sqrt()
    peak = task_logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    return torch.stack([mean, std, peak], dim=-1) / 4.0  # logits of p in [1e-4, 1-1e-4] lie in +-9.2


def request_context(task_logits: torch.Tensor, mask: torch.Tensor, activity: torch.Tensor,
                    query_type: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, context_dims(K)]``: activity one-hot, log list length, pairwise task correlations
    (and the query-type one-hot when ``query_type`` is given)."""
    m = mask.unsqueeze(-1).to(task_logits.dtype)
    count = m.sum(1).clamp_min(1.0)
    centred = (task_logits - ((task_logits * m).sum(1) / count).unsqueeze(1)) * m
    norm = (centred ** 2).sum(1).sqrt().clamp_min(1e-6)
    K = task_logits.shape[-1]
    corr = [(centred[..., a] * centred[..., b]).sum(1) / (norm[:, a] * norm[:, b])
            for a, b in itertools.combinations(range(K), 2)]
    onehot = torch.nn.functional.one_hot(activity, len(ACTIVITY_LEVELS)).to(task_logits.dtype)
    parts = [onehot, torch.log(count[:, :1])]
    if corr:
        parts.append(torch.stack(corr, dim=-1))
    if query_type is not None:
        parts.append(torch.nn.functional.one_hot(query_type, len(QUERY_TYPES)).to(task_logits.dtype))
    return torch.cat(parts, dim=-1)
