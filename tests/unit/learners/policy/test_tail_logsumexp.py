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


def _no_exact_path(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the exact path was taken")

    monkeypatch.setattr(pl.torch, "logcumsumexp", refuse)


def test_each_list_is_shifted_by_its_own_scores_whatever_the_others_in_the_batch(monkeypatch):
    """A list's normaliser is the same alone or beside a list 700 nats lower: the shift and the spread are
    per list (a batch-wide maximum or minimum would send both to the exact path, or shift one list by the
    other's maximum)."""
    high = torch.tensor([[3.0, 1.5, 2.0, -1.0]])
    low = torch.tensor([[-700.0, -702.0, -699.5, -701.0]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    alone, expected_low = pl.tail_logsumexp(high, valid), reference(low)
    _no_exact_path(monkeypatch)
    both = pl.tail_logsumexp(torch.cat([high, low]), torch.ones(2, 4, dtype=torch.bool))
    assert torch.equal(both[:1], alone)
    assert torch.allclose(both[1:], expected_low, atol=1e-4, rtol=0)


def test_a_spread_of_exactly_the_limit_still_takes_the_fast_path(monkeypatch):
    placed = torch.tensor([[0.0, -pl.SPREAD, -1.0]], dtype=torch.float64)
    expected = reference(placed)
    _no_exact_path(monkeypatch)
    assert torch.allclose(pl.tail_logsumexp(placed, torch.ones_like(placed, dtype=torch.bool)), expected)


def test_the_exact_path_reduces_along_the_last_dimension_of_sampled_orders():
    """[B, G, n] with a spread past the limit: every order's own tail sums, not sums across orders."""
    g = torch.Generator().manual_seed(3)
    placed = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    placed[0, 1, 2] = -800.0
    out = pl.tail_logsumexp(placed, torch.ones_like(placed, dtype=torch.bool))
    by_hand = torch.stack([torch.stack([torch.stack([torch.logsumexp(placed[b, i, k:], 0) for k in range(4)])
                                        for i in range(3)]) for b in range(2)])
    assert torch.allclose(out, by_hand, atol=1e-12, rtol=0)


def test_a_ranks_sample_is_its_rows_of_the_union_batchs_draw():
    """rows=(offset, total): the noise of the whole union batch is drawn and this rank's rows are used,
    so the ranks of a data-parallel update sample what one process would have sampled."""
    scores = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    union = pl.gumbel_max_sample(scores, 4, generator=torch.Generator().manual_seed(9))
    part = pl.gumbel_max_sample(scores[2:4], 4, generator=torch.Generator().manual_seed(9), rows=(2, 5))
    assert part.shape == (2, 4, 6)
    assert torch.equal(part, union[2:4])
    assert not torch.equal(part, union[0:2])


@pytest.mark.parametrize("u, order", [(0.0, [1, 0]), (1.0, [1, 0])])
def test_uniform_draws_of_exactly_0_or_1_still_give_finite_noise(monkeypatch, u, order):
    """Clamped to [1e-20, 1 - 1e-7]: the Gumbel noise of such a draw is finite, so the scores still order
    the items (infinite noise would tie them and leave the index order)."""
    monkeypatch.setattr(pl.torch, "rand", lambda shape, generator=None, dtype=None: torch.full(shape, u, dtype=dtype))
    scores = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert pl.gumbel_max_sample(scores, 1)[0, 0].tolist() == order
