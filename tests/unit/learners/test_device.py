"""Device plumbing, exercised on the CPU (no test needs a GPU): resolution, moves, device-free state."""

from __future__ import annotations

import pytest
import torch

from contracts.learner import LearnerState
from learners.device import resolve_device
from learners.registry import build_learner, model_names
from learners.runtime.checkpoint import state_sha256
from simulator.examples import simulated_examples


@pytest.fixture(scope="module")
def batches():
    examples = simulated_examples(16, seed=4, max_candidates=6, with_features=True)
    return [examples[:8], examples[8:]]


def test_auto_resolves_to_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected == resolve_device(None).type
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec, message", [("gpu", "device must be one of"), ("cuda:x", "device must be one of"),
                                           ("cuda:99", "cuda:99")])
def test_a_bad_or_absent_device_is_refused_by_name(spec, message):
    if spec == "cuda:99" and not torch.cuda.is_available():
        message = "no CUDA device"
    with pytest.raises(ValueError, match=message):
        resolve_device(spec)


@pytest.mark.parametrize("name", model_names())
def test_a_learner_moved_to_the_cpu_learns_the_same_and_its_state_is_on_the_cpu(name, batches):
    plain, moved = build_learner(name), build_learner(name, device="cpu")
    for batch in batches:
        plain.learn_many(batch)
        moved.to("auto" if not torch.cuda.is_available() else "cpu")
        moved.learn_many(batch)
    state = moved.state_dict()
    assert all(t.device.type == "cpu" for t in state.tensors.values())
    assert state_sha256(state) == state_sha256(plain.state_dict())
    fresh = build_learner(name, device="cpu")
    fresh.load_state_dict(LearnerState(tensors=dict(state.tensors), meta=state.meta))
    assert state_sha256(fresh.state_dict()) == state_sha256(state)
