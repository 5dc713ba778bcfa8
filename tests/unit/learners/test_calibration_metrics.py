"""ECE, PCOC, LogLoss, AUC and field-level ECE (evaluation/metrics.py) against hand and scikit-learn values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from evaluation.metrics import auc, calibration_report, ece, field_ece, logloss, pcoc


def test_ece_by_hand():
    y = [0, 1, 0, 1]
    p = [0.1, 0.15, 0.8, 0.9]
    # 2 bins: [0, .5): mean y .5, mean p .125 -> .375 * 2/4 ; [.5, 1]: mean y .5, mean p .85 -> .35 * 2/4
    assert ece(y, p, bins=2) == pytest.approx(0.375 / 2 + 0.35 / 2)


def test_perfectly_calibrated_bins_have_zero_ece():
    assert ece([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], bins=10) == pytest.approx(0.0)


def test_auc_and_logloss_agree_with_sklearn():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(float)
    p[:50] = p[50:100]  # ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert logloss(y, p) == pytest.approx(log_loss(y, p))


def test_pcoc_and_single_class_edge_cases():
    assert pcoc([0, 1, 1, 0], [0.2, 0.4, 0.6, 0.8]) == pytest.approx(1.0)
    assert pcoc([0, 0], [0.1, 0.2]) == math.inf
    assert math.isnan(auc([0, 0, 0], [0.1, 0.2, 0.3]))


def test_field_ece_sees_what_global_ece_averages_away():
    # position 1 over-predicted, position 2 under-predicted by the same amount: globally calibrated
    y = np.array([0, 0, 1, 1] * 50, dtype=float)
    p = np.array([0.5, 0.5, 0.5, 0.5] * 50)
    positions = np.array([1, 1, 2, 2] * 50)
    assert ece(y, p) == pytest.approx(0.0)
    assert field_ece(y, p, positions) == pytest.approx(0.5)


@pytest.mark.parametrize("y, p, message", [
    ([0, 1], [0.5], "differ in length"),
    ([0, 1], [0.5, 1.5], "probabilities"),
    ([0, 1], [0.5, float("nan")], "probabilities"),
])
def test_invalid_inputs_are_refused(y, p, message):
    with pytest.raises(ValueError, match=message):
        ece(y, p)


def test_report_has_the_metric_names_the_cli_promises():
    report = calibration_report([0, 1, 0, 0], [0.1, 0.7, 0.2, 0.3], {"position": [1, 2, 3, 1], "item": [5, 5, 6, 6]})
    assert {"ece", "pcoc", "logloss", "auc", "field_ece_position", "field_ece_item"} <= set(report)
