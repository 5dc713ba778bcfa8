"""Clenshaw–Curtis quadrature and the memory-light Leibniz backward (learners/calibration/quadrature.py)."""

from __future__ import annotations

import math

import pytest
import torch

from learners.calibration.quadrature import clenshaw_curtis, integrate
from learners.calibration.umnn import Integrand

#: Stated bound: with the default 50 steps, the integral of a random integrand network over
#: |l| <= 12 is within this relative error of a 1,000-step reference.
QUADRATURE_REL_BOUND = 1e-4


@pytest.mark.parametrize("steps", [2, 10, 50])
def test_weights_integrate_polynomials_up_to_degree_steps_exactly(steps):
    w, s = clenshaw_curtis(steps, torch.float64)
    assert torch.all(w > 0)
    for degree in range(steps + 1):
        exact = 0.0 if degree % 2 else 2.0 / (degree + 1)
        assert float((w * s**degree).sum()) == pytest.approx(exact, abs=1e-10)


@pytest.mark.parametrize("steps", [0, 3, 51])
def test_odd_or_too_few_steps_are_refused(steps):
    with pytest.raises(ValueError, match="even number"):
        clenshaw_curtis(steps)


def test_exp_integral_matches_the_closed_form():
    x = torch.tensor([-12.0, -3.0, 0.0, 0.5, 4.0], dtype=torch.float64)
    h = torch.zeros(5, 0, dtype=torch.float64)
    got = integrate(x, h, lambda t, _h: torch.exp(t / 4), 50, leibniz=False)
    assert torch.allclose(got, 4 * (torch.exp(x / 4) - 1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_neural_integrand_error_against_a_fine_reference_is_below_the_stated_bound(seed):
    torch.manual_seed(seed)
    f = Integrand(context_dim=6, hidden=(50, 50)).double()
    x = torch.linspace(-12, 12, 41, dtype=torch.float64)
    h = torch.randn(41, 6, dtype=torch.float64)
    coarse = integrate(x, h, f, 50, leibniz=False)
    fine = integrate(x, h, f, 1000, leibniz=False)
    rel = ((coarse - fine).abs() / fine.abs().clamp_min(1e-6)).max()
    assert float(rel.detach()) < QUADRATURE_REL_BOUND


def test_leibniz_backward_equals_autograd_through_the_quadrature():
    torch.manual_seed(0)
    f = Integrand(context_dim=4, hidden=(16, 16)).double()
    params = tuple(f.parameters())
    x = torch.randn(33, dtype=torch.float64) * 4
    h = torch.randn(33, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(33, dtype=torch.float64)

    (integrate(x, h, f, 20, params=params, leibniz=True) * weights).sum().backward()
    leibniz = [p.grad.clone() for p in params] + [h.grad.clone()]
    f.zero_grad()
    h.grad = None
    (integrate(x, h, f, 20, leibniz=False) * weights).sum().backward()
    plain = [p.grad.clone() for p in params] + [h.grad.clone()]
    for a, b in zip(leibniz, plain):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert any(float(g.abs().sum()) > 0 for g in leibniz)


def test_derivative_in_the_upper_limit_is_the_integrand_there():
    torch.manual_seed(1)
    f = Integrand(context_dim=2, hidden=(8,)).double()
    x = torch.tensor([-2.0, 0.3, 5.0], dtype=torch.float64, requires_grad=True)
    h = torch.randn(3, 2, dtype=torch.float64)
    integrate(x, h, f, 50, params=tuple(f.parameters())).sum().backward()
    with torch.no_grad():
        expected = f(x.detach().unsqueeze(1), h).squeeze(1)
    assert torch.allclose(x.grad, expected)
    assert math.isfinite(float(x.grad.sum()))


def test_forward_keeps_no_graph_of_the_node_evaluations():
    """Memory-light: only x and h (and the parameters) are saved for backward."""
    f = Integrand(context_dim=3, hidden=(32, 32))
    x, h = torch.randn(256), torch.randn(256, 3)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        integrate(x, h, f, 50, params=tuple(f.parameters()), leibniz=True)
    n_param = sum(p.numel() for p in f.parameters())
    assert sum(saved) == x.numel() + h.numel() + n_param
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        integrate(x, h, f, 50, leibniz=False)
    assert sum(saved) > 50 * 256 * 32  # plain autograd keeps node activations


def test_integrand_is_the_mlp_of_the_concatenated_node_and_context():
    """The split, fused first layer computes exactly ELU(MLP([t, h])) + 1 (UMC's IntegrandNN)."""
    torch.manual_seed(3)
    f = Integrand(context_dim=5, hidden=(8, 8)).double()
    for p in f.parameters():
        torch.nn.init.normal_(p)
    t = torch.randn(7, 11, dtype=torch.float64)
    h = torch.randn(7, 5, dtype=torch.float64)
    weight = torch.cat([f.first_t.weight, f.first_h.weight], dim=1)  # [H, 1 + d]
    rows = torch.cat([t.unsqueeze(-1), h.unsqueeze(1).expand(7, 11, 5)], dim=-1)  # [n, m, 1 + d]
    a = rows @ weight.T + f.first_t.bias
    for layer in f.rest:
        a = layer(torch.relu(a))
    assert torch.allclose(f(t, h), torch.nn.functional.elu(a.squeeze(-1)) + 1.0, rtol=1e-12, atol=1e-12)


def test_integral_without_grad_equals_the_leibniz_forward():
    """Serving integrates under no_grad without the autograd Function: same values."""
    torch.manual_seed(4)
    f = Integrand(context_dim=3, hidden=(16, 16))
    x = torch.randn(40) * 5
    h = torch.randn(40, 3)
    with_grad = integrate(x, h, f, 50, params=tuple(f.parameters()), leibniz=True)
    assert with_grad.requires_grad  # the Leibniz path ran
    with torch.no_grad():
        without = integrate(x, h, f, 50, params=tuple(f.parameters()), leibniz=True)
    assert not without.requires_grad and torch.equal(without, with_grad.detach())
