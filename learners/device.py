"""Which torch device a learner trains on: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.

Learners move their modules and optimizer state with ``learner.to(device)``; batches follow
(:meth:`learners.policy.batch.ListBatch.to`, pinned buffers when the device is CUDA). Random
draws stay on CPU generators, so a run draws the same numbers on any device, and state always
leaves as CPU tensors (:func:`contracts.state.module_tensors`): a snapshot trained on a GPU loads
unchanged into a CPU server.
"""

from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``auto``/None -> ``cuda`` if available else ``cpu``; ``cuda[:N]`` must exist here."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {spec!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: no CUDA device is available here (torch {torch.__version__})")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


def move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move an optimizer's state tensors (Adam's moments) to ``device``; ``step`` counters stay put."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
