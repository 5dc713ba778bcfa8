"""UMC / UMNN calibrator against its formula: z = w(h) (int_0^l f(t, h) dt + b0) + b(h), f = ELU(MLP([t, h])) + 1.

The expected values are computed here from the module's parameters with an explicit MLP on the
concatenated ``[t, h]`` and a fine trapezoid rule (independent of the Clenshaw-Curtis code),
plus the initialisation, memory and error contracts stated in ``learners/calibration/umnn.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from learners.calibration.umnn import Integrand, UMNNCalibrator

#: Nodes of the reference trapezoid rule (error ~ l^2 max|f''| / (12 N^2): far below the tolerance).
FINE = 8001
#: Tolerance for the 50-node Clenshaw-Curtis quadrature on these integrands (ReLU kinks make them
#: only piecewise smooth, so it is not exact to float precision; measured worst here: ~1e-4).
REL = 1e-3


def _perturbed(model: UMNNCalibrator, seed: int, scale: float = 0.3) -> UMNNCalibrator:
    """A non-trivial, smooth parameter point: the identity start plus N(0, scale) noise on every weight."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return model


def _reference_integrand(f: Integrand, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """ELU(MLP([t, h])) + 1 with ReLU hidden layers, the first layer on the concatenation (UMC's IntegrandNN)."""
    if f.first_h is None:
        weight = f.first_t.weight
        rows = t.unsqueeze(-1)
    else:
        weight = torch.cat([f.first_t.weight, f.first_h.weight], dim=1)
        rows = torch.cat([t.unsqueeze(-1), h.unsqueeze(1).expand(*t.shape, h.shape[-1])], dim=-1)
    a = rows @ weight.T + f.first_t.bias
    for layer in f.rest:
        a = torch.relu(a) @ layer.weight.T + layer.bias
    return torch.nn.functional.elu(a.squeeze(-1)) + 1.0


def _reference_integral(f: Integrand, logit: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """int_0^l f(t, h) dt by the trapezoid rule on FINE equally spaced nodes."""
    u = torch.linspace(0.0, 1.0, FINE, dtype=logit.dtype)
    t = logit.unsqueeze(1) * u  # [n, FINE]
    return logit * torch.trapezoid(_reference_integrand(f, t, h), u, dim=1)


def _reference_scale_shift(model: UMNNCalibrator, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[log w, b] = MLP(h) with ReLU hidden layers."""
    layers = list(model.context_net)
    a = h
    for layer in layers[:-1]:
        a = torch.relu(a @ layer.weight.T + layer.bias)
    out = a @ layers[-1].weight.T + layers[-1].bias
    return torch.exp(out[:, 0]), out[:, 1]


def _inputs(n: int, context_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logit = torch.linspace(-6.0, 6.0, n, dtype=torch.float64)
    h = torch.randn(n, context_dim, generator=gen, dtype=torch.float64)
    return logit, h


@pytest.mark.parametrize("seed", [0, 1])
def test_output_equals_the_rescaled_integral_plus_offset_of_the_formula(seed: int) -> None:
    torch.manual_seed(seed)
    model = _perturbed(UMNNCalibrator(3, integrand_hidden=(8, 5), context_hidden=(7, 4)),
                       seed).double()
    logit, h = _inputs(13, 3, seed)
    with torch.no_grad():
        model.offset.fill_(0.37)
        got = model(logit, h)
        w, b = _reference_scale_shift(model, h)
        expected = w * (_reference_integral(model.integrand, logit, h) + 0.37) + b
    assert not torch.allclose(w, torch.ones_like(w), atol=1e-3)  # the rescaling is exercised
    assert torch.allclose(got, expected, rtol=REL, atol=REL)


def test_the_networks_have_the_requested_sizes_and_the_context_net_outputs_log_w_and_b() -> None:
    model = UMNNCalibrator(3, integrand_hidden=(8, 5), context_hidden=(7, 4))
    assert model.rescaling and model.leibniz and model.steps == 50  # the defaults: UMC with rescaling
    integrand = [model.integrand.first_t, model.integrand.first_h, *model.integrand.rest]
    assert [(m.in_features, m.out_features) for m in integrand] == [(1, 8), (3, 8), (8, 5), (5, 1)]
    assert [(m.in_features, m.out_features) for m in model.context_net] == [(3, 7), (7, 4), (4, 2)]


def test_a_single_context_field_is_enough_for_the_rescaling_net() -> None:
    torch.manual_seed(10)
    model = _perturbed(UMNNCalibrator(1, integrand_hidden=(6, 6), context_hidden=(5, 5)), 10).double()
    assert model.rescaling and model.context_net is not None
    logit, h = _inputs(7, 1, 10)
    with torch.no_grad():
        w, b = _reference_scale_shift(model, h)
        expected = w * (_reference_integral(model.integrand, logit, h) + model.offset) + b
        assert torch.allclose(model(logit, h), expected, rtol=REL, atol=REL)


@pytest.mark.parametrize("context_dim", [1, 3])
def test_a_contextual_calibrator_called_without_its_context_fails_instead_of_inventing_one(context_dim: int) -> None:
    model = UMNNCalibrator(context_dim, integrand_hidden=(4, 4), context_hidden=(4, 4))
    with torch.no_grad(), pytest.raises(RuntimeError):
        model(torch.zeros(5))


def test_without_rescaling_the_output_is_the_integral_plus_offset() -> None:
    torch.manual_seed(2)
    model = _perturbed(UMNNCalibrator(3, integrand_hidden=(6, 9), rescaling=False), 2).double()
    assert model.context_net is None and not model.rescaling
    logit, h = _inputs(11, 3, 2)
    with torch.no_grad():
        model.offset.fill_(-0.8)
        got = model(logit, h)
        expected = _reference_integral(model.integrand, logit, h) - 0.8
    assert torch.allclose(got, expected, rtol=REL, atol=REL)


def test_the_plain_umnn_integrates_a_context_free_integrand_and_ignores_any_context() -> None:
    torch.manual_seed(3)
    model = _perturbed(UMNNCalibrator(0, integrand_hidden=(7, 4)), 3).double()
    assert model.integrand.first_h is None and model.context_net is None
    logit = torch.linspace(-5.0, 5.0, 9, dtype=torch.float64)
    with torch.no_grad():
        expected = _reference_integral(model.integrand, logit, logit.new_zeros(9, 0)) + model.offset
        assert torch.allclose(model(logit), expected, rtol=REL, atol=REL)
        # a context handed to a context-free calibrator (even one of another shape) is not used
        assert torch.equal(model(logit, torch.randn(4, dtype=torch.float64)), model(logit))


def test_the_default_quadrature_has_fifty_steps_and_is_close_to_the_fine_reference() -> None:
    torch.manual_seed(4)
    model = _perturbed(UMNNCalibrator(2), 4, scale=0.03).double()
    assert model.steps == 50
    logit, h = _inputs(9, 2, 4)
    with torch.no_grad():
        w, b = _reference_scale_shift(model, h)
        expected = w * (_reference_integral(model.integrand, logit, h) + model.offset) + b
        assert torch.allclose(model(logit, h), expected, rtol=REL, atol=REL)
        coarse = UMNNCalibrator(2, steps=2).double()
        coarse.load_state_dict(model.state_dict())
        assert coarse.steps == 2
        assert not torch.allclose(coarse(logit, h), expected, rtol=1e-3)  # ``steps`` reaches the quadrature


def test_the_integrand_is_positive_and_has_exactly_the_parameters_of_the_concatenated_mlp() -> None:
    torch.manual_seed(5)
    f = Integrand(context_dim=4, hidden=(6, 3)).double()
    for p in f.parameters():
        torch.nn.init.normal_(p, std=0.7)
    t = torch.randn(5, 7, dtype=torch.float64) * 4
    h = torch.randn(5, 4, dtype=torch.float64)
    got = f(t, h)
    assert got.shape == (5, 7) and torch.all(got > 0)
    assert torch.allclose(got, _reference_integrand(f, t, h), rtol=1e-12, atol=1e-12)
    # MLP([1 + 4] -> 6 -> 3 -> 1): (5*6 + 6) + (6*3 + 3) + (3*1 + 1) parameters, one bias per layer
    assert sum(p.numel() for p in f.parameters()) == 36 + 21 + 4
    assert f.first_h is not None and f.first_h.bias is None


def test_an_integrand_without_hidden_layers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^the integrand needs at least one hidden layer$"):
        Integrand(3, hidden=())


def test_the_output_is_strictly_increasing_in_the_logit_for_perturbed_parameters() -> None:
    torch.manual_seed(6)
    model = _perturbed(UMNNCalibrator(3, integrand_hidden=(8, 8), context_hidden=(8, 8)),
                       6).double()
    logit = torch.linspace(-8.0, 8.0, 80, dtype=torch.float64).repeat(3)
    h = torch.randn(3, 3, dtype=torch.float64).repeat_interleave(80, 0)
    with torch.no_grad():
        z = model(logit, h).reshape(3, 80)
    assert torch.all(z[:, 1:] > z[:, :-1])


def test_the_raw_logit_is_detached_and_gradients_reach_the_parameters_and_the_context() -> None:
    torch.manual_seed(7)
    model = _perturbed(UMNNCalibrator(3, integrand_hidden=(8, 8), context_hidden=(8, 8)), 7)
    logit = torch.randn(6, requires_grad=True)
    h = torch.randn(6, 3, requires_grad=True)
    model(logit, h).sum().backward()
    assert logit.grad is None
    assert h.grad is not None and float(h.grad.abs().sum()) > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert float(model.offset.grad.abs().sum()) > 0


def _saved_numel(model: UMNNCalibrator, logit: torch.Tensor, h: torch.Tensor) -> int:
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(logit, h)
    return sum(saved)


def test_the_default_calibrator_uses_the_memory_light_leibniz_backward() -> None:
    torch.manual_seed(8)
    light = UMNNCalibrator(2, integrand_hidden=(32, 32), context_hidden=(4, 4))
    plain = UMNNCalibrator(2, integrand_hidden=(32, 32), context_hidden=(4, 4), leibniz=False)
    assert light.leibniz is True and plain.leibniz is False
    logit, h = torch.randn(64), torch.randn(64, 2)
    # plain autograd keeps the 51 node activations of every row; the Leibniz path keeps none
    assert _saved_numel(plain, logit, h) > 51 * 64 * 32
    assert _saved_numel(light, logit, h) < 51 * 64


def test_identity_initialisation_zeroes_only_the_last_layers_of_both_nets() -> None:
    model = UMNNCalibrator(3, integrand_hidden=(6, 6, 6), context_hidden=(5, 5))
    last = [model.integrand.rest[-1], model.context_net[-1]]
    for layer in last:
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    for layer in [*model.integrand.rest[:-1], model.context_net[0], model.context_net[1]]:
        assert torch.count_nonzero(layer.weight) == layer.weight.numel()
    assert float(model.offset.detach()) == 0.0
    random = UMNNCalibrator(3, integrand_hidden=(6, 6), context_hidden=(5, 5), identity_init=False)
    for layer in [random.integrand.rest[-1], random.context_net[-1]]:
        assert torch.count_nonzero(layer.weight) == layer.weight.numel()


def test_umc_initialisation_is_xavier_normal_with_relu_gain_and_tiny_biases() -> None:
    torch.manual_seed(9)
    model = UMNNCalibrator(4, identity_init=False)  # UMC's sizes: integrand 50x50, context 200x200
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 2 + 2 + 3  # first_t, first_h, 2 integrand layers, 3 context layers
    for layer, fan_in, fan_out in [(model.integrand.rest[0], 50, 50), (model.context_net[1], 200, 200)]:
        expected_std = math.sqrt(2.0) * math.sqrt(2.0 / (fan_in + fan_out))  # gain(relu) = sqrt(2)
        assert float(layer.weight.detach().std()) == pytest.approx(expected_std, rel=0.05)
        assert abs(float(layer.weight.detach().mean())) < 0.1 * expected_std
    biases = torch.cat([m.bias for m in layers if m.bias is not None]).detach()
    assert biases.numel() == 50 + 50 + 1 + 200 + 200 + 2
    assert float(biases.abs().max()) < 6e-4  # N(0, 1e-4^2) (truncated far out, at +-2): within 6 std of 0
    assert float(biases.std()) == pytest.approx(1e-4, rel=0.2)
    assert abs(float(biases.mean())) < 2e-5
