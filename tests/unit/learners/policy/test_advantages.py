"""Advantage normalisations: group z-score (GRPO), decoupled (LDRO), dual-relative (DRPO)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.policy.advantages import RunningMoments, begin_decoupled, decoupled, dual_relative, group_normalised


def test_group_normalised_has_zero_mean_unit_std_per_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [10.0, 10.5, 9.0, 11.0]], dtype=torch.float64)
    adv = group_normalised(rewards, eps=0.0)
    assert torch.allclose(adv.mean(-1), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(adv.std(-1, unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_group_normalised_respects_the_mask_and_zeroes_single_slot_groups():
    rewards = torch.tensor([[1.0, 3.0, 100.0], [5.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = group_normalised(rewards, mask)
    assert adv[0, :2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)
    assert adv[0, 2] == 0 and (adv[1] == 0).all()
    assert torch.isfinite(adv).all()


def test_decoupled_centres_within_group_and_scales_by_running_std():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.1, 10.2]], dtype=torch.float64)
    running = RunningMoments(decay=0.9)
    adv = decoupled(rewards, running, eps=0.0)
    centred = rewards - rewards.mean(-1, keepdim=True)
    scale = float(centred.flatten().std(unbiased=False))  # first batch: its own std
    assert torch.allclose(adv, centred / scale, atol=1e-9)
    assert torch.allclose(adv.sum(-1), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    # unlike GRPO, a group with tiny differences keeps tiny advantages
    assert adv[1].abs().max() < 0.2 * adv[0].abs().max()
    assert group_normalised(rewards)[1].abs().max() > 1.0


def test_running_moments_match_a_bias_corrected_ema():
    rng = np.random.default_rng(0)
    running = RunningMoments(decay=0.8)
    batches = [rng.normal(3.0, 2.0, size=16) for _ in range(5)]
    m = s = w = 0.0
    for batch in batches:
        running.update(torch.tensor(batch))
        m = 0.8 * m + 0.2 * batch.mean()
        s = 0.8 * s + 0.2 * (batch ** 2).mean()
        w = 0.8 * w + 0.2
    assert running.corrected_mean == pytest.approx(m / w)
    assert running.corrected_std == pytest.approx(np.sqrt(s / w - (m / w) ** 2))
    assert RunningMoments.from_dict(running.as_dict()) == running


def test_dual_relative_is_the_sum_of_the_group_and_batch_terms():
    rewards = torch.tensor([[0.2, 0.8], [0.5, 0.9]], dtype=torch.float64)
    running = RunningMoments(decay=0.5)
    adv = dual_relative(rewards, running, eps=0.0)
    batch_z = (rewards - rewards.mean()) / rewards.flatten().std(unbiased=False)
    assert torch.allclose(adv, group_normalised(rewards, eps=0.0) + batch_z, atol=1e-9)
    only_group = dual_relative(rewards, RunningMoments(), across_batches=False)
    assert torch.allclose(only_group, group_normalised(rewards))


@pytest.mark.parametrize("name", ["decoupled", "dual_relative"])
def test_padding_never_reaches_the_running_statistics(name):
    """A padded batch gives the advantages and running moments of the same real rewards without padding.

    Row 0 has 3 real slots, row 1 has 2; the padding holds values far from every real reward.
    The reference statistics are fed the real slots only (centred per request for LDRO, raw for
    DRPO's cross-batch term), as the definitions in :mod:`learners.policy.advantages` say.
    """
    fn = {"decoupled": decoupled, "dual_relative": dual_relative}[name]
    rewards = torch.tensor([[1.0, 2.0, 4.0, 99.0], [3.0, 5.0, -99.0, 99.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    padded_running = RunningMoments(decay=0.9)
    padded = fn(rewards, padded_running, mask)
    padded_again = fn(rewards, padded_running, mask)  # a second batch: the moments carry over

    real = [rewards[0, :3], rewards[1, :2]]
    if name == "decoupled":
        centred = torch.cat([r - r.mean() for r in real])
    else:
        centred = torch.cat(real)
    reference = RunningMoments(decay=0.9)
    reference.update(centred)
    first_mean, first_std = reference.corrected_mean, reference.corrected_std
    reference.update(centred)
    assert padded_running.corrected_mean == pytest.approx(reference.corrected_mean, rel=1e-12, abs=1e-12)
    assert padded_running.corrected_std == pytest.approx(reference.corrected_std, rel=1e-12)
    assert padded[~mask].abs().max() == 0 and padded_again[~mask].abs().max() == 0
    if name == "decoupled":
        assert padded[0, :3].tolist() == pytest.approx(((real[0] - real[0].mean()) / (first_std + 1e-6)).tolist())
    else:
        z = (real[1] - first_mean) / (first_std + 1e-6)
        group = (real[1] - real[1].mean()) / (real[1].std(unbiased=False) + 1e-6)
        assert padded[1, :2].tolist() == pytest.approx((z + group).tolist())


def test_group_mean_and_std_without_a_mask_use_every_slot():
    from learners.policy.advantages import group_mean, group_std  # noqa: PLC0415

    rewards = torch.tensor([[1.0, 2.0, 6.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    assert group_mean(rewards).tolist() == [[3.0], [4.0]]
    assert group_std(rewards).flatten().tolist() == pytest.approx([np.sqrt(14.0 / 3.0), 0.0], rel=1e-12)


def _one_batch_std(centred: list[float]) -> float:
    return float(np.std(centred))  # the first batch is scaled by its own (population) std


@pytest.mark.parametrize("eps", [None, 0.5])
def test_decoupled_divides_by_the_running_std_plus_the_given_eps(eps):
    """``eps`` is 1e-6 unless given, and a given one reaches the division (hand-computed: the first
    batch's running std is its own population std of the centred rewards)."""
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    centred = [-2.0, -1.0, 3.0, -1.0, 0.0, 1.0]
    kwargs = {} if eps is None else {"eps": eps}
    scale = _one_batch_std(centred) + (1e-6 if eps is None else eps)
    adv = decoupled(rewards, RunningMoments(decay=0.9), **kwargs)
    assert adv.flatten().tolist() == pytest.approx([c / scale for c in centred], rel=1e-12)
    two_halves = begin_decoupled(rewards, RunningMoments(decay=0.9), **kwargs)()  # the data-parallel form
    assert two_halves.flatten().tolist() == pytest.approx([c / scale for c in centred], rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_group_statistics_keep_the_rewards_dtype(dtype):
    from learners.policy.advantages import group_mean, group_std  # noqa: PLC0415

    rewards = torch.tensor([[1.0, 2.0, 6.0], [4.0, 4.0, 5.0]], dtype=dtype)
    mask = torch.tensor([[True, True, False], [True, False, True]])
    assert group_mean(rewards, mask).dtype == dtype and group_std(rewards, mask).dtype == dtype
    assert group_mean(rewards, mask).flatten().tolist() == [1.5, 4.5]
    assert group_std(rewards, mask).flatten().tolist() == [0.5, 0.5]


def test_dual_relative_adds_both_z_scores_with_the_given_eps_in_each_denominator():
    rewards = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    eps = 0.5
    adv = dual_relative(rewards, RunningMoments(decay=0.9), eps=eps)
    # within the group: mean 2, std 1; across batches (first batch): mean 2, std 1
    expected = [2 * (-1.0 / (1.0 + eps)), 2 * (1.0 / (1.0 + eps))]
    assert adv[0].tolist() == pytest.approx(expected, rel=1e-12)
