"""Promotion gate decisions on hand-built logged lists (pure: no broker, no Redis)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from contracts.events import IMPRESSION_SCHEMA, FusionDecision, Impression, JoinInfo, ShownItem
from serving.baseline import LinearListScorer, pl_logprob
from serving.components import Component
from serving.gate import GateConfig, PromotionGate, usable
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights


def scorer(weight: float) -> Component:
    model = LinearListScorer(n_features=1)
    with torch.no_grad():
        model.task_weight.zero_()
        model.feature_weight.fill_(weight)
    return Component("reranker", "linear-pl", str(weight), model)


def logged(i: int, order: list[int], relevance: list[float], logging_weight: float, explored: bool = True):
    """An explored impression shown in ``order`` with its PL log-prob under ``logging_weight``; clicks on relevant top-2."""
    scores = torch.tensor(relevance, dtype=torch.float64) * logging_weight
    items = [ShownItem(item_id=f"{i}-{j}", position=p, scores={"click": 0.3}, features=[relevance[j]])
             for p, j in enumerate(order, 1)]
    imp = Impression(schema=IMPRESSION_SCHEMA, event_id=f"e{i}", request_id=f"r{i}", ts=1.0, user_id="u", items=items,
                     fusion=FusionDecision(weights={"click": 1.0}), list_logprob=pl_logprob(scores, order),
                     context={"explored": 1.0 if explored else 0.0, "logprob_top3": pl_logprob(scores, order, 3)})
    outcome = ListOutcome()
    for item in items[:2]:
        if relevance[int(item.item_id.split("-")[1])] > 0.5:
            outcome.add(item.item_id, "click", 1.0)
    return label_impression(imp, outcome, RewardWeights(), JoinInfo(closed_by="window", window_s=1, feedback_count=0,
                                                                      closed_at_ts=1.0))


@pytest.fixture(scope="module")
def examples():
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(80):
        relevance = torch.rand(5, generator=gen).tolist()
        scores = torch.tensor(relevance, dtype=torch.float64)
        u = torch.rand(5, generator=gen, dtype=torch.float64).clamp_min(1e-12)
        order = torch.argsort(scores - torch.log(-torch.log(u)), descending=True).tolist()  # PL sample, weight 1
        out.append(logged(i, order, relevance, 1.0))
    return out


@pytest.mark.parametrize("prefix_k", [0, 3], ids=["whole-list", "top-3 prefix"])
def test_worse_candidate_is_blocked_better_or_equal_passes(examples, prefix_k):
    gate = PromotionGate(GateConfig(min_samples=30, max_relative_drop=0.05, prefix_k=prefix_k))
    current = scorer(1.0)
    worse = gate.decide(current, scorer(-3.0), examples)
    assert not worse.accepted and worse.candidate_value < worse.current_value and worse.n == 80
    better = gate.decide(current, scorer(3.0), examples)
    assert better.accepted and better.candidate_value > better.current_value
    same = gate.decide(current, scorer(1.0), examples)
    assert same.accepted and math.isclose(same.candidate_value, same.current_value)


def test_unexplored_or_too_few_examples_keep_the_serving_policy_unless_told_otherwise(examples):
    gate = PromotionGate(GateConfig(min_samples=30))
    greedy = [logged(1000 + i, [0, 1, 2], [0.9, 0.5, 0.1], 1.0, explored=False) for i in range(50)]
    assert not any(usable(ex) for ex in greedy)
    verdict = gate.decide(scorer(1.0), scorer(-3.0), greedy + examples[:10])
    assert not verdict.accepted and "insufficient data (10 < 30" in verdict.reason
    lenient = PromotionGate(GateConfig(min_samples=30, accept_without_data=True))
    assert lenient.decide(scorer(1.0), scorer(-3.0), greedy + examples[:10]).accepted


def test_prefix_log_prob_is_the_first_k_terms_of_the_list_log_prob():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.5])
    order = [2, 0, 3, 1]
    full = pl_logprob(scores, order)
    assert pl_logprob(scores, order, 4) == pytest.approx(full)
    first = 2.0 - math.log(sum(math.exp(v) for v in (0.3, -1.0, 2.0, 0.5)))
    assert pl_logprob(scores, order, 1) == pytest.approx(first)
    assert full < pl_logprob(scores, order, 2) < pl_logprob(scores, order, 1) < 0


def test_disabled_gate_accepts_everything(examples):
    verdict = PromotionGate(GateConfig(enabled=False)).decide(scorer(1.0), scorer(-3.0), examples)
    assert verdict.accepted and verdict.reason == "gate disabled"


@pytest.mark.parametrize("kwargs,message", [({"estimator": "dr"}, "gate estimator"),
                                            ({"max_relative_drop": -0.1}, "max_relative_drop"), ({"prefix_k": -1}, "prefix_k")])
def test_bad_gate_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GateConfig(**kwargs)


def test_a_candidate_better_than_a_bad_current_but_worse_than_the_cold_start_is_blocked(examples):
    # In these logs the cold start ranks uniformly at random (equal click scores): better than
    # ranking by *inverse* relevance, worse than ranking by relevance.
    bad_current, less_bad = scorer(-3.0), scorer(-1.0)
    loose = PromotionGate(GateConfig(min_samples=30, floor_cold_start=False, confidence=0.0))
    assert loose.decide(bad_current, less_bad, examples).accepted
    floored = PromotionGate(GateConfig(min_samples=30, confidence=0.0)).decide(bad_current, less_bad, examples)
    assert not floored.accepted and "cold-start" in floored.reason


def test_the_gate_window_holds_only_explored_examples_so_a_low_explore_rate_still_fills_it():
    from functools import partial

    from serving.recent_examples import RecentExamples

    window = RecentExamples(None, "examples", maxlen=10, keep=partial(usable, prefix_k=3))
    for i in range(100):  # 1 explored round in 5, as with explore_rate=0.2
        window.add(logged(i, [0, 1, 2], [0.9, 0.5, 0.1], 1.0, explored=i % 5 == 0))
    kept = window.snapshot()
    assert len(kept) == 10 and window.skipped == 80
    assert all(usable(e, 3) for e in kept)
    assert [e.impression.request_id for e in kept] == [logged(i, [0, 1, 2], [0.9, 0.5, 0.1], 1.0).impression.request_id
                                                        for i in range(50, 100, 5)]


class FixedWeights(PromotionGate):
    """The gate's decision rule on importance weights chosen by the test (one array per component)."""

    def __init__(self, config: GateConfig, by_version: dict[str, Any]) -> None:
        super().__init__(config)
        self.by_version = by_version

    def weights(self, component, examples, cache=False):
        return self.by_version[component.version]


def snips(reward, w) -> float:
    return float((reward * w).sum() / w.sum())


def weights_with_value(reward, target: float):
    """``exp(-beta * r)`` with beta found by bisection so that SNIPS equals ``target`` (< the mean reward)."""
    import numpy as np  # noqa: PLC0415

    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if snips(reward, np.exp(-mid * reward)) > target else (lo, mid)
    return np.exp(-lo * reward)


def test_a_candidate_just_inside_the_allowed_drop_passes_and_one_just_outside_is_blocked(examples):
    import numpy as np  # noqa: PLC0415

    reward = np.array([ex.list_reward for ex in examples])
    v_cur = float(reward.mean())
    config = GateConfig(min_samples=30, max_relative_drop=0.05, confidence=0.0, floor_cold_start=False)
    inside = weights_with_value(reward, v_cur * (1 - 0.04))
    outside = weights_with_value(reward, v_cur * (1 - 0.06))  # inside twice the allowed drop
    gate = FixedWeights(config, {"cur": np.ones_like(reward), "inside": inside, "outside": outside})
    passed = gate.decide(scorer_named("cur"), scorer_named("inside"), examples)
    assert passed.accepted and passed.candidate_value == pytest.approx(v_cur * 0.96, rel=1e-6)
    blocked = gate.decide(scorer_named("cur"), scorer_named("outside"), examples)
    assert not blocked.accepted and blocked.candidate_value == pytest.approx(v_cur * 0.94, rel=1e-6)
    assert "- 5%" in blocked.reason


def test_a_candidate_whose_point_estimate_passes_but_whose_lower_bound_fails_is_blocked(examples):
    import numpy as np  # noqa: PLC0415

    reward = np.array([ex.list_reward for ex in examples])
    v_cur = float(reward.mean())
    hi, lo = int(reward.argmax()), int(reward.argmin())
    assert reward[hi] > v_cur > reward[lo]
    share = (v_cur - reward[lo]) / (reward[hi] - reward[lo])
    noisy = np.full_like(reward, 1e-9)  # the value rests on two logged rounds: an estimate with no support
    noisy[hi], noisy[lo] = share, 1 - share
    assert snips(reward, noisy) == pytest.approx(v_cur, rel=1e-6)
    weights = {"cur": np.ones_like(reward), "noisy": noisy}
    point_only = FixedWeights(GateConfig(min_samples=30, confidence=0.0, floor_cold_start=False), weights)
    assert point_only.decide(scorer_named("cur"), scorer_named("noisy"), examples).accepted
    verdict = FixedWeights(GateConfig(min_samples=30, confidence=0.9, floor_cold_start=False), weights).decide(
        scorer_named("cur"), scorer_named("noisy"), examples)
    assert not verdict.accepted and "lower bound of the difference" in verdict.reason


def scorer_named(version: str) -> Component:
    return Component("reranker", "linear-pl", version, LinearListScorer(n_features=1))
