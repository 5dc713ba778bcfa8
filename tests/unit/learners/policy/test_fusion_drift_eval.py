"""The fusion task with headroom (contextual simulator), the dip/recovery computation, the no-dual
switch, and ``streamrank eval fusion|drift --quick --json`` shrunk to seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support import stage_cli

from evaluation.drift import shift_response
from evaluation.intervals import relative_gain
from learners.policy.evaluation import fused_order, labeled_example, weight_grid
from learners.policy.evaluation_fusion import context_request, keyed_choice, satisfaction_matrix
from learners.policy.batch import from_examples
from learners.registry import build_learner
from simulator.click_models import ClickModel
from simulator.contextual import (
    BRODER_LOG_SHARES,
    GROUPS,
    QUERY_TYPE_SHARES,
    QUERY_TYPES,
    ContextRequest,
    contextual_simulator,
    preferences,
    query_type,
    user_group,
)
from simulator.session import SessionSimulator, SimulatorConfig
from streamrank.cli import evaluate as policy_commands


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ctx_sim(letor, kuairand):
    return contextual_simulator(letor, kuairand, seed=3, namespace="t")


# -- the context-dependent satisfaction ---------------------------------------------------------
def test_groups_and_query_types_weigh_the_tasks_differently():
    assert user_group("full_active") == "heavy" and user_group("high_active") == "regular"
    assert user_group("low_active") == user_group("2_14_day_new") == "light"
    for qtype in ("navigational", "exploratory", "entertainment"):
        betas = [preferences(g, qtype) for g in GROUPS]
        assert all(b.sum() == pytest.approx(1.0) for b in betas)
        if qtype != "navigational":  # a navigational query wants the relevant item, whoever asks
            assert betas[0][0] < betas[1][0] < betas[2][0]  # light users lean to the click more than heavy ones
    assert preferences("regular", "navigational").argmax() == 0
    assert preferences("regular", "exploratory").argmax() == 1
    assert preferences("regular", "entertainment").argmax() == 2
    assert {query_type(q) for q in range(60)} == {"navigational", "exploratory", "entertainment"}
    assert query_type(7) == query_type(7)


def test_the_same_item_satisfies_one_context_and_not_another(ctx_sim):
    request = ctx_sim.request(0, 0.0)
    grade = request.relevance / 4.0
    nav = ContextRequest(**{**request.__dict__, "query_type": "navigational"}).utilities(grade)
    ent = ContextRequest(**{**request.__dict__, "query_type": "entertainment"}).utilities(grade)
    assert np.allclose(nav, preferences(request.group, "navigational") @ np.stack(
        [grade, request.depth, request.completion]))
    assert not np.allclose(np.argsort(-nav), np.argsort(-ent))


def test_expected_satisfaction_matches_the_sampled_sessions(ctx_sim):
    from learners.policy.evaluation import satisfaction  # noqa: PLC0415

    request = ctx_sim.request(5, 0.0)
    order = fused_order(request, (0.4, 0.3, 0.3))
    sampled = ctx_sim.expected_satisfaction(request, order)
    draws = []
    for stream in range(1500):
        from learners.policy.evaluation import outcome_from_feedback  # noqa: PLC0415
        from streams.rewards import RewardWeights, query_satisfaction  # noqa: PLC0415

        out = outcome_from_feedback(ctx_sim.respond(request, order, stream=stream))
        draws.append(query_satisfaction(list(out.items.values()), out.reformulated, RewardWeights()))
    assert np.mean(draws) == pytest.approx(sampled, abs=4 * np.std(draws) / np.sqrt(len(draws)) + 1e-3)
    assert 0.0 <= satisfaction(ctx_sim, request, order) <= 1.0


def test_a_reformulation_ends_the_session(ctx_sim):
    for i in range(200):
        events = ctx_sim.respond(ctx_sim.request(i, 0.0))
        kinds = [e.kind for e in events]
        if "reformulate" in kinds:
            assert kinds[-2:] == ["reformulate", "session_end"]
            return
    pytest.fail("no reformulation in 200 sessions")


def test_the_impression_carries_the_query_type_and_drpo_can_read_it(ctx_sim):
    request = ctx_sim.request(1, 0.0)
    example = labeled_example(ctx_sim, request, range(len(request.candidates)), source="logged")
    assert example.impression.context == {"user_activity": request.user_activity, "query_type": request.query_type}
    lists = from_examples([example], 300)
    assert int(lists.query_types[0]) > 0
    assert context_request(request).context["query_type"] == request.query_type


def test_oracle_per_context_weights_beat_the_best_static_vector_on_a_tiny_instance(letor, kuairand):
    train, test = letor.split(0.3, seed=0)
    grid = weight_grid(3, 3)
    gs = contextual_simulator(train, kuairand, seed=1, namespace="g")
    es = contextual_simulator(test, kuairand, seed=2, namespace="e")
    greq, ereq = [gs.request(i, 0.0) for i in range(300)], [es.request(i, 0.0) for i in range(300)]
    G, E = satisfaction_matrix(gs, greq, grid), satisfaction_matrix(es, ereq, grid)
    best = int(G.mean(0).argmax())
    keys_g, keys_e = np.array([r.context_key for r in greq]), np.array([r.context_key for r in ereq])
    oracle, chosen = keyed_choice(G, keys_g, E, keys_e, best)
    assert oracle.mean() > 1.02 * E[:, best].mean()
    assert len(set(chosen.values())) > 1  # contexts really want different vectors


def test_each_query_type_wants_its_own_task_and_the_shares_are_broders():
    shares = np.array([[query_type(q) == t for t in QUERY_TYPES] for q in range(20_000)]).mean(0)
    assert np.allclose(shares, QUERY_TYPE_SHARES, atol=0.015)  # the hash draws types in the documented shares
    assert np.allclose(QUERY_TYPE_SHARES, np.array(BRODER_LOG_SHARES) / sum(BRODER_LOG_SHARES))


def test_the_oracle_weights_differ_across_contexts_and_lean_to_each_types_task(letor, kuairand):
    grid = weight_grid(3, 6)
    sim = contextual_simulator(letor, kuairand, seed=7, namespace="types")
    requests = [sim.request(i, 0.0) for i in range(450)]
    S = satisfaction_matrix(sim, requests, grid)
    static = int(S.mean(0).argmax())
    types = np.array([r.query_type for r in requests])
    best = {t: int(S[types == t].mean(0).argmax()) for t in QUERY_TYPES}
    assert len(set(best.values())) == 3  # every query type wants a different vector
    for t, task in (("navigational", 0), ("exploratory", 1), ("entertainment", 2)):
        assert grid[best[t]][task] > grid[static][task]  # more weight on its own task than the static vector
        assert S[types == t, best[t]].mean() > 1.02 * S[types == t, static].mean()


def test_the_default_simulator_is_unchanged(letor, kuairand):
    sim = SessionSimulator(letor, kuairand, SimulatorConfig(click_model=ClickModel(max_grade=4)), seed=0)
    request = sim.request(0, 0.0)
    assert not isinstance(request, ContextRequest)
    imp = sim.impression(request)
    assert imp.context == {"user_activity": request.user_activity} and imp.source == "letor-sim"
    # pinned from the simulator before simulator/contextual.py existed (seed 0, request 0)
    assert request.candidates[0].scores == {"click": 0.986678, "long_view": 0.856526, "watch_time": 0.988404}
    assert [e.kind for e in sim.respond(request)] == ["click", "long_view", "play_time_ms", "session_end"]


# -- the no-dual switch ---------------------------------------------------------------------------
def test_switching_off_the_cross_batch_term_changes_the_update(examples):
    full = build_learner("drpo", n_features=300, seed=0)
    no_dual = build_learner("drpo", n_features=300, seed=0, across_batches=False)
    for learner in (full, no_dual):
        learner.learn_many(examples[:16])
        learner.learn_many(examples[16:32])
    diff = [float((a - b).detach().abs().max()) for a, b in zip(full.policy.parameters(), no_dual.policy.parameters())]
    assert max(diff) > 1e-6
    assert no_dual.running.weight == 0.0 and full.running.weight > 0.0  # only the dual term keeps batch moments


def test_query_context_widens_the_context_only_when_asked(examples):
    plain = build_learner("drpo", n_features=300, seed=0)
    wide = build_learner("drpo", n_features=300, seed=0, query_context=True)
    assert wide.policy.context.in_features == plain.policy.context.in_features + 4
    assert wide.learn_many(examples[:8])["examples"] == 8.0


# -- dip and recovery --------------------------------------------------------------------------------
def curve(values, every=10):
    return [(every * (i + 1), v) for i, v in enumerate(values)]


def test_dip_and_recovery_of_a_curve_that_dips_and_comes_back():
    c = curve([0.9, 0.9, 0.9, 0.9, 0.8, 0.85, 0.895, 0.9, 0.9])  # shift after the 4th point (40 lists)
    r = shift_response(c, 40, tolerance=0.01)
    assert r.level == pytest.approx(0.9) and r.dip == pytest.approx(0.1)
    assert r.recovery_lists == 30 and r.recovered  # back within 0.01 at 70 lists, and stays


def test_a_curve_that_never_recovers_is_censored():
    c = curve([0.9, 0.9, 0.9, 0.5, 0.7, 0.72, 0.71, 0.7])
    r = shift_response(c, 30, tolerance=0.01)
    assert r.dip == pytest.approx(0.4)
    assert r.recovery_lists is None and not r.recovered and r.censored_lists == 50
    settled = shift_response(c, 30, tolerance=0.02, steady=True)  # ... but it settled at a new level
    assert settled.target == pytest.approx(0.71) and settled.recovery_lists == 20


def test_a_curve_without_a_dip_recovers_at_once_and_a_relapse_counts():
    assert shift_response(curve([0.5, 0.5, 0.6, 0.6]), 20, 0.01).recovery_lists == 0
    relapse = shift_response(curve([0.9, 0.9, 0.8, 0.9, 0.8, 0.9]), 20, 0.01)
    assert relapse.recovery_lists == 40  # back for good only after the second dip
    with pytest.raises(ValueError):
        shift_response(curve([0.9, 0.9]), 30, 0.01)


def test_relative_gain_is_paired_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    base = [rng.random(200) for _ in range(3)]
    better = [b * 1.05 for b in base]
    gain = relative_gain(better, base, n_boot=200)
    assert gain["value"] == pytest.approx(0.05) and gain["ci95"][0] == pytest.approx(0.05)
    noisy = relative_gain([b + rng.normal(0, 0.2, 200) for b in base], base, n_boot=200)
    assert noisy["ci95"][0] < noisy["value"] < noisy["ci95"][1]


# -- the CLI ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    return stage_cli(policy_commands.register)


def test_eval_fusion_quick_json_has_the_contract_keys(cli, tmp_path):
    png = tmp_path / "fusion.png"
    result = CliRunner().invoke(cli, ["eval", "fusion", "--quick", "--json", "--seeds", "1", "--interactions", "64",
                                      "--eval-requests", "40", "--grid-requests", "40", "--grid-steps", "2",
                                      "--plot", str(png)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert isinstance(doc["oracle_headroom"], float) and doc["seeds"] == 1
    for key in ("drpo_vs_best_static", "per_group_static_vs_best_static", "no_dual_vs_best_static"):
        lo, hi = doc[key]["ci95"]
        assert lo <= doc[key]["value"] <= hi
    assert doc["oracle_headroom"] >= 0.0  # chosen per context on the grid; never below the static vector there
    assert {"best_static", "oracle", "drpo", "no_dual"} <= set(doc["methods"])
    assert png.stat().st_size > 1000


def test_eval_drift_quick_json_has_the_contract_keys(cli, tmp_path):
    png = tmp_path / "drift.png"
    result = CliRunner().invoke(cli, ["eval", "drift", "--quick", "--json", "--seeds", "2", "--interactions", "160",
                                      "--warmup", "32", "--eval-every", "20", "--held-out", "20", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["seeds"] == 2 and doc["shift_at"] == 80
    for method in ("ldro", "grpo", "ldro@nokd", "logged"):
        entry = doc[method]
        assert entry["seeds"] == 2
        for key in ("dip", "recovery_lists"):
            lo, hi = entry[key]["ci95"]
            assert lo <= entry[key]["value"] <= hi
    assert doc["logged"]["dip"]["value"] == 0.0  # the logged order's NDCG does not move
    assert "ldro_minus_grpo_dip" in doc["comparison"]
    assert png.stat().st_size > 1000
