"""The cluster bootstrap of evaluation.bootstrap: the data's row equals evaluation.metrics, a replicate
equals the metrics on the explicitly duplicated rows, intervals cover a known value and shrink with n,
resampling is by cluster, and bad inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.bootstrap import Interval, bootstrap_samples, cluster_counts, difference, nest, summarise
from evaluation.metrics import auc, calibration_report, ece, field_ece, logloss, pcoc


def _data(n: int, clusters: int, seed: int, bias_sd: float = 0.0):
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, size=n)
    shift = rng.normal(0.0, bias_sd, size=clusters)[cluster]
    p = rng.uniform(0.02, 0.6, size=n)
    y = (rng.random(n) < np.clip(p + shift, 0, 1)).astype(float)
    field = rng.integers(0, 5, size=n)
    return y, p, cluster, field


def test_the_first_row_is_the_metrics_on_the_data():
    y, p, cluster, field = _data(3000, 60, 0)
    s = bootstrap_samples(y, p, cluster, {"f": field}, replicates=5, seed=1)
    report = calibration_report(y, p, {"f": field})
    for name in ("ece", "pcoc", "logloss", "auc"):
        assert s[name][0] == pytest.approx(report[name], rel=1e-9)
    assert s["field_ece.f"][0] == pytest.approx(report["field_ece_f"], rel=1e-9)
    assert all(len(v) == 6 for v in s.values())


def test_a_replicate_is_the_metrics_on_the_resampled_clusters_rows():
    y, p, cluster, field = _data(800, 25, 2)
    p_true = np.clip(p + 0.01, 0, 1)
    s = bootstrap_samples(y, p, cluster, {"f": field}, p_true=p_true, replicates=3, seed=7)
    counts, inverse = cluster_counts(cluster, 3, 7)
    for r in (1, 2, 3):
        rows = np.repeat(np.arange(len(y)), counts[r][inverse].astype(int))
        assert s["ece"][r] == pytest.approx(ece(y[rows], p[rows]), rel=1e-9)
        assert s["auc"][r] == pytest.approx(auc(y[rows], p[rows]), rel=1e-9)
        assert s["pcoc"][r] == pytest.approx(pcoc(y[rows], p[rows]), rel=1e-9)
        assert s["logloss"][r] == pytest.approx(logloss(y[rows], p[rows]), rel=1e-9)
        assert s["field_ece.f"][r] == pytest.approx(field_ece(y[rows], p[rows], field[rows]), rel=1e-9)
        assert s["mae_true"][r] == pytest.approx(np.abs(p[rows] - p_true[rows]).mean(), rel=1e-9)
        assert s["ece_true"][r] == pytest.approx(ece(p_true[rows], p[rows]), rel=1e-9)


def test_the_interval_covers_a_known_value_about_95_percent_of_the_time():
    # predictions that are calibrated by construction: the population PCOC is 1
    covered = 0
    trials = 40
    for t in range(trials):
        y, p, cluster, _ = _data(2000, 200, 100 + t)
        interval = summarise([bootstrap_samples(y, p, cluster, replicates=200, seed=t)])["pcoc"]
        covered += interval.lo <= 1.0 <= interval.hi
    assert covered >= 0.85 * trials


def test_intervals_shrink_with_more_data():
    def width(n: int) -> float:
        y, p, cluster, _ = _data(n, n // 10, 5)
        i = summarise([bootstrap_samples(y, p, cluster, replicates=300, seed=0)])["logloss"]
        return i.hi - i.lo

    small, large = width(1000), width(16000)
    assert large < 0.5 * small  # ~1/sqrt(16) = 0.25 expected


def test_resampling_clusters_widens_the_interval_when_rows_of_a_cluster_share_a_bias():
    y, p, cluster, _ = _data(6000, 30, 3, bias_sd=0.15)
    by_cluster = summarise([bootstrap_samples(y, p, cluster, replicates=300, seed=0)])["pcoc"]
    by_row = summarise([bootstrap_samples(y, p, np.arange(len(y)), replicates=300, seed=0)])["pcoc"]
    assert by_cluster.hi - by_cluster.lo > 2 * (by_row.hi - by_row.lo)


def test_the_interval_contains_the_observed_value_even_for_upward_biased_gap_metrics():
    y, p, cluster, _ = _data(3000, 300, 4)
    items = np.arange(len(y)) // 3  # 1000 "items" of 3 rows: resampling inflates the per-item gaps
    i = summarise([bootstrap_samples(y, p, cluster, {"item": items}, replicates=200, seed=0)])["field_ece.item"]
    assert i.lo <= i.value <= i.hi


def test_seeds_average_and_paired_differences_and_nesting():
    y, p, cluster, field = _data(2000, 50, 6)
    a = [bootstrap_samples(y, p, cluster, {"f": field}, replicates=50, seed=s) for s in (0, 1)]
    b = [bootstrap_samples(y, np.clip(p * 1.2, 0, 1), cluster, {"f": field}, replicates=50, seed=s) for s in (0, 1)]
    assert summarise(a)["ece"].value == pytest.approx(a[0]["ece"][0])  # same data both seeds
    diff = difference(a, b)["pcoc"]
    assert diff.value == pytest.approx(a[0]["pcoc"][0] - b[0]["pcoc"][0]) and diff.hi < 0
    doc = nest(summarise(a))
    assert set(doc["field_ece"]) == {"f"} and set(doc["ece"]) == {"value", "ci95"} and len(doc["ece"]["ci95"]) == 2
    assert nest({"ece": 0.5, "field_ece.f": 0.25}) == {"ece": 0.5, "field_ece": {"f": 0.25}}  # point values as they are
    assert Interval(1, 0, 2).overlaps(Interval(1.5, 1.5, 3)) and not Interval(1, 0, 1).overlaps(Interval(2, 1.5, 3))


@pytest.mark.parametrize("kwargs, message", [
    ({"y": [0, 1], "p": [0.5]}, "differ in length"),
    ({"clusters": [0]}, "differ in length"),
    ({"p": [0.5, 1.5]}, "finite probabilities"),
    ({"replicates": 0}, "replicates must be >= 1"),
    ({"fields": {"f": [1]}}, "field 'f' has 1 values for 2 predictions"),
])
def test_bad_inputs_are_refused(kwargs, message):
    args = {"y": [0, 1], "p": [0.2, 0.7], "clusters": [0, 1], **kwargs}
    with pytest.raises(ValueError, match=message):
        bootstrap_samples(**args)


def test_the_label_noise_floor_is_the_sampling_error_of_the_bins():
    """One bin of n rows at p* = 0.5: E|sum(y - p*)| / n = sqrt(2/pi) * 0.5 / sqrt(n); spread predictions
    (more, smaller bins) have a higher floor for the same truth, and no truth noise means no floor."""
    from learners.calibration.benchmark import label_noise_floor

    n = 4000
    truth = np.full(n, 0.5)
    one_bin = label_noise_floor(np.full(n, 0.5), truth, draws=400, seed=1)
    assert one_bin == pytest.approx(np.sqrt(2 / np.pi) * 0.5 / np.sqrt(n), rel=0.08)
    spread = label_noise_floor(np.linspace(0.0, 0.999, n), truth, draws=400, seed=1)
    assert spread == pytest.approx(np.sqrt(2 / np.pi) * 0.5 / np.sqrt(n / 100), rel=0.08)  # 100 bins of n/100
    assert label_noise_floor(np.linspace(0, 1, n), np.zeros(n)) == 0.0
