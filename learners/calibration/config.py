"""What shapes a calibration learner: :class:`CalibrationConfig` (saved in the checkpoint meta).

The UMNN/Platt fields follow UMC's settings; the online-SGD options (``average``, ``lr_schedule``,
``lr_warmup``, ``passes``, and the warm-up replay's ``replay_updates``, ``replay_steps``,
``replay_rows``) are described in :mod:`learners.calibration.learner`'s docstring; the
``hist_*`` fields shape the isotonic / histogram-binning baselines
(:mod:`learners.calibration.binning_learner`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from learners.calibration.context import check_tasks
from learners.calibration.scloss import SCLossConfig

DEFAULT_TASKS = ("click", "long_view")
DEFAULT_FIELDS = ("position", "item", "user")
LR_SCHEDULES = ("constant", "inv_sqrt")
#: Settings added after the first calibration snapshots were published (see ``as_json``).
LATER_SETTINGS = ("average", "lr_schedule", "lr_warmup", "passes", "replay_updates", "replay_steps", "replay_rows")


@dataclass(frozen=True)
class CalibrationConfig:
    """Everything that shapes a calibration learner (saved in the checkpoint meta)."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    context_fields: tuple[str, ...] = DEFAULT_FIELDS
    buckets: int = 1024
    embedding_dim: int = 8
    integrand_hidden: tuple[int, ...] = (50, 50)
    context_hidden: tuple[int, ...] = (200, 200)
    steps: int = 50
    leibniz: bool = True
    lr: float = 1e-3
    sc_bins: int = 10
    sc_beta: float = 0.95
    sc_weight: float = 1e-2
    sc_binning: str = "quantile"
    seed: int = 0
    # online-SGD options of UMNN/Platt (module docstring); the defaults leave the learner as before
    average: float = 0.0  # Polyak/EMA decay of the weights used to predict; 0: predict with the last iterate
    lr_schedule: str = "constant"  # or "inv_sqrt": linear warm-up over lr_warmup steps, then lr * sqrt(w / t)
    lr_warmup: int = 1
    passes: int = 1  # optimizer steps on each batch
    replay_updates: int = 0  # warm-up replay (learners.calibration.replay) during the first N updates; 0: off
    replay_steps: int = 1  # extra steps per warm-up update, each on a uniform draw from the rows learned so far
    replay_rows: int = 50_000  # the reservoir's capacity per task (Algorithm R beyond it)
    # isotonic / histogram
    hist_bins: int = 200
    hist_logit_range: float = 12.0
    hist_prior: float = 1.0
    monotone: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", check_tasks(tuple(self.tasks)))
        object.__setattr__(self, "context_fields", tuple(self.context_fields))
        object.__setattr__(self, "integrand_hidden", tuple(int(h) for h in self.integrand_hidden))
        object.__setattr__(self, "context_hidden", tuple(int(h) for h in self.context_hidden))
        if self.steps < 2 or self.steps % 2:
            raise ValueError(f"steps must be an even number >= 2, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.average < 1.0:
            raise ValueError(f"average (the EMA decay) must be in [0, 1), got {self.average}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_warmup < 1:
            raise ValueError(f"lr_warmup must be >= 1, got {self.lr_warmup}")
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if self.replay_updates < 0:
            raise ValueError(f"replay_updates must be >= 0 (0: no replay), got {self.replay_updates}")
        if self.replay_steps < 1:
            raise ValueError(f"replay_steps must be >= 1, got {self.replay_steps}")
        if self.replay_rows < 1:
            raise ValueError(f"replay_rows must be >= 1, got {self.replay_rows}")
        SCLossConfig(self.sc_bins, self.sc_beta, self.sc_weight, self.sc_binning)  # validates

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "CalibrationConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(f"unknown calibration settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**kwargs)

    def as_json(self) -> dict[str, Any]:
        """The settings as JSON values (the checkpoint and snapshot meta); the online-SGD settings
        (:data:`LATER_SETTINGS`) are left out while at their defaults, so a server of a release
        that predates them still loads a snapshot that does not use them (a rolling upgrade: it
        refused such snapshots with "unknown calibration settings" and served uncalibrated)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for key in LATER_SETTINGS:
            if out[key] == type(self).__dataclass_fields__[key].default:
                del out[key]
        return out

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (1-based) under ``lr_schedule`` (module docstring)."""
        if self.lr_schedule == "constant":
            return self.lr
        t, w = max(int(step), 1), self.lr_warmup
        return self.lr * min(t / w, math.sqrt(w / t))


def average_decay(limit: float, steps: int) -> float:
    """EMA decay after ``steps`` optimizer steps: ``min(limit, (1 + steps) / (10 + steps))``."""
    return min(limit, (1.0 + steps) / (10.0 + steps))
