"""The calibration simulator's truth and its backbone's bias are what simulator/calibration.py says."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.calibration import GROUP_BIAS, CalibrationSimConfig, simulate_calibration_stream, user_group


@pytest.fixture(scope="module")
def frame(sources):
    return simulate_calibration_stream(CalibrationSimConfig(requests=3000, users=400, seed=1), *sources)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_truth_is_a_probability_and_clicks_follow_it(frame):
    assert frame["p_true"].between(0, 1).all() and frame["p_hat"].between(0, 1, inclusive="neither").all()
    assert set(frame["click"].unique()) <= {0, 1}
    assert frame["click"].mean() == pytest.approx(frame["p_true"].mean(), abs=0.01)
    assert frame["ts"].is_monotonic_increasing and frame["position"].between(1, 10).all()


def test_the_truth_is_the_pbm_with_the_users_engagement(frame):
    # relevance 4 at position 1 for a full_active user (engagement 1): alpha(4) = 0.9, examination 1
    rows = frame[(frame["relevance"] == 4) & (frame["position"] == 1) & (frame["activity"] == "full_active")]
    assert len(rows) and np.allclose(rows["p_true"], 0.9)
    # the truth falls as 1/k with the position (eta = 1) for a fixed grade and user
    rows = frame[(frame["relevance"] == 4) & (frame["activity"] == "full_active")]
    assert np.allclose(rows["p_true"] * rows["position"], 0.9)


def test_the_backbone_bias_by_group_and_position_is_the_documented_one(frame):
    config = CalibrationSimConfig()
    residual = (_logit(frame["p_hat"].to_numpy()) - config.temperature * _logit(frame["p_true"].to_numpy())
                - config.position_bias * np.log(frame["position"].to_numpy()))
    for group, bias in GROUP_BIAS.items():
        mask = (frame["user_group"] == group).to_numpy()
        assert residual[mask].mean() == pytest.approx(bias, abs=4 * config.noise / np.sqrt(mask.sum()))
    gap = frame.assign(gap=frame["p_hat"] - frame["p_true"]).groupby("user_group")["gap"].mean()
    assert gap["active"] > 0.01 and gap["high"] < -0.01 and gap["casual"] < 0  # over- vs under-predicting
    # the logit bias grows with the position: gamma * ln k
    mean_by_position = (_logit(frame["p_hat"]) - config.temperature * _logit(frame["p_true"])).groupby(
        frame["position"]).mean()
    assert mean_by_position[10] - mean_by_position[1] == pytest.approx(config.position_bias * np.log(10), abs=0.1)


def test_groups_come_from_the_kuairand_activity_degree(frame):
    assert user_group("full_active") == "active" and user_group("high_active") == "high"
    assert user_group("low_active") == "casual" == user_group("UNKNOWN")
    assert (frame["activity"].map(user_group) == frame["user_group"]).all()


def test_the_stream_is_deterministic_given_the_seed(sources):
    a = simulate_calibration_stream(CalibrationSimConfig(requests=50, seed=3), *sources)
    b = simulate_calibration_stream(CalibrationSimConfig(requests=50, seed=3), *sources)
    c = simulate_calibration_stream(CalibrationSimConfig(requests=50, seed=4), *sources)
    assert a.equals(b) and not a.equals(c)


@pytest.mark.parametrize("kwargs, message", [
    ({"requests": 0}, "must be >= 1"),
    ({"noise": -1.0}, "noise >= 0"),
    ({"group_bias": (("active", 1.0),)}, "lacks groups"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalibrationSimConfig(**kwargs)
