"""The PL normaliser's fast path (float64 exp-cumsum) against ``torch.logcumsumexp``.

:func:`learners.policy.plackett_luce.tail_logsumexp` must give what ``logcumsumexp`` gives on the
reversed scores, with the same gradients, at every spread of scores; padding (``PAD_SCORE``) must keep
values and gradients finite; a spread too wide for the float64 shift must take the exact path."""

from __future__ import annotations

import pytest
import torch

from learners.policy import plackett_luce as pl


def reference(placed: torch.Tensor) -> torch.Tensor:
    return torch.logcumsumexp(placed.flip(-1), dim=-1).flip(-1)


def padded(scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(32, 4, 20, generator=g) * scale
    valid = torch.ones(32, 4, 20, dtype=torch.bool)
    valid[:, :, 15:] = False  # padding sorts last in every order
    return scores.masked_fill(~valid, pl.PAD_SCORE), valid


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 50.0])
def test_values_and_gradients_match_logcumsumexp(scale):
    placed, valid = padded(scale)
    weights = torch.rand(placed.shape, generator=torch.Generator().manual_seed(1)) * valid
    x, y = placed.clone().requires_grad_(), placed.clone().requires_grad_()
    fast, exact = pl.tail_logsumexp(x, valid), reference(y)
    tolerance = 2e-6 * max(1.0, scale)
    assert torch.allclose(fast[valid], exact[valid], atol=tolerance, rtol=0)
    (fast * weights).sum().backward()
    (exact * weights).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.allclose(x.grad, y.grad, atol=1e-5, rtol=1e-5)


def test_the_last_real_step_is_the_score_itself():
    placed, valid = padded(3.0)
    tail = pl.tail_logsumexp(placed, valid)
    assert torch.allclose(tail[..., 14], placed[..., 14], atol=1e-6)  # log exp(x) of the last real item


def test_a_spread_too_wide_for_the_shift_takes_the_exact_path(monkeypatch):
    placed = torch.tensor([[0.0, -700.0, -705.0]])  # exp(-700) underflows the float64 shift's smallest terms
    valid = torch.ones_like(placed, dtype=torch.bool)
    out = pl.tail_logsumexp(placed, valid)
    assert torch.allclose(out, reference(placed))
    assert out[0, 2] == pytest.approx(-705.0)
    calls = []
    monkeypatch.setattr(pl.torch, "logcumsumexp", lambda *a, **k: calls.append(1) or torch.zeros(1, 3))
    pl.tail_logsumexp(placed, valid)
    pl.tail_logsumexp(placed / 10, valid)  # 70 nats: the fast path
    assert calls == [1]


def test_step_logprobs_sum_to_the_plackett_luce_likelihood():
    scores = torch.tensor([[2.0, 0.5, -1.0]])
    orders = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    logp = pl.step_logprobs(scores, orders).sum(-1)
    e = scores.exp()[0]
    first = torch.log(e[0] / e.sum()) + torch.log(e[1] / (e[1] + e[2]))
    second = torch.log(e[2] / e.sum()) + torch.log(e[1] / (e[1] + e[0]))
    assert torch.allclose(logp[0], torch.stack([first, second]), atol=1e-6)


def test_lists_without_items_give_an_empty_normaliser():
    for shape in ((3, 0), (0, 5)):
        out = pl.tail_logsumexp(torch.zeros(shape), torch.zeros(shape, dtype=torch.bool))
        assert out.shape == shape
