"""The generic learner checks (River-style), run over every registered model.

Determinism given seed and order, bit-exact state round trip (and identical continuation
after it), finite metrics and state, no NaN on empty or one-item lists, and the runtime's
meta key accepted on load. Every registered name is checked; one whose module does not import
fails (``test_satisfies_the_protocol`` builds each one).
"""

from __future__ import annotations

import math

import pytest
import torch

from contracts.events import ItemLabels, LabeledList
from contracts.learner import RUNTIME_META_KEY, Learner, LearnerState
from learners.registry import build_learner, model_names
from learners.runtime.checkpoint import state_sha256
from simulator.examples import simulated_examples


MODELS = model_names()


@pytest.fixture(scope="module")
def batches() -> list[list[LabeledList]]:
    examples = simulated_examples(24, seed=9, max_candidates=6, with_features=True)
    return [examples[0:8], examples[8:16], examples[16:24]]


def one_item(example: LabeledList) -> LabeledList:
    imp = example.impression.model_copy(update={"items": example.impression.items[:1]})
    return example.model_copy(update={"impression": imp, "labels": [ItemLabels(**example.labels[0].model_dump())]})


def _finite_metrics(metrics: dict) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
    assert not bad, f"non-finite metrics {bad}"


def _finite_state(state: LearnerState) -> None:
    bad = [k for k, t in state.tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"non-finite state tensors {bad}"


def _equal_states(a: LearnerState, b: LearnerState) -> None:
    assert set(a.tensors) == set(b.tensors)
    different = [k for k in a.tensors if not torch.equal(a.tensors[k], b.tensors[k])]
    assert not different, f"tensors differ: {different[:5]}"
    assert a.meta == b.meta


@pytest.mark.parametrize("name", MODELS)
def test_satisfies_the_protocol(name):
    assert isinstance(build_learner(name), Learner)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_given_seed_and_order(name, batches):
    a, b = build_learner(name), build_learner(name)
    for batch in batches:
        _finite_metrics(a.learn_many(batch))
        b.learn_many(batch)
    assert state_sha256(a.state_dict()) == state_sha256(b.state_dict())


@pytest.mark.parametrize("name", MODELS)
def test_state_round_trip_is_bit_exact_and_continues_identically(name, batches):
    a = build_learner(name)
    for batch in batches[:2]:
        a.learn_many(batch)
    state = a.state_dict()
    _finite_state(state)
    b = build_learner(name)
    b.load_state_dict(LearnerState(tensors={k: v.clone() for k, v in state.tensors.items()}, meta=state.meta))
    _equal_states(b.state_dict(), state)
    a.learn_many(batches[2])
    b.learn_many(batches[2])
    _equal_states(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("name", MODELS)
def test_load_accepts_the_runtime_meta_key(name, batches):
    a = build_learner(name)
    a.learn_many(batches[0])
    state = a.state_dict()
    meta = dict(state.meta)
    meta[RUNTIME_META_KEY] = {"offsets": {"t:0": 3}, "applied": 8}
    build_learner(name).load_state_dict(LearnerState(tensors=state.tensors, meta=meta))


@pytest.mark.parametrize("name", MODELS)
def test_no_nan_on_empty_and_one_item_lists(name, batches):
    learner = build_learner(name)
    _finite_metrics(learner.learn_many([]))
    _finite_metrics(learner.learn_many([one_item(e) for e in batches[0]]))
    _finite_metrics(learner.learn_many(batches[1]))
    _finite_state(learner.state_dict())
