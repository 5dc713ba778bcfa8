r"""Dip and recovery time of a metric curve after a shift (pure; ``streamrank eval drift``).

A curve is a list of ``(lists, value)`` points (lists = requests served so far), the shift at
``shift_at`` lists. With :math:`P` the points at or before the shift and :math:`Q` those after:

* **pre-shift level** :math:`L = \mathrm{mean}` of the last ``pre_points`` values of :math:`P`;
* **dip** :math:`D = L - \min_{Q} v` (negative when the metric only rose);
* **target**: :math:`L` (``steady=False``), or :math:`\min(L, S)` with the *new steady state*
  :math:`S` = mean of the last ``steady_points`` values of :math:`Q` (``steady=True``: for a
  metric whose level the shift itself moves, e.g. the reward of a harder click model);
* **recovery_lists**: the lists from the shift to the first point of :math:`Q` at or after
  the dip's first point below :math:`T - \tau` (tolerance :math:`\tau`) at which the value is
  back at or above :math:`T - \tau` *and stays there* for the rest of the run: 0 when the
  metric never falls below :math:`T - \tau`; ``None`` when it is below at the end (it never
  recovered within the run: a censored time, which summaries count as the lists left after
  the shift and flag with ``recovered = False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ShiftResponse:
    level: float  # L
    dip: float  # D
    target: float  # T
    recovery_lists: int | None  # None: never recovered
    censored_lists: int  # recovery_lists, or the lists left after the shift when it never recovered

    @property
    def recovered(self) -> bool:
        return self.recovery_lists is not None


def shift_response(curve: Sequence[tuple[int, float]], shift_at: int, tolerance: float, *, pre_points: int = 3,
                   steady: bool = False, steady_points: int = 3) -> ShiftResponse:
    """Dip and recovery of ``curve`` after ``shift_at`` (see the module docstring)."""
    before = [v for step, v in curve if step <= shift_at]
    after = [(step, v) for step, v in curve if step > shift_at]
    if not before or not after:
        raise ValueError("the curve needs points before and after the shift")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    level = float(np.mean(before[-pre_points:]))
    values = np.array([v for _, v in after], dtype=np.float64)
    dip = level - float(values.min())
    target = min(level, float(values[-steady_points:].mean())) if steady else level
    below = values < target - tolerance
    left = int(after[-1][0] - shift_at)
    if not below.any():
        return ShiftResponse(level, dip, target, 0, 0)
    if below[-1]:
        return ShiftResponse(level, dip, target, None, left)
    last_below = int(np.flatnonzero(below)[-1])
    lists = int(after[last_below + 1][0] - shift_at)
    return ShiftResponse(level, dip, target, lists, lists)
