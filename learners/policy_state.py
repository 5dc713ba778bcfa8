"""Flatten modules, optimizers and RNGs into a :class:`~learners.protocol.LearnerState` and back.

Shared by the list-wise policy learners (LDRO/GRPO, DRPO). Tensors go under flat dotted
names (safetensors-able); everything else (optimizer hyper-parameters, RNG states as base64,
counters) is JSON-able meta. The round trip is bit-exact: tensors are cloned, Python floats
survive JSON unchanged, and the optimizer's per-parameter state is restored by index.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from learners.protocol import LearnerState


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


class PolicyCheckpointing:
    """``state_dict``/``load_state_dict`` shared by the list-wise policies (LDRO, GRPO, DRPO).

    A family names its trained ``(prefix, module, optimizer)`` triples in ``_parts()``, its
    ``family`` tag and ``config_class``; extra frozen modules (DRPO's KL reference) go in
    ``_frozen()``. Counters, running advantage moments and both RNG streams go to the JSON meta;
    ``meta["config"]`` leaves out ``name`` so ``build_learner(meta["model"], **meta["config"])``
    rebuilds the learner, and loading refuses a config that differs in anything but the seed.
    """

    family: str
    config_class: Any

    def _frozen(self) -> list[tuple[str, torch.nn.Module]]:
        return []

    def state_dict(self) -> "LearnerState":
        from dataclasses import asdict  # noqa: PLC0415

        from learners.protocol import LearnerState  # noqa: PLC0415

        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in self._frozen():
            tensors.update(module_tensors(prefix, module))
        meta: dict[str, Any] = {
            "model": self.name, "family": self.family,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()
                       if k != "name"},
            "updates": self.updates, "examples_seen": self.examples_seen, "running": self.running.as_dict(),
            "rng": {"learn": generator_state(self.generator), "serve": generator_state(self.serve_generator)},
            "optimizers": {}}
        for prefix, module, opt in self._parts():
            tensors.update(module_tensors(prefix, module))
            opt_tensors, opt_meta = optimizer_state(f"optim.{prefix}", opt)
            tensors.update(opt_tensors)
            meta["optimizers"][prefix] = opt_meta
        return LearnerState(tensors=tensors, meta=meta)

    def load_state_dict(self, state: "LearnerState") -> None:
        from dataclasses import replace  # noqa: PLC0415

        from learners import advantages as adv  # noqa: PLC0415

        meta = state.meta
        if meta.get("family") != self.family:
            raise ValueError(f"not a {self.family.upper()} checkpoint (family={meta.get('family')!r})")
        saved = self.config_class.from_kwargs(**{**meta["config"], "name": meta.get("model", self.config.name)})
        if replace(saved, seed=self.config.seed) != self.config:  # the seed only drew what the checkpoint restores
            raise ValueError(f"checkpoint config differs from this learner's: {saved} != {self.config}")
        self.config = saved
        for prefix, module, opt in self._parts():
            load_module(prefix, module, state.tensors)
            load_optimizer(f"optim.{prefix}", opt, state.tensors, meta["optimizers"][prefix])
        for prefix, module in self._frozen():
            load_module(prefix, module, state.tensors)
        self.updates = int(meta["updates"])
        self.examples_seen = int(meta["examples_seen"])
        self.running = adv.RunningMoments.from_dict(meta["running"])
        load_generator(self.generator, meta["rng"]["learn"])
        load_generator(self.serve_generator, meta["rng"]["serve"])
