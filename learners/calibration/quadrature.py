r"""Clenshaw–Curtis quadrature of a neural integrand, with a memory-light Leibniz backward.

Source: UMNN (Wehenkel & Louppe, NeurIPS 2019, arXiv 1908.05164; code AWehenkel/UMNN,
``ParallelNeuralIntegral``), used unchanged by UMC (Bai et al., SIGIR 2025).

For a batch of upper limits :math:`x_i` and contexts :math:`h_i`,

.. math:: I_i = \int_0^{x_i} f(t, h_i)\,dt \approx \frac{x_i}{2} \sum_{j=0}^{S} c_j\,
          f\!\left(\tfrac{x_i}{2}(s_j + 1), h_i\right),\qquad s_j = \cos(j\pi/S)

with the Clenshaw–Curtis weights :math:`c_j` (exact for polynomials of degree :math:`\le S`; UMNN's
``compute_cc_weights`` forgets to halve the last cosine moment, which makes it inexact at
degree :math:`S`; here it is halved).

Backward (:class:`NeuralIntegral`): the forward pass runs without an autograd graph and
keeps only :math:`x, h`; the backward recomputes the integrand at the nodes and gets

* :math:`\partial I/\partial \theta = \int_0^{x} \partial f/\partial\theta\,dt` (same quadrature),
* :math:`\partial I/\partial h = \int_0^{x} \partial f/\partial h\,dt`,
* :math:`\partial I/\partial x = f(x, h)` (Leibniz rule, lower limit fixed at 0).

So no activation of the :math:`n(S+1)` node evaluations is held between forward and backward
(what makes UMNN "memory-light"); :func:`integrate` with ``leibniz=False`` is the plain
autograd path used as the reference in tests and in ``bench/calibration_bench.py``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

Integrand = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@lru_cache(maxsize=32)
def _cc_numpy(steps: int) -> tuple[np.ndarray, np.ndarray]:
    if steps < 2 or steps % 2:
        raise ValueError(f"Clenshaw-Curtis needs an even number of steps >= 2, got {steps}")
    j = np.arange(steps + 1, dtype=np.float64)
    nodes = np.cos(j * math.pi / steps)
    # weights by the DCT of the moments of Chebyshev polynomials (Waldvogel 2006, simple form)
    lam = np.cos(np.outer(j, j) * math.pi / steps)
    lam[:, 0] *= 0.5
    lam[:, -1] *= 0.5
    lam *= 2.0 / steps
    moments = np.zeros(steps + 1)
    even = j[::2]
    moments[::2] = 2.0 / (1.0 - even**2)
    moments[0] = 1.0  # the k=0 and k=S terms carry half weight in the cosine series
    moments[-1] *= 0.5  # (UMNN's compute_cc_weights omits this half: inexact at degree S)
    weights = lam.T @ moments
    return weights, nodes


def clenshaw_curtis(steps: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``c`` and nodes ``s`` on [-1, 1] (``steps + 1`` of each); ``sum(c) == 2``."""
    weights, nodes = _cc_numpy(int(steps))
    return torch.tensor(weights, dtype=dtype), torch.tensor(nodes, dtype=dtype)


@lru_cache(maxsize=32)
def _grid(steps: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``c`` [S+1] and node fractions ``(s + 1) / 2`` [1, S+1] (built once per steps and
    dtype: the request path calls the quadrature per task and request; never modified in place)."""
    weights, nodes = clenshaw_curtis(steps, dtype)
    return weights, ((nodes + 1.0) / 2.0).unsqueeze(0)


def _node_inputs(x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    weights, fractions = _grid(int(steps), x.dtype)
    if x.device.type != "cpu":  # the cached grid lives on the CPU
        weights, fractions = weights.to(x.device), fractions.to(x.device)
    return x.unsqueeze(1) * fractions, weights  # t [n, S+1]


def _quadrature(x: torch.Tensor, h: torch.Tensor, integrand: Integrand, steps: int) -> torch.Tensor:
    t, weights = _node_inputs(x, steps)
    f = integrand(t, h)  # [n, S+1]
    return torch.mv(f, weights) * (x * 0.5)


class NeuralIntegral(torch.autograd.Function):
    """:math:`\\int_0^x f(t, h)dt` by Clenshaw–Curtis with the recomputing Leibniz backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, h: torch.Tensor, steps: int, integrand, *params: torch.Tensor):  # noqa: D102
        with torch.no_grad():
            out = _quadrature(x, h, integrand, steps)
        ctx.integrand = integrand
        ctx.steps = steps
        ctx.save_for_backward(x, h, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: D102
        x, h, *params = ctx.saved_tensors
        integrand, steps = ctx.integrand, ctx.steps
        need_h = ctx.needs_input_grad[1]
        with torch.enable_grad():
            h_leaf = h.detach().requires_grad_(need_h)
            t, weights = _node_inputs(x.detach(), steps)
            f = integrand(t, h_leaf)
            scale = (grad_out * x / 2.0).unsqueeze(1) * weights.unsqueeze(0)
            wanted = [p for p in params if p.requires_grad]
            inputs = wanted + ([h_leaf] if need_h else [])
            grads = torch.autograd.grad(f, inputs, grad_outputs=scale, allow_unused=True) if inputs else ()
        grads = list(grads)
        h_grad = grads.pop() if need_h else None
        param_grads = []
        it = iter(grads)
        for p in params:
            param_grads.append(next(it) if p.requires_grad else None)
        x_grad = None
        if ctx.needs_input_grad[0]:
            with torch.no_grad():
                x_grad = integrand(x.unsqueeze(1), h).squeeze(1) * grad_out  # Leibniz: d/dx int_0^x f = f(x)
        return (x_grad, h_grad, None, None, *param_grads)


def integrate(x: torch.Tensor, h: torch.Tensor, integrand: Integrand, steps: int = 50,
              params: tuple[torch.Tensor, ...] = (), leibniz: bool = True) -> torch.Tensor:
    """:math:`\\int_0^{x_i} f(t, h_i)\\,dt` for each row; ``f(t[n, m], h[n, d]) -> [n, m]``.

    ``params`` are the integrand's parameters (gradients flow to them); ``leibniz=False``
    differentiates the quadrature with plain autograd instead (the reference path).
    """
    if x.dim() != 1 or h.dim() != 2 or h.shape[0] != x.shape[0]:
        raise ValueError(f"expected x [n] and h [n, d], got {tuple(x.shape)} and {tuple(h.shape)}")
    if not leibniz or not torch.is_grad_enabled():
        return _quadrature(x, h, integrand, steps)  # no backward to prepare (e.g. serving)
    return NeuralIntegral.apply(x, h, steps, integrand, *params)
