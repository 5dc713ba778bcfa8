r"""UMC: an unconstrained monotonic neural calibrator (UMNN with context-dependent rescaling).

Source: Bai et al., "Unconstrained Monotonic Calibration of Predictions in Deep Ranking
Systems", SIGIR 2025 (arXiv 2504.14243; code baiyimeng/UMC, ``calib/MonotonicNN.py``),
built on UMNN (Wehenkel & Louppe 2019). For a raw prediction :math:`\hat p` and context
:math:`x` (position, item, user fields) with context vector :math:`h(x)`:

.. math::
    l = \operatorname{logit}(\hat p),\qquad
    z = w(x)\Big(\int_0^{l} f_\psi(t, h(x))\,dt + b_0\Big) + b(x),\qquad p = \sigma(z)

with :math:`f_\psi = \mathrm{ELU}(\mathrm{MLP}_\psi([t, h])) + 1 > 0` (ReLU hidden layers, as
UMC's ``IntegrandNN``), :math:`[\log w(x), b(x)] = \mathrm{MLP}(h)` (ReLU hidden layers, UMC
uses [200, 200]) so :math:`w > 0`. Since :math:`f > 0` and :math:`w > 0`, :math:`z` is strictly
increasing in :math:`l`, hence in :math:`\hat p`, for every context and every parameter value:
monotone by construction, no constraint on the weights. (Strictly, the *integral* is; its
quadrature is monotone as long as the nodes resolve :math:`f`. Measured with 50 nodes in
float64: UMC's random initialisation never dipped; adding N(0, 0.1) noise to every weight
gave dips of at most 3.5e-5 of max|z|, N(0, 0.3) up to 1.1e-3; see the property tests.) The integral is the Clenshaw–Curtis
quadrature of :mod:`learners.calibration.quadrature` (default 50 steps, as UMC) with its
memory-light Leibniz backward. As in UMC, the logit input is detached.

``rescaling=False`` (or no context fields) gives UMC's plain "UMNN" variant:
:math:`z = \int_0^l f(t)\,dt + b_0`.

Initialisation: UMC's (Xavier-normal weights, tiny biases), except that with
``identity_init`` (default) the last layers of the integrand and of the context net start at
zero, so the calibrator starts as the identity :math:`z = l` (:math:`f = 1, w = 1, b = 0`): an
online calibrator should begin at the upstream model's calibration, not at a random map
(UMC trains offline for 20 epochs; a stream gives one pass). Gradients still reach every
layer (the zero layer's gradient is the activations below it).

Implementation note: the integrand's first layer is split, :math:`W[t; h] = W_t t + W_h h`, so
:math:`W_h h` is computed once per example instead of once per quadrature node; it is the
same function and the same parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from learners.calibration.quadrature import integrate


def _mlp(sizes: Sequence[int]) -> list[nn.Linear]:
    return [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]


class Integrand(nn.Module):
    """:math:`f(t, h) = \\mathrm{ELU}(\\mathrm{MLP}([t, h])) + 1`, evaluated on a node grid."""

    def __init__(self, context_dim: int, hidden: Sequence[int] = (50, 50)) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the integrand needs at least one hidden layer")
        self.first_t = nn.Linear(1, hidden[0])  # weight on t plus the layer's bias
        self.first_h = nn.Linear(context_dim, hidden[0], bias=False) if context_dim else None
        self.rest = nn.ModuleList(_mlp([*hidden, 1]))

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``t`` [n, m] node positions, ``h`` [n, d] contexts -> ``f`` [n, m] (> 0)."""
        # W_t t + (b + W_h h): the context part once per row, then one fused op over the nodes
        base = self.first_t.bias if self.first_h is None else self.first_h(h) + self.first_t.bias  # [H] or [n, H]
        a = torch.addcmul(base.unsqueeze(-2), t.unsqueeze(-1), self.first_t.weight.squeeze(1))  # [n, m, H]
        for layer in self.rest:
            a = layer(torch.relu(a))
        return nn.functional.elu(a.squeeze(-1)) + 1.0


class UMNNCalibrator(nn.Module):
    """One task's calibrator: raw logit ``l`` [n] and context ``h`` [n, d] -> calibrated logit ``z`` [n]."""

    def __init__(self, context_dim: int, integrand_hidden: Sequence[int] = (50, 50),
                 context_hidden: Sequence[int] = (200, 200), steps: int = 50, rescaling: bool = True,
                 leibniz: bool = True, identity_init: bool = True) -> None:
        super().__init__()
        self.context_dim = int(context_dim)
        self.steps = int(steps)
        self.leibniz = leibniz
        self.rescaling = bool(rescaling and context_dim > 0)
        self.integrand = Integrand(self.context_dim, integrand_hidden)
        self.offset = nn.Parameter(torch.zeros(1))
        self.context_net = nn.ModuleList(_mlp([self.context_dim, *context_hidden, 2])) if self.rescaling else None
        for module in self.modules():  # UMC's initialisation
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight, gain=nn.init.calculate_gain("relu"))
                if module.bias is not None:
                    nn.init.trunc_normal_(module.bias, 0.0, 1e-4)
        if identity_init:  # start at z = l: f = ELU(0) + 1 = 1, w = e^0 = 1, b = 0
            for last in [self.integrand.rest[-1], *([self.context_net[-1]] if self.context_net is not None else [])]:
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def _scale_shift(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = h
        layers = list(self.context_net)  # type: ignore[arg-type]
        for layer in layers[:-1]:
            a = torch.relu(layer(a))
        out = layers[-1](a)
        return torch.exp(out[:, 0]), out[:, 1]

    def forward(self, logit: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        logit = logit.detach()
        if h is None or self.context_dim == 0:
            h = logit.new_zeros(logit.shape[0], 0)
        integral = integrate(logit, h, self.integrand, self.steps, params=tuple(self.integrand.parameters()),
                             leibniz=self.leibniz)
        z = integral + self.offset
        if self.rescaling:
            w, b = self._scale_shift(h)
            z = w * z + b
        return z
