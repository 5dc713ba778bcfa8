"""The calibration learner's online-SGD options: Polyak/EMA averaging, the lr schedule, passes per batch.

Each test checks the mechanism against its formula (learners/calibration/learner.py's docstring), so a
wrong decay, a schedule off by one step, predictions from the wrong weights or a lost state fail here.
"""

from __future__ import annotations

import math

import pytest
import torch

from learners.calibration.evaluation import method_factories
from learners.calibration.config import CalibrationConfig, average_decay
from learners.calibration.learner import build_umnn
from simulator.examples import simulated_examples

SMALL = {"steps": 16, "context_hidden": (32, 32), "integrand_hidden": (16, 16), "tasks": ("click",),
         "context_fields": ("position",), "lr": 0.05}


@pytest.fixture(scope="module")
def examples():
    return simulated_examples(60, seed=4)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _context(n: int) -> dict:
    return {"position": [1 + i % 5 for i in range(n)]}


def test_the_average_is_the_ema_of_the_iterates_with_the_ramped_decay(examples):
    learner = build_umnn(average=0.6, **SMALL)
    manual = _params(learner.module)  # the average starts at the initial weights
    for step, i in enumerate(range(0, 60, 10), start=1):
        learner.learn_many(examples[i:i + 10])
        d = min(0.6, (1 + step) / (10 + step))
        assert average_decay(0.6, step) == pytest.approx(d)
        manual = [d * a + (1 - d) * p for a, p in zip(manual, _params(learner.module))]
    assert learner.optimizer_steps == 6
    for avg, ref, trained in zip(learner.average_module.parameters(), manual, learner.module.parameters()):
        assert torch.allclose(avg, ref, atol=1e-6)
    assert any(not torch.allclose(a, t) for a, t in zip(learner.average_module.parameters(),
                                                        learner.module.parameters()))


def test_predictions_and_serving_use_the_averaged_weights(examples):
    averaged = build_umnn(average=0.6, **SMALL)
    for i in range(0, 60, 10):
        averaged.learn_many(examples[i:i + 10])
    twin = build_umnn(**SMALL)  # no averaging: predicts with its module, which gets the average's weights
    twin.module.load_state_dict(averaged.average_module.state_dict())
    raw = torch.linspace(0.01, 0.9, 20)
    ours = averaged.calibrate({"click": raw}, _context(20))["click"]
    assert torch.allclose(ours, twin.calibrate({"click": raw}, _context(20))["click"], atol=1e-5)
    batch = examples[:10]
    assert torch.allclose(averaged.score(batch)["click"], twin.score(batch)["click"], atol=1e-6)
    last_iterate = build_umnn(**SMALL)
    last_iterate.module.load_state_dict(averaged.module.state_dict())
    assert not torch.allclose(ours, last_iterate.calibrate({"click": raw}, _context(20))["click"], atol=1e-4)


def test_without_averaging_the_trained_weights_predict(examples):
    learner = build_umnn(**SMALL)
    learner.learn_many(examples[:10])
    assert learner.average_module is None and learner.predictor is learner.module


def test_the_inverse_sqrt_schedule_warms_up_then_decays_and_reaches_the_optimizer():
    config = CalibrationConfig(lr=1.0, lr_schedule="inv_sqrt", lr_warmup=4)
    assert [config.lr_at(t) for t in (1, 2, 4, 16, 64)] == pytest.approx([0.25, 0.5, 1.0, 0.5, 0.25])
    assert CalibrationConfig(lr=0.3).lr_at(1000) == 0.3
    learner = build_umnn(**{**SMALL, "lr": 0.04}, lr_schedule="inv_sqrt", lr_warmup=3)
    batch = simulated_examples(5, seed=1)
    seen = []
    for _ in range(5):
        learner.learn_many(batch)
        seen.append(learner.optimizer.param_groups[0]["lr"])  # the lr of the step just taken
    assert seen == pytest.approx([0.04 * min(t / 3, math.sqrt(3 / t)) for t in range(1, 6)])


def test_passes_take_that_many_steps_on_the_batch(examples):
    twice = build_umnn(passes=2, **SMALL)
    once = build_umnn(**SMALL)
    for i in range(0, 30, 10):
        twice.learn_many(examples[i:i + 10])
        once.learn_many(examples[i:i + 10])
        once.learn_many(examples[i:i + 10])
    assert twice.updates == 3 and twice.optimizer_steps == 6 and once.optimizer_steps == 6
    for a, b in zip(twice.module.parameters(), once.module.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_checkpoint_keeps_the_average_and_the_step_count(examples):
    a = build_umnn(average=0.6, lr_schedule="inv_sqrt", lr_warmup=2, **SMALL)
    for i in range(0, 30, 10):
        a.learn_many(examples[i:i + 10])
    b = build_umnn(average=0.6, lr_schedule="inv_sqrt", lr_warmup=2, **SMALL)
    b.load_state_dict(a.state_dict())
    assert b.optimizer_steps == 3
    for x, y in zip(a.average_module.parameters(), b.average_module.parameters()):
        assert torch.equal(x, y)
    for learner in (a, b):
        learner.learn_many(examples[30:40])
    raw = torch.linspace(0.01, 0.9, 10)
    assert torch.equal(a.calibrate({"click": raw}, _context(10))["click"],
                       b.calibrate({"click": raw}, _context(10))["click"])


def test_a_checkpoint_from_before_these_settings_still_loads(examples):
    old = build_umnn(**SMALL)
    old.learn_many(examples[:10])
    state = old.state_dict()
    for key in ("average", "lr_schedule", "lr_warmup", "passes"):
        state.meta["config"].pop(key, None)  # left out at their defaults anyway (as_json)
    del state.meta["counters"]["optimizer_steps"]
    new = build_umnn(**SMALL)
    new.load_state_dict(state)
    assert new.optimizer_steps == 1  # read from the update count (one step per update before ``passes``)
    with pytest.raises(ValueError, match="config differs"):
        build_umnn(average=0.5, **SMALL).load_state_dict(state)


@pytest.mark.parametrize("kwargs, message", [
    ({"average": 1.0}, "average"),
    ({"lr_schedule": "cosine"}, "lr_schedule"),
    ({"lr_warmup": 0}, "lr_warmup"),
    ({"passes": 0}, "passes"),
])
def test_bad_online_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_umnn(**kwargs)


def test_the_benchmark_settings_reach_the_umnn_variants_only():
    made = {name: make() for name, make in method_factories(1e-2, ("position",), 0,
                                                             {"average": 0.9, "sc_weight": 0.5}).items()}
    assert made["umnn_scloss"].config.average == 0.9 and made["umnn_scloss"].config.sc_weight == 0.5
    assert made["umnn_scloss@fixed_bins"].config.sc_weight == 0.5
    assert made["umnn"].config.average == 0.9 and made["umnn"].config.sc_weight == 0.0
    assert made["platt"].config.average == 0.0 and made["isotonic"].config.average == 0.0


def test_snapshot_config_leaves_out_the_online_sgd_settings_at_their_defaults():
    """A server of an older release (no such settings) must still load a snapshot that does not use them."""
    plain = CalibrationConfig().as_json()
    assert not {"average", "lr_schedule", "lr_warmup", "passes"} & set(plain)
    used = CalibrationConfig(average=0.99, passes=2).as_json()
    assert used["average"] == 0.99 and used["passes"] == 2 and "lr_schedule" not in used
    assert CalibrationConfig.from_kwargs(**used) == CalibrationConfig(average=0.99, passes=2)
    learner = build_umnn(average=0.99)
    restored = build_umnn(average=0.99)
    restored.load_state_dict(learner.state_dict())  # the meta round-trips
    with pytest.raises(ValueError, match="config differs"):
        build_umnn().load_state_dict(learner.state_dict())
    named = build_umnn().state_dict()
    named.meta["config"].update(average=0.0, passes=1)  # a default written out (older writers did)
    build_umnn().load_state_dict(named)
