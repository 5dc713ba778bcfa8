"""What a model snapshot is: safetensors bytes of a learner's tensors plus a JSON manifest.

The learner writes it, the registry (:mod:`feature_store.snapshots`) stores it, serving
verifies and loads it; all three read this one definition. A manifest names the model, its
``version`` (a decimal string, increasing per model), ``parent``, ``created_at``, the applied
Kafka ``offsets``, ``metrics``, ``sha256`` and ``size_bytes`` of the blob, ``tensors`` (name ->
dtype and shape) and ``meta`` (``state.meta``, strict JSON). A blob is trusted only when its
checksum, safetensors header, tensor names/dtypes/shapes and finiteness all match
(:func:`decode_blob`). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from common.errors import StreamrankError
from contracts.learner import LearnerState

MANIFEST_SCHEMA = "streamrank.snapshot.v1"


class SnapshotError(StreamrankError, RuntimeError):
    """Base class: a snapshot could not be published, found or trusted."""


class SnapshotNotFound(SnapshotError):
    """No such model or version (or it was pruned)."""


class SnapshotCorrupt(SnapshotError):
    """The stored bytes do not match the manifest (checksum, header, names or shapes)."""


class SnapshotInvalid(SnapshotError):
    """The weights are well-formed but unusable (NaN or infinite values, non-JSON meta)."""


@dataclass(frozen=True)
class Manifest:
    """The JSON document stored next to each blob (and announced on ``model-updates``)."""

    name: str
    version: str
    parent: str | None
    created_at: float
    sha256: str
    size_bytes: int
    tensors: dict[str, dict[str, Any]]
    offsets: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    schema: str = MANIFEST_SCHEMA

    def as_dict(self) -> dict[str, Any]:
        """Shallow field dict (``dataclasses.asdict`` deep-copies the meta: slow for big optimizer metadata)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Manifest":
        try:
            doc = json.loads(raw)
            manifest = cls(**doc)
        except (ValueError, TypeError) as exc:
            raise SnapshotCorrupt(f"unreadable manifest: {exc}") from None
        manifest._check_types()
        return manifest

    def _check_types(self) -> None:
        """Refuse a manifest whose fields have the wrong JSON types (a readable but garbage document)."""
        expected = {"name": str, "version": str, "created_at": (int, float), "sha256": str, "size_bytes": int,
                    "tensors": dict, "metrics": dict, "meta": dict}
        for name, kinds in expected.items():
            value = getattr(self, name)
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise SnapshotCorrupt(f"unreadable manifest: {name} is {type(value).__name__} {value!r:.40}")
        if self.parent is not None and not isinstance(self.parent, str):
            raise SnapshotCorrupt(f"unreadable manifest: parent is {type(self.parent).__name__}")


@dataclass(frozen=True)
class Verification:
    """Outcome of :meth:`SnapshotRegistry.verify`: ``ok`` or the ``reason`` it was refused."""

    model: str
    version: str
    ok: bool
    reason: str | None = None
    manifest: Manifest | None = None


def _numpy_view(tensor: torch.Tensor) -> np.ndarray | None:
    """The tensor's data as numpy (no copy), or None for dtypes numpy lacks (bfloat16, ...)."""
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError):
        return None


def serialize_state(state: LearnerState) -> bytes:
    """Safetensors bytes of ``state.tensors`` (names sorted by safetensors).

    Tensors that are views or share storage with another tensor are copied first (safetensors
    refuses shared storage); numpy does the copies and the finiteness checks below because
    torch's per-op overhead dominates for the ~150 small tensors of a learner state
    (bench/snapshot_bench.py: ~100x on this 2-core machine).
    """
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.tensors.items():
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage()
        whole = (tensor.is_contiguous() and tensor.storage_offset() == 0
                 and storage.nbytes() == tensor.numel() * tensor.element_size())
        if not whole or storage.data_ptr() in seen or tensor.numel() == 0:
            array = _numpy_view(tensor)
            tensor = (torch.from_numpy(np.array(array, copy=True, order="C")) if array is not None
                      else tensor.contiguous().clone())
        seen.add(storage.data_ptr())
        tensors[name] = tensor
    return safetensors_save(tensors)


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Raise :class:`SnapshotInvalid` naming the first floating tensor with NaN or inf values."""
    for name, tensor in tensors.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        tensor = tensor.detach().to("cpu")
        array = _numpy_view(tensor)
        finite = np.isfinite(array) if array is not None else torch.isfinite(tensor).numpy()
        if not bool(finite.all()):
            raise SnapshotInvalid(f"tensor {name!r} has {int((~finite).sum())} non-finite values (NaN/inf)")


def tensor_specs(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    return {name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
            for name, t in sorted(tensors.items())}


def decode_blob(blob: bytes, manifest: Manifest) -> dict[str, torch.Tensor]:
    """Check ``blob`` against ``manifest`` and return its tensors; raises a :class:`SnapshotError`."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.sha256:
        raise SnapshotCorrupt(f"{manifest.name} v{manifest.version}: sha256 {digest[:12]}... does not match "
                              f"the manifest's {manifest.sha256[:12]}...")
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise SnapshotCorrupt(f"{manifest.name} v{manifest.version}: not a safetensors blob: {exc}") from None
    if tensor_specs(tensors) != manifest.tensors:
        raise SnapshotCorrupt(f"{manifest.name} v{manifest.version}: tensor names/dtypes/shapes differ from the manifest")
    check_finite(tensors)
    return tensors


def _json_safe(value: Any, what: str) -> Any:
    """``value`` round-tripped through strict JSON (no NaN/inf, no objects): manifests are JSON only."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise SnapshotInvalid(f"{what} is not strict JSON: {exc}") from None
