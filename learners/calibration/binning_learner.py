"""Streaming isotonic and histogram-binning calibration behind the learner protocol (the baselines).

:class:`IsotonicCalibrationLearner` keeps one :class:`~learners.calibration.baselines.StreamingIsotonic`
per task (the formulas are in :mod:`learners.calibration.baselines`); ``isotonic``
(:func:`build_isotonic`) fits the monotone map, ``histogram`` (:func:`build_histogram`) the plain bins.
Both are context-free, so they start from ``context_fields=()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from contracts.learner import LearnerState
from contracts.state import generator_tensors, load_generators, stamp
from learners.calibration.baselines import StreamingIsotonic
from learners.calibration.config import CalibrationConfig
from learners.calibration.context import P_CLIP
from learners.calibration.learner import _CalibrationBase
from learners.ingest.rows import RowArrays


class IsotonicCalibrationLearner(_CalibrationBase):
    """Streaming isotonic (or histogram-binning) calibration per task."""

    def __init__(self, name: str, config: CalibrationConfig) -> None:
        super().__init__(name, config)
        self.histograms = {task: StreamingIsotonic(config.hist_bins, config.hist_logit_range, config.hist_prior,
                                                   config.monotone) for task in config.tasks}

    def _predict(self, task, logit, context, p_hat):
        return self.histograms[task].predict(logit, p_hat)

    def to(self, device: torch.device | str) -> "IsotonicCalibrationLearner":
        """Histogram counts are a few hundred numbers updated by index: they stay on the CPU on any device."""
        from learners.device import resolve_device  # noqa: PLC0415

        resolve_device(device)  # still refuse a device that does not exist
        return self

    def batch_builder(self, capacity: int) -> RowArrays:
        """Rows written as examples are decoded (no context: the histograms do not read it)."""
        return RowArrays(self.tasks, (), None)

    def learn_built(self, built: RowArrays) -> dict[str, float]:
        """One update from a :meth:`batch_builder` batch (what ``learn_many`` does after decoding)."""
        metrics: dict[str, float] = {}
        total = 0.0
        for task in self.tasks:
            if not built.rows(task):
                continue
            logit, y = built.logits(task, P_CLIP), built.label_tensor(task)
            p_hat = built.p_hat_tensor(task)
            p = self.histograms[task].predict(logit, p_hat).clamp(1e-7, 1 - 1e-7)  # loss before the update
            bce = float(nn.functional.binary_cross_entropy(p, y))
            metrics[f"{task}.bce"] = bce
            total += bce
            self.histograms[task].update(logit, p_hat, y)
        if self._count(built, metrics):
            self.updates += 1
            metrics["loss"] = total
        return metrics

    def state_dict(self) -> LearnerState:
        tensors: dict[str, torch.Tensor] = {}
        for task, hist in self.histograms.items():
            tensors.update(hist.state_tensors(f"hist.{task}."))
        tensors.update(generator_tensors({"torch": self.generator}))
        return LearnerState(tensors=tensors, meta=stamp(self._meta()))

    def load_state_dict(self, state: LearnerState) -> None:
        self._load_meta(state.meta)
        for task, hist in self.histograms.items():
            hist.load_tensors(state.tensors, f"hist.{task}.")
        load_generators({"torch": self.generator}, state.tensors)


def build_isotonic(**config: Any) -> IsotonicCalibrationLearner:
    name = config.pop("name", "isotonic")
    config.setdefault("context_fields", ())
    return IsotonicCalibrationLearner(name, CalibrationConfig.from_kwargs(**config))


def build_histogram(**config: Any) -> IsotonicCalibrationLearner:
    name = config.pop("name", "histogram")
    config.setdefault("context_fields", ())
    config["monotone"] = False
    return IsotonicCalibrationLearner(name, CalibrationConfig.from_kwargs(**config))
