r"""Intervals for online-evaluation comparisons: paired relative gains and per-seed summaries.

* :func:`relative_gain`: the relative gain of method :math:`a` over a baseline :math:`s`,
  evaluated on the same requests (paired),

  .. math:: \Delta = \frac{\sum_{r,i} a_{r,i}}{\sum_{r,i} s_{r,i}} - 1

  over seeds :math:`r` and evaluation requests :math:`i`, with a 95 % **hierarchical paired
  bootstrap** interval (Davison & Hinkley, 1997, §3.8: resample seeds with replacement, then
  evaluation requests with replacement within each drawn seed; the same draw for both
  methods). It covers both the training-seed spread and the evaluation-sample noise.
* :func:`seed_interval`: mean over seeds with a Student-t 95 % interval
  :math:`\bar x \pm t_{0.975, n-1}\, s/\sqrt n` (a single seed gives a zero-width interval).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

BOOTSTRAP_METHOD = "hierarchical paired bootstrap (seeds, then evaluation requests within each seed), 95 %"
SEED_METHOD = "Student-t over seeds, 95 %"


def relative_gain(method: Sequence[np.ndarray], baseline: Sequence[np.ndarray], n_boot: int = 2000,
                  seed: int = 12345) -> dict[str, float | list[float]]:
    """``{value, ci95: [lo, hi]}`` of :math:`\\Delta`; ``method[r]``/``baseline[r]`` are seed r's per-request values."""
    if len(method) != len(baseline) or not method:
        raise ValueError("need the same non-zero number of seeds for the method and the baseline")
    a = [np.asarray(x, dtype=np.float64) for x in method]
    s = [np.asarray(x, dtype=np.float64) for x in baseline]
    if any(x.shape != y.shape or x.size == 0 for x, y in zip(a, s)):
        raise ValueError("each seed needs the same non-empty set of requests for both")
    value = sum(x.sum() for x in a) / sum(y.sum() for y in s) - 1.0
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        num = den = 0.0
        for r in rng.integers(len(a), size=len(a)):
            idx = rng.integers(a[r].size, size=a[r].size)
            num += a[r][idx].sum()
            den += s[r][idx].sum()
        boot[b] = num / den - 1.0 if den > 0 else np.nan
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"value": float(value), "ci95": [float(lo), float(hi)]}


def seed_interval(values: Sequence[float]) -> dict[str, float | list[float]]:
    """``{value, ci95}``: the mean over seeds and its Student-t interval."""
    from scipy import stats  # noqa: PLC0415

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if x.size < 2:
        return {"value": mean, "ci95": [mean, mean]}
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return {"value": mean, "ci95": [mean - half, mean + half]}
