"""Plackett-Luce properties on lists small enough to write out: the explicit product formula, padding,
group broadcasting, the step distributions, tie-breaking and the Gumbel-Max sampling law."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from learners.policy.plackett_luce import (
    PAD_SCORE,
    greedy_order,
    gumbel_max_sample,
    list_logprob,
    step_distributions,
    step_logprobs,
    step_valid,
)

A, B, C = 0.7, -0.4, 1.9  # scores of items 0, 1, 2


def _explicit_steps(order: tuple[int, ...]) -> list[float]:
    """log of each factor of pi(y) = prod_k exp(s_{y_k}) / sum_{j >= k} exp(s_{y_j}), written out for 3 items."""
    s = {0: A, 1: B, 2: C}
    first, second, third = order
    return [
        math.log(math.exp(s[first]) / (math.exp(s[first]) + math.exp(s[second]) + math.exp(s[third]))),
        math.log(math.exp(s[second]) / (math.exp(s[second]) + math.exp(s[third]))),
        0.0,  # the last item is placed with probability 1
    ]


PERMS = list(itertools.permutations(range(3)))


@pytest.mark.parametrize("order", PERMS)
def test_step_logprobs_of_a_three_item_list_are_the_logs_of_the_product_formula(order: tuple[int, ...]) -> None:
    scores = torch.tensor([[A, B, C]], dtype=torch.float64)
    steps = step_logprobs(scores, torch.tensor([order]))
    assert steps.shape == (1, 3)
    assert steps[0].tolist() == pytest.approx(_explicit_steps(order), abs=1e-12)
    assert float(list_logprob(scores, torch.tensor([order]))[0]) == pytest.approx(sum(_explicit_steps(order)), abs=1e-12)


def test_a_group_of_orders_per_request_gives_each_orders_own_log_probs() -> None:
    scores = torch.tensor([[A, B, C], [C, A, B]], dtype=torch.float64)
    orders = torch.tensor([[PERMS[0], PERMS[3], PERMS[5]], [PERMS[1], PERMS[2], PERMS[4]]])  # [2, 3, 3]
    got = step_logprobs(scores, orders)
    assert got.shape == (2, 3, 3)
    for b in range(2):
        for g in range(3):
            alone = step_logprobs(scores[b:b + 1], orders[b, g].unsqueeze(0))[0]
            assert torch.allclose(got[b, g], alone, atol=1e-12)
    assert torch.allclose(list_logprob(scores, orders), got.sum(-1))
    # the first request's group: three different orders of the same scores
    assert got[0, :, 0].tolist() == pytest.approx([_explicit_steps(PERMS[i])[0] for i in (0, 3, 5)], abs=1e-12)


@pytest.mark.parametrize("pad_score", [-50.0, 0.0, 80.0])
def test_masked_candidates_are_ignored_whatever_their_score(pad_score: float) -> None:
    scores = torch.tensor([[A, pad_score, B, C, pad_score]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, False]])
    order = torch.tensor([[3, 0, 2, 1, 4]])  # items 2 (C), 0 (A), 1 (B) of the real list, then the padding
    steps = step_logprobs(scores, order, mask)
    assert steps[0, 3:].tolist() == [0.0, 0.0]
    assert steps[0, :3].tolist() == pytest.approx(_explicit_steps((2, 0, 1)), abs=1e-12)
    assert float(list_logprob(scores, order, mask)[0]) == pytest.approx(sum(_explicit_steps((2, 0, 1))), abs=1e-12)
    # the same with a group dimension
    grouped = step_logprobs(scores, order.unsqueeze(1).expand(1, 2, 5), mask)
    assert torch.allclose(grouped[0, 1], steps[0], atol=1e-12)


def test_a_padded_slot_inside_the_order_contributes_zero_and_is_not_in_any_tail() -> None:
    scores = torch.tensor([[A, 30.0, B, C]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True]])
    steps = step_logprobs(scores, torch.tensor([[0, 1, 2, 3]]), mask)
    assert float(steps[0, 1]) == 0.0
    expected = _explicit_steps((0, 1, 2))
    assert [float(steps[0, 0]), float(steps[0, 2]), float(steps[0, 3])] == pytest.approx(expected, abs=1e-12)


def test_the_pad_score_is_far_below_any_real_score() -> None:
    assert PAD_SCORE <= -1e8
    assert math.exp(PAD_SCORE - 100.0) == 0.0


def test_step_distributions_give_zero_probability_to_placed_and_padded_candidates() -> None:
    scores = torch.tensor([[A, 5.0, B, C]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True]])
    order = torch.tensor([[2, 0, 3, 1]])
    dist = step_distributions(scores, order, mask).exp()[0]  # [steps, candidates]
    assert dist.shape == (4, 4)
    e = {0: math.exp(A), 2: math.exp(B), 3: math.exp(C)}
    expected = [
        [e[0] / (e[0] + e[2] + e[3]), 0.0, e[2] / (e[0] + e[2] + e[3]), e[3] / (e[0] + e[2] + e[3])],
        [e[0] / (e[0] + e[3]), 0.0, 0.0, e[3] / (e[0] + e[3])],
        [0.0, 0.0, 0.0, 1.0],
    ]
    for k in range(3):
        assert dist[k].tolist() == pytest.approx(expected[k], abs=1e-12)
    # the placed probability of each real step is that step's log-prob
    steps = step_logprobs(scores, order, mask)[0]
    for k in range(3):
        assert math.log(float(dist[k, order[0, k]])) == pytest.approx(float(steps[k]), abs=1e-12)


def test_step_distributions_of_a_batch_use_each_requests_own_mask_and_order() -> None:
    scores = torch.tensor([[A, 5.0, B, C], [C, B, -3.0, A]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True], [True, True, False, True]])
    orders = torch.tensor([[2, 0, 3, 1], [3, 1, 0, 2]])
    dist = step_distributions(scores, orders, mask).exp()
    assert dist.shape == (2, 4, 4)
    for b in range(2):
        for k in range(3):  # the three real steps of each list
            remaining = [i for i in orders[b, k:].tolist() if mask[b, i]]
            expected = torch.zeros(4, dtype=torch.float64)
            expected[remaining] = torch.softmax(scores[b, remaining], 0)
            assert torch.allclose(dist[b, k], expected, atol=1e-12)


def test_an_unbatched_list_of_scores_is_supported_by_every_function() -> None:
    scores = torch.tensor([A, B, C], dtype=torch.float64)
    order = torch.tensor([2, 0, 1])
    assert step_logprobs(scores, order).tolist() == pytest.approx(_explicit_steps((2, 0, 1)), abs=1e-12)
    dist = step_distributions(scores, order).exp()
    assert dist.shape == (3, 3)
    assert dist[1].tolist() == pytest.approx([math.exp(A) / (math.exp(A) + math.exp(B)),
                                              math.exp(B) / (math.exp(A) + math.exp(B)), 0.0], abs=1e-12)
    assert greedy_order(scores).tolist() == [2, 0, 1]
    samples = gumbel_max_sample(scores, 6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 3)
    assert torch.equal(samples.sort(-1).values, torch.arange(3).expand(6, 3))


def test_step_valid_marks_the_steps_that_place_a_real_candidate() -> None:
    mask = torch.tensor([[True, False, True], [True, True, False]])
    orders = torch.tensor([[1, 0, 2], [2, 1, 0]])
    assert step_valid(orders, mask).tolist() == [[False, True, True], [False, True, True]]
    grouped = torch.stack([orders, orders.flip(-1)], dim=1)  # [2, 2, 3]
    got = step_valid(grouped, mask)
    assert got.shape == (2, 2, 3)
    assert got[:, 1].tolist() == [[True, True, False], [True, True, False]]
    none = step_valid(grouped, None)
    assert none.shape == (2, 2, 3) and none.dtype == torch.bool and bool(none.all())


def test_greedy_order_sorts_by_decreasing_score_breaking_ties_by_position() -> None:
    scores = torch.tensor([[0.5, 2.0, 2.0, -1.0, 0.5]])
    assert greedy_order(scores)[0].tolist() == [1, 2, 0, 4, 3]
    mask = torch.tensor([[True, False, True, False, True]])
    assert greedy_order(scores, mask)[0].tolist() == [2, 0, 4, 1, 3]  # padding last, in index order


def test_greedy_order_keeps_index_order_among_many_tied_scores() -> None:
    n = 60
    scores = torch.tensor([[float(i % 3) for i in range(n)]])
    expected = sorted(range(n), key=lambda i: -float(scores[0, i]))  # Python's sort is stable
    assert greedy_order(scores)[0].tolist() == expected
    mask = torch.tensor([[i % 4 != 0 for i in range(n)]])
    real = sorted((i for i in range(n) if i % 4), key=lambda i: -float(scores[0, i]))
    assert greedy_order(scores, mask)[0].tolist() == real + [i for i in range(n) if i % 4 == 0]


def test_sampling_and_step_distributions_stay_on_the_scores_device() -> None:
    """On the meta device (shapes only) every tensor the functions create must follow the inputs' device."""
    scores = torch.randn(2, 5, device="meta")
    samples = gumbel_max_sample(scores, 3)
    assert samples.device == scores.device and samples.shape == (2, 3, 5)
    orders = torch.zeros(2, 5, dtype=torch.long, device="meta")
    dist = step_distributions(scores, orders)
    assert dist.device == scores.device and dist.shape == (2, 5, 5)


def _frequencies(orders: torch.Tensor) -> dict[tuple[int, ...], float]:
    counts: dict[tuple[int, ...], int] = {}
    for row in orders.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return {k: v / orders.shape[0] for k, v in counts.items()}


def test_gumbel_max_samples_follow_the_plackett_luce_probabilities() -> None:
    n = 40_000
    scores = torch.tensor([[A, B, C]], dtype=torch.float64)
    orders = gumbel_max_sample(scores, n, generator=torch.Generator().manual_seed(11))
    assert orders.shape == (1, n, 3)
    freq = _frequencies(orders[0])
    for perm in PERMS:
        prob = math.exp(sum(_explicit_steps(perm)))
        # 4.5 binomial standard deviations: a wrong law (e.g. the scores' signs flipped) is far outside
        assert freq.get(perm, 0.0) == pytest.approx(prob, abs=4.5 * math.sqrt(prob * (1 - prob) / n))


def test_gumbel_max_with_padding_samples_the_real_list_and_puts_padding_last_in_index_order() -> None:
    n = 20_000
    scores = torch.tensor([[9.0, A, 9.0, B, C], [A, B, C, 9.0, 9.0]])
    mask = torch.tensor([[False, True, False, True, True], [True, True, True, False, False]])
    both = gumbel_max_sample(scores, n, mask, torch.Generator().manual_seed(12))
    assert both[1, :, 3:].tolist() == [[3, 4]] * n
    orders = both[0]
    assert orders[:, 3:].tolist() == [[0, 2]] * n
    real = {1: 0, 3: 1, 4: 2}  # candidate index -> item of the 3-item list
    freq = _frequencies(torch.tensor([[real[i] for i in row] for row in orders[:, :3].tolist()]))
    for perm in PERMS:
        prob = math.exp(sum(_explicit_steps(perm)))
        assert freq.get(perm, 0.0) == pytest.approx(prob, abs=4.5 * math.sqrt(prob * (1 - prob) / n))


def test_gumbel_max_sampling_is_reproducible_per_generator_and_each_request_has_its_own_group() -> None:
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.0]], requires_grad=True)
    first = gumbel_max_sample(scores, 64, generator=torch.Generator().manual_seed(5))
    again = gumbel_max_sample(scores, 64, generator=torch.Generator().manual_seed(5))
    assert first.shape == (2, 64, 4) and torch.equal(first, again)
    assert torch.equal(first.sort(-1).values, torch.arange(4).expand(2, 64, 4))  # every sample is a permutation
    # uniform scores: each candidate leads about a quarter of the time; sharp scores: candidate 0 leads most
    leads_uniform = torch.bincount(first[0, :, 0], minlength=4)
    assert int(leads_uniform.min()) >= 4
    assert int((first[1, :, 0] == 0).sum()) > int((first[0, :, 0] == 0).sum())


def test_a_sample_is_the_argsort_of_the_scores_plus_gumbel_noise_drawn_from_the_generator() -> None:
    """The documented algorithm, written out: u ~ U(0, 1) from the generator in the scores' dtype, g = -log(-log u)."""
    scores = torch.tensor([[A, B, C, 0.1], [0.3, -2.0, 0.0, 1.1]], dtype=torch.float64)
    got = gumbel_max_sample(scores, 5, generator=torch.Generator().manual_seed(31))
    u = torch.rand((2, 5, 4), generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    keys = scores.unsqueeze(1) - torch.log(-torch.log(u))
    assert torch.equal(got, torch.argsort(keys, dim=-1, descending=True))


def test_requests_with_equal_scores_draw_independent_samples() -> None:
    scores = torch.zeros(2, 6)
    orders = gumbel_max_sample(scores, 8, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(orders[0], orders[1])
