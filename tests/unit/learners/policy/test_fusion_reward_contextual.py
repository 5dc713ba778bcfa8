"""DRPO's context-weighted satisfaction model: it learns a trade-off that flips with the context,
the order enters only through the list-centred proxies, and the config names it."""

from __future__ import annotations

import pytest
import torch

from learners.fusion.context import context_dims, request_context
from learners.fusion.satisfaction import REWARD_MODELS, satisfaction_model
from learners.fusion.satisfaction_contextual import ContextualSatisfactionModel
from learners.registry import build_learner


def toy(B: int = 512, n: int = 8, seed: int = 0):
    """Lists whose satisfaction is the top item's task-0 score for query type 1 and its task-2 score for type 2."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, n, 3, generator=gen)
    mask = torch.ones(B, n, dtype=torch.bool)
    qtype = 1 + torch.randint(0, 2, (B,), generator=gen)
    ctx = request_context(logits, mask, torch.zeros(B, dtype=torch.long), qtype)
    task = torch.where(qtype == 1, 0, 2)
    target = torch.sigmoid(2 * logits[torch.arange(B), 0, task])  # the served order is the index order
    return logits, mask, ctx, qtype, target


def test_learns_a_trade_off_that_flips_with_the_query_type():
    logits, mask, ctx, qtype, target = toy()
    torch.manual_seed(0)
    model = ContextualSatisfactionModel(3, context_dims(3, True), hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    features = torch.zeros(*mask.shape, 0)
    for _ in range(300):
        loss = model.loss(features, logits, mask, ctx, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    by_task0 = torch.argsort(logits[..., 0], -1, descending=True)
    by_task2 = torch.argsort(logits[..., 2], -1, descending=True)
    scores = model.logits(features, logits, mask, ctx, torch.stack([by_task0, by_task2], 1)).detach()
    prefers_task0 = scores[:, 0] > scores[:, 1]
    assert prefers_task0[qtype == 1].float().mean() > 0.9
    assert (~prefers_task0[qtype == 2]).float().mean() > 0.9


def test_the_order_matters_only_through_the_proxies():
    logits, mask, ctx, _, _ = toy(B=4)
    model = ContextualSatisfactionModel(3, ctx.shape[-1])
    orders = torch.stack([torch.randperm(8) for _ in range(4 * 5)]).view(4, 5, 8)
    features = torch.zeros(4, 8, 0)
    assert model.logits(features, logits, mask, ctx, orders).shape == (4, 5)
    with torch.no_grad():
        model.weights[-1].weight.zero_()
        model.weights[-1].bias.zero_()
    flat = model.logits(features, logits, mask, ctx, orders)
    assert torch.allclose(flat, flat[:, :1].expand_as(flat))  # no proxy weights: every order scores alike
    with torch.no_grad():
        model.weights[-1].bias.fill_(1.0)
    varied = model.logits(features, logits, mask, ctx, orders)
    assert not torch.allclose(varied, varied[:, :1].expand_as(varied))


def test_the_config_chooses_the_reward_model_and_names_the_known_ones():
    assert REWARD_MODELS == ("pooled", "contextual", "cascade")
    learner = build_learner("drpo", n_features=300, reward_model="contextual", query_context=True)
    assert isinstance(learner.satisfaction, ContextualSatisfactionModel)
    assert not isinstance(build_learner("drpo", n_features=300).satisfaction, ContextualSatisfactionModel)
    with pytest.raises(ValueError, match="unknown reward_model 'mlp'; known: \\['pooled', 'contextual', 'cascade'\\]"):
        satisfaction_model("mlp", 300, 3, context_dims(3))
