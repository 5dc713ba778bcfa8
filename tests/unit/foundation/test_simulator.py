"""Real data -> events: LETOR loader, click models, session simulator, OBD converter, logs."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.events import Feedback, Impression, decode
from evaluation.metrics import ndcg_at_k
from simulator.click_models import ClickModel
from simulator.kuairand import load_kuairand
from simulator.letor import LetorFormatError, load_letor
from simulator.logs import simulated_sessions, time_ordered, write_log
from simulator.obd import ObdFormatError, obd_events, read_obd
from simulator.session import SessionSimulator, SimulatorConfig


@pytest.fixture(scope="module")
def letor(shared_data):
    return load_letor(shared_data / "letor" / "rank.train")


@pytest.fixture(scope="module")
def kuairand(shared_data):
    return load_kuairand(shared_data / "kuairand")


def test_letor_loader_reads_groups_and_grades(letor, shared_data):
    sizes = [int(s) for s in (shared_data / "letor" / "rank.train.query").read_text().split()]
    assert len(letor) == len(sizes) == 201
    assert [len(q.doc_ids) for q in letor.queries] == sizes
    assert letor.n_features == 300 and letor.max_grade == 4
    first_line = (shared_data / "letor" / "rank.train").read_text().splitlines()[0].split()
    idx, val = first_line[1].split(":")
    assert letor.queries[0].features[0, int(idx) - 1] == pytest.approx(float(val))
    assert letor.queries[0].relevance[0] == int(first_line[0])


def test_letor_loader_rejects_mismatched_group_file(tmp_path):
    (tmp_path / "x.train").write_text("1 1:0.5\n0 2:0.1\n")
    (tmp_path / "x.train.query").write_text("3\n")
    with pytest.raises(LetorFormatError, match="sum to 3"):
        load_letor(tmp_path / "x.train")


def test_letor_split_is_by_query_and_seeded(letor):
    a_train, a_test = letor.split(0.2, seed=1)
    b_train, b_test = letor.split(0.2, seed=1)
    assert [q.qid for q in a_test.queries] == [q.qid for q in b_test.queries]
    assert not {q.qid for q in a_train.queries} & {q.qid for q in a_test.queries}
    assert len(a_train) + len(a_test) == len(letor)


def test_kuairand_marginals_are_real(kuairand):
    assert len(kuairand.durations_ms) > 7000 and (kuairand.durations_ms > 0).all()
    assert len(kuairand.user_ids) == 27285
    assert "full_active" in set(kuairand.user_activity)


@pytest.mark.parametrize("kind", ["pbm", "cascade"])
def test_click_model_frequencies_match_probabilities(kind):
    model = ClickModel(kind=kind)
    rel = np.array([4, 0, 2, 1, 3])
    rng = np.random.default_rng(0)
    clicks = np.mean([model.sample_clicks(rel, rng) for _ in range(20000)], axis=0)
    np.testing.assert_allclose(clicks, model.click_probabilities(rel), atol=0.015)


def test_pbm_clicks_decrease_with_position_and_increase_with_relevance():
    model = ClickModel("pbm")
    p = model.click_probabilities(np.array([2, 2, 2, 2]))
    assert all(np.diff(p) < 0)
    assert model.click_probabilities(np.array([4]))[0] > model.click_probabilities(np.array([1]))[0]


def test_simulator_is_deterministic_and_answers_any_order(letor, kuairand):
    sim_a = SessionSimulator(letor, kuairand, seed=7)
    sim_b = SessionSimulator(letor, kuairand, seed=7)
    req_a, req_b = sim_a.next_request(), sim_b.next_request()
    assert req_a.request_id == req_b.request_id and req_a.ts == req_b.ts
    assert [c.scores for c in req_a.candidates] == [c.scores for c in req_b.candidates]
    order = list(reversed(range(len(req_a.candidates))))
    assert sim_a.respond(req_a, order) == sim_b.respond(req_b, order)
    for fb in sim_a.respond(req_a, order):
        assert fb.ts > req_a.ts
        assert fb.item_id is None or fb.item_id in req_a.item_index()


def test_upstream_scores_are_informative_but_miscalibrated(letor, kuairand):
    sim = SessionSimulator(letor, kuairand, seed=1)
    pred, clicked = [], []
    for request in sim.requests(400):
        feedback = sim.respond(request)
        got = {f.item_id for f in feedback if f.kind == "click"}
        for c in request.candidates:
            pred.append(c.scores["click"])
            clicked.append(c.item_id in got)
    pred, clicked = np.array(pred), np.array(clicked)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(clicked, pred) > 0.6  # informative
    assert pred.mean() > clicked.mean() + 0.1  # over-predicts: needs calibration


def test_upstream_order_is_good_but_not_ideal(letor, kuairand):
    sim = SessionSimulator(letor, kuairand, seed=2)
    ndcgs = [ndcg_at_k(r.relevance, 10) for r in sim.requests(300)]
    ideal = [ndcg_at_k(np.sort(r.relevance)[::-1], 10) for r in sim.requests(50) if r.relevance.max() > 0]
    assert 0.5 < np.mean(ndcgs) < 0.95
    assert np.mean(ideal) == pytest.approx(1.0)


def test_long_view_follows_watch_time(letor, kuairand):
    sim = SessionSimulator(letor, kuairand, SimulatorConfig(), seed=4)
    for request in sim.requests(300):
        events = sim.respond(request)
        durations = {c.item_id: c.duration_ms for c in request.candidates}
        play = {f.item_id: f.value for f in events if f.kind == "play_time_ms"}
        long_views = {f.item_id for f in events if f.kind == "long_view"}
        for item, ms in play.items():
            threshold = min(0.5 * durations[item], 18_000.0)
            assert (item in long_views) == (ms >= threshold - 0.1)
            assert ms <= durations[item]


def test_time_ordered_merges_late_events():
    class E:
        def __init__(self, ts):
            self.ts = ts

    events = [E(t) for t in [1, 5, 2, 3, 9, 4, 10]]
    assert [e.ts for e in time_ordered(events, horizon_s=100)] == [1, 2, 3, 4, 5, 9, 10]


def test_letor_log_is_time_ordered_valid_and_reproducible(letor, kuairand, tmp_path):
    paths = []
    for n in range(2):
        sim = SessionSimulator(letor, kuairand, SimulatorConfig(with_features=False), seed=5)
        path = tmp_path / f"log{n}.jsonl"
        write_log(simulated_sessions(sim, 60), path)
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    events = [decode(line) for line in paths[0].read_bytes().splitlines()]
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    shown_at = {e.request_id: e.ts for e in events if isinstance(e, Impression)}
    assert len(shown_at) == 60
    assert all(e.ts > shown_at[e.request_id] for e in events if isinstance(e, Feedback))


def test_obd_rows_become_impressions_with_true_propensities(shared_data, tmp_path):
    source = shared_data / "obd" / "bts" / "all" / "all.csv"
    rows = list(read_obd(source))[:2000]
    events = list(obd_events(source, seed=0))
    impressions = [e for e in events if isinstance(e, Impression)]
    clicks = [e for e in events if isinstance(e, Feedback)]
    assert len(impressions) == 10000
    for row, imp in zip(rows, impressions):
        assert imp.items[0].item_id == str(row.item_id)
        assert imp.items[0].position == row.position
        assert imp.items[0].propensity == pytest.approx(row.propensity)
    assert len(clicks) == sum(r.click for r in read_obd(source))
    assert events == list(obd_events(source, seed=0))


def test_obd_reader_names_missing_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,item_id\n2019-01-01 00:00:00+00:00,1\n")
    with pytest.raises(ObdFormatError, match="missing columns"):
        list(read_obd(bad))
