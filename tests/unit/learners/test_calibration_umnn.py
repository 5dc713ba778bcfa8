"""UMC calibrator: monotone in p_hat for any context and parameters; finite gradients; SCLoss as UMC computes it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learners.calibration.scloss import SCLossConfig, SmoothCalibrationLoss
from learners.calibration.umnn import UMNNCalibrator

#: Monotonicity is exact for the integral; the 50-node quadrature of it can dip where the
#: integrand is not resolved. Measured (float64, 300 random context sets each): UMC's random
#: initialisation never dipped; with extra N(0, 0.1) noise on every weight the worst dip was
#: 3.5e-5 of max|z| (N(0, 0.3): 1.1e-3). The stated tolerance for perturbed parameters:
MONOTONE_REL_TOL = 1e-4


def _randomised(seed: int, context_dim: int, scale: float) -> UMNNCalibrator:
    """UMC's random initialisation (no identity start) plus N(0, scale) noise on every weight."""
    torch.manual_seed(seed)
    model = UMNNCalibrator(context_dim, steps=50, identity_init=False).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def _grid_outputs(model: UMNNCalibrator, context_dim: int, seed: int) -> torch.Tensor:
    n_ctx, n_grid = 5, 64
    p_hat = torch.linspace(1e-4, 1 - 1e-4, n_grid, dtype=torch.float64)
    logit = torch.logit(p_hat).repeat(n_ctx)
    h = torch.randn(n_ctx, context_dim, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64).repeat_interleave(n_grid, 0)
    with torch.no_grad():
        return model(logit, h).reshape(n_ctx, n_grid)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), context_dim=st.sampled_from([0, 3, 8]))
def test_calibrated_logit_is_strictly_increasing_in_p_hat_for_random_contexts_and_parameters(seed, context_dim):
    z = _grid_outputs(_randomised(seed, context_dim, 0.0), context_dim, seed)
    assert torch.isfinite(z).all()
    assert torch.all(z[:, 1:] > z[:, :-1]), "z must increase with p_hat in every context"


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), context_dim=st.sampled_from([0, 3, 8]), scale=st.floats(0.0, 0.1))
def test_perturbed_parameters_stay_monotone_within_the_stated_quadrature_tolerance(seed, context_dim, scale):
    z = _grid_outputs(_randomised(seed, context_dim, scale), context_dim, seed)
    tol = MONOTONE_REL_TOL * float(z.abs().max())
    assert torch.all(z[:, 1:] - z[:, :-1] >= -tol)
    assert torch.all(z[:, -1] > z[:, 0])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.0, 0.1))
def test_gradients_are_finite(seed, scale):
    model = _randomised(seed, 4, scale).float()
    logit = torch.randn(64) * 5
    h = torch.randn(64, 4, requires_grad=True)
    y = (torch.rand(64) < 0.3).float()
    z = model(logit, h)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    sc = SmoothCalibrationLoss()(torch.sigmoid(z), y)
    (loss + 1e-2 * sc).backward()
    grads = [p.grad for p in model.parameters()] + [h.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_identity_initialisation_returns_the_raw_logit():
    model = UMNNCalibrator(6)
    logit = torch.linspace(-9, 9, 11)
    with torch.no_grad():
        z = model(logit, torch.randn(11, 6))
    assert torch.allclose(z, logit, atol=1e-5)


def test_plain_umnn_without_context_has_no_rescaling_net():
    model = UMNNCalibrator(0)
    assert model.context_net is None and not model.rescaling
    with torch.no_grad():
        assert torch.allclose(model(torch.tensor([-2.0, 1.0])), torch.tensor([-2.0, 1.0]), atol=1e-5)


def _umc_reference_loop(p, y, caches, bins, beta):
    """SCLoss as written in UMC's training loop (baiyimeng/UMC train_neu_*.py)."""
    acc_cache, con_cache, num_cache = caches
    boundaries = torch.linspace(0, 1, bins + 1)
    idx = torch.bucketize(p, boundaries[1:-1])
    loss = 0.0
    for k in range(bins):
        mask = idx == k
        n = torch.sum(mask)
        if n == 0:
            continue
        acc = torch.mean(y[mask]) * (1 - beta) + acc_cache[k] * beta
        con = torch.mean(p[mask]) * (1 - beta) + con_cache[k] * beta
        num = n * (1 - beta) + num_cache[k] * beta
        loss += ((acc - con) ** 2) * num
        acc_cache[k], con_cache[k], num_cache[k] = acc.detach(), con.detach(), num.detach()
    return loss


def test_scloss_matches_umc_training_loop_over_several_batches():
    torch.manual_seed(3)
    ours = SmoothCalibrationLoss(SCLossConfig(bins=10, beta=0.95))
    caches = [torch.zeros(10), torch.zeros(10), torch.zeros(10)]
    for _ in range(4):
        logits = (torch.randn(200) * 2).requires_grad_(True)
        p = torch.sigmoid(logits)
        y = (torch.rand(200) < p.detach()).float()
        got = ours(p, y)
        want = _umc_reference_loop(p, y, caches, 10, 0.95)
        assert torch.allclose(got, want, rtol=1e-5)
        g_ours, = torch.autograd.grad(got, logits, retain_graph=True)
        g_want, = torch.autograd.grad(want, logits)
        assert torch.allclose(g_ours, g_want, rtol=1e-4, atol=1e-8)
        assert torch.allclose(ours.accuracy, caches[0]) and torch.allclose(ours.count, caches[2])


@pytest.mark.parametrize("kwargs, message", [
    ({"bins": 0}, "bins"), ({"beta": 1.0}, "beta"), ({"beta": -0.1}, "beta"), ({"weight": -1.0}, "lambda"),
])
def test_invalid_scloss_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SCLossConfig(**kwargs)


def test_scloss_on_an_empty_batch_is_zero_and_leaves_caches():
    loss = SmoothCalibrationLoss()
    assert float(loss(torch.zeros(0), torch.zeros(0))) == 0.0
    assert float(loss.count.sum()) == 0.0
