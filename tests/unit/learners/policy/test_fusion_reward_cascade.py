"""DRPO's item-level cascade reward model: the item labels reach it (batch paths and the update),
its cascade is the DBN expectation, and it learns per context which task predicts a satisfying click."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.fusion.context import context_dims, request_context
from learners.fusion.satisfaction_cascade import CascadeSatisfactionModel
from learners.ingest.lists import ListArrays
from learners.policy.batch import DEFAULT_TASKS, from_examples, from_request, stack_lists
from learners.policy.evaluation import labeled_example
from learners.policy.evaluation_fusion import FUSION_SETTINGS, context_request
from learners.registry import build_learner
from simulator.contextual import contextual_simulator


@pytest.fixture(scope="module")
def ctx_examples(letor, kuairand):
    sim = contextual_simulator(letor, kuairand, seed=4, namespace="cascade", max_candidates=12)
    return [labeled_example(sim, r, range(len(r.candidates)), source="logged") for r in sim.requests(24)]


# -- the item labels reach the reward model -------------------------------------------------------
def test_the_batch_carries_each_items_click_and_long_view_in_served_order(ctx_examples):
    lists = from_examples(ctx_examples, 300)
    assert lists.clicks.sum() > 0 and lists.long_views.sum() > 0
    for b, ex in enumerate(ctx_examples):
        by_position = sorted(ex.labels, key=lambda lab: lab.position)
        m = len(by_position)
        assert lists.clicks[b, :m].tolist() == [float(lab.click) for lab in by_position]
        assert lists.long_views[b, :m].tolist() == [float(lab.long_view) for lab in by_position]
        assert lists.clicks[b, m:].sum() == 0  # padding
    built = ListArrays(len(ctx_examples), 300, DEFAULT_TASKS)
    for ex in reversed(ctx_examples):
        built.add(ex)
    arrays = built.take()
    assert torch.equal(arrays.clicks.flip(0), lists.clicks) and torch.equal(arrays.long_views.flip(0), lists.long_views)
    both = stack_lists([from_examples(ctx_examples[:2], 300), from_examples(ctx_examples[2:5], 300)])
    assert torch.equal(both.clicks[:5, : lists.clicks.shape[1]], lists.clicks[:5])


def test_a_serving_request_has_no_labels(ctx_examples, letor, kuairand):
    sim = contextual_simulator(letor, kuairand, seed=4, namespace="cascade", max_candidates=12)
    lists = from_request(context_request(sim.request(0, 0.0)), 300)
    assert lists.clicks.sum() == 0 and lists.long_views.sum() == 0


def test_the_update_learns_from_the_long_view_labels(ctx_examples):
    flipped = []
    for ex in ctx_examples:
        labels = [lab.model_copy(update={"long_view": lab.click - lab.long_view}) for lab in ex.labels]
        flipped.append(ex.model_copy(update={"labels": labels}))
    states = []
    for batch in (ctx_examples, flipped):
        learner = build_learner("drpo", n_features=300, seed=0, **FUSION_SETTINGS)
        learner.learn_many(batch)
        states.append(learner.satisfaction.satisfy[-1].bias.detach().clone())
    assert not torch.allclose(states[0], states[1])  # same lists, same query rewards: only the item labels differ


def test_the_cascade_model_refuses_a_loss_without_item_labels():
    model = CascadeSatisfactionModel(3, context_dims(3, True))
    logits, mask = torch.randn(2, 4, 3), torch.ones(2, 4, dtype=torch.bool)
    ctx = request_context(logits, mask, torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="item labels"):
        model.loss(torch.zeros(2, 4, 0), logits, mask, ctx, torch.ones(2))


# -- the cascade is the DBN expectation -----------------------------------------------------------
def _brute_force(e: np.ndarray, s: np.ndarray, gamma: float, partial: float) -> float:
    """Enumerate every path of a top-down scan: no click, a satisfying click (worth 1, stop), an
    unsatisfying click then abandon (worth 0, stop) or go on; the end of the list is worth
    ``partial`` after a click."""
    def go(k: int, clicked: bool, p: float) -> float:
        if k == len(e):
            return p * (partial if clicked else 0.0)
        return (go(k + 1, clicked, p * (1 - e[k])) + p * e[k] * s[k]
                + go(k + 1, True, p * e[k] * (1 - s[k]) * (1 - gamma)))

    return go(0, False, 1.0)


def test_the_cascade_value_equals_the_enumerated_expectation():
    torch.manual_seed(0)
    model = CascadeSatisfactionModel(3, 4, positions=3)
    n = 3
    click, satisfy = torch.randn(1, n), torch.randn(1, n)
    gamma = torch.tensor([0.35])
    order = torch.tensor([[[2, 0, 1]]])
    with torch.no_grad():
        value, searching = model._cascade(click, satisfy, torch.ones(1, n, dtype=torch.bool), gamma, order)
    exam = torch.sigmoid(model.examination[:n]).detach().numpy()
    c, s = torch.sigmoid(click)[0].numpy()[[2, 0, 1]], torch.sigmoid(satisfy)[0].numpy()[[2, 0, 1]]
    e = exam * c
    satisfied = _brute_force(e, s, 0.35, 0.0)
    with_partial = _brute_force(e, s, 0.35, 1.0)
    assert float(value) == pytest.approx(satisfied, abs=1e-5)
    assert float(searching) == pytest.approx(with_partial - satisfied, abs=1e-5)


# -- it learns which task predicts a satisfying click, per context ---------------------------------
def test_learns_from_item_labels_which_task_satisfies_in_which_context():
    """Query type 1: items satisfy by task 0; type 2: by task 2. Clicks follow task 1 everywhere."""
    gen = torch.Generator().manual_seed(0)
    B, n = 512, 8
    logits = torch.randn(B, n, 3, generator=gen) * 2
    mask = torch.ones(B, n, dtype=torch.bool)
    qtype = 1 + torch.randint(0, 2, (B,), generator=gen)
    ctx = request_context(logits, mask, torch.zeros(B, dtype=torch.long), qtype)
    task = torch.where(qtype == 1, 0, 2)
    p_sat = torch.sigmoid(2 * logits[torch.arange(B), :, task])  # [B, n]
    exam = 1.0 / torch.arange(1, n + 1)
    clicks = (torch.rand(B, n, generator=gen) < exam * torch.sigmoid(logits[..., 1])).float()
    long_views = clicks * (torch.rand(B, n, generator=gen) < p_sat).float()
    target = (long_views.sum(1) > 0).float()
    torch.manual_seed(0)
    model = CascadeSatisfactionModel(3, ctx.shape[-1], hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    features = torch.zeros(B, n, 0)
    for _ in range(200):
        loss = model.loss(features, logits, mask, ctx, target, clicks, long_views)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, satisfy = model.item_logits(logits, ctx)
        for qt, right, wrong in ((1, 0, 2), (2, 2, 0)):
            rows = qtype == qt
            corr = torch.corrcoef(torch.stack([satisfy[rows].flatten(), logits[rows][..., right].flatten(),
                                               logits[rows][..., wrong].flatten()]))
            assert corr[0, 1] > 0.9 and abs(float(corr[0, 2])) < 0.2  # the satisfying task, per context
        by_task0 = torch.argsort(logits[..., 0], -1, descending=True)
        by_task2 = torch.argsort(logits[..., 2], -1, descending=True)
        scores = model.logits(features, logits, mask, ctx, torch.stack([by_task0, by_task2], 1))
    gap = scores[:, 0] - scores[:, 1]  # ranking by task 0 rather than task 2
    assert gap[qtype == 1].mean() > 0 > gap[qtype == 2].mean()
