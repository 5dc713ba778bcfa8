"""``state_dict``/``load_state_dict`` shared by the list-wise policies (LDRO, GRPO, DRPO).

The encoding itself (tensor names, optimizer state, RNG tensors, the format stamp) is
:mod:`contracts.state`, the same for every family; this mixin only says which parts a policy
learner has and which counters go with them.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import torch

from contracts.learner import LearnerState
from contracts.state import (
    check_format,
    generator_tensors,
    load_generators,
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_state,
    stamp,
)
from learners.policy import advantages as adv


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
        """Frozen modules saved with the state but not trained (none by default)."""
        return []

    def to(self, device: torch.device | str) -> "PolicyCheckpointing":
        """Train and serve on ``device`` (modules, frozen modules and optimizer state move; RNGs stay CPU)."""
        from learners.device import move_optimizer, resolve_device  # noqa: PLC0415

        self.device = resolve_device(device)
        for _, module in self._frozen():
            module.to(self.device)
        for _, module, opt in self._parts():
            module.to(self.device)
            move_optimizer(opt, self.device)
        return self

    def _generators(self) -> dict[str, torch.Generator]:
        """The two RNG streams: learning-time sampling and serving-time exploration."""
        return {"learn": self.generator, "serve": self.serve_generator}

    def state_dict(self) -> LearnerState:
        """Every trained and frozen module, each optimizer, both RNGs and the counters."""
        tensors: dict[str, torch.Tensor] = generator_tensors(self._generators())
        for prefix, module in self._frozen():
            tensors.update(module_tensors(prefix, module))
        meta: dict[str, Any] = {
            "model": self.name, "family": self.family,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()
                       if k != "name"},
            "updates": self.updates, "examples_seen": self.examples_seen, "running": self.running.as_dict(),
            "optimizers": {}}
        for prefix, module, opt in self._parts():
            tensors.update(module_tensors(prefix, module))
            opt_tensors, opt_meta = optimizer_state(prefix, opt)
            tensors.update(opt_tensors)
            meta["optimizers"][prefix] = opt_meta
        return LearnerState(tensors=tensors, meta=stamp(meta))

    def load_state_dict(self, state: LearnerState) -> None:
        """Inverse of :meth:`state_dict`; refuses another family, format or config."""
        meta = state.meta
        check_format(meta)
        if meta.get("family") != self.family:
            raise ValueError(f"not a {self.family.upper()} checkpoint (family={meta.get('family')!r})")
        saved = self.config_class.from_kwargs(**{**meta["config"], "name": meta.get("model", self.config.name)})
        if replace(saved, seed=self.config.seed) != self.config:  # the seed only drew what the checkpoint restores
            raise ValueError(f"checkpoint config differs from this learner's: {saved} != {self.config}")
        self.config = saved
        for prefix, module, opt in self._parts():
            load_module(prefix, module, state.tensors)
            load_optimizer(prefix, opt, state.tensors, meta["optimizers"][prefix])
        for prefix, module in self._frozen():
            load_module(prefix, module, state.tensors)
        self.updates = int(meta["updates"])
        self.examples_seen = int(meta["examples_seen"])
        self.running = adv.RunningMoments.from_dict(meta["running"])
        load_generators(self._generators(), state.tensors)
