"""Flatten modules, optimizers and RNGs into a :class:`~learners.protocol.LearnerState` and back.

Shared by the list-wise policy learners (LDRO/GRPO, DRPO). Tensors go under flat dotted
names (safetensors-able); everything else (optimizer hyper-parameters, RNG states as base64,
counters) is JSON-able meta. The round trip is bit-exact: tensors are cloned, Python floats
survive JSON unchanged, and the optimizer's per-parameter state is restored by index.
"""

from __future__ import annotations

import base64
from typing import Any

import torch


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": t.detach().clone().contiguous() for name, t in module.state_dict().items()}


def load_module(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    wanted = module.state_dict().keys()
    missing = [f"{prefix}.{k}" for k in wanted if f"{prefix}.{k}" not in tensors]
    if missing:
        raise ValueError(f"checkpoint lacks tensors: {missing[:5]}")
    module.load_state_dict({k: tensors[f"{prefix}.{k}"] for k in wanted}, strict=True)


def optimizer_state(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Per-parameter state tensors (``prefix.state.<idx>.<key>``) + JSON-able param groups."""
    doc = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in doc["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{idx}.{key}"] = value.detach().clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()} for group in doc["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}.state."
    for name, value in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[key] = value.clone()
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def generator_state(generator: torch.Generator) -> str:
    return base64.b64encode(generator.get_state().numpy().tobytes()).decode("ascii")


def load_generator(generator: torch.Generator, encoded: str) -> None:
    raw = bytearray(base64.b64decode(encoded.encode("ascii")))
    generator.set_state(torch.frombuffer(raw, dtype=torch.uint8).clone())


def make_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator
