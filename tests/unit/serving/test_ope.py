"""OPE estimators on the real Open Bandit Dataset against an independent implementation.

``obp`` 0.5.7 does not install on this Python (it requires Python < 3.11 and pins torch==1.12),
so the reference here is written independently in the test, straight from the papers' formulas
and obp's documented conventions (explicit loops, no shared code with ``evaluation.ope``). The
comparison against obp's own estimator source is ``bench/ope_obp_crosscheck.py`` (see
BENCHMARKS.md: identical to the last bit on 3 OBD files x 3 policies x 3 estimators).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import ope
from evaluation.ope_obd import cross_fitted_ctr, load_obd_bandit, policy_action_dist


@pytest.fixture(scope="module", params=["random/all/all.csv", "bts/all/all.csv"])
def obd(request, shared_data):
    return load_obd_bandit(shared_data / "obd" / request.param)


def reference(reward, pscore, action, position, action_dist, q_hat):
    """Loop-by-loop IPS, SNIPS and DR from their definitions (Dudík et al. 2011; Swaminathan & Joachims 2015)."""
    n = len(reward)
    w = [action_dist[i][action[i]][position[i]] / pscore[i] for i in range(n)]
    ips = sum(w[i] * reward[i] for i in range(n)) / n
    snips = sum(w[i] * reward[i] for i in range(n)) / sum(w)
    dr = 0.0
    for i in range(n):
        probs = action_dist[i, :, position[i]]
        q_pi = sum(probs[a] * q_hat[i, a, position[i]] for a in range(len(probs))) / sum(probs)
        dr += q_pi + w[i] * (reward[i] - q_hat[i, action[i], position[i]])
    return ips, snips, dr / n


@pytest.mark.parametrize("policy", ["uniform", "affinity-softmax:0.05", "item-ctr-softmax:0.5"])
def test_point_estimates_equal_an_independent_implementation_on_obd(obd, policy):
    action_dist = policy_action_dist(obd, policy)
    q_hat = cross_fitted_ctr(obd)
    ev = ope.evaluation_prob_from_action_dist(obd.action, obd.position, action_dist)
    rows = np.arange(obd.n_rounds)
    q_fact = q_hat[rows, obd.action, obd.position]
    q_exp = ope.expected_q_from_action_dist(obd.position, action_dist, q_hat)
    ips, snips, dr = reference(obd.reward, obd.pscore, obd.action, obd.position, action_dist, q_hat)
    assert ope.InverseProbabilityWeighting().estimate_policy_value(obd.reward, obd.pscore, ev) == pytest.approx(ips, rel=1e-12)
    assert ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(obd.reward, obd.pscore, ev) == \
        pytest.approx(snips, rel=1e-12)
    assert ope.DoublyRobust().estimate_policy_value(obd.reward, obd.pscore, ev, q_hat_factual=q_fact,
                                                    q_hat_expected=q_exp) == pytest.approx(dr, rel=1e-12)


def test_uniform_policy_on_uniformly_logged_data_gives_the_on_policy_click_rate(shared_data):
    data = load_obd_bandit(shared_data / "obd" / "random" / "all" / "all.csv")
    report = ope.evaluate(data.reward, data.pscore,
                          ope.evaluation_prob_from_action_dist(data.action, data.position,
                                                               policy_action_dist(data, "uniform")),
                          policy="uniform", n_bootstrap_samples=300)
    # Logged uniformly at random over 80 items: w == 1, so IPS is the empirical click rate exactly.
    assert report.estimates["ipw"].value == pytest.approx(data.reward.mean(), rel=1e-12)
    assert report.estimates["ipw"].lower <= report.estimates["ipw"].value <= report.estimates["ipw"].upper


def test_bootstrap_interval_matches_an_independent_percentile_bootstrap():
    rng = np.random.default_rng(0)
    samples = rng.exponential(1.0, size=400)
    got = ope.bootstrap_ci(samples, alpha=0.1, n_bootstrap_samples=300, random_state=7)
    state = np.random.RandomState(7)  # obp / sklearn check_random_state(seed)
    means = sorted(float(np.mean(state.choice(samples, size=len(samples)))) for _ in range(300))

    def percentile(q: float) -> float:  # numpy's default linear interpolation, written out
        pos = (len(means) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        return means[lo] + (means[hi] - means[lo]) * (pos - lo)

    assert got["lower"] == pytest.approx(percentile(0.05), rel=1e-12)
    assert got["upper"] == pytest.approx(percentile(0.95), rel=1e-12)


def test_clipping_bounds_the_weights():
    reward, pscore, ev = np.ones(4), np.full(4, 0.01), np.array([0.5, 0.5, 0.0, 0.0])
    assert ope.InverseProbabilityWeighting(lambda_=10.0).estimate_policy_value(reward, pscore, ev) == 5.0
    assert ope.InverseProbabilityWeighting().estimate_policy_value(reward, pscore, ev) == 25.0


def test_list_weights_are_exp_of_log_prob_differences():
    w = ope.list_importance_weights([-1.0, -3.0], [-2.0, -2.0])
    assert w == pytest.approx([math.e, 1 / math.e])
    assert ope.list_importance_weights([0.0], [-5.0], clip=10.0)[0] == 10.0


BAD_INPUTS = [
    (dict(reward=[], pscore=[], evaluation_prob=[]), "reward is empty"),
    (dict(reward=[1.0, 0.0], pscore=[0.5], evaluation_prob=[0.5, 0.5]), "pscore has 1 rounds, expected 2"),
    (dict(reward=[1.0], pscore=[0.0], evaluation_prob=[0.5]), "pscore must be > 0"),
    (dict(reward=[float("nan")], pscore=[0.5], evaluation_prob=[0.5]), "reward contains NaN"),
    (dict(reward=[1.0], pscore=[0.5], evaluation_prob=[-0.1]), "evaluation_prob must be >= 0"),
    (dict(reward=[[1.0]], pscore=[0.5], evaluation_prob=[0.5]), "reward must be a 1-dimensional array"),
]


@pytest.mark.parametrize("kwargs,message", BAD_INPUTS)
def test_bad_inputs_raise_an_error_naming_the_argument(kwargs, message):
    with pytest.raises(ope.OpeInputError, match=message):
        ope.InverseProbabilityWeighting().estimate_policy_value(**kwargs)


def test_dr_without_a_reward_model_is_refused():
    with pytest.raises(ope.OpeInputError, match="q_hat_factual"):
        ope.DoublyRobust().estimate_policy_value([1.0], [0.5], [0.5])


def test_snips_refuses_when_the_policy_never_takes_a_logged_action():
    with pytest.raises(ope.OpeInputError, match="SNIPS is undefined"):
        ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value([1.0], [0.5], [0.0])


def test_eval_ope_cli_prints_the_estimates_of_each_policy(shared_data):
    import json

    import click
    from click.testing import CliRunner

    from evaluation.ope_obd import evaluate_obd
    from streamrank.cli.serve import eval_ope

    path = shared_data / "obd" / "bts" / "all" / "all.csv"
    group = click.Group(commands={"ope": eval_ope})
    result = CliRunner().invoke(group, ["ope", "--data", f"obd:{path}", "--policy", "uniform", "--policy",
                                        "affinity-softmax:0.05", "--bootstrap", "200", "--json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)
    assert [r["policy"] for r in reports] == ["uniform", "affinity-softmax:0.05"]
    expected = evaluate_obd(path, "uniform", n_bootstrap_samples=200).as_dict()
    assert reports[0]["estimates"] == expected["estimates"]
    assert set(reports[1]["estimates"]) == {"ipw", "snipw", "dr"}


@pytest.mark.parametrize("args,message", [(["--data", "csv:x"], "expected obd:PATH"),
                                          (["--data", "obd:/nope.csv"], "OBD file not found"),
                                          (["--policy", "greedy"], "unknown policy 'greedy'")])
def test_eval_ope_cli_reports_bad_arguments(shared_data, args, message):
    import click
    from click.testing import CliRunner

    from streamrank.cli.serve import eval_ope

    base = ["--data", f"obd:{shared_data / 'obd' / 'random' / 'all' / 'all.csv'}"]
    argv = ["ope", *(base if "--data" not in args else []), *args, "--bootstrap", "10"]
    result = CliRunner().invoke(click.Group(commands={"ope": eval_ope}), argv)
    assert result.exit_code != 0 and message in result.output
