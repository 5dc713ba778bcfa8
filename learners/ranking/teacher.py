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

Distillation (:func:`sequential_kd`): along a reference list, the student's PL step
distribution is pulled toward the teacher's, :math:`\sum_t \mathrm{KL}(\pi_T(\cdot\mid y_{<t})
\,\|\, \pi_S(\cdot\mid y_{<t}))` averaged over real steps. The reference is either the
teacher's training target (teacher forcing; "word-level" KD of Kim & Rush, 2016, one
vectorised pass, the default) or the teacher's own greedy list ("sequence-level" KD, one
decoder step per rank), switch ``kd_path``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learners.policy.plackett_luce import PAD_SCORE, step_distributions, step_valid


class PointerTeacher(nn.Module):
    def __init__(self, d_in: int, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.key = nn.Linear(hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.init = nn.Linear(hidden, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.scale = 1.0 / math.sqrt(hidden)

    def _start(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        m = mask.unsqueeze(-1).to(e.dtype)
        pooled = (e * m).sum(1) / m.sum(1).clamp_min(1.0)
        return e, self.key(e), torch.tanh(self.init(pooled))

    def step_log_distributions(self, x: torch.Tensor, mask: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """Teacher-forced ``log π_T(· | y_<t)`` along ``orders`` ``[B, n]`` -> ``[B, n, n]``.

        Vectorised: the decoder states of all steps come from one ``nn.GRU`` pass over the
        embeddings of the items placed so far, and the availability mask from the ranks.
        """
        e, keys, h0 = self._start(x, mask)
        B, n, H = e.shape
        placed = e.gather(1, orders[:, :-1].unsqueeze(-1).expand(B, n - 1, H))
        if n > 1:
            later, _ = self.gru(placed, h0.unsqueeze(0).contiguous())
            states = torch.cat([h0.unsqueeze(1), later], dim=1)
        else:
            states = h0.unsqueeze(1)
        logits = torch.einsum("bth,bnh->btn", self.query(states), keys) * self.scale
        rank = torch.empty_like(orders)
        rank.scatter_(1, orders, torch.arange(n, device=orders.device).expand(B, n))
        available = (rank.unsqueeze(1) >= torch.arange(n, device=orders.device).view(1, n, 1)) & mask.unsqueeze(1)
        return torch.log_softmax(logits.masked_fill(~available, PAD_SCORE), dim=-1)

    def nll(self, x: torch.Tensor, mask: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per real step of ``orders`` (teacher forcing)."""
        return self.nll_and_steps(x, mask, orders)[0]

    def nll_and_steps(self, x: torch.Tensor, mask: torch.Tensor,
                      orders: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The NLL and the step log-distributions it came from (reused for distillation)."""
        steps = self.step_log_distributions(x, mask, orders)
        logp = steps.gather(-1, orders.unsqueeze(-1)).squeeze(-1)
        valid = step_valid(orders, mask)
        return -(logp * valid).sum() / valid.sum().clamp_min(1), steps

    @torch.no_grad()
    def greedy(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decode: the teacher's list ``[B, n]`` and its step log-distributions ``[B, n, n]``."""
        e, keys, state = self._start(x, mask)
        B, n, _ = e.shape
        unavailable = ~mask
        used = torch.zeros_like(mask)
        hidden = state.unsqueeze(0).contiguous()
        rows, picks = [], []
        for _ in range(n):
            logits = torch.einsum("bnh,bh->bn", keys, self.query(hidden[0])) * self.scale
            logp = torch.log_softmax(logits.masked_fill(unavailable, PAD_SCORE), dim=-1)
            chosen = logp.masked_fill(unavailable, float("-inf")).argmax(-1)
            exhausted = unavailable.all(-1)  # padding steps: the first unused (padding) slot
            chosen = torch.where(exhausted, (~used).float().argmax(-1), chosen)
            rows.append(logp)
            picks.append(chosen)
            one_hot = nn.functional.one_hot(chosen, n).bool()
            unavailable, used = unavailable | one_hot, used | one_hot
            _, hidden = self.gru(e[torch.arange(B, device=e.device), chosen].unsqueeze(1), hidden)
        return torch.stack(picks, dim=1), torch.stack(rows, dim=1)


def preferred_order(item_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Served items sorted by logged reward (desc), ties by served position; padding last."""
    n = item_rewards.shape[1]
    position = torch.arange(n, dtype=item_rewards.dtype, device=item_rewards.device)
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
