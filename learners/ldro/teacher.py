r"""The autoregressive teacher for LDRO's sequential knowledge distillation: a pointer decoder.

Dual-Rerank distils an autoregressive (AR) generator into the non-autoregressive student;
GReF (arXiv 2510.25220) pre-trains its AR generator on the logged exposure order first.
RECONSTRUCTION (documented in DESIGN.md): a pointer network (Vinyals et al., 2015) over the
candidates:

.. math:: e_i = \mathrm{MLP}(x_i),\quad h_0 = \tanh(W_0\,\overline{e}),\quad
          h_t = \mathrm{GRU}(e_{y_t}, h_{t-1}),\quad
          \pi_T(i \mid y_{<t}) = \mathrm{softmax}_{i \notin y_{<t}} \frac{(W_q h_{t-1})^\top (W_k e_i)}{\sqrt{d}}

Training targets (switchable by ``pretrain_updates``):

1. *pre-training*: maximum likelihood of the served (exposure) order, as GReF's first stage;
2. afterwards: maximum likelihood of the *preferred* order, the served items sorted by
   logged item reward (ties keep the served position), i.e. GReF's Rerank-DPO "preferred
   list" (position order lifted by engagement), here as a likelihood target.

Distillation (:func:`sequential_kd`): along the teacher's greedy list, the student's PL step
distribution is pulled toward the teacher's, :math:`\sum_t \mathrm{KL}(\pi_T(\cdot\mid y_{<t})
\,\|\, \pi_S(\cdot\mid y_{<t}))` averaged over real steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learners.plackett_luce import PAD_SCORE, step_distributions, step_valid


class PointerTeacher(nn.Module):
    def __init__(self, d_in: int, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.key = nn.Linear(hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.init = nn.Linear(hidden, hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.scale = 1.0 / math.sqrt(hidden)

    def _start(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        m = mask.unsqueeze(-1).to(e.dtype)
        pooled = (e * m).sum(1) / m.sum(1).clamp_min(1.0)
        return e, self.key(e), torch.tanh(self.init(pooled))

    def _logits(self, keys: torch.Tensor, state: torch.Tensor, unavailable: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("bnh,bh->bn", keys, self.query(state)) * self.scale
        return logits.masked_fill(unavailable, PAD_SCORE)

    def step_log_distributions(self, x: torch.Tensor, mask: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """Teacher-forced ``log π_T(· | y_<t)`` along ``orders`` ``[B, n]`` -> ``[B, n, n]``."""
        e, keys, state = self._start(x, mask)
        unavailable = ~mask
        rows = []
        for t in range(x.shape[1]):
            rows.append(torch.log_softmax(self._logits(keys, state, unavailable), dim=-1))
            chosen = orders[:, t]
            unavailable = unavailable | nn.functional.one_hot(chosen, x.shape[1]).bool()
            state = self.cell(e[torch.arange(x.shape[0]), chosen], state)
        return torch.stack(rows, dim=1)

    def nll(self, x: torch.Tensor, mask: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per real step of ``orders`` (teacher forcing)."""
        logp = self.step_log_distributions(x, mask, orders).gather(-1, orders.unsqueeze(-1)).squeeze(-1)
        valid = step_valid(orders, mask)
        return -(logp * valid).sum() / valid.sum().clamp_min(1)

    @torch.no_grad()
    def greedy(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decode: the teacher's list ``[B, n]`` and its step log-distributions ``[B, n, n]``."""
        e, keys, state = self._start(x, mask)
        unavailable = ~mask
        rows, picks = [], []
        for _ in range(x.shape[1]):
            logp = torch.log_softmax(self._logits(keys, state, unavailable), dim=-1)
            chosen = logp.masked_fill(unavailable, float("-inf")).argmax(-1)
            exhausted = unavailable.all(-1)
            if exhausted.any():  # padding steps: take the first still-unused (padding) slot
                spare = (~(nn.functional.one_hot(torch.stack(picks, 1), x.shape[1]).sum(1).bool())
                         if picks else torch.ones_like(mask)).float().argmax(-1)
                chosen = torch.where(exhausted, spare, chosen)
            rows.append(logp)
            picks.append(chosen)
            unavailable = unavailable | nn.functional.one_hot(chosen, x.shape[1]).bool()
            state = self.cell(e[torch.arange(x.shape[0]), chosen], state)
        return torch.stack(picks, dim=1), torch.stack(rows, dim=1)


def preferred_order(item_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Served items sorted by logged reward (desc), ties by served position; padding last."""
    n = item_rewards.shape[1]
    position = torch.arange(n, dtype=item_rewards.dtype)
    key = item_rewards * (n + 1.0) - position  # reward first, earlier position breaks ties
    return torch.argsort(key.masked_fill(~mask, float("-inf")), dim=-1, descending=True, stable=True)


def sequential_kd(student_scores: torch.Tensor, mask: torch.Tensor, teacher_orders: torch.Tensor,
                  teacher_logp: torch.Tensor) -> torch.Tensor:
    """Mean over real steps of KL(teacher step distribution ‖ student PL step distribution)."""
    student_logp = step_distributions(student_scores, teacher_orders, mask)
    p_teacher = teacher_logp.exp()
    kl = (p_teacher * (teacher_logp - student_logp)).sum(-1)  # [B, n]
    valid = step_valid(teacher_orders, mask)
    return (kl * valid).sum() / valid.sum().clamp_min(1)
