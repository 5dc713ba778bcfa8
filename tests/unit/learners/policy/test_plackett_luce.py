"""Plackett–Luce log-probabilities, step distributions and Gumbel-Max sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from learners.policy.plackett_luce import (
    greedy_order,
    gumbel_max_sample,
    list_logprob,
    step_distributions,
    step_logprobs,
)


def loop_logprob(scores: list[float], order: list[int]) -> float:
    """Sum of step log-softmaxes, one step at a time (the definition)."""
    remaining = list(order)
    total = 0.0
    for item in order:
        logits = torch.tensor([scores[j] for j in remaining], dtype=torch.float64)
        total += float(torch.log_softmax(logits, 0)[remaining.index(item)])
        remaining.remove(item)
    return total


def pl_probability(scores: list[float], order: tuple[int, ...]) -> float:
    return math.exp(loop_logprob(scores, list(order)))


def test_logprob_equals_sum_of_step_log_softmaxes():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    orders = torch.stack([torch.randperm(6, generator=gen) for _ in range(4)])
    got = list_logprob(scores, orders)
    for b in range(4):
        assert got[b].item() == pytest.approx(loop_logprob(scores[b].tolist(), orders[b].tolist()), abs=1e-10)


def test_padding_steps_contribute_nothing():
    scores = torch.tensor([[0.3, -1.2, 2.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, False]])
    order = torch.tensor([[2, 0, 1, 3, 4]])
    steps = step_logprobs(scores, order, mask)
    assert steps[0, 3:].abs().sum() == 0
    assert steps[0].sum().item() == pytest.approx(loop_logprob([0.3, -1.2, 2.0], [2, 0, 1]), abs=1e-9)


def test_probabilities_of_all_orders_sum_to_one():
    scores = torch.tensor([[1.5, -0.3, 0.2, 0.9]], dtype=torch.float64)
    perms = torch.tensor(list(itertools.permutations(range(4))))
    total = list_logprob(scores, perms.unsqueeze(0)).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-12)


def test_step_distributions_are_softmax_over_remaining_items():
    scores = torch.tensor([[0.5, 1.0, -2.0, 0.1]], dtype=torch.float64)
    order = torch.tensor([[1, 3, 0, 2]])
    dist = step_distributions(scores, order).exp()[0]
    for k in range(4):
        remaining = order[0, k:].tolist()
        expected = torch.zeros(4, dtype=torch.float64)
        expected[remaining] = torch.softmax(scores[0, remaining], 0)
        assert torch.allclose(dist[k], expected, atol=1e-9)
        # the probability of the item actually placed is the step probability
        assert math.log(dist[k, order[0, k]]) == pytest.approx(step_logprobs(scores, order)[0, k].item(), abs=1e-9)


def test_gumbel_max_frequencies_match_plackett_luce_chi_square():
    scores = [1.0, 0.2, -0.5]
    n_samples = 30_000
    gen = torch.Generator().manual_seed(7)
    orders = gumbel_max_sample(torch.tensor([scores]), n_samples, generator=gen)[0]
    perms = list(itertools.permutations(range(3)))
    counts = np.array([int((orders == torch.tensor(p)).all(-1).sum()) for p in perms])
    assert counts.sum() == n_samples  # every sample is a permutation
    expected = np.array([pl_probability(scores, p) for p in perms]) * n_samples
    assert chisquare(counts, expected).pvalue > 1e-3
    # the test has power: the same samples are far from a PL law with other scores
    wrong = np.array([pl_probability([0.0, 0.0, 0.0], p) for p in perms]) * n_samples
    assert chisquare(counts, wrong).pvalue < 1e-9


def test_gumbel_max_keeps_padding_last_and_greedy_is_the_mode():
    scores = torch.tensor([[0.1, 3.0, -1.0, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    orders = gumbel_max_sample(scores, 50, mask, torch.Generator().manual_seed(1))
    assert (orders[0, :, -1] == 3).all()
    assert greedy_order(scores, mask)[0].tolist() == [1, 0, 2, 3]


def test_gradients_are_finite_with_padding():
    scores = torch.randn(2, 5, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, False, False, False, False]])
    orders = gumbel_max_sample(scores, 3, mask, torch.Generator().manual_seed(0))
    list_logprob(scores, orders, mask).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[1].abs().sum() == 0  # a one-item list has log-prob 0 whatever its score
