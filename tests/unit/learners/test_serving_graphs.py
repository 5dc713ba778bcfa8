"""The scripted serving passes of DRPO and LDRO (learners.fusion/ranking.serving_graph) serve what the eager modules serve.

Outputs are held to the eager path (``serving_graph = False``) within 1e-5; exploring rows must
consume the serving generator as before (same noise, same samples); after new weights are loaded
the graph must run them (the weights are arguments, read at every call), and the learners must
actually take the graph path (a spy on the scripted call).
"""

from __future__ import annotations

import pytest
import torch

from contracts.learner import RerankRequest
from learners.fusion import serving_graph as fusion_graph
from learners.ranking import serving_graph as rank_graph
from learners.registry import build_learner

TOL = 1e-5


def _randomise(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _fusion_items(tasks, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    activities = ["high_active", "low_active", "UNKNOWN", "middle_active"]
    return [({t: torch.rand(n, generator=g, dtype=torch.float64) for t in tasks},
             {"user_activity": activities[i % len(activities)], "query_type": "navigational"})
            for i, n in enumerate(sizes)]


def _rank_requests(n_features, tasks, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [RerankRequest(item_ids=tuple(f"i{k}" for k in range(n)), features=torch.rand(n, n_features, generator=g),
                          task_scores={t: torch.rand(n, generator=g, dtype=torch.float64) for t in tasks}, context={})
            for n in sizes]


def _fusion_both(learner, items, explores):
    state = learner.serve_generator.get_state()
    learner.serving_graph = False
    eager = learner.fusion_weights_many(items, explores)
    learner.serve_generator.set_state(state)
    learner.serving_graph = True
    graph = learner.fusion_weights_many(items, explores)
    return eager, graph


def _assert_fusion_close(eager, graph):
    assert len(eager) == len(graph)
    for (we, le), (wg, lg) in zip(eager, graph):
        assert we.keys() == wg.keys()
        for task in we:
            assert wg[task] == pytest.approx(we[task], abs=TOL)
        assert lg == pytest.approx(le, abs=TOL)


@pytest.mark.parametrize("query_context,task_relation", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("explores", [[False, False, False], [True, False, True]])
def test_fusion_graph_equals_eager(query_context, task_relation, explores):
    learner = build_learner("drpo", query_context=query_context, task_relation=task_relation)
    _randomise(learner.policy, seed=3)
    assert fusion_graph.graph_covers(learner.policy)
    eager, graph = _fusion_both(learner, _fusion_items(learner.config.tasks, [50, 7, 50]), explores)
    _assert_fusion_close(eager, graph)
    if not any(explores):  # greedy rows serve the policy mean
        assert eager[0][0] != eager[1][0]


@pytest.mark.parametrize("explores", [[False, False, False], [True, False, True], [True]])
def test_rank_graph_equals_eager(explores):
    learner = build_learner("ldro")
    _randomise(learner.student, seed=5, std=0.1)
    assert rank_graph.graph_covers(learner.student)
    requests = _rank_requests(learner.config.n_features, learner.config.tasks, [50, 13, 50][:len(explores)])
    state = learner.serve_generator.get_state()
    learner.serving_graph = False
    eager = learner.rerank_many(requests, explores)
    learner.serve_generator.set_state(state)
    learner.serving_graph = True
    graph = learner.rerank_many(requests, explores)
    for e, g, req in zip(eager, graph, requests):
        assert g.order == e.order
        assert sorted(g.order) == list(range(len(req.item_ids)))
        assert max(abs(a - b) for a, b in zip(e.scores, g.scores)) <= TOL
        assert g.logprob == pytest.approx(e.logprob, abs=TOL)


def test_graphs_are_used_and_run_the_loaded_weights(monkeypatch):
    """A hot swap loads a snapshot into a fresh learner: the graph must serve its weights, not the old ones."""
    calls = {"fusion": 0, "rank": 0}
    real_fusion, real_rank = fusion_graph.run_fusion_pass, rank_graph.run_rank_pass

    def spy_fusion(*args, **kwargs):
        calls["fusion"] += 1
        return real_fusion(*args, **kwargs)

    def spy_rank(*args, **kwargs):
        calls["rank"] += 1
        return real_rank(*args, **kwargs)

    import learners.fusion.learner as fusion_learner
    import learners.ranking.learner as rank_learner
    monkeypatch.setattr(fusion_learner, "run_fusion_pass", spy_fusion)
    monkeypatch.setattr(rank_learner, "run_rank_pass", spy_rank)

    old, new = build_learner("drpo"), build_learner("drpo")
    _randomise(old.policy, seed=1)
    _randomise(new.policy, seed=2)
    items = _fusion_items(old.config.tasks, [40])
    before = old.fusion_weights_many(items, [False])
    old.load_state_dict(new.state_dict())  # the snapshot's weights, written into the served module
    after = old.fusion_weights_many(items, [False])
    assert after != before
    new.serving_graph = False
    _assert_fusion_close(new.fusion_weights_many(items, [False]), after)
    assert calls["fusion"] == 2

    ranker, other = build_learner("ldro"), build_learner("ldro")
    _randomise(ranker.student, seed=1, std=0.1)
    _randomise(other.student, seed=2, std=0.1)
    requests = _rank_requests(ranker.config.n_features, ranker.config.tasks, [30])
    before_scores = ranker.rerank_many(requests, [False])[0].scores
    ranker.load_state_dict(other.state_dict())
    after_scores = ranker.rerank_many(requests, [False])[0].scores
    assert max(abs(a - b) for a, b in zip(before_scores, after_scores)) > 1e-3
    other.serving_graph = False
    assert max(abs(a - b) for a, b in zip(other.rerank_many(requests, [False])[0].scores, after_scores)) <= TOL
    assert calls["rank"] == 2


def test_uncovered_modules_serve_eagerly(monkeypatch):
    """A policy the graph does not cover (here: attention dropout) falls back to the module."""
    learner = build_learner("drpo")
    learner.policy.attn.dropout = 0.1
    assert not fusion_graph.graph_covers(learner.policy)
    import learners.fusion.learner as fusion_learner
    monkeypatch.setattr(fusion_learner, "run_fusion_pass", lambda *a, **k: pytest.fail("graph used"))
    learner.policy.eval()
    assert len(learner.fusion_weights_many(_fusion_items(learner.config.tasks, [10]), [False])) == 1
