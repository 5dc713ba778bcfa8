"""One encoding of a learner's model, optimizer and RNG state, for every family, bit-exactly.

Every learner's :class:`~contracts.learner.LearnerState` (calibrators, LDRO/GRPO, DRPO) names
its parts the same way, so checkpoints and snapshots of all families look alike:

* ``<prefix>.<param name>``: a module's ``state_dict`` tensors (``model.`` for a calibrator,
  ``scorer.``/``teacher.``/... for the list-wise policies).
* ``optim.<prefix>.state.<param index>.<key>``: the tensor entries of
  ``optimizer.state_dict()['state']`` (Adam's ``exp_avg``, ``exp_avg_sq``, ``step``); the
  non-tensor entries, the optimizer class and its ``param_groups`` (lr, betas...) are JSON meta.
* ``rng.<name>``: a ``torch.Generator`` state as a uint8 tensor.
* ``meta["state_format"] == STATE_FORMAT``: states written before this encoding (calibrators'
  ``optim.<index>.<key>``, policies' base64 RNG meta) carry no such field and are refused with
  :class:`StateFormatError`, never half-loaded; retrain or delete the old checkpoint directory.

No pickle: tensors end in safetensors, the rest is JSON. The round trip is bit-exact: tensors
are cloned, Python floats survive JSON unchanged, the optimizer state is restored by index.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from common.errors import StreamrankError

STATE_FORMAT = 2
OPTIM_PREFIX = "optim."
RNG_PREFIX = "rng."


class StateFormatError(StreamrankError, ValueError):
    """A learner state that does not fit this code: an old format, a missing tensor, a wrong shape."""


def stamp(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with this encoding's ``state_format`` (every family's ``state_dict`` calls it)."""
    meta["state_format"] = STATE_FORMAT
    return meta


def check_format(meta: dict[str, Any]) -> None:
    """Refuse a state written in another encoding, with what to do about it."""
    found = meta.get("state_format")
    if found != STATE_FORMAT:
        raise StateFormatError(
            f"learner state format {found!r} is not {STATE_FORMAT}: it was written before the one state encoding "
            "(contracts/state.py) and cannot be loaded; delete that checkpoint directory (or its snapshot) and "
            "let the learner start again")


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``<prefix>.<name>`` -> a contiguous CPU copy of each ``state_dict`` tensor (device-free state)."""
    return {f"{prefix}.{name}": t.detach().to("cpu", copy=True).contiguous() for name, t in module.state_dict().items()}


def load_module(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``<prefix>.*`` into ``module``; refuse missing, unexpected or wrongly shaped tensors."""
    head = f"{prefix}."
    own = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(own))
    unexpected = sorted(set(own) - set(expected))
    if missing or unexpected:
        raise StateFormatError(f"state does not fit the model {prefix!r}: missing {[head + k for k in missing[:5]]}, "
                               f"unexpected {[head + k for k in unexpected[:5]]}")
    for name, value in own.items():
        if value.shape != expected[name].shape:
            raise StateFormatError(f"{head}{name}: shape {tuple(value.shape)} != model's {tuple(expected[name].shape)}")
    module.load_state_dict(own, strict=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"optimizer setting of type {type(value).__name__} is not JSON-able")


def optimizer_state(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors ``optim.<prefix>.state.<idx>.<key>`` and the JSON meta of ``optimizer.state_dict()``."""
    doc = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in doc["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIM_PREFIX}{prefix}.state.{idx}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = _jsonable(value)
    meta = {"class": type(optimizer).__name__, "param_groups": _jsonable(doc["param_groups"]), "scalars": scalars}
    json.dumps(meta)  # fail here, not at save time
    return tensors, meta


def load_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_state`; refuses another optimizer class."""
    if meta.get("class") != type(optimizer).__name__:
        raise StateFormatError(f"state's optimizer {prefix!r} is {meta.get('class')!r}, "
                               f"this learner uses {type(optimizer).__name__}")
    state: dict[int, dict[str, Any]] = {}
    head = f"{OPTIM_PREFIX}{prefix}.state."
    for name, value in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[key] = value.clone()
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def generator_tensors(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """``rng.<name>`` -> the generator's state (uint8)."""
    return {f"{RNG_PREFIX}{name}": g.get_state().clone() for name, g in generators.items()}


def load_generators(generators: dict[str, torch.Generator], tensors: dict[str, torch.Tensor]) -> None:
    """Restore each named generator from ``rng.<name>``."""
    for name, generator in generators.items():
        key = f"{RNG_PREFIX}{name}"
        if key not in tensors:
            raise StateFormatError(f"state lacks the RNG tensor {key!r}")
        generator.set_state(tensors[key].to(torch.uint8).clone())


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator
