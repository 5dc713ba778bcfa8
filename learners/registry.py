"""Model name -> learner factory, resolved lazily so each family stays an independent module.

``build_learner(name, **config)`` is what ``streamrank learn --model NAME``, the snapshot
loader in serving and the evaluations call. Each factory returns an object satisfying
:class:`contracts.learner.Learner`.
"""

from __future__ import annotations

import importlib
from typing import Any

from contracts.learner import Learner

FACTORIES: dict[str, str] = {
    "umnn": "learners.calibration.learner:build_umnn",
    "platt": "learners.calibration.learner:build_platt",
    "isotonic": "learners.calibration.binning_learner:build_isotonic",
    "histogram": "learners.calibration.binning_learner:build_histogram",
    "ldro": "learners.ranking.learner:build_ldro",
    "grpo": "learners.ranking.learner:build_grpo",
    "drpo": "learners.fusion.learner:build_drpo",
}


def model_names() -> list[str]:
    return sorted(FACTORIES)


def build_learner(name: str, device: str | None = None, **config: Any) -> Learner:
    """The learner ``name`` built from ``config``; on ``device`` (``auto``, ``cpu``, ``cuda[:N]``) when given."""
    try:
        target = FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(model_names())}") from None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    learner = factory(**config)
    if device is not None:
        learner.to(device)  # type: ignore[attr-defined]
    return learner
