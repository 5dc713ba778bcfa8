"""Snapshot verification (contracts/snapshot.py): a good snapshot is accepted, every kind of bad one is refused.

A blob is trusted only when its sha256, its safetensors header, its tensor names/dtypes/shapes and the
finiteness of its values all match the manifest; each check refuses with its own exception and message.
Also checked: the manifest's strict, sorted JSON, ``tensor_specs``' dtype/shape spelling, and that
serialization copies exactly the tensors safetensors would refuse (views, shared storage).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from contracts.learner import LearnerState
from contracts.snapshot import (
    MANIFEST_SCHEMA,
    Manifest,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotInvalid,
    _json_safe,
    check_finite,
    decode_blob,
    serialize_state,
    tensor_specs,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3, dtype=torch.float64),
            "step": torch.tensor([7], dtype=torch.int64)}


def _manifest(blob: bytes, state_tensors: dict[str, torch.Tensor], **overrides) -> Manifest:
    doc = dict(name="ldro", version="12", parent="11", created_at=1700000000.5,
               sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob), tensors=tensor_specs(state_tensors),
               offsets={"examples": {"0": 41}}, metrics={"loss": 0.25}, meta={"lr": 0.001})
    doc.update(overrides)
    return Manifest(**doc)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


# --- a good snapshot ---------------------------------------------------------------------------


def test_a_good_snapshot_is_accepted_with_every_tensor_intact():
    tensors = _tensors()
    blob = serialize_state(LearnerState(tensors=tensors))
    out = decode_blob(blob, _manifest(blob, tensors))
    assert set(out) == set(tensors)
    for name, tensor in tensors.items():
        assert _same(out[name], tensor), name


def test_tensor_specs_spell_dtypes_without_the_torch_prefix_and_shapes_as_lists_sorted_by_name():
    specs = tensor_specs({"z": torch.zeros(2, 5, dtype=torch.float16), "a": torch.tensor(3, dtype=torch.int32),
                          "m": torch.zeros(0, 4, dtype=torch.bool)})
    assert specs == {"a": {"dtype": "int32", "shape": []}, "m": {"dtype": "bool", "shape": [0, 4]},
                     "z": {"dtype": "float16", "shape": [2, 5]}}
    assert list(specs) == ["a", "m", "z"]
    assert all(type(spec["shape"]) is list for spec in specs.values())


def test_tensors_sharing_one_storage_are_serialized_as_independent_copies():
    # Both are whole, contiguous views of one storage: safetensors refuses shared memory, so one is copied.
    base = torch.arange(6, dtype=torch.float32)
    tensors = {"flat": base, "grid": base.view(2, 3), "again": base}
    blob = serialize_state(LearnerState(tensors=tensors))
    out = decode_blob(blob, _manifest(blob, tensors))
    for name, tensor in tensors.items():
        assert _same(out[name], tensor), name
    assert base.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the caller's tensor is not touched


def test_views_with_an_offset_or_strides_and_empty_tensors_round_trip():
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    tensors = {"tail": base[1:], "col": base[:, 1], "t": base.t(), "empty": torch.zeros(0, 2),
               "empty2": torch.zeros(0), "bf16_t": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t()}
    blob = serialize_state(LearnerState(tensors=tensors))
    out = decode_blob(blob, _manifest(blob, tensors))
    for name, tensor in tensors.items():
        assert _same(out[name], tensor), name
        assert out[name].is_contiguous()


def test_tensors_that_require_grad_are_serialized_by_value():
    w = torch.ones(2, 2, requires_grad=True)
    tensors = {"w": w * 3}
    blob = serialize_state(LearnerState(tensors=tensors))
    out = decode_blob(blob, _manifest(blob, {"w": tensors["w"].detach()}))
    assert out["w"].tolist() == [[3.0, 3.0], [3.0, 3.0]]
    assert not out["w"].requires_grad


# --- refusals, each with its own reason --------------------------------------------------------


def test_a_snapshot_whose_checksum_lies_is_refused_naming_both_digests():
    tensors = _tensors()
    blob = serialize_state(LearnerState(tensors=tensors))
    lying = "0" * 64
    with pytest.raises(SnapshotCorrupt) as info:
        decode_blob(blob, _manifest(blob, tensors, sha256=lying))
    actual = hashlib.sha256(blob).hexdigest()
    assert str(info.value) == (f"ldro v12: sha256 {actual[:12]}... does not match the manifest's "
                               f"{lying[:12]}...")


def test_a_flipped_byte_is_refused_by_the_checksum_before_parsing():
    tensors = _tensors()
    blob = serialize_state(LearnerState(tensors=tensors))
    manifest = _manifest(blob, tensors)
    corrupted = bytearray(blob)
    corrupted[len(blob) // 2] ^= 0x01
    with pytest.raises(SnapshotCorrupt, match=r"^ldro v12: sha256 .* does not match"):
        decode_blob(bytes(corrupted), manifest)


def test_a_truncated_blob_with_a_matching_checksum_is_refused_as_not_safetensors():
    tensors = _tensors()
    blob = serialize_state(LearnerState(tensors=tensors))[:-5]
    with pytest.raises(SnapshotCorrupt) as info:
        decode_blob(blob, _manifest(blob, tensors))
    assert str(info.value).startswith("ldro v12: not a safetensors blob: ")
    assert not isinstance(info.value, SnapshotInvalid)


@pytest.mark.parametrize("lie", [
    {"w": {"dtype": "float32", "shape": [3, 4]}},  # wrong shape
    {"w": {"dtype": "float64", "shape": [4, 3]}},  # wrong dtype
    {"w": {"dtype": "torch.float32", "shape": [4, 3]}},  # dtype spelled with the prefix
    {"extra": {"dtype": "float32", "shape": [1]}},  # a tensor the blob lacks
])
def test_a_manifest_whose_tensor_specs_lie_is_refused(lie):
    tensors = _tensors()
    blob = serialize_state(LearnerState(tensors=tensors))
    manifest = _manifest(blob, tensors, tensors={**tensor_specs(tensors), **lie})
    with pytest.raises(SnapshotCorrupt) as info:
        decode_blob(blob, manifest)
    assert str(info.value) == "ldro v12: tensor names/dtypes/shapes differ from the manifest"


def test_a_manifest_missing_a_tensor_of_the_blob_is_refused():
    tensors = _tensors()
    blob = serialize_state(LearnerState(tensors=tensors))
    specs = tensor_specs(tensors)
    del specs["b"]
    with pytest.raises(SnapshotCorrupt, match="differ from the manifest"):
        decode_blob(blob, _manifest(blob, tensors, tensors=specs))


def test_a_well_formed_snapshot_with_nan_weights_is_refused_as_invalid_not_corrupt():
    tensors = {"ok": torch.ones(3), "w": torch.tensor([1.0, math.nan, 2.0])}
    blob = serialize_state(LearnerState(tensors=tensors))
    with pytest.raises(SnapshotInvalid) as info:
        decode_blob(blob, _manifest(blob, tensors))
    assert str(info.value) == "tensor 'w' has 1 non-finite values (NaN/inf)"
    assert isinstance(info.value, SnapshotError) and not isinstance(info.value, SnapshotCorrupt)


def test_check_finite_counts_every_non_finite_value_of_the_first_bad_tensor():
    values = [1.0, math.nan, 0.0, math.inf, -math.inf, 2.0]
    with pytest.raises(SnapshotInvalid) as info:
        check_finite({"fine": torch.zeros(2), "bad": torch.tensor(values), "worse": torch.tensor([math.nan] * 5)})
    expected = sum(1 for v in values if not math.isfinite(v))
    assert str(info.value) == f"tensor 'bad' has {expected} non-finite values (NaN/inf)"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.complex64])
def test_check_finite_covers_every_floating_and_complex_dtype(dtype):
    values = torch.tensor([0.5, math.nan, math.inf, 1.0]).to(dtype)
    with pytest.raises(SnapshotInvalid, match="'x' has 2 non-finite"):
        check_finite({"x": values})
    check_finite({"x": torch.tensor([0.5, 1.0]).to(dtype)})


def test_check_finite_refuses_a_complex_tensor_with_a_nan_imaginary_part():
    with pytest.raises(SnapshotInvalid, match="'c' has 1 non-finite"):
        check_finite({"c": torch.tensor([complex(1.0, 0.0), complex(0.0, math.nan)], dtype=torch.complex64)})


def test_check_finite_ignores_integer_and_bool_tensors_and_accepts_grad_tensors():
    check_finite({"i": torch.tensor([1, 2]), "flag": torch.tensor([True, False]), "u": torch.tensor([255],
                                                                                             dtype=torch.uint8)})
    check_finite({"g": torch.ones(3, requires_grad=True)})
    with pytest.raises(SnapshotInvalid, match="'w' has 1 non-finite"):  # an integer tensor first ends nothing
        check_finite({"step": torch.tensor([3]), "w": torch.tensor([math.inf, 0.0])})
    with pytest.raises(SnapshotInvalid, match="'g' has 1 non-finite"):
        check_finite({"g": torch.tensor([1.0, math.nan], requires_grad=True)})


def test_check_finite_reads_a_non_contiguous_view():
    base = torch.zeros(3, 3)
    base[0, 2] = math.nan
    check_finite({"col0": base[:, 0]})
    with pytest.raises(SnapshotInvalid, match="'t' has 1 non-finite"):
        check_finite({"t": base.t()})


# --- manifest JSON -----------------------------------------------------------------------------


def test_manifest_json_is_sorted_strict_and_round_trips():
    tensors = _tensors()
    blob = serialize_state(LearnerState(tensors=tensors))
    manifest = _manifest(blob, tensors)
    raw = manifest.to_json()
    doc = json.loads(raw)
    assert list(doc) == sorted(doc)
    assert doc == {"name": "ldro", "version": "12", "parent": "11", "created_at": 1700000000.5,
                   "sha256": hashlib.sha256(blob).hexdigest(), "size_bytes": len(blob),
                   "tensors": tensor_specs(tensors), "offsets": {"examples": {"0": 41}},
                   "metrics": {"loss": 0.25}, "meta": {"lr": 0.001}, "schema": MANIFEST_SCHEMA}
    assert raw == json.dumps(doc, sort_keys=True)
    assert Manifest.from_json(raw) == manifest
    assert Manifest.from_json(raw.encode()) == manifest


def test_manifest_as_dict_is_every_field_by_name():
    manifest = Manifest(name="m", version="3", parent=None, created_at=2.0, sha256="ab", size_bytes=9, tensors={})
    assert manifest.as_dict() == {"name": "m", "version": "3", "parent": None, "created_at": 2.0, "sha256": "ab",
                                  "size_bytes": 9, "tensors": {}, "offsets": None, "metrics": {}, "meta": {},
                                  "schema": "streamrank.snapshot.v1"}


def test_a_manifest_with_non_finite_metrics_cannot_be_written():
    manifest = Manifest(name="m", version="1", parent=None, created_at=0.0, sha256="x", size_bytes=0, tensors={},
                        metrics={"loss": math.nan})
    with pytest.raises(ValueError):
        manifest.to_json()


@pytest.mark.parametrize("raw", [b"not json", b'{"name": "m"}', b'{"name": "m", "bogus": 1}', b"[1, 2]"])
def test_an_unreadable_manifest_is_refused_as_corrupt(raw):
    with pytest.raises(SnapshotCorrupt, match="^unreadable manifest: "):
        Manifest.from_json(raw)


def test_json_safe_round_trips_through_strict_sorted_json():
    value = {"b": (1, 2), "a": {"y": 1.5, "x": None}}
    out = _json_safe(value, "state.meta")
    assert out == {"a": {"x": None, "y": 1.5}, "b": [1, 2]}
    assert list(out) == ["a", "b"] and list(out["a"]) == ["x", "y"]


@pytest.mark.parametrize("value", [{"x": math.nan}, {"x": -math.inf}, {"x": np.float32(1.0)}, {"x": {1, 2}}])
def test_json_safe_names_what_is_not_strict_json(value):
    with pytest.raises(SnapshotInvalid) as info:
        _json_safe(value, "state.meta")
    assert str(info.value).startswith("state.meta is not strict JSON: ")
