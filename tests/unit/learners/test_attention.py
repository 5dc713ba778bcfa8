"""learners.attention.self_attention computes what nn.MultiheadAttention computes (outputs and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learners.attention import covered, self_attention


def padded_batch(batch: int, n: int, embed: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, embed, generator=g)
    lengths = torch.randint(1, n + 1, (batch,), generator=g)
    lengths[0] = n  # one full list, the others padded at the end
    pad = torch.arange(n).unsqueeze(0) >= lengths.unsqueeze(1)
    return x, pad


@pytest.mark.parametrize("batch,n,embed,heads", [(1, 50, 32, 2), (5, 17, 32, 2), (4, 3, 16, 2), (3, 9, 24, 4)])
@pytest.mark.parametrize("with_mask", [True, False])
def test_outputs_and_gradients_match_the_module(batch, n, embed, heads, with_mask):
    torch.manual_seed(batch * 100 + n)
    attn = nn.MultiheadAttention(embed, heads, batch_first=True)
    x, pad = padded_batch(batch, n, embed, seed=n)
    mask = pad if with_mask else None
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    want = attn(x1, x1, x1, key_padding_mask=mask, need_weights=False)[0]
    got = self_attention(attn, x2, key_padding_mask=mask)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    weight = torch.randn_like(want)
    grads_want = torch.autograd.grad((want * weight).sum(), [x1, *attn.parameters()])
    grads_got = torch.autograd.grad((got * weight).sum(), [x2, *attn.parameters()])
    for a, b in zip(grads_got, grads_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_padded_keys_do_not_change_a_lists_output():
    """A list's outputs are the same whatever sits in the padded slots behind it."""
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(32, 2, batch_first=True)
    x, _ = padded_batch(1, 12, 32, seed=1)
    pad = torch.zeros(1, 12, dtype=torch.bool)
    pad[0, 8:] = True
    noisy = x.clone()
    noisy[0, 8:] = 1e3 * torch.randn(4, 32)
    with torch.no_grad():
        a = self_attention(attn, x, key_padding_mask=pad)[0, :8]
        b = self_attention(attn, noisy, key_padding_mask=pad)[0, :8]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_modules_it_does_not_cover_use_the_module_call():
    dropout = nn.MultiheadAttention(16, 2, batch_first=True, dropout=0.5)
    seq_first = nn.MultiheadAttention(16, 2)
    kv = nn.MultiheadAttention(16, 2, batch_first=True, kdim=8, vdim=8)
    assert covered(nn.MultiheadAttention(16, 2, batch_first=True))
    assert not covered(dropout) and not covered(seq_first) and not covered(kv)
    dropout.eval()  # no dropout at eval: the module's own output is then deterministic
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(self_attention(dropout, x), dropout(x, x, x, need_weights=False)[0])
