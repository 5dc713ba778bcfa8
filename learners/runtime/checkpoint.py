"""Atomic, checksummed learner checkpoints on local disk: safetensors + JSON manifest.

Layout under ``<root>/<model>/``::

    000000000042.safetensors   all LearnerState tensors (flat names)
    000000000042.json          manifest: model, seq, created_at, sha256 of the tensors file,
                               tensor names/shapes/dtypes, and the state's JSON meta

Write order is the commit protocol: tensors to a temp file, fsync, rename; then the manifest
the same way; the manifest's appearance commits the checkpoint. A checkpoint whose manifest
is unreadable or whose tensors do not match the manifest's sha256 is refused with
:class:`CheckpointError`; :meth:`CheckpointStore.load_latest` then falls back to the newest
valid one (its offsets travel with it, so effectively-once still holds). Old checkpoints
beyond ``keep`` are deleted. No pickle: ``safetensors`` + JSON only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.errors import StreamrankError
from contracts.learner import LearnerState

log = logging.getLogger(__name__)
MANIFEST_VERSION = 1


class CheckpointError(StreamrankError, RuntimeError):
    """A checkpoint that is missing, corrupt or does not fit."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class CheckpointInfo:
    model: str
    seq: int
    path: Path
    sha256: str
    created_at: float


def state_sha256(state: LearnerState) -> str:
    """Content hash of a state (tensor bytes + canonical meta), independent of file layout."""
    digest = hashlib.sha256()
    for name in sorted(state.tensors):
        t = state.tensors[name].detach().cpu().contiguous()
        digest.update(name.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest.update(json.dumps(state.meta, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


class CheckpointStore:
    """Checkpoints of one model in ``root/model``; sequence numbers increase."""

    def __init__(self, root: str | Path, model: str, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.dir = Path(root) / model
        self.model = model
        self.keep = keep
        self.dir.mkdir(parents=True, exist_ok=True)

    def _seqs(self) -> list[int]:
        out = []
        for p in self.dir.glob("*.json"):
            try:
                out.append(int(p.stem))
            except ValueError:
                continue
        return sorted(out)

    def save(self, state: LearnerState) -> CheckpointInfo:
        seqs = self._seqs()
        seq = (seqs[-1] + 1) if seqs else 1
        stem = f"{seq:012d}"
        tensors_path = self.dir / f"{stem}.safetensors"
        tmp = tensors_path.with_name(tensors_path.name + ".tmp")
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.tensors.items()}
        save_file(tensors, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, tensors_path)
        digest = sha256_file(tensors_path)
        manifest = {
            "version": MANIFEST_VERSION, "model": self.model, "seq": seq, "created_at": time.time(),
            "tensors_file": tensors_path.name, "sha256": digest,
            "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
                        for k, v in sorted(tensors.items())},
            "meta": state.meta,
        }
        _atomic_write_bytes(self.dir / f"{stem}.json", json.dumps(manifest, sort_keys=True).encode())
        _fsync_dir(self.dir)
        for old in seqs[: max(0, len(seqs) + 1 - self.keep)]:
            for suffix in (".json", ".safetensors"):
                (self.dir / f"{old:012d}{suffix}").unlink(missing_ok=True)
        return CheckpointInfo(self.model, seq, tensors_path, digest, manifest["created_at"])

    def load(self, seq: int) -> LearnerState:
        stem = f"{seq:012d}"
        manifest_path = self.dir / f"{stem}.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{manifest_path}: unreadable manifest ({exc})") from None
        if manifest.get("model") != self.model:
            raise CheckpointError(f"{manifest_path}: manifest is for model {manifest.get('model')!r}, not {self.model!r}")
        tensors_path = self.dir / str(manifest.get("tensors_file", ""))
        if not tensors_path.is_file():
            raise CheckpointError(f"{manifest_path}: tensors file {tensors_path.name} is missing")
        actual = sha256_file(tensors_path)
        if actual != manifest.get("sha256"):
            raise CheckpointError(f"{tensors_path}: sha256 {actual[:12]}... does not match the manifest")
        try:
            tensors = load_file(str(tensors_path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types on bad files
            raise CheckpointError(f"{tensors_path}: not a safetensors file ({exc})") from None
        declared = manifest.get("tensors", {})
        if set(declared) != set(tensors):
            raise CheckpointError(f"{tensors_path}: tensor names differ from the manifest")
        return LearnerState(tensors=tensors, meta=manifest.get("meta", {}))

    def latest_seq(self) -> int | None:
        seqs = self._seqs()
        return seqs[-1] if seqs else None

    def load_latest(self) -> tuple[int, LearnerState] | None:
        """Newest valid checkpoint (skipping corrupt ones, with a warning), or ``None``."""
        for seq in reversed(self._seqs()):
            try:
                return seq, self.load(seq)
            except CheckpointError as exc:
                log.warning("refusing checkpoint %s: %s", seq, exc)
        return None
