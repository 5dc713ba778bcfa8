r"""DRPO's item-level satisfaction reward model: a DBN-style cascade over the served items' labels
(``DRPOConfig.reward_model="cascade"``).

SaFRO (arXiv 2603.19585) values the fusion policy's weight vectors with "a satisfaction-aware
reward model on query-level behaviour proxies". The list-level models
(:mod:`learners.fusion.satisfaction`, :mod:`learners.fusion.satisfaction_contextual`) learn it
from one number per list, ``query_reward``, which varies far more between queries than between
orders of one query (BENCHMARKS.md, ``bench/fusion_diagnostics.py``). Every labelled list also
says *which* item was clicked and which was long-viewed (``ItemLabels``), ten to fifty labels
per list, and those are what tell one order from another. RECONSTRUCTION (ours; the paper's
abstract gives no form): the dynamic Bayesian network click model (Chapelle & Zhang, "A Dynamic
Bayesian Network Click Model for Web Search Ranking", WWW 2009), with a context-dependent
attractiveness and satisfaction of each item read off its task scores, and a PBM examination
(Richardson et al., 2007) per rank:

.. math:: c_i = \sigma\big(a_c(ctx)^\top g_i/4 + b_c(ctx)\big),\qquad
          s_i = \sigma\big(a_s(ctx)^\top g_i/4 + b_s(ctx)\big),\qquad
          \epsilon_k = \sigma(\theta_k),\qquad \gamma = \sigma(h(ctx))

with :math:`g_i` the item's task logits, :math:`c_i` = P(click | examined), :math:`s_i` =
P(long view | click) (the item *satisfies* in this context), :math:`\epsilon_k` the
examination of rank :math:`k` and :math:`\gamma` the probability that an unsatisfying click
ends the query (a reformulation). The user scans the order :math:`y` top-down; with
:math:`a` = P(no click yet), :math:`b` = P(clicked, not yet satisfied, still searching),
:math:`e_k = \epsilon_k c_{y_k}`:

.. math:: V \mathrel{+}= (a+b)\,e_k s_{y_k},\quad b \leftarrow b(1-e_k) + (a+b)\,e_k(1-s_{y_k})(1-\gamma),
          \quad a \leftarrow a(1-e_k)

so :math:`V` = P(satisfied) and :math:`b_{end}` = P(clicked, never satisfied, not abandoned).
The reward is the predicted ``query_reward`` (1 satisfied, ``partial`` for a click only):

.. math:: R_\phi(y, ctx) = \sigma\big(\kappa\,\mathrm{logit}(V + \sigma(\pi)\,b_{end}) + b_0(ctx)\big)

Losses, every step, on the served lists (index order = served order): the item-level
**click** BCE of :math:`\epsilon_k c_i` on every shown item of the first ``positions`` ranks
(PBM: the examination absorbs where scans stop), the item-level **long-view** BCE of
:math:`s_i` on the clicked items (long view given a click, unbiased by position), and the
list-level BCE of :math:`R_\phi` against ``query_reward`` (which fits :math:`\gamma`,
:math:`\kappa`, :math:`\pi`, :math:`b_0`). Why it ranks orders better: the per-item heads learn
from every click and long view (not one pooled number per list), per context, so which task
predicts a satisfying click in which context is learned from ~10x more, far less noisy labels;
the cascade turns them into a value of the *order*.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _head(context_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(context_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


class CascadeSatisfactionModel(nn.Module):
    """R_phi from item-level click and long-view labels (see the module doc); ``uses_item_labels``."""

    uses_item_labels = True

    def __init__(self, n_tasks: int, context_dim: int, hidden: int = 32, positions: int = 50,
                 partial: float = 0.3) -> None:
        super().__init__()
        self.n_tasks, self.positions = n_tasks, positions
        self.click = _head(context_dim, hidden, n_tasks + 1)
        self.satisfy = _head(context_dim, hidden, n_tasks + 1)
        self.abandon = _head(context_dim, hidden, 1)
        self.offset = _head(context_dim, hidden, 1)
        ranks = torch.arange(1, positions + 1, dtype=torch.float32)
        self.examination = nn.Parameter(torch.logit(1.0 / ranks, eps=1e-4))  # PBM 1/k to start
        self.scale = nn.Parameter(torch.tensor(math.log(math.e - 1.0)))  # softplus -> 1
        self.partial = nn.Parameter(torch.logit(torch.tensor(partial)))
        with torch.no_grad():
            self.offset[-1].weight.zero_()
            self.offset[-1].bias.zero_()

    def item_logits(self, task_logits: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, n, K]``, ``[B, C]`` -> click and satisfaction logits ``[B, n]`` (context-weighted task logits)."""
        x = task_logits / 4.0
        wc, ws = self.click(ctx), self.satisfy(ctx)  # [B, K + 1]
        click = (x * wc[:, None, :-1]).sum(-1) + wc[:, -1:]
        satisfy = (x * ws[:, None, :-1]).sum(-1) + ws[:, -1:]
        return click, satisfy

    def _cascade(self, click: torch.Tensor, satisfy: torch.Tensor, mask: torch.Tensor, gamma: torch.Tensor,
                 orders: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P(satisfied) and P(clicked, unsatisfied, still searching) per order: ``[B, G]`` each."""
        B, G, n = orders.shape
        L = min(self.positions, n)
        top = orders[..., :L]
        valid = mask.unsqueeze(1).expand(B, G, n).gather(-1, top).to(click.dtype)
        c = torch.sigmoid(click).unsqueeze(1).expand(B, G, n).gather(-1, top)
        s = torch.sigmoid(satisfy).unsqueeze(1).expand(B, G, n).gather(-1, top)
        e = torch.sigmoid(self.examination[:L]).to(click.dtype) * c * valid  # [B, G, L]
        keep = (1.0 - gamma).unsqueeze(1)  # [B, 1]
        a = torch.ones(B, G, dtype=click.dtype, device=click.device)
        b = torch.zeros_like(a)
        value = torch.zeros_like(a)
        for k in range(L):
            reach = (a + b) * e[..., k]
            value = value + reach * s[..., k]
            b = b * (1.0 - e[..., k]) + reach * (1.0 - s[..., k]) * keep
            a = a * (1.0 - e[..., k])
        return value, b

    def logits(self, features: torch.Tensor, task_logits: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor,
               orders: torch.Tensor) -> torch.Tensor:
        """``orders`` ``[B, G, n]`` -> predicted ``query_reward`` logits ``[B, G]`` (``features`` unused)."""
        click, satisfy = self.item_logits(task_logits, ctx)
        gamma = torch.sigmoid(self.abandon(ctx)).squeeze(-1)  # [B]
        value, searching = self._cascade(click, satisfy, mask, gamma, orders)
        expected = (value + torch.sigmoid(self.partial) * searching).clamp(1e-4, 1.0 - 1e-4)
        return F.softplus(self.scale) * torch.logit(expected) + self.offset(ctx)

    def loss(self, features: torch.Tensor, task_logits: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor,
             target: torch.Tensor, clicks: torch.Tensor | None = None,
             long_views: torch.Tensor | None = None) -> torch.Tensor:
        """List-level BCE against ``query_reward`` plus the item-level click and long-view BCEs."""
        if clicks is None or long_views is None:
            raise ValueError("the cascade reward model learns from item labels: pass clicks and long_views")
        B, n = mask.shape
        served = torch.arange(n, device=mask.device).expand(B, 1, -1)
        list_loss = F.binary_cross_entropy_with_logits(
            self.logits(features, task_logits, mask, ctx, served).squeeze(1), target.clamp(0.0, 1.0))
        click, satisfy = self.item_logits(task_logits, ctx)
        L = min(self.positions, n)
        shown = mask[:, :L].to(click.dtype)
        p_click = (torch.sigmoid(self.examination[:L]) * torch.sigmoid(click[:, :L])).clamp(1e-6, 1.0 - 1e-6)
        click_loss = (F.binary_cross_entropy(p_click, clicks[:, :L].clamp(0.0, 1.0), reduction="none") * shown).sum()
        click_loss = click_loss / shown.sum().clamp_min(1.0)
        clicked = (clicks > 0.5) & mask
        lv_loss = F.binary_cross_entropy_with_logits(satisfy, long_views.clamp(0.0, 1.0), reduction="none")
        lv_loss = (lv_loss * clicked).sum() / clicked.sum().clamp_min(1)
        return list_loss + click_loss + lv_loss
