r"""Cluster-bootstrap 95 % intervals for the calibration metrics of :mod:`evaluation.metrics`.

**Resampling unit: the cluster** (in the calibration evaluations, the user). Rows of one user
share the user's (mis)calibration, so resampling rows would treat them as independent and
understate the variance; resampling whole users keeps that dependence (the cluster bootstrap,
Davison & Hinkley 1997, §3.8; Field & Welsh 2007). A replicate draws :math:`C` clusters with
replacement out of :math:`C`, i.e. multinomial counts :math:`m_c`; row :math:`i` of cluster
:math:`c(i)` gets weight :math:`w_i = m_{c(i)}`, and every metric is computed with those weights:

.. math::
    \mathrm{ECE}_w = \frac{\sum_k \lvert \sum_{i \in k} w_i (y_i - p_i) \rvert}{\sum_i w_i},\qquad
    \mathrm{FECE}_w = \frac{\sum_v \lvert \sum_{i: F_i = v} w_i (y_i - p_i) \rvert}{\sum_i w_i},\qquad
    \mathrm{PCOC}_w = \frac{\sum_i w_i p_i}{\sum_i w_i y_i}

(ECE over 100 equal-width bins of :math:`p`, as :func:`evaluation.metrics.ece`), LogLoss the
weighted mean cross-entropy and AUC the weighted Mann-Whitney statistic (ties count one half).
With all weights 1 these are exactly :func:`evaluation.metrics.calibration_report`'s values.
The reported value :math:`\hat\theta` is the metric on the data as observed. The interval is the
percentile interval of the replicates (Efron & Tibshirani 1993, ch. 13) shifted by the
bootstrap's estimate of the bias, :math:`\bar\theta^\ast - \hat\theta` (ch. 10):

.. math:: \big[\hat\theta + q^\ast_{2.5\%} - \bar\theta^\ast,\ \hat\theta + q^\ast_{97.5\%} - \bar\theta^\ast\big]

Why the shift: the gap metrics sum absolute values of per-cell sums, and a resample adds noise to
every cell, so their replicates sit above :math:`\hat\theta` (with ~13 rows per item the plain
percentile interval of the per-item field-ECE lies wholly above the observed value). The
shift keeps the bootstrap's spread and centres it on the data; for unbiased metrics (PCOC,
LogLoss, ``mae_true``) it is negligible.

With the true probability :math:`p^\ast` known (a simulator), also ``mae_true``
:math:`= \sum_i w_i \lvert p_i - p^\ast_i \rvert / \sum_i w_i`, and ``ece_true`` /
``field_ece_true.<F>``: the same gaps with :math:`y` replaced by :math:`p^\ast` (calibration
against the truth, without the label noise).

Several seeds: :func:`summarise` averages the point values, and the replicates index by index
(independent draws per seed), which is the bootstrap distribution of the mean over seeds.
The same ``seed`` gives the same cluster draws for every method of one data set, so the
replicates are paired and :func:`difference` gives intervals of a difference between methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import sparse

from evaluation.metrics import EPS

Samples = dict[str, np.ndarray]  # metric -> [point value, replicate 1, ..., replicate B]


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": [self.lo, self.hi]}

    def overlaps(self, other: "Interval") -> bool:
        return not (self.hi < other.lo or other.hi < self.lo)


def cluster_counts(clusters: Sequence[Any] | np.ndarray, replicates: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(counts [1 + B, C], cluster index of each row)``; row 0 of ``counts`` is all ones (the data)."""
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(inverse.max(initial=-1)) + 1
    if n_clusters == 0:
        raise ValueError("no rows to bootstrap")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=replicates)
    return np.vstack([np.ones((1, n_clusters)), draws]).astype(np.float64), inverse.ravel()


def _cells(inverse: np.ndarray, group: np.ndarray, values: np.ndarray, n_clusters: int) -> sparse.csr_matrix:
    n_groups = int(group.max(initial=-1)) + 1
    return sparse.csr_matrix((values, (inverse, group)), shape=(n_clusters, max(n_groups, 1)))


def _gap(counts: np.ndarray, inverse: np.ndarray, group: np.ndarray, diff: np.ndarray,
         total: np.ndarray) -> np.ndarray:
    """``sum_g |sum_{i in g} w_i diff_i| / sum_i w_i`` for every row of ``counts``."""
    cells = _cells(inverse, group, diff, counts.shape[1])
    per_group = np.asarray((cells.T @ counts.T)).T  # [1 + B, G]
    return np.abs(per_group).sum(axis=1) / total


def _auc(counts: np.ndarray, inverse: np.ndarray, y: np.ndarray, p: np.ndarray, chunk: int = 32) -> np.ndarray:
    _, tie = np.unique(p, return_inverse=True)  # rank of each distinct value, ascending
    n_clusters = counts.shape[1]
    pos = _cells(inverse, tie.ravel(), (y > 0.5).astype(np.float64), n_clusters).T.tocsr()  # [U, C]
    neg = _cells(inverse, tie.ravel(), (y <= 0.5).astype(np.float64), n_clusters).T.tocsr()
    out = []
    for start in range(0, counts.shape[0], chunk):
        k = counts[start:start + chunk].T  # [C, b]
        wp, wn = np.asarray(pos @ k), np.asarray(neg @ k)  # [U, b]
        below = np.cumsum(wn, axis=0) - wn
        den = wp.sum(axis=0) * wn.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(den > 0, (wp * (below + 0.5 * wn)).sum(axis=0) / den, np.nan))
    return np.concatenate(out)


def _codes(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(values).astype(str), return_inverse=True)[1].ravel()


def bootstrap_samples(y: np.ndarray, p: np.ndarray, clusters: Sequence[Any] | np.ndarray,
                      fields: Mapping[str, Sequence[Any]] | None = None, p_true: np.ndarray | None = None,
                      replicates: int = 400, seed: int = 0, bins: int = 100) -> Samples:
    """Every metric on the data (index 0) and on ``replicates`` cluster resamples (see the module docstring)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape or len(np.asarray(clusters)) != y.size:
        raise ValueError(f"labels ({y.size}), predictions ({p.size}) and clusters ({len(clusters)}) differ in length")
    if y.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("predictions must be finite probabilities in [0, 1]")
    counts, inverse = cluster_counts(clusters, replicates, seed)
    total = counts @ np.bincount(inverse, minlength=counts.shape[1]).astype(np.float64)

    def per_cluster(values: np.ndarray) -> np.ndarray:
        return counts @ np.bincount(inverse, weights=values, minlength=counts.shape[1])

    bin_of = np.minimum((p * bins).astype(np.int64), bins - 1)
    q = np.clip(p, EPS, 1.0 - EPS)
    out: Samples = {
        "ece": _gap(counts, inverse, bin_of, y - p, total),
        "logloss": -per_cluster(y * np.log(q) + (1.0 - y) * np.log1p(-q)) / total,
        "auc": _auc(counts, inverse, y, p),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        positives = per_cluster(y)
        out["pcoc"] = np.where(positives > 0, per_cluster(p) / positives, np.inf)
    codes = {name: _codes(values) for name, values in (fields or {}).items()}
    for name, code in codes.items():
        if code.size != y.size:
            raise ValueError(f"field {name!r} has {code.size} values for {y.size} predictions")
        out[f"field_ece.{name}"] = _gap(counts, inverse, code, y - p, total)
    if p_true is not None:
        truth = np.asarray(p_true, dtype=np.float64).ravel()
        out["mae_true"] = per_cluster(np.abs(p - truth)) / total
        out["ece_true"] = _gap(counts, inverse, bin_of, truth - p, total)
        for name, code in codes.items():
            out[f"field_ece_true.{name}"] = _gap(counts, inverse, code, truth - p, total)
    return out


def summarise(samples: Sequence[Samples], level: float = 0.95) -> dict[str, Interval]:
    """Point value and bias-shifted percentile interval per metric, averaged over the seeds' samples."""
    if not samples:
        raise ValueError("no samples to summarise")
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for name in samples[0]:
        mean = np.mean([s[name] for s in samples], axis=0)
        reps = mean[1:][np.isfinite(mean[1:])]
        if not (reps.size and np.isfinite(mean[0])):
            out[name] = Interval(float(mean[0]), float("nan"), float("nan"))
            continue
        lo, hi = np.percentile(reps, [tail, 100.0 - tail]) - reps.mean() + mean[0]
        out[name] = Interval(float(mean[0]), float(lo), float(hi))
    return out


def difference(a: Sequence[Samples], b: Sequence[Samples], level: float = 0.95) -> dict[str, Interval]:
    """Paired ``a - b`` per metric (same seeds, so the same cluster draws)."""
    return summarise([{k: sa[k] - sb[k] for k in sa if k in sb} for sa, sb in zip(a, b)], level)


def nest(flat: Mapping[str, Interval | float]) -> dict[str, Any]:
    """``{"field_ece.position": I}`` -> ``{"field_ece": {"position": {value, ci95}}}`` (JSON-ready);
    plain point values (a float instead of an :class:`Interval`) are nested as they are."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        head, _, field = name.partition(".")
        doc = value.as_json() if isinstance(value, Interval) else value
        if field:
            out.setdefault(head, {})[field] = doc
        else:
            out[head] = doc
    return out
