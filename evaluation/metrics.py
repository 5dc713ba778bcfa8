r"""Calibration metrics for binary predictions, and NDCG@k of one ranked list (numpy in, floats out).

Definitions follow UMC's evaluation code (Bai et al., SIGIR 2025, baiyimeng/UMC
``utils/metric.py``) and the usual calibration literature:

* **ECE** (expected calibration error, Naeini et al. 2015) with :math:`K` equal-width bins on
  :math:`p`: :math:`\mathrm{ECE} = \sum_k \frac{n_k}{n} \lvert \bar y_k - \bar p_k \rvert`.
* **PCOC** (predicted over observed clicks): :math:`\sum_i p_i / \sum_i y_i`; 1 is calibrated on
  average, ``inf`` when no positive was observed.
* **LogLoss**: mean binary cross-entropy with :math:`p` clipped to :math:`[\epsilon, 1-\epsilon]`.
* **AUC**: the Mann-Whitney statistic (ties count one half); ``nan`` with one class only.
* **Field-level ECE** (UMC's F-ECE): for a field :math:`F` (e.g. position, item),
  :math:`\sum_{v} \frac{n_v}{n} \lvert \bar y_v - \bar p_v \rvert` over the field's values;
  it measures miscalibration that a global ECE averages away (a calibrator that ignores
  the context cannot fix it).
* **NDCG@k** (Järvelin & Kekäläinen, 2002) of one list in its served order, gain
  :math:`2^{rel} - 1`, discount :math:`1/\log_2(1 + \mathrm{rank})`: :func:`ndcg_at_k`.

Why not scikit-learn: ECE, PCOC and field-level ECE are not in it; AUC and log-loss give the
same values as ``roc_auc_score`` and ``log_loss`` (tests/unit/learners/test_calibration_metrics.py)
in 0.64x and 0.13x of their time on 200k predictions (``bench/metrics_vs_sklearn.py``,
2026-12-03), because sklearn validates and converts its inputs on every call and the
prequential evaluation calls these on every batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

EPS = 1e-7


def _arrays(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"labels and predictions differ in length: {y_arr.size} != {p_arr.size}")
    if p_arr.size and (not np.all(np.isfinite(p_arr)) or p_arr.min() < 0.0 or p_arr.max() > 1.0):
        raise ValueError("predictions must be finite probabilities in [0, 1]")
    return y_arr, p_arr


def ece(y, p, bins: int = 100) -> float:
    """Expected calibration error over ``bins`` equal-width bins of ``p`` (UMC uses 100)."""
    y_arr, p_arr = _arrays(y, p)
    if y_arr.size == 0:
        return float("nan")
    idx = np.minimum((p_arr * bins).astype(np.int64), bins - 1)
    gap = np.abs(np.bincount(idx, weights=y_arr, minlength=bins) - np.bincount(idx, weights=p_arr, minlength=bins))
    return float(gap.sum() / y_arr.size)  # sum_k n_k/n * |mean_y - mean_p| = sum_k |sum_y - sum_p| / n


def pcoc(y, p) -> float:
    y_arr, p_arr = _arrays(y, p)
    positives = y_arr.sum()
    return float(p_arr.sum() / positives) if positives > 0 else float("inf")


def logloss(y, p) -> float:
    y_arr, p_arr = _arrays(y, p)
    if y_arr.size == 0:
        return float("nan")
    q = np.clip(p_arr, EPS, 1.0 - EPS)
    return float(-np.mean(y_arr * np.log(q) + (1.0 - y_arr) * np.log1p(-q)))


def auc(y, p) -> float:
    y_arr, p_arr = _arrays(y, p)
    pos = y_arr > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p_arr, kind="mergesort")
    sorted_p = p_arr[order]
    ranks = np.empty_like(sorted_p)
    # average ranks over ties
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[:] = np.repeat(avg, counts)
    full = np.empty_like(ranks)
    full[order] = ranks
    return float((full[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def field_ece(y, p, field_values: Sequence) -> float:
    """Field-level ECE: calibration gap per value of a field, weighted by the value's share."""
    y_arr, p_arr = _arrays(y, p)
    values = np.asarray(field_values).ravel()
    if values.size != y_arr.size:
        raise ValueError(f"field has {values.size} values for {y_arr.size} predictions")
    if y_arr.size == 0:
        return float("nan")
    _, inverse = np.unique(values, return_inverse=True)
    gap = np.abs(np.bincount(inverse, weights=y_arr) - np.bincount(inverse, weights=p_arr))
    return float(gap.sum() / y_arr.size)


def calibration_report(y, p, fields: dict[str, Sequence] | None = None, bins: int = 100) -> dict[str, float]:
    """All metrics for one method: ``ece``, ``pcoc``, ``logloss``, ``auc`` and ``field_ece_<name>``."""
    report = {"ece": ece(y, p, bins), "pcoc": pcoc(y, p), "logloss": logloss(y, p), "auc": auc(y, p),
              "n": float(np.asarray(y).size), "positives": float(np.asarray(y, dtype=np.float64).sum())}
    for name, values in (fields or {}).items():
        report[f"field_ece_{name}"] = field_ece(y, p, values)
    return report


def reliability_curve(y, p, bins: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean prediction, observed rate and count (empty bins dropped)."""
    y_arr, p_arr = _arrays(y, p)
    idx = np.minimum((p_arr * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    keep = count > 0
    mean_p = np.bincount(idx, weights=p_arr, minlength=bins)[keep] / count[keep]
    mean_y = np.bincount(idx, weights=y_arr, minlength=bins)[keep] / count[keep]
    return mean_p, mean_y, count[keep]


def ndcg_at_k(relevance_in_order: np.ndarray, k: int) -> float:
    """NDCG@k with gain 2^rel - 1 and discount 1/log2(1 + rank) (Järvelin & Kekäläinen, 2002).

    ``relevance_in_order``: the true relevance of the items in the served order. Equal to
    ``sklearn.metrics.ndcg_score([2**rel - 1], [scores], k=k)`` when the scores have no ties
    (sklearn averages over tied scores; the evaluations rank ties stably), in 0.03x of its time
    per 50-item list (``bench/metrics_vs_sklearn.py``): the LETOR evaluations call it for every
    held-out request at every evaluation step.
    """
    rel = np.asarray(relevance_in_order, dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, min(k, len(rel)) + 2))
    dcg = float(((2.0 ** rel[:k] - 1.0) * discounts).sum())
    ideal = np.sort(rel)[::-1]
    idcg = float(((2.0 ** ideal[:k] - 1.0) * discounts).sum())
    return dcg / idcg if idcg > 0 else 0.0
