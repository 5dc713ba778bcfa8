"""DRPO's clipped objective (PPO + the dual clip of Ye et al. 2020), case by case with hand-computed values:
the clip bounds, the dual clip and its switch, the +-20 clamp of the log-ratio, the slot mask and
which inputs the gradient reaches."""

from __future__ import annotations

import math

import pytest
import torch

from learners.fusion.objective import clipped_policy_loss


def _loss(ratio: list[float], adv: list[float], mask: list[bool] | None = None, **kwargs: float) -> float:
    old = torch.full((1, len(ratio)), -1.5, dtype=torch.float64)
    logp = torch.log(torch.tensor([ratio], dtype=torch.float64)) + old
    m = None if mask is None else torch.tensor([mask])
    return float(clipped_policy_loss(logp, old, torch.tensor([adv], dtype=torch.float64), m, **kwargs))


@pytest.mark.parametrize("ratio, adv, expected", [
    (1.1, 2.0, -2.2),    # inside [0.8, 1.2]: -rho A
    (1.5, 2.0, -2.4),    # A > 0, above the trust region: clipped at 1.2 A
    (0.5, 2.0, -1.0),    # A > 0, below: min(rho A, 0.8 A) = rho A (pessimistic), not clipped
    (0.5, -1.0, 0.8),    # A < 0, below: min(-0.5, -0.8) = 0.8 A
    (1.5, -1.0, 1.5),    # A < 0, above: rho A, within the dual clip 3 |A|
    (5.0, -1.0, 3.0),    # A < 0, rho A beyond c A = -3: the dual clip bounds the term at c A
    (2.0, 0.5, -0.6),    # small A > 0: no dual clip for positive advantages
    (1.7, 0.0, 0.0),
])
def test_one_slot_with_the_default_clips_gives_the_hand_computed_loss(ratio: float, adv: float, expected: float) -> None:
    assert _loss([ratio], [adv]) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_the_clip_width_is_the_given_epsilon() -> None:
    assert _loss([1.5], [1.0], clip=0.1) == pytest.approx(-1.1, rel=1e-12)
    assert _loss([0.5], [-1.0], clip=0.3) == pytest.approx(0.7, rel=1e-12)
    assert _loss([1.25], [1.0], clip=0.3) == pytest.approx(-1.25, rel=1e-12)  # inside the wider region


def test_the_dual_clip_constant_is_the_given_one_and_a_non_positive_one_turns_it_off() -> None:
    assert _loss([5.0], [-1.0], dual_clip=2.0) == pytest.approx(2.0, rel=1e-12)
    assert _loss([5.0], [-1.0], dual_clip=0.0) == pytest.approx(5.0, rel=1e-12)
    assert _loss([5.0], [-1.0], dual_clip=-1.0) == pytest.approx(5.0, rel=1e-12)
    assert _loss([2.5], [-2.0], dual_clip=2.0) == pytest.approx(4.0, rel=1e-12)  # c A = -4 > rho A = -5
    assert _loss([1.5], [-1.0], dual_clip=1.0) == pytest.approx(1.0, rel=1e-12)  # any c > 0 is applied
    assert _loss([1.5], [-1.0], dual_clip=0.5) == pytest.approx(0.5, rel=1e-12)


def test_the_log_ratio_is_clamped_at_plus_and_minus_twenty() -> None:
    logp = torch.tensor([[25.0, -25.0]], dtype=torch.float64)
    old = torch.zeros(1, 2, dtype=torch.float64)
    up = clipped_policy_loss(logp[:, :1], old[:, :1], torch.tensor([[-1.0]], dtype=torch.float64), dual_clip=0.0)
    assert float(up) == pytest.approx(math.exp(20.0), rel=1e-12)
    down = clipped_policy_loss(logp[:, 1:], old[:, 1:], torch.tensor([[1.0]], dtype=torch.float64))
    assert float(down) == pytest.approx(-math.exp(-20.0), rel=1e-12)
    at_bound = clipped_policy_loss(torch.tensor([[19.0]], dtype=torch.float64), old[:, :1],
                                   torch.tensor([[-1.0]], dtype=torch.float64), dual_clip=0.0)
    assert float(at_bound) == pytest.approx(math.exp(19.0), rel=1e-12)  # inside the clamp: unchanged


def test_the_mean_runs_over_the_real_slots_only() -> None:
    # terms -2.2 and 3.0 on the real slots; the padded slot (a huge term) does not count
    assert _loss([1.1, 9.0, 5.0], [2.0, 100.0, -1.0], [True, False, True]) == pytest.approx((-2.2 + 3.0) / 2, rel=1e-12)
    assert _loss([1.1, 9.0], [2.0, 100.0], [True, False]) == pytest.approx(-2.2, rel=1e-12)
    assert _loss([1.1, 5.0], [2.0, -1.0]) == _loss([1.1, 5.0], [2.0, -1.0], [True, True])


def test_a_fully_padded_batch_gives_zero_not_nan() -> None:
    assert _loss([1.1, 5.0], [2.0, -1.0], [False, False]) == 0.0


def test_the_mean_spans_the_whole_batch_of_requests() -> None:
    old = torch.zeros(2, 2, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.1, 0.5], [5.0, 1.0]], dtype=torch.float64))
    adv = torch.tensor([[2.0, -1.0], [-1.0, 3.0]], dtype=torch.float64)
    assert float(clipped_policy_loss(logp, old, adv)) == pytest.approx(-(2.2 - 0.8 - 3.0 + 3.0) / 4, rel=1e-12)


def test_gradients_reach_the_current_log_probs_only() -> None:
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.05, -2.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, -0.5]], dtype=torch.float64, requires_grad=True)
    clipped_policy_loss(logp, old, adv).backward()
    assert old.grad is None and adv.grad is None
    # inside the trust region d(-rho A / N)/dlogp = -rho A / N
    rho = math.exp(0.05)
    assert logp.grad.tolist()[0] == pytest.approx([-rho * 1.0 / 2, 0.5 / 2], rel=1e-12)
