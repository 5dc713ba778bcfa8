"""What is special about the calibration learners: the serving API, the baselines, the context, bad config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression

from contracts.learner import Calibrator
from learners.calibration.baselines import pool_adjacent_violators
from learners.calibration.context import ContextEncoder, stable_bucket
from learners.calibration.binning_learner import build_isotonic
from learners.calibration.learner import build_platt, build_umnn
from simulator.examples import simulated_examples


@pytest.fixture(scope="module")
def examples():
    return simulated_examples(60, seed=4)


SMALL = {"steps": 16, "context_hidden": (32, 32), "integrand_hidden": (16, 16)}  # same code, faster


@pytest.mark.parametrize("factory", [lambda: build_umnn(**SMALL), build_platt, build_isotonic],
                         ids=["umnn", "platt", "isotonic"])
def test_calibrate_is_monotone_per_context_and_passes_unknown_tasks_through(factory, examples):
    learner = factory()
    assert isinstance(learner, Calibrator)
    for i in range(0, 60, 20):
        learner.learn_many(examples[i:i + 20])
    raw = torch.linspace(0.001, 0.999, 50)
    for position in (1, 3):
        out = learner.calibrate({"click": raw, "watch_time": raw},
                                {"position": [position] * 50, "item": ["doc-7"] * 50, "user": "u1"})
        assert torch.equal(out["watch_time"], raw)
        assert out["click"].shape == (50,) and torch.all((out["click"] >= 0) & (out["click"] <= 1))
        assert torch.all(out["click"][1:] >= out["click"][:-1])


def test_umnn_uses_the_context_and_learns_a_position_effect(examples):
    learner = build_umnn(lr=0.05, tasks=("click",), context_fields=("position",), **SMALL)
    for _ in range(8):
        for i in range(0, 60, 20):
            learner.learn_many(examples[i:i + 20])
    raw = torch.full((2,), 0.3)
    out = learner.calibrate({"click": raw}, {"position": [1, 8]})["click"]
    assert float(out[0]) > float(out[1])  # the simulator's position-based click model: top slots click more


def test_pav_equals_sklearn_isotonic_regression():
    rng = np.random.default_rng(1)
    values, weights = rng.random(40), rng.random(40) + 0.1
    ours = pool_adjacent_violators(values, weights)
    ref = IsotonicRegression().fit(np.arange(40), values, sample_weight=weights).predict(np.arange(40))
    assert np.allclose(ours, ref)


def test_hash_buckets_are_stable_and_the_encoder_broadcasts_request_fields():
    assert stable_bucket("item", "doc-1", 1024) == stable_bucket("item", "doc-1", 1024)
    enc = ContextEncoder(("position", "user"), buckets=64, dim=4)
    idx = enc.indices({"position": [1, 2, 3], "user": "u"}, 3)
    assert idx.shape == (3, 2) and len(set(idx[:, 1].tolist())) == 1 and torch.all(idx[:, 1] >= 64)
    with pytest.raises(ValueError, match="position"):
        enc.indices({"position": [1, 2]}, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ("watch_time",)}, "binary labels"),
    ({"steps": 7}, "even"),
    ({"lr": 0.0}, "lr"),
    ({"sc_beta": 1.5}, "beta"),
    ({"no_such_setting": 1}, "unknown calibration settings"),
])
def test_bad_configuration_is_refused_with_the_setting_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_umnn(**kwargs)


def test_a_checkpoint_of_another_configuration_is_refused(examples):
    a = build_umnn(steps=10)
    a.learn_many(examples[:5])
    with pytest.raises(ValueError, match="config differs"):
        build_umnn(steps=12).load_state_dict(a.state_dict())


def test_the_scloss_term_reaches_the_gradient_with_its_weight():
    """UMC's objective is BCE + lambda * SCLoss: the update's gradient is the BCE gradient plus
    lambda times the SCLoss gradient, and the reported loss is that sum (so umnn_scloss is not umnn)."""
    gen = torch.Generator().manual_seed(3)
    n = 256
    logit = torch.randn(n, generator=gen)
    y = (torch.rand(n, generator=gen) < torch.sigmoid(logit + 0.8)).float()  # miscalibrated on purpose
    positions = torch.randint(1, 6, (n,), generator=gen).tolist()

    def learner(weight: float):
        return build_umnn(tasks=("click",), context_fields=("position",), sc_weight=weight, seed=0, **SMALL)

    def grads(module) -> torch.Tensor:
        return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                          for p in module.parameters()])

    with_sc, without = learner(0.5), learner(0.0)
    index = with_sc.encoder.indices({"position": positions}, n)
    metrics = with_sc.update_tensors({"click": (logit, y, index)})
    assert metrics["click.sc"] > 0
    assert metrics["loss"] == pytest.approx(metrics["click.bce"] + 0.5 * metrics["click.sc"], rel=1e-6)
    with_sc_grad = grads(with_sc.module)
    without.update_tensors({"click": (logit, y, index)})
    bce_grad = grads(without.module)

    alone = learner(0.5)
    z = alone.forward_rows("click", logit, index)
    alone.sc_losses["click"](torch.sigmoid(z), y).backward()
    sc_grad = grads(alone.module)
    assert sc_grad.abs().max() > 0
    assert torch.allclose(with_sc_grad, bce_grad + 0.5 * sc_grad, atol=1e-6, rtol=1e-4)
