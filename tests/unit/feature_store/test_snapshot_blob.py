"""Pure parts of the snapshot format: safetensors bytes, checksum, finiteness, manifest JSON."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from contracts.learner import LearnerState
from feature_store.snapshots import (
    Manifest,
    SnapshotCorrupt,
    SnapshotInvalid,
    _json_safe,
    check_finite,
    decode_blob,
    serialize_state,
    tensor_specs,
)


def _state() -> LearnerState:
    g = torch.Generator().manual_seed(0)
    return LearnerState(tensors={"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3, dtype=torch.float64),
                                 "step": torch.tensor([7], dtype=torch.int64)},
                        meta={"offsets": {"examples": {"0": 12}}, "lr": 1e-3})


def _manifest(blob: bytes, state: LearnerState) -> Manifest:
    return Manifest(name="m", version="1", parent=None, created_at=0.0, sha256=hashlib.sha256(blob).hexdigest(),
                    size_bytes=len(blob), tensors=tensor_specs(state.tensors), meta=state.meta)


def test_blob_round_trip_is_bitwise_identical():
    state = _state()
    blob = serialize_state(state)
    out = decode_blob(blob, _manifest(blob, state))
    assert set(out) == set(state.tensors)
    for name, tensor in state.tensors.items():
        assert out[name].dtype == tensor.dtype
        assert out[name].numpy().tobytes() == tensor.numpy().tobytes()


def test_serialization_is_deterministic_and_handles_views():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = LearnerState(tensors={"t": base.t(), "alias": base})  # non-contiguous view sharing storage
    assert serialize_state(state) == serialize_state(state)
    blob = serialize_state(state)
    assert torch.equal(decode_blob(blob, _manifest(blob, state))["t"], base.t())


def test_a_flipped_byte_is_refused_by_the_checksum():
    state = _state()
    blob = serialize_state(state)
    manifest = _manifest(blob, state)
    corrupted = bytearray(blob)
    corrupted[-3] ^= 0xFF
    with pytest.raises(SnapshotCorrupt, match="sha256"):
        decode_blob(bytes(corrupted), manifest)


def test_garbage_with_matching_checksum_is_refused_as_not_safetensors():
    garbage = b"not a safetensors file at all"
    manifest = Manifest(name="m", version="1", parent=None, created_at=0.0,
                        sha256=hashlib.sha256(garbage).hexdigest(), size_bytes=len(garbage), tensors={})
    with pytest.raises(SnapshotCorrupt, match="safetensors"):
        decode_blob(garbage, manifest)


def test_shape_differing_from_the_manifest_is_refused():
    state = _state()
    blob = serialize_state(state)
    manifest = _manifest(blob, state)
    lying = Manifest(**{**manifest.__dict__, "tensors": {**manifest.tensors, "w": {"dtype": "float32", "shape": [3, 4]}}})
    with pytest.raises(SnapshotCorrupt, match="shapes"):
        decode_blob(blob, lying)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(bad):
    tensors = {"ok": torch.ones(3), "bad": torch.tensor([1.0, bad])}
    with pytest.raises(SnapshotInvalid, match="'bad' has 1 non-finite"):
        check_finite(tensors)
    check_finite({"ints": torch.tensor([1, 2]), "ok": torch.ones(2)})  # integers are never non-finite


@pytest.mark.parametrize("value", [{"x": math.nan}, {"x": object()}, {"x": math.inf}])
def test_manifest_parts_must_be_strict_json(value):
    with pytest.raises(SnapshotInvalid, match="strict JSON"):
        _json_safe(value, "state.meta")


def test_manifest_json_round_trip():
    state = _state()
    blob = serialize_state(state)
    manifest = _manifest(blob, state)
    assert Manifest.from_json(manifest.to_json()) == manifest
    with pytest.raises(SnapshotCorrupt, match="unreadable manifest"):
        Manifest.from_json(b'{"name": "m"}')


def test_dtypes_numpy_lacks_and_empty_tensors_round_trip_and_are_checked():
    state = LearnerState(tensors={"bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
                                  "half": torch.tensor([0.5], dtype=torch.float16),
                                  "empty": torch.zeros(0, 3), "flag": torch.tensor([True, False])})
    blob = serialize_state(state)
    out = decode_blob(blob, _manifest(blob, state))
    for name, tensor in state.tensors.items():
        assert out[name].dtype == tensor.dtype and torch.equal(out[name], tensor)
    with pytest.raises(SnapshotInvalid, match="'bf16' has 1 non-finite"):
        check_finite({"bf16": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)})


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8,
           torch.bool]


@given(st.lists(st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 5), min_size=0, max_size=3),
                          st.booleans()), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
@hsettings(max_examples=40, deadline=None)
def test_any_state_round_trips_bitwise(specs, seed):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for n, (dtype, shape, transposed) in enumerate(specs):
        base = (torch.randn(tuple(shape), generator=g) * 100).to(dtype)
        tensors[f"t{n}"] = base.t() if transposed and base.dim() == 2 else base
    state = LearnerState(tensors=tensors)
    blob = serialize_state(state)
    out = decode_blob(blob, _manifest(blob, state))
    for name, tensor in tensors.items():
        assert out[name].dtype == tensor.dtype and out[name].shape == tensor.shape
        as_bytes = lambda t: t.contiguous().reshape(-1).view(torch.uint8).tolist()  # noqa: E731
        assert as_bytes(out[name]) == as_bytes(tensor)
