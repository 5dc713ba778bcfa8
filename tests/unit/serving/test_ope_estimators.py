"""IPS, SNIPS and DR on a four-round log computed by hand, the clipping boundary, the bootstrap interval,
the obp-layout adapters, list-wise weights, ``evaluate`` and the error message of every bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import ope

# Four logged rounds: w = evaluation_prob / pscore = [0.5, 2, 2, 0.5]
REWARD = [1.0, 0.0, 1.0, 1.0]
PSCORE = [0.5, 0.25, 0.2, 0.8]
EVAL = [0.25, 0.5, 0.4, 0.4]
Q_FACT = [0.6, 0.2, 0.5, 0.9]
Q_EXP = [0.4, 0.3, 0.5, 0.7]

# A longer log of irregular values, for the bootstrap: its resampled means are (almost) all distinct,
# so the percentiles move when the number of resamples or the seed changes.
_RNG = np.random.default_rng(5)
LONG_REWARD, LONG_PSCORE, LONG_EVAL = _RNG.random(15), _RNG.uniform(0.2, 0.9, 15), _RNG.uniform(0.0, 1.0, 15)
LONG_IPS_ROUNDS = (LONG_REWARD * LONG_EVAL / LONG_PSCORE).tolist()


def _percentile_bootstrap(samples: list[float], alpha: float, n_boot: int, seed: int) -> tuple[float, float, float]:
    """obp's percentile bootstrap: resample with numpy.random.RandomState(seed).choice, then percentiles."""
    state = np.random.RandomState(seed)
    arr = np.asarray(samples, dtype=np.float64)
    means = [float(np.mean(state.choice(arr, size=len(arr)))) for _ in range(n_boot)]
    return float(np.mean(means)), float(np.percentile(means, 50 * alpha)), float(np.percentile(means, 100 - 50 * alpha))


def test_ips_is_the_mean_of_weighted_rewards() -> None:
    ips = ope.InverseProbabilityWeighting()
    assert ips.round_rewards(REWARD, PSCORE, EVAL).tolist() == pytest.approx([0.5, 0.0, 2.0, 0.5], rel=1e-12)
    assert ips.estimate_policy_value(REWARD, PSCORE, EVAL) == pytest.approx(3.0 / 4, rel=1e-12)


def test_snips_normalises_by_the_sum_of_weights() -> None:
    snips = ope.SelfNormalizedInverseProbabilityWeighting()
    # sum w r / sum w = 3 / 5; per round w r / mean(w) with mean(w) = 1.25
    assert snips.round_rewards(REWARD, PSCORE, EVAL).tolist() == pytest.approx([0.4, 0.0, 1.6, 0.4], rel=1e-12)
    assert snips.estimate_policy_value(REWARD, PSCORE, EVAL) == pytest.approx(0.6, rel=1e-12)


def test_dr_adds_the_weighted_residual_to_the_reward_models_policy_value() -> None:
    dr = ope.DoublyRobust()
    # q_pi + w (r - q): 0.4 + 0.5 * 0.4, 0.3 + 2 * (-0.2), 0.5 + 2 * 0.5, 0.7 + 0.5 * 0.1
    rounds = dr.round_rewards(REWARD, PSCORE, EVAL, q_hat_factual=Q_FACT, q_hat_expected=Q_EXP)
    assert rounds.tolist() == pytest.approx([0.6, -0.1, 1.5, 0.75], rel=1e-12)
    assert dr.estimate_policy_value(REWARD, PSCORE, EVAL, q_hat_factual=Q_FACT, q_hat_expected=Q_EXP) == \
        pytest.approx(0.6875, rel=1e-12)


def test_clipping_caps_each_weight_at_lambda_and_a_weight_on_the_cap_is_kept() -> None:
    assert ope.InverseProbabilityWeighting(lambda_=1.0).estimate_policy_value(REWARD, PSCORE, EVAL) == \
        pytest.approx((0.5 + 0.0 + 1.0 + 0.5) / 4, rel=1e-12)
    assert ope.SelfNormalizedInverseProbabilityWeighting(lambda_=1.0).estimate_policy_value(REWARD, PSCORE, EVAL) == \
        pytest.approx(2.0 / 3.0, rel=1e-12)
    assert ope.DoublyRobust(lambda_=1.0).estimate_policy_value(REWARD, PSCORE, EVAL, q_hat_factual=Q_FACT,
                                                               q_hat_expected=Q_EXP) == pytest.approx(0.6125, rel=1e-12)
    on_cap = ope.InverseProbabilityWeighting(lambda_=2.0)
    assert on_cap.weights(np.array(PSCORE), np.array(EVAL)).tolist() == pytest.approx([0.5, 2.0, 2.0, 0.5])
    assert ope.InverseProbabilityWeighting().lambda_ == math.inf


@pytest.mark.parametrize("lambda_", [0.0, -1.0, float("nan")])
def test_a_non_positive_clip_is_refused(lambda_: float) -> None:
    with pytest.raises(ope.OpeInputError, match=r"lambda_ must be > 0, got"):
        ope.InverseProbabilityWeighting(lambda_=lambda_)


def test_estimate_reports_the_point_value_its_bootstrap_interval_and_the_setting() -> None:
    est = ope.InverseProbabilityWeighting().estimate(REWARD, PSCORE, EVAL, alpha=0.2, n_bootstrap_samples=500,
                                                     random_state=3)
    _, lower, upper = _percentile_bootstrap([0.5, 0.0, 2.0, 0.5], 0.2, 500, 3)
    assert (est.estimator, est.n, est.alpha) == ("ipw", 4, 0.2)
    assert est.value == pytest.approx(0.75, rel=1e-12)
    assert (est.lower, est.upper) == (pytest.approx(lower, rel=1e-12), pytest.approx(upper, rel=1e-12))
    assert est.lower < est.value < est.upper
    assert est.as_dict() == {"estimator": "ipw", "value": est.value, "ci_lower": est.lower, "ci_upper": est.upper,
                             "n": 4, "alpha": 0.2}


def test_estimate_defaults_to_a_95_percent_interval_of_ten_thousand_resamples() -> None:
    est = ope.InverseProbabilityWeighting().estimate(LONG_REWARD, LONG_PSCORE, LONG_EVAL, random_state=8)
    _, lower, upper = _percentile_bootstrap(LONG_IPS_ROUNDS, 0.05, 10_000, 8)
    assert est.estimator == "ipw" and est.alpha == 0.05 and est.n == 15
    assert (est.lower, est.upper) == (pytest.approx(lower, rel=1e-12), pytest.approx(upper, rel=1e-12))
    dr = ope.DoublyRobust().estimate(REWARD, PSCORE, EVAL, n_bootstrap_samples=50, q_hat_factual=Q_FACT,
                                     q_hat_expected=Q_EXP)
    assert dr.estimator == "dr" and dr.value == pytest.approx(0.6875, rel=1e-12)


def test_bootstrap_ci_is_obps_percentile_interval_with_the_mean_of_the_resampled_means() -> None:
    samples = [0.3, 1.7, -0.4, 2.2, 0.9, 0.0]
    got = ope.bootstrap_ci(np.array(samples), alpha=0.1, n_bootstrap_samples=400, random_state=21)
    mean, lower, upper = _percentile_bootstrap(samples, 0.1, 400, 21)
    assert got == {"mean": pytest.approx(mean, rel=1e-12), "lower": pytest.approx(lower, rel=1e-12),
                   "upper": pytest.approx(upper, rel=1e-12)}
    default = ope.bootstrap_ci(np.array(LONG_IPS_ROUNDS), random_state=21)
    mean, lower, upper = _percentile_bootstrap(LONG_IPS_ROUNDS, 0.05, 10_000, 21)
    assert default["lower"] == pytest.approx(lower, rel=1e-12) and default["upper"] == pytest.approx(upper, rel=1e-12)
    one = ope.bootstrap_ci(np.array([2.5, 2.5]), n_bootstrap_samples=1)  # one resample is allowed
    assert one == {"mean": 2.5, "lower": 2.5, "upper": 2.5}
    # computed in float64 whatever the samples' dtype
    single = np.array(LONG_IPS_ROUNDS, dtype=np.float32)
    got32 = ope.bootstrap_ci(single, n_bootstrap_samples=300, random_state=2)
    mean, lower, upper = _percentile_bootstrap(single.astype(np.float64).tolist(), 0.05, 300, 2)
    assert got32 == {"mean": pytest.approx(mean, rel=1e-13), "lower": pytest.approx(lower, rel=1e-13),
                     "upper": pytest.approx(upper, rel=1e-13)}


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 0.0}, r"alpha must be in \(0, 1\), got 0.0"),
    ({"alpha": 1.0}, r"alpha must be in \(0, 1\), got 1.0"),
    ({"n_bootstrap_samples": 0}, r"n_bootstrap_samples must be >= 1, got 0"),
])
def test_bad_bootstrap_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ope.OpeInputError, match=message):
        ope.bootstrap_ci(np.ones(3), **kwargs)


BAD = [
    (dict(reward=[[1.0, 0.0]], pscore=[0.5], evaluation_prob=[0.5]), r"^reward must be a 1-dimensional array, got shape \(1, 2\)$"),
    (dict(reward=[1.0, 0.0], pscore=[0.5, 0.5, 0.5], evaluation_prob=[0.5, 0.5]), r"^pscore has 3 rounds, expected 2$"),
    (dict(reward=[1.0, 0.0], pscore=[0.5, 0.5], evaluation_prob=[0.5]), r"^evaluation_prob has 1 rounds, expected 2$"),
    (dict(reward=[1.0], pscore=[float("inf")], evaluation_prob=[0.5]), r"^pscore contains NaN or infinite values$"),
    (dict(reward=[1.0], pscore=[0.5], evaluation_prob=[float("nan")]), r"^evaluation_prob contains NaN or infinite"),
    (dict(reward=[float("-inf")], pscore=[0.5], evaluation_prob=[0.5]), r"^reward contains NaN or infinite values$"),
    (dict(reward=[], pscore=[], evaluation_prob=[]), r"^reward is empty: need at least one logged round$"),
    (dict(reward=[1.0, 1.0], pscore=[0.5, -0.1], evaluation_prob=[0.5, 0.5]), r"^pscore must be > 0 \(a logged action"),
    (dict(reward=[1.0], pscore=[0.5], evaluation_prob=[-1e-9]), r"^evaluation_prob must be >= 0$"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
@pytest.mark.parametrize("estimator", ["ipw", "snipw", "dr"])
def test_every_estimator_refuses_bad_rounds_with_a_message_naming_the_argument(estimator: str, kwargs: dict,
                                                                                message: str) -> None:
    n = len(kwargs["reward"])
    with pytest.raises(ope.OpeInputError, match=message):
        ope.ESTIMATORS[estimator]().round_rewards(**kwargs, q_hat_factual=[0.0] * n, q_hat_expected=[0.0] * n)


def test_a_missing_value_is_reported_as_nan_naming_the_argument() -> None:
    with pytest.raises(ope.OpeInputError, match=r"^pscore contains NaN or infinite values$"):
        ope.InverseProbabilityWeighting().estimate_policy_value([1.0, 0.0], [0.5, None], [0.5, 0.5])


def test_estimators_compute_in_float64_whatever_the_input_dtype() -> None:
    r32, p32, e32 = (np.asarray(v, dtype=np.float32) for v in (LONG_REWARD, LONG_PSCORE, LONG_EVAL))
    r, p, e = (v.astype(np.float64) for v in (r32, p32, e32))
    got = ope.InverseProbabilityWeighting().round_rewards(r32, p32, e32)
    assert got.dtype == np.float64
    assert got.tolist() == pytest.approx((r * e / p).tolist(), rel=1e-14)
    weights = ope.list_importance_weights(np.float32([0.1, 0.7]), np.float32([0.3, 0.0]))
    assert weights.tolist() == pytest.approx(np.exp(np.float32([0.1, 0.7]).astype(np.float64)
                                                    - np.float32([0.3, 0.0]).astype(np.float64)).tolist(), rel=1e-14)


def test_the_smallest_valid_inputs_are_accepted() -> None:
    ips = ope.InverseProbabilityWeighting()
    assert ips.estimate_policy_value([1.0], [1e-300], [0.0]) == 0.0  # a tiny pscore, a zero evaluation prob
    assert ips.estimate_policy_value([2.0], [0.5], [0.5]) == 2.0


def test_dr_refuses_a_missing_or_misshapen_reward_model() -> None:
    dr = ope.DoublyRobust()
    for kwargs in ({"q_hat_factual": Q_FACT}, {"q_hat_expected": Q_EXP}):
        with pytest.raises(ope.OpeInputError, match=r"DR needs q_hat_factual and q_hat_expected"):
            dr.round_rewards(REWARD, PSCORE, EVAL, **kwargs)
    with pytest.raises(ope.OpeInputError, match=r"^q_hat_factual has 2 rounds, expected 4$"):
        dr.round_rewards(REWARD, PSCORE, EVAL, q_hat_factual=[0.1, 0.2], q_hat_expected=Q_EXP)
    with pytest.raises(ope.OpeInputError, match=r"^q_hat_expected has 3 rounds, expected 4$"):
        dr.round_rewards(REWARD, PSCORE, EVAL, q_hat_factual=Q_FACT, q_hat_expected=[0.1, 0.2, 0.3])


def test_snips_refuses_an_all_zero_weight_log() -> None:
    with pytest.raises(ope.OpeInputError, match=r"^evaluation_prob is 0 on every logged round: SNIPS is undefined$"):
        ope.SelfNormalizedInverseProbabilityWeighting().round_rewards([1.0, 0.0], [0.5, 0.5], [0.0, 0.0])


def test_the_estimator_registry_names_the_three_classes() -> None:
    assert ope.ESTIMATORS == {"ipw": ope.InverseProbabilityWeighting,
                              "snipw": ope.SelfNormalizedInverseProbabilityWeighting, "dr": ope.DoublyRobust}
    assert [cls.name for cls in ope.ESTIMATORS.values()] == ["ipw", "snipw", "dr"]


# -- obp layout adapters -----------------------------------------------------------------------
ACTION_DIST = np.array([  # [rounds=3, actions=3, positions=2]
    [[0.2, 0.5], [0.3, 0.1], [0.5, 0.4]],
    [[0.6, 0.0], [0.1, 0.7], [0.3, 0.3]],
    [[0.1, 0.2], [0.1, 0.2], [0.8, 0.6]],
])


def test_the_evaluation_prob_is_the_action_dist_entry_of_each_logged_action_and_position() -> None:
    got = ope.evaluation_prob_from_action_dist(np.array([1, 0, 2]), np.array([0, 1, 1]), ACTION_DIST)
    assert got.tolist() == [0.3, 0.0, 0.6]
    # the largest valid action and position
    assert ope.evaluation_prob_from_action_dist([2], [1], ACTION_DIST[:1]).tolist() == [0.4]
    # whole-number float columns (as loaded from a float CSV column) index like ints
    floats = ope.evaluation_prob_from_action_dist(np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 1.0]), ACTION_DIST)
    assert floats.tolist() == [0.3, 0.0, 0.6]
    # a deterministic policy given as a one-hot integer array still yields float probabilities
    one_hot = np.zeros((2, 3, 1), dtype=np.int64)
    one_hot[0, 2, 0] = one_hot[1, 0, 0] = 1
    probs = ope.evaluation_prob_from_action_dist([2, 2], [0, 0], one_hot)
    assert probs.dtype == np.float64 and probs.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("action, position, dist, message", [
    ([0, 0, 0], [0, 0, 0], ACTION_DIST[:, :, 0], r"action_dist must be \[n_rounds, n_actions, len_list\], got shape \(3, 3\)"),
    ([0, 0], [0, 0], ACTION_DIST, r"^action and position must have one entry per round of action_dist$"),
    ([0, 0, 0], [0, 0], ACTION_DIST, r"action and position must have one entry per round"),
    ([0, 3, 0], [0, 0, 0], ACTION_DIST, r"action out of range \[0, 3\)"),
    ([0, -1, 0], [0, 0, 0], ACTION_DIST, r"action out of range \[0, 3\)"),
    ([0, 0, 0], [0, 2, 0], ACTION_DIST, r"position out of range \[0, 2\) \(0-based\)"),
    ([0, 0, 0], [-1, 0, 0], ACTION_DIST, r"position out of range \[0, 2\)"),
])
def test_bad_obp_layout_inputs_are_refused(action, position, dist, message: str) -> None:
    with pytest.raises(ope.OpeInputError, match=message):
        ope.evaluation_prob_from_action_dist(np.array(action), np.array(position), dist)


def test_the_expected_q_averages_the_reward_model_over_the_policy_at_the_logged_position() -> None:
    q_hat = np.arange(18, dtype=np.float64).reshape(3, 3, 2) / 10  # q[i, a, k]
    got = ope.expected_q_from_action_dist(np.array([0, 1, 1]), ACTION_DIST, q_hat)
    row0 = 0.2 * 0.0 + 0.3 * 0.2 + 0.5 * 0.4
    row1 = (0.0 * 0.7 + 0.7 * 0.9 + 0.3 * 1.1) / 1.0
    row2 = (0.2 * 1.3 + 0.2 * 1.5 + 0.6 * 1.7) / 1.0
    assert got.tolist() == pytest.approx([row0, row1, row2], rel=1e-12)
    # weights that do not sum to one are normalised (a weighted average)
    half = ope.expected_q_from_action_dist(np.array([0, 1, 1]), ACTION_DIST * 0.5, q_hat)
    assert half.tolist() == pytest.approx([row0, row1, row2], rel=1e-12)
    floats = ope.expected_q_from_action_dist(np.array([0.0, 1.0, 1.0]), ACTION_DIST, q_hat)  # float positions
    assert floats.tolist() == pytest.approx([row0, row1, row2], rel=1e-12)


def test_list_weights_are_exp_of_the_log_prob_difference_clamped_to_finite_values() -> None:
    assert ope.list_importance_weights([0.5, -1.0], [0.0, 1.0]).tolist() == pytest.approx([math.exp(0.5), math.exp(-2)])
    huge = ope.list_importance_weights([800.0, -800.0], [0.0, 0.0])
    assert huge[0] == pytest.approx(math.exp(700.0), rel=1e-12)
    assert huge[1] == pytest.approx(math.exp(-700.0), rel=1e-12, abs=0.0) and huge[1] > 0
    assert ope.list_importance_weights([3.0, 1.0], [0.0, 0.0], clip=5.0).tolist() == pytest.approx([5.0, math.e])
    with pytest.raises(ope.OpeInputError, match=r"^logged_logprob has 1 rounds, expected 2$"):
        ope.list_importance_weights([0.0, 0.0], [0.0])
    with pytest.raises(ope.OpeInputError, match=r"^new_logprob must be a 1-dimensional array"):
        ope.list_importance_weights([[0.0]], [0.0])


# -- evaluate -------------------------------------------------------------------------------------
def test_evaluate_runs_every_estimator_with_the_shared_settings() -> None:
    report = ope.evaluate(REWARD, PSCORE, EVAL, policy="p", q_hat_factual=Q_FACT, q_hat_expected=Q_EXP,
                          n_bootstrap_samples=200, random_state=4, alpha=0.1)
    assert (report.policy, report.n_rounds, report.on_policy_value) == ("p", 4, 0.75)
    assert list(report.estimates) == ["ipw", "snipw", "dr"]
    values = {k: v.value for k, v in report.estimates.items()}
    assert values == {"ipw": pytest.approx(0.75), "snipw": pytest.approx(0.6), "dr": pytest.approx(0.6875)}
    _, lower, upper = _percentile_bootstrap([0.6, -0.1, 1.5, 0.75], 0.1, 200, 4)
    dr = report.estimates["dr"]
    assert (dr.lower, dr.upper, dr.alpha) == (pytest.approx(lower, rel=1e-12), pytest.approx(upper, rel=1e-12), 0.1)
    as_dict = report.as_dict()
    assert as_dict["policy"] == "p" and as_dict["n_rounds"] == 4 and as_dict["logged_policy_value"] == 0.75
    assert as_dict["estimates"] == {k: v.as_dict() for k, v in report.estimates.items()}


def test_evaluate_defaults_clip_and_skip_dr_without_a_reward_model() -> None:
    report = ope.evaluate(LONG_REWARD, LONG_PSCORE, LONG_EVAL, policy="p", q_hat_factual=LONG_REWARD)  # DR needs both
    assert list(report.estimates) == ["ipw", "snipw"]
    _, lower, upper = _percentile_bootstrap(LONG_IPS_ROUNDS, 0.05, 2000, 12345)
    ipw = report.estimates["ipw"]
    assert (ipw.lower, ipw.upper, ipw.alpha) == (pytest.approx(lower, rel=1e-12), pytest.approx(upper, rel=1e-12), 0.05)
    only_expected = ope.evaluate(REWARD, PSCORE, EVAL, policy="p", q_hat_expected=Q_EXP, estimators=("dr",),
                                 n_bootstrap_samples=10)
    assert only_expected.estimates == {}
    dr_first = ope.evaluate(REWARD, PSCORE, EVAL, policy="p", estimators=("dr", "ipw"), n_bootstrap_samples=10)
    assert list(dr_first.estimates) == ["ipw"]  # a skipped DR does not end the loop
    clipped = ope.evaluate(REWARD, PSCORE, EVAL, policy="p", estimators=("ipw",), clip=1.0, n_bootstrap_samples=10)
    assert clipped.estimates["ipw"].value == pytest.approx(0.5, rel=1e-12)


def test_evaluate_refuses_an_unknown_estimator_listing_the_known_ones() -> None:
    with pytest.raises(ope.OpeInputError, match=r"^unknown estimator 'ips'; known: ipw, snipw, dr$"):
        ope.evaluate(REWARD, PSCORE, EVAL, policy="p", estimators=("ipw", "ips"), n_bootstrap_samples=10)
    with pytest.raises(ope.OpeInputError, match=r"^reward must be a 1-dimensional array"):
        ope.evaluate([[1.0]], [0.5], [0.5], policy="p")
