"""The promotion gate scores its window in padded batches: same numbers as one list at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_gate_logic import logged  # same directory: pytest puts it on sys.path

from contracts.learner import RerankRequest
from learners.ranking.learner import build_ldro
from serving.baseline import pl_logprob
from serving.components import Component, candidate_scores, candidate_scores_many
from serving.gate import (
    GateConfig,
    PromotionGate,
    policy_logprobs,
    request_from_example,
)


def random_request(gen: torch.Generator, n: int, n_features: int) -> RerankRequest:
    scores = {t: torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05 for t in ("click", "long_view")}
    return RerankRequest(item_ids=tuple(f"i{k}" for k in range(n)), features=torch.rand(n, n_features, generator=gen),
                         task_scores=scores, context={}, upstream_scores=scores)


def trained_ldro(n_features: int = 4):
    model = build_ldro(n_features=n_features, seed=3)
    with torch.no_grad():  # away from the near-uniform start, so that padding mistakes would show
        for p in model.student.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    return model


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_ldro_scores_of_many_lists_equal_one_list_at_a_time(chunk):
    model = trained_ldro()
    gen = torch.Generator().manual_seed(0)
    requests = [random_request(gen, n, 4) for n in (2, 7, 30, 5, 1, 12, 30)]  # lengths differ: padding
    many = model.candidate_scores_many(requests, chunk=chunk)
    assert [len(s) for s in many] == [len(r.item_ids) for r in requests]
    for request, batched in zip(requests, many):
        assert torch.allclose(batched, model.candidate_scores(request), atol=1e-5, rtol=1e-5)


def test_components_fall_back_to_one_call_per_request_without_a_batched_path():
    gen = torch.Generator().manual_seed(1)
    requests = [random_request(gen, n, 4) for n in (3, 6)]
    ldro = Component("reranker", "ldro", "1", trained_ldro())
    for component in (ldro, None):  # None: the cold-start scorer has no batched path
        got = candidate_scores_many(component, requests)
        for request, scores in zip(requests, got):
            assert scores.dtype == torch.float64
            assert torch.allclose(scores, candidate_scores(component, request), atol=1e-5)


def test_gate_reuses_the_window_requests_and_keeps_its_numbers():
    gen = torch.Generator().manual_seed(2)
    examples = []
    for i in range(40):
        relevance = torch.rand(6, generator=gen).tolist()
        examples.append(logged(i, torch.randperm(6, generator=gen).tolist(), relevance, 1.0))
    gate = PromotionGate(GateConfig(min_samples=10))
    first = gate.requests_for(examples[:30])
    again = gate.requests_for(examples[5:35])
    assert all(a is b for a, b in zip(first[5:], again[:25]))  # built once per example while in the window
    assert set(gate._requests) == {ex.example_id for ex in examples[5:35]}  # the window only
    ldro = Component("reranker", "ldro", "1", trained_ldro(n_features=1))
    by_one = np.array([pl_logprob(candidate_scores(ldro, request_from_example(ex)), range(6)) for ex in examples])
    assert np.allclose(policy_logprobs(ldro, examples), by_one, atol=1e-4)


def test_a_full_log_prob_cache_is_emptied_without_losing_the_entries_of_the_decision():
    """Past 20 x window cached log-probs the cache is emptied; that used to happen after the
    lookup, and the next decision failed with a KeyError for an entry it had found."""
    gen = torch.Generator().manual_seed(5)
    examples = [logged(i, torch.randperm(4, generator=gen).tolist(), torch.rand(4, generator=gen).tolist(), 1.0)
                for i in range(60)]
    gate = PromotionGate(GateConfig(window=2, min_samples=2, confidence=0.0))
    current = Component("reranker", "ldro", "1", trained_ldro(n_features=1))
    candidate = Component("reranker", "ldro", "2", trained_ldro(n_features=1))
    for start in range(58):  # the window slides by one: one new example, one already cached
        decision = gate.decide(current, candidate, examples[start:start + 2])
        assert decision.n == 2 and math.isfinite(decision.current_value)
    assert len(gate._cache) <= 20 * 2 * 2 + 4  # bounded: current and cold-start entries of recent windows


def test_warm_up_builds_each_learner_family_once_and_skips_the_rest(caplog):
    from serving.components import warm_up

    took = warm_up(["umnn", "linear-pl", "", "no-such-model"])
    assert set(took) == {"umnn"} and took["umnn"] > 0  # built; serving built-ins and blanks skipped
    assert "warm-up of no-such-model failed" in caplog.text  # an unknown name is logged, not raised
