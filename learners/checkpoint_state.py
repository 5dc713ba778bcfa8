"""Turn a model + optimizer + RNG into :class:`~learners.protocol.LearnerState` parts and back, bit-exactly.

Every family (calibration, LDRO, DRPO) uses these so checkpoints look alike:

* ``model.<param name>``: module ``state_dict`` tensors.
* ``optim.<param index>.<key>``: tensor entries of ``optimizer.state_dict()['state']``
  (e.g. Adam's ``exp_avg``, ``exp_avg_sq``, ``step``); non-tensor entries and the
  ``param_groups`` (lr, betas, ...) go to JSON meta under ``optim``.
* ``rng.<name>``: a ``torch.Generator`` state (uint8 tensor).

No pickle: tensors end in safetensors, the rest is JSON.
"""

from __future__ import annotations

import json
from typing import Any

import torch

MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."
RNG_PREFIX = "rng."


def module_tensors(module: torch.nn.Module, prefix: str = MODEL_PREFIX) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def load_module_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str = MODEL_PREFIX) -> None:
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(own))
    unexpected = sorted(set(own) - set(expected))
    if missing or unexpected:
        raise ValueError(f"state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, value in own.items():
        if value.shape != expected[name].shape:
            raise ValueError(f"{prefix}{name}: shape {tuple(value.shape)} != model's {tuple(expected[name].shape)}")
    module.load_state_dict(own, strict=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"optimizer setting of type {type(value).__name__} is not JSON-able")


def optimizer_parts(optimizer: torch.optim.Optimizer, prefix: str = OPTIM_PREFIX) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors (flat names) and JSON meta of ``optimizer.state_dict()``."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{key}"] = value.detach().clone().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = _jsonable(value)
    meta = {"class": type(optimizer).__name__, "param_groups": _jsonable(sd["param_groups"]), "scalars": scalars}
    json.dumps(meta)  # fail here, not at save time
    return tensors, meta


def _restore_tuples(group: dict) -> dict:
    out = dict(group)
    if isinstance(out.get("betas"), list):
        out["betas"] = tuple(out["betas"])
    return out


def load_optimizer_parts(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                         prefix: str = OPTIM_PREFIX) -> None:
    if meta.get("class") != type(optimizer).__name__:
        raise ValueError(f"checkpoint optimizer is {meta.get('class')!r}, this learner uses {type(optimizer).__name__}")
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        index, _, key = name[len(prefix):].partition(".")
        state.setdefault(int(index), {})[key] = value.clone()
    for index, entries in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": [_restore_tuples(g) for g in meta["param_groups"]]})


def generator_state(generator: torch.Generator) -> torch.Tensor:
    return generator.get_state().clone()


def set_generator_state(generator: torch.Generator, state: torch.Tensor) -> None:
    generator.set_state(state.to(torch.uint8).clone())
