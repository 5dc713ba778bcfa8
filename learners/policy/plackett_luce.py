r"""Plackett–Luce list policies: log-probabilities, per-step distributions and Gumbel-Max sampling.

A non-autoregressive scorer gives each candidate a score :math:`s_i`; the Plackett–Luce
model (Plackett, 1975; Luce, 1959) turns the scores into a distribution over orders
:math:`y = (y_1, \dots, y_n)`:

.. math:: \log \pi(y) = \sum_{k=1}^{n} \Big[ s_{y_k} - \log \sum_{j \ge k} \exp s_{y_j} \Big]

i.e. the sum of the step log-softmaxes over the items not placed yet (Cao et al., 2007,
ListMLE uses the same factorisation).

**Gumbel-Max sampling** (Gumbel, 1954; Yellott, 1977; Kool et al., 2019 "Stochastic Beams and
Where to Find Them"): sorting :math:`s_i + g_i` with i.i.d. :math:`g_i \sim \mathrm{Gumbel}(0, 1)`
in decreasing order draws an exact sample of the PL distribution, so ``G`` lists for every
request of a batch come out of one ``argsort`` (the "vectorised Gumbel-Max sampling" of
Dual-Rerank, arXiv 2604.07420).

Conventions: ``scores`` is ``[..., n]``; ``mask`` (bool, same shape) marks real candidates
(padding is ``False``); an order is ``[..., n]`` indices into the candidates with the real
ones first (padding sorts last). Padded steps contribute log-probability 0.
"""

from __future__ import annotations

import torch

#: A finite stand-in for -inf on padding: keeps logcumsumexp and its gradient finite.
PAD_SCORE = -1.0e9


def _full_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(scores, dtype=torch.bool) if mask is None else mask


def step_logprobs(scores: torch.Tensor, orders: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Per-step :math:`\log \pi(y_k \mid y_{<k})` for each order; padding steps are 0.

    ``scores``/``mask`` are ``[B, n]`` and ``orders`` is ``[B, n]`` or ``[B, G, n]`` (G orders
    per request). Returns a tensor shaped like ``orders``.
    """
    mask = _full_mask(scores, mask)
    if orders.dim() == scores.dim() + 1:
        scores = scores.unsqueeze(-2).expand(*orders.shape)
        mask = mask.unsqueeze(-2).expand(*orders.shape)
    placed = scores.gather(-1, orders)
    valid = mask.gather(-1, orders)
    placed = placed.masked_fill(~valid, PAD_SCORE)
    return (placed - tail_logsumexp(placed, valid)).masked_fill(~valid, 0.0)


#: Largest spread (nats) of a list's real scores for which :func:`tail_logsumexp` takes the float64
#: exp-cumsum path: ``exp(-SPREAD)`` (~1e-261) is far above float64's smallest normal (~1e-308).
SPREAD = 600.0


def tail_logsumexp(placed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \sum_{j \ge k} \exp x_j` along the last dimension (the PL normaliser of every step).

    ``torch.logcumsumexp`` computes it with a sequential, branchy loop (its forward and backward were
    ~8 % of a GRPO update on the CPU in an ad hoc ``torch.profiler`` run; BENCHMARKS.md, issue 16). When every list's real scores lie within :data:`SPREAD` nats,
    the same value is :math:`m + \log \sum_{j \ge k} e^{x_j - m}` with :math:`m` the list's largest
    score, a reverse cumulative sum of exponentials done in float64 (no real term underflows; the
    float32 result agrees with ``logcumsumexp`` to ~1e-6), about 5x faster forward and backward (ad hoc
    timing; ``bench/learn_bench.py`` shows its effect on the update: BENCHMARKS.md).
    Padding (``PAD_SCORE``) contributes exp(-1e9) = 0; its own sums are clamped above 0, so log and
    its gradient stay finite (its log-probabilities are masked to 0 anyway). Wider spreads (a diverged
    scorer) take ``logcumsumexp``, which is exact at any spread."""
    if placed.numel() == 0:  # no list or no item: nothing to reduce over
        return torch.logcumsumexp(placed.flip(-1), dim=-1).flip(-1)
    scores = placed.detach()
    top = scores.amax(-1, keepdim=True)
    lowest = scores.masked_fill(~valid, float("inf")).amin(-1, keepdim=True)
    if float((top - lowest).clamp_min(0).max()) > SPREAD:
        return torch.logcumsumexp(placed.flip(-1), dim=-1).flip(-1)
    sums = torch.exp((placed - top).double()).flip(-1).cumsum(-1).flip(-1)
    return torch.log(sums.clamp_min(1e-300)).to(placed.dtype) + top


def list_logprob(scores: torch.Tensor, orders: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:math:`\\log \\pi(y)` of each order (sum of :func:`step_logprobs`)."""
    return step_logprobs(scores, orders, mask).sum(-1)


def gumbel_max_sample(scores: torch.Tensor, group_size: int, mask: torch.Tensor | None = None,
                      generator: torch.Generator | None = None,
                      rows: tuple[int, int] | None = None) -> torch.Tensor:
    """``group_size`` PL samples per request in one pass: ``argsort(s + Gumbel)``, ``[B, G, n]``.

    ``rows=(offset, total)``: draw the noise of a ``total``-list batch and use rows
    ``offset:offset+B`` (a data-parallel rank's part of the union batch, :mod:`learners.distributed.sync`)."""
    mask = _full_mask(scores, mask)
    shape = (*scores.shape[:-1], group_size, scores.shape[-1])
    if rows is not None:
        offset, total = rows
        whole = torch.rand((total, *shape[1:]), generator=generator, dtype=scores.dtype)
        uniform = whole[offset:offset + shape[0]].to(scores.device)
    else:
        uniform = torch.rand(shape, generator=generator, dtype=scores.dtype).to(scores.device)  # CPU stream
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    perturbed = (scores.detach().unsqueeze(-2) + gumbel).masked_fill(~mask.unsqueeze(-2), float("-inf"))
    return torch.argsort(perturbed, dim=-1, descending=True, stable=True)


def greedy_order(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mode of the PL distribution: candidates by decreasing score (padding last)."""
    mask = _full_mask(scores, mask)
    return torch.argsort(scores.detach().masked_fill(~mask, float("-inf")), dim=-1, descending=True, stable=True)


def step_distributions(scores: torch.Tensor, orders: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Log of the PL step distribution over all candidates along ``orders``: ``[B, n_steps, n]``.

    Row ``k`` is :math:`\log \pi(\cdot \mid y_{<k})`: a log-softmax of the scores over the
    candidates not placed before step ``k`` (placed ones and padding get :data:`PAD_SCORE`
    before the softmax, so their probability is 0). Used for step-wise distillation.
    """
    mask = _full_mask(scores, mask)
    n = scores.shape[-1]
    rank = torch.empty_like(orders)
    rank.scatter_(-1, orders, torch.arange(n, device=orders.device).expand_as(orders))
    steps = torch.arange(n, device=orders.device)
    available = (rank.unsqueeze(-2) >= steps.view(n, 1)) & mask.unsqueeze(-2)  # [B, k, i]
    logits = scores.unsqueeze(-2).expand(*scores.shape[:-1], n, n).masked_fill(~available, PAD_SCORE)
    return torch.log_softmax(logits, dim=-1)


def step_valid(orders: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Which steps of each order place a real candidate (``[..., n]`` bool)."""
    if mask is None:
        return torch.ones_like(orders, dtype=torch.bool)
    if orders.dim() == mask.dim() + 1:
        mask = mask.unsqueeze(-2).expand(*orders.shape)
    return mask.gather(-1, orders)
