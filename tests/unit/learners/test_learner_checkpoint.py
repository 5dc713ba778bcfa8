"""Checkpoints: bit-exact round trip (model, Adam, RNG), atomic files, corrupt ones refused."""

from __future__ import annotations

import json

import pytest
import torch

from contracts.learner import LearnerState
from contracts.state import load_optimizer, optimizer_state
from learners.runtime.checkpoint import CheckpointError, CheckpointStore, state_sha256


def _state(value: float) -> LearnerState:
    return LearnerState(tensors={"model.w": torch.full((3, 2), value), "rng.torch": torch.arange(5, dtype=torch.uint8)},
                        meta={"runtime": {"offsets": {"t:0": 7}}, "value": value})


def test_round_trip_is_bit_exact_and_keeps_meta(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    state = _state(0.1)
    store.save(state)
    seq, loaded = store.load_latest()
    assert seq == 1
    assert state_sha256(loaded) == state_sha256(state)
    manifest = json.loads((store.dir / "000000000001.json").read_text())
    assert manifest["sha256"] and manifest["model"] == "m" and manifest["meta"]["runtime"]["offsets"] == {"t:0": 7}


def test_corrupt_latest_is_refused_and_the_previous_one_is_used(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    store.save(_state(1.0))
    store.save(_state(2.0))
    path = store.dir / "000000000002.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        store.load(2)
    seq, state = store.load_latest()
    assert seq == 1 and state.meta["value"] == 1.0


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "000000000001.json").write_text("{truncated"), "unreadable manifest"),
    (lambda d: (d / "000000000001.safetensors").unlink(), "missing"),
    (lambda d: (d / "000000000001.json").write_text(json.dumps({"model": "other"})), "model 'other'"),
])
def test_damaged_checkpoints_are_refused_with_a_reason(tmp_path, damage, message):
    store = CheckpointStore(tmp_path, "m")
    store.save(_state(1.0))
    damage(store.dir)
    with pytest.raises(CheckpointError, match=message):
        store.load(1)
    assert store.load_latest() is None


def test_only_the_newest_checkpoints_are_kept_and_no_temp_files_remain(tmp_path):
    store = CheckpointStore(tmp_path, "m", keep=2)
    for v in range(5):
        store.save(_state(float(v)))
    assert sorted(p.name for p in store.dir.iterdir()) == [
        "000000000004.json", "000000000004.safetensors", "000000000005.json", "000000000005.safetensors"]


def test_adam_state_round_trips_bit_exactly_and_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    x = torch.randn(16, 4)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    tensors, meta = optimizer_state("m", opt)
    json.dumps(meta)
    clone = torch.nn.Linear(4, 3)
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.Adam(clone.parameters(), lr=1.0)
    load_optimizer("m", opt2, tensors, meta)
    for o in (opt, opt2):
        m = model if o is opt else clone
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters()))
    t1, _ = optimizer_state("m", opt)
    t2, _ = optimizer_state("m", opt2)
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)


def test_optimizer_class_mismatch_is_refused():
    model = torch.nn.Linear(2, 1)
    tensors, meta = optimizer_state("m", torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="SGD"):
        load_optimizer("m", torch.optim.Adam(model.parameters()), tensors, meta)
