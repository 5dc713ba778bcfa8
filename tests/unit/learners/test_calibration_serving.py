"""The UMNN calibrator's serving path (learners.calibration.batched): the bound against the full model,
calibrate_many, following new weights, and that the batched path really is the one that serves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import learners.calibration.batched as batched_module
from learners.calibration.batched import StackedUMNN
from learners.calibration.binning_learner import build_isotonic
from learners.calibration.learner import NeuralCalibrationLearner, build_platt, build_umnn
from learners.calibration.umnn import UMNNCalibrator
from simulator.examples import simulated_examples

TASKS = ("click", "long_view", "like")


@pytest.fixture(scope="module")
def examples():
    return simulated_examples(80, seed=7)


def umc_init(learner: NeuralCalibrationLearner, seed: int) -> None:
    """UMC's random initialisation of the last layers (not the identity start): a curved integrand."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in learner.module["heads"].values():
            for last in (head.integrand.rest[-1], head.context_net[-1]):
                std = nn.init.calculate_gain("relu") * (2.0 / sum(last.weight.shape)) ** 0.5
                last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * std)


def trained(examples, seed: int = 0, steps: int = 12, start: str = "identity", **config) -> NeuralCalibrationLearner:
    """A few learning steps from the identity start (the default) or from UMC's random one."""
    learner = build_umnn(tasks=TASKS, lr=5e-3, seed=seed, **config)
    if start == "umc":
        umc_init(learner, seed)
    for k in range(steps):
        first = (k * 20) % len(examples)
        learner.learn_many(examples[first:first + 20])
    return learner


def full_model(learner: NeuralCalibrationLearner, task_scores: dict, context: dict) -> dict[str, torch.Tensor]:
    learner.serving_fast = False
    try:
        return learner.calibrate(task_scores, context)
    finally:
        learner.serving_fast = True


def held_out_request(n: int, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Contexts no training example had (fresh item/user ids, positions up to 500) and extreme scores."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.rand(n, generator=gen, dtype=torch.float64)
    extremes = torch.tensor([0.0, 1.0, 1e-9, 1 - 1e-9, 1e-6, 1 - 1e-6, 0.5], dtype=torch.float64)
    raw[:min(n, len(extremes))] = extremes[:n]
    scores = {task: raw[torch.randperm(n, generator=gen)] for task in TASKS}
    scores["watch_time"] = torch.rand(n, generator=gen, dtype=torch.float64)
    context = {"position": torch.randint(1, 500, (n,), generator=gen).tolist(),
               "item": [f"held-out-item-{seed}-{k}" for k in range(n)], "user": f"held-out-user-{seed}"}
    return scores, context


@pytest.fixture(scope="module")
def models(examples):
    """Three integrands: trained from the identity start (the default), from UMC's start, perturbed."""
    perturbed = trained(examples, seed=0, steps=10)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():  # every weight moved: an integrand far from the identity start
        for p in perturbed.module["heads"].parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return {"identity start": trained(examples, seed=0, steps=10),
            "umc start": trained(examples, seed=0, steps=10, start="umc"), "perturbed": perturbed}


@pytest.mark.parametrize("n", [1, 50, 200])
@pytest.mark.parametrize("model", ["identity start", "umc start", "perturbed"])
def test_served_probabilities_are_within_1e_4_of_the_full_model_on_held_out_contexts(models, n, model):
    learner = models[model]
    worst = 0.0
    for seed in range(4):
        scores, context = held_out_request(n, seed=100 + seed)
        served = learner.calibrate(scores, context)
        full = full_model(learner, scores, context)
        assert torch.equal(served["watch_time"], full["watch_time"])  # not calibrated: passed through
        for task in TASKS:
            assert served[task].shape == (n,)
            worst = max(worst, float((served[task] - full[task]).abs().max()))
    assert worst <= 1e-4


def test_the_batched_heads_at_the_full_node_count_are_the_modules():
    torch.manual_seed(0)
    for context_dim, hidden in [(24, (50, 50)), (0, (16, 16)), (6, (8, 12, 8))]:
        heads = [UMNNCalibrator(context_dim, hidden, (20, 20), steps=20, identity_init=False) for _ in range(3)]
        stacked = StackedUMNN(heads)
        logits = torch.randn(3, 40) * 5
        h = torch.randn(40, context_dim)
        with torch.no_grad():
            expected = torch.stack([head(logits[k], h) for k, head in enumerate(heads)])
        assert torch.allclose(stacked(logits, h), expected, atol=1e-5, rtol=1e-5)


def test_calibrate_many_equals_calibrate_of_each_request(examples):
    learner = trained(examples, steps=4, start="umc")
    items = []
    for k, n in enumerate([1, 7, 50, 3, 50]):
        scores, context = held_out_request(n, seed=k)
        items.append((scores, context))
    del items[1][0]["like"]  # a request without one task
    items[3][0]["click"] = torch.tensor([], dtype=torch.float64)  # an empty task
    items[3][0]["long_view"] = torch.rand(5, dtype=torch.float64)  # another length than its context
    items[3][1]["item"] = "one-item-for-all"
    items[3][1]["position"] = 2
    items[4][1]["extra_field"] = "ignored"
    many = learner.calibrate_many(items)
    assert len(many) == len(items)
    for (scores, context), got in zip(items, many):
        one = learner.calibrate(scores, context)
        assert list(got) == list(one) == list(scores)
        for task in one:
            assert got[task].shape == one[task].shape
            assert torch.allclose(got[task], one[task], atol=1e-6, rtol=0), task
    assert learner.calibrate_many([]) == []


def test_a_bad_request_in_a_batch_is_named():
    learner = build_umnn(tasks=TASKS)
    good = ({"click": torch.rand(3)}, {"item": ["a", "b", "c"], "position": [1, 2, 3], "user": "u"})
    bad = ({"click": torch.rand(3)}, {"item": ["a", "b"], "position": [1, 2, 3], "user": "u"})
    with pytest.raises(ValueError, match=r"request 1: context field 'item' has 2 values for 3 rows"):
        learner.calibrate_many([good, bad])
    assert len(learner.calibrate_many([good, good])) == 2  # nothing else lost
    with pytest.raises(ValueError, match=r"^context field 'item' has 2 values for 3 rows$"):
        learner.calibrate(*bad)  # one request: the message calibrate always gave


@pytest.mark.parametrize("factory", [build_platt, build_isotonic], ids=["platt", "isotonic"])
def test_the_baselines_calibrate_many_by_calibrate(factory, examples):
    learner = factory(tasks=TASKS)
    learner.learn_many(examples[:40])
    items = [held_out_request(n, seed=n) for n in (4, 9)]
    for (scores, context), got in zip(items, learner.calibrate_many(items)):
        one = learner.calibrate(scores, context)
        assert all(torch.equal(got[t], one[t]) for t in one)


def test_the_served_model_follows_each_loaded_snapshot_and_each_learning_step(examples, monkeypatch):
    first, second = trained(examples, steps=4), trained(examples, steps=4, start="umc")
    scores, context = held_out_request(50, seed=5)
    serving = build_umnn(tasks=TASKS, lr=5e-3)
    stackings = []
    monkeypatch.setattr(batched_module, "StackedUMNN",
                        lambda heads, steps=None: stackings.append(1) or StackedUMNN(heads, steps))
    for k, source in enumerate((first, second, first)):
        serving.load_state_dict(source.state_dict())
        assert len(stackings) == k + 1  # stacked by the load (the swap), not by the first request
        served = serving.calibrate(scores, context)
        serving.calibrate_many([(scores, context)] * 2)
        assert len(stackings) == k + 1
        expected = full_model(source, scores, context)
        assert all(float((served[t] - expected[t]).abs().max()) <= 1e-4 for t in TASKS)
    other = full_model(second, scores, context)
    assert max(float((served[t] - other[t]).abs().max()) for t in TASKS) > 1e-3  # the snapshots differ
    before = serving.calibrate(scores, context)
    serving.learn_many(examples[:20])  # weights change in place: the batched copy must follow
    after, full = serving.calibrate(scores, context), full_model(serving, scores, context)
    assert all(float((after[t] - full[t]).abs().max()) <= 1e-4 for t in TASKS)
    assert max(float((after[t] - before[t]).abs().max()) for t in ("click", "long_view")) > 1e-6
    assert len(stackings) == 4


def test_the_batched_path_serves_and_not_the_modules(examples, monkeypatch):
    learner = trained(examples, steps=4)
    scores, context = held_out_request(20, seed=9)
    before = learner.calibrate(scores, context)
    calls = []
    original = UMNNCalibrator.forward
    monkeypatch.setattr(UMNNCalibrator, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    with torch.no_grad():  # a deliberate change of one weight: the served output must move with it
        learner.module["heads"]["like"].offset.add_(0.5)
    after = learner.calibrate(scores, context)
    learner.calibrate_many([(scores, context)] * 3)
    assert calls == []
    assert torch.equal(after["click"], before["click"])
    assert torch.all(after["like"] >= before["like"])  # a higher offset: higher p everywhere
    assert float((after["like"] - before["like"]).max()) > 1e-2
    full_model(learner, scores, context)
    assert len(calls) == len(TASKS)  # the reference path does run the modules (the patch is live)
