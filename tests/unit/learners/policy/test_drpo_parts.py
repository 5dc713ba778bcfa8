"""DRPO's pieces: Gaussian closed forms, the clipped objective on a toy problem, context, satisfaction model."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from learners.fusion.context import context_dims, request_context, task_statistics
from learners.fusion.objective import clipped_policy_loss
from learners.fusion.policy import TaskRelationPolicy, gaussian_kl, gaussian_logprob
from learners.fusion.satisfaction import SatisfactionModel
from learners.policy.advantages import RunningMoments, dual_relative


def test_gaussian_logprob_and_kl_match_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen) * 0.3
    actions = torch.randn(4, 5, 3, generator=gen)
    expected = Normal(mean.unsqueeze(1), log_std.exp().unsqueeze(1)).log_prob(actions).sum(-1)
    assert torch.allclose(gaussian_logprob(actions, mean, log_std), expected, atol=1e-5)
    mean2, log_std2 = mean + 0.3, log_std - 0.2
    kl = kl_divergence(Normal(mean, log_std.exp()), Normal(mean2, log_std2.exp())).sum(-1)
    assert torch.allclose(gaussian_kl(mean, log_std, mean2, log_std2), kl, atol=1e-5)
    assert torch.allclose(gaussian_kl(mean, log_std, mean, log_std), torch.zeros(4), atol=1e-6)


def test_clipped_objective_moves_the_policy_toward_the_better_weights():
    """Two-task toy: ranking by task 0 earns reward 1, by task 1 reward 0; the mean must turn to task 0."""
    mean = torch.zeros(1, 2, requires_grad=True)
    log_std = torch.zeros(1, 2)
    opt = torch.optim.Adam([mean], lr=0.05)
    gen = torch.Generator().manual_seed(0)
    running = RunningMoments(0.9)
    for _ in range(60):
        with torch.no_grad():
            actions = mean.unsqueeze(1) + torch.randn(1, 16, 2, generator=gen)
            old = gaussian_logprob(actions, mean, log_std)
            reward = (actions[..., 0] > actions[..., 1]).float()
            adv = dual_relative(reward, running)
        for _ in range(2):
            loss = clipped_policy_loss(gaussian_logprob(actions, mean, log_std), old, adv)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert mean[0, 0] - mean[0, 1] > 1.0


def test_clipping_stops_the_gradient_outside_the_trust_region():
    logp = torch.tensor([[0.5, -0.5]], requires_grad=True)
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])  # ratio e^0.5 > 1.2 with A > 0; e^-0.5 < 0.8 with A < 0: both clipped
    clipped_policy_loss(logp, old, adv, clip=0.2).backward()
    assert logp.grad.abs().sum() == 0
    logp.grad = None
    clipped_policy_loss(logp, old, adv, clip=0.8).backward()
    assert logp.grad.abs().sum() > 0


def test_dual_clip_bounds_negative_advantage_terms():
    logp = torch.tensor([[10.0]], requires_grad=True)  # ratio e^10 from a stale behaviour policy
    loss = clipped_policy_loss(logp, torch.zeros(1, 1), torch.tensor([[-1.0]]), dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    assert logp.grad.abs().sum() == 0


def test_context_reveals_which_task_agrees_with_the_others():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 20, generator=gen)
    sharp, noisy = truth + 0.1 * torch.randn(2, 20, generator=gen), torch.randn(2, 20, generator=gen)
    logits = torch.stack([torch.stack([sharp[0], noisy[0], truth[0]], -1), torch.stack([noisy[1], sharp[1], truth[1]], -1)])
    mask = torch.ones(2, 20, dtype=torch.bool)
    ctx = request_context(logits, mask, torch.tensor([0, 3]))
    assert ctx.shape == (2, context_dims(3))
    corr_click_watch = ctx[:, -2]  # pairs: (0,1), (0,2), (1,2)
    assert corr_click_watch[0] > 0.9 and abs(corr_click_watch[1]) < 0.6
    stats = task_statistics(logits, mask)
    assert stats.shape == (2, 3, 3) and torch.isfinite(stats).all()


def test_task_relation_switch_changes_the_policy_and_starts_at_equal_weights():
    torch.manual_seed(0)
    with_attention = TaskRelationPolicy(3, context_dims(3), task_relation=True)
    torch.manual_seed(0)
    without = TaskRelationPolicy(3, context_dims(3), task_relation=False)
    stats, ctx = torch.randn(4, 3, 3), torch.randn(4, context_dims(3))
    mean_a, _ = with_attention(stats, ctx)
    mean_b, _ = without(stats, ctx)
    assert not torch.allclose(mean_a, mean_b)
    assert torch.allclose(mean_a, torch.ones_like(mean_a), atol=0.3)


def test_satisfaction_model_learns_that_relevant_tops_satisfy():
    gen = torch.Generator().manual_seed(0)
    B, n = 256, 8
    logits = torch.randn(B, n, 3, generator=gen)
    mask = torch.ones(B, n, dtype=torch.bool)
    ctx = request_context(logits, mask, torch.zeros(B, dtype=torch.long))
    target = (logits[:, 0, 0] > 0).float()  # satisfied iff the served top item has a high click score
    torch.manual_seed(0)
    model = SatisfactionModel(0, 3, context_dims(3), hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    features = torch.zeros(B, n, 0)
    start = float(model.loss(features, logits, mask, ctx, target).detach())
    for _ in range(200):
        loss = model.loss(features, logits, mask, ctx, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * start
    best_first = torch.argsort(logits[..., 0], -1, descending=True).unsqueeze(1)
    worst_first = torch.argsort(logits[..., 0], -1).unsqueeze(1)
    assert (model.logits(features, logits, mask, ctx, best_first) >
            model.logits(features, logits, mask, ctx, worst_first)).float().mean() > 0.9


def reference_clipped_term(ratio: float, adv: float, clip: float = 0.2, dual_clip: float = 3.0) -> float:
    """One slot of the objective in the module docstring (PPO + the dual clip of Ye et al. 2020)."""
    term = min(ratio * adv, min(max(ratio, 1 - clip), 1 + clip) * adv)
    return max(term, dual_clip * adv) if adv < 0 and dual_clip > 0 else term


def test_the_clipped_objective_equals_the_formula_slot_by_slot_with_its_default_clips():
    """Every regime: inside the trust region, clipped above and below for either sign of A, the
    dual clip on a large ratio with A < 0, A = 0, a far-off behaviour log-prob (the ±20 clamp of
    the log-ratio), and a padded slot that does not count in the mean."""
    cases = [(1.1, 2.0), (1.5, 2.0), (0.5, 2.0), (1.5, -1.0), (0.5, -1.0), (5.0, -1.0), (1.1, -0.5),
             (1.0, 0.0), (0.9, 1.5), (1.1, 0.5), (2.9, -2.0), (3.5, -2.0)]
    ratio = torch.tensor([[r for r, _ in cases]], dtype=torch.float64)
    adv = torch.tensor([[a for _, a in cases]], dtype=torch.float64)
    old = torch.linspace(-3.0, -0.5, len(cases), dtype=torch.float64).view(1, -1)  # behaviour log-probs
    logp = torch.log(ratio) + old
    expected = -sum(reference_clipped_term(r, a) for r, a in cases) / len(cases)
    assert clipped_policy_loss(logp, old, adv).item() == pytest.approx(expected, rel=1e-12)

    mask = torch.ones_like(adv, dtype=torch.bool)
    mask[0, 2] = False
    masked = -sum(reference_clipped_term(r, a) for i, (r, a) in enumerate(cases) if i != 2) / (len(cases) - 1)
    assert clipped_policy_loss(logp, old, adv, mask=mask).item() == pytest.approx(masked, rel=1e-12)

    far = torch.tensor([[60.0, -60.0]], dtype=torch.float64)  # log-ratios beyond the ±20 clamp
    two = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    got = clipped_policy_loss(far, torch.zeros_like(far), two, clip=0.2, dual_clip=3.0).item()
    assert got == pytest.approx(-(reference_clipped_term(1.2, 1.0) + math.exp(-20.0)) / 2, rel=1e-9)

    for dual in (1.0, 2.0):  # any c > 0 bounds the negative terms at c * A
        got = clipped_policy_loss(logp, old, adv, clip=0.2, dual_clip=dual).item()
        assert got == pytest.approx(-sum(reference_clipped_term(r, a, dual_clip=dual) for r, a in cases) / len(cases),
                                    rel=1e-12)
    off = clipped_policy_loss(logp, old, adv, clip=0.2, dual_clip=0.0).item()
    assert off == pytest.approx(-sum(reference_clipped_term(r, a, dual_clip=0.0) for r, a in cases) / len(cases),
                                rel=1e-12)


def test_the_clipped_objective_gradient_flows_through_the_current_log_prob_only():
    logp = torch.log(torch.tensor([[1.1, 0.9]], dtype=torch.float64)).requires_grad_(True)
    old = torch.zeros_like(logp).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    clipped_policy_loss(logp, old, adv).backward()
    # inside the trust region d(-rho*A/2)/dlogp = -rho*A/2
    assert logp.grad[0].tolist() == pytest.approx([-1.1 / 2, 0.9 / 2], rel=1e-12)
    assert old.grad is None or not old.grad.any()
    assert adv.grad is None or not adv.grad.any()
