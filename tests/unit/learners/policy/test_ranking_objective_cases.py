"""LDRO's list policy-gradient loss (``learners/ranking/objective.py``), case by case with values
written out by hand: the defaults (rank-weighted), the weights' dtype and device, and the mean over
the real sampled lists only (``group_mask``). Written from the mutants the suite let through
(``make mutation ONLY=learners/ranking/objective.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from learners.ranking.objective import list_logprobs, list_policy_loss, rank_weights, weighted_policy_loss

RAW = [0.3, -0.2, 0.1, 1.5]
ORDERS = [[3, 0, 2, 1], [0, 1, 2, 3]]


def _steps(order: list[int]) -> list[float]:
    """log pi(y_k | y_<k) of a Plackett-Luce order over RAW, by hand."""
    return [RAW[item] - math.log(sum(math.exp(RAW[j]) for j in order[k:])) for k, item in enumerate(order)]


def _by_hand(order: list[int], rank_weighted: bool) -> float:
    weights = [1 / math.log2(k + 2) if rank_weighted else 1.0 for k in range(len(order))]
    return sum(w * lp for w, lp in zip(weights, _steps(order)))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([RAW], dtype=torch.float64), torch.tensor([ORDERS])


def test_list_logprobs_is_rank_weighted_unless_told_otherwise() -> None:
    scores, orders = _inputs()
    default = list_logprobs(scores, orders)
    assert default.shape == (1, 2)
    assert default[0].tolist() == pytest.approx([_by_hand(o, True) for o in ORDERS], rel=1e-12)
    plain = list_logprobs(scores, orders, rank_weighted=False)
    assert plain[0].tolist() == pytest.approx([_by_hand(o, False) for o in ORDERS], rel=1e-12)
    assert _by_hand(ORDERS[0], True) != pytest.approx(_by_hand(ORDERS[0], False), rel=1e-3)


def test_list_policy_loss_is_rank_weighted_unless_told_otherwise() -> None:
    scores, orders = _inputs()
    adv = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    weighted = -(0.7 * _by_hand(ORDERS[0], True) - 0.4 * _by_hand(ORDERS[1], True)) / 2
    plain = -(0.7 * _by_hand(ORDERS[0], False) - 0.4 * _by_hand(ORDERS[1], False)) / 2
    assert float(list_policy_loss(scores, orders, adv)) == pytest.approx(weighted, rel=1e-12)
    assert float(list_policy_loss(scores, orders, adv, rank_weighted=False)) == pytest.approx(plain, rel=1e-12)
    assert weighted != pytest.approx(plain, rel=1e-3)


def test_list_policy_loss_averages_over_the_real_lists_of_the_group_mask_only() -> None:
    """A padded sampled list (group_mask False) neither adds its term nor counts in the mean."""
    scores, orders = _inputs()
    adv = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    only_first = torch.tensor([[True, False]])
    got = float(list_policy_loss(scores, orders, adv, group_mask=only_first))
    assert got == pytest.approx(-0.7 * _by_hand(ORDERS[0], True), rel=1e-12)
    assert got != pytest.approx(float(list_policy_loss(scores, orders, adv)), rel=1e-3)


@pytest.mark.parametrize("mask, expected", [
    (None, -(2.0 * -1.0 + 3.0 * -2.0 + -1.0 * -0.5) / 3),  # all three lists: the mean of -A * logp
    ([True, False, True], -(2.0 * -1.0 + -1.0 * -0.5) / 2),  # the middle list is padding: 0 and not counted
    ([False, False, False], 0.0),  # no real list: 0, not a division by zero
])
def test_weighted_policy_loss_is_minus_the_mean_advantage_times_logprob_over_real_lists(
        mask: list[bool] | None, expected: float) -> None:
    per_list = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64)
    adv = torch.tensor([[2.0, 3.0, -1.0]], dtype=torch.float64)
    group_mask = None if mask is None else torch.tensor([mask])
    assert float(weighted_policy_loss(per_list, adv, group_mask)) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_weighted_policy_loss_sends_no_gradient_into_the_advantages() -> None:
    per_list = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    weighted_policy_loss(per_list, adv).backward()
    assert per_list.grad.tolist() == [[-1.0, -1.5]]  # d/dlogp of -(A logp)/2
    assert adv.grad is None


@pytest.mark.parametrize("rank_weighted", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rank_weights_take_the_dtype_and_device_they_are_given(rank_weighted: bool, dtype: torch.dtype) -> None:
    weights = rank_weights(5, rank_weighted, dtype)
    assert weights.dtype == dtype
    expected = [1 / math.log2(k + 2) for k in range(5)] if rank_weighted else [1.0] * 5
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    # the meta device allocates nothing: it checks where the weights are made without a GPU
    meta = rank_weights(5, rank_weighted, dtype, torch.device("meta"))
    assert meta.device.type == "meta" and meta.dtype == dtype and meta.shape == (5,)


def test_list_logprobs_makes_its_rank_weights_on_the_scores_device_and_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, weights made on the CPU would not multiply the CUDA log-probs; this suite has no
    GPU, so the call is checked instead of the failure."""
    import learners.ranking.objective as objective  # noqa: PLC0415

    calls = []

    def spy(n: int, rank_weighted: bool, dtype: torch.dtype = torch.float32,
            device: torch.device | None = None) -> torch.Tensor:
        calls.append((n, rank_weighted, dtype, device))
        return rank_weights(n, rank_weighted, dtype, device)

    monkeypatch.setattr(objective, "rank_weights", spy)
    scores, orders = _inputs()
    objective.list_logprobs(scores, orders)
    assert calls == [(4, True, torch.float64, scores.device)]
