"""The promotion gate's documented contract, on hand-built logged lists with known importance weights.

Checked here (see ``serving/gate.py``'s module docstring): which logged examples count (explored,
with a logged list / top-k log-prob, more than one item), the window and the minimum number of
examples (with the "insufficient data" reason and its counts), the weights
``min(exp(log pi - log pi_b), clip)`` and the IPS / SNIPS values against formulas written out
here, the allowed relative drop at its exact boundary, the paired-bootstrap lower bound against an
independent resampling loop (and its determinism under the seed), the cold-start floor, the
refusal of a candidate that cannot score, non-finite estimates, the exact reason strings, and the
caching of the serving policy's log-probs.

The rerankers are tiny test models whose candidate scores are set per logged list, so each
weight is known: a model with the logging policy's scores has weight exactly 1, one that puts
the shown order far ahead has weight ``clip``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pytest
import torch

from contracts.events import (
    IMPRESSION_SCHEMA,
    FusionDecision,
    Impression,
    ItemLabels,
    JoinInfo,
    LabeledList,
    ShownItem,
)
from contracts.learner import RerankRequest
from serving.baseline import FusedScoreReranker, pl_logprob
from serving.components import Component
from serving.gate import (
    GateConfig,
    GateDecision,
    PromotionGate,
    logged_logprob,
    policy_logprobs,
    prefix_key,
    request_from_example,
    usable,
)

N_ITEMS = 4
ZEROS = [0.0] * N_ITEMS
#: the logging policy of most examples here ranks uniformly at random: its top-3 log-prob
UNIFORM_TOP3 = pl_logprob(torch.zeros(N_ITEMS, dtype=torch.float64), range(N_ITEMS), 3)
UNIFORM_LIST = pl_logprob(torch.zeros(N_ITEMS, dtype=torch.float64), range(N_ITEMS))
FAVOUR = [30.0, 20.0, 10.0, 0.0]  # puts the shown order first with probability ~1: weight ~24 (= 4*3*2)
AVOID = [0.0, 10.0, 20.0, 30.0]  # the shown order is the least likely one: weight ~0


# -- test data ----------------------------------------------------------------------------------
def example(i: int, reward: float, *, n: int = N_ITEMS, top3: float | None = UNIFORM_TOP3,
            list_logprob: float | None = UNIFORM_LIST, explored: float | str | None = 1.0,
            clicks: Sequence[float] | None = None) -> LabeledList:
    """A logged list ``x{i}`` (items ``x{i}-0..``) with the given list reward and logged log-probs."""
    items = [ShownItem(item_id=f"x{i}-{j}", position=j + 1, scores={"click": clicks[j] if clicks else 0.3})
             for j in range(n)]
    context: dict[str, float | str] = {}
    if explored is not None:
        context["explored"] = explored
    if top3 is not None:
        context["logprob_top3"] = top3
    imp = Impression(schema=IMPRESSION_SCHEMA, event_id=f"e{i}", request_id=f"r{i}", ts=1.0, user_id="u", items=items,
                     fusion=FusionDecision(weights={"click": 1.0}), list_logprob=list_logprob, context=context)
    return LabeledList(example_id=f"ex{i}", request_id=f"r{i}", impression=imp,
                       labels=[ItemLabels(item_id=it.item_id, position=it.position) for it in items],
                       list_reward=reward, query_reward=0.0,
                       join=JoinInfo(closed_by="window", window_s=1.0, feedback_count=0, closed_at_ts=1.0))


class TableScorer:
    """A reranker whose candidate scores (shown order) are set per logged list; counts its calls."""

    def __init__(self, default: Sequence[float], per_list: dict[int, Sequence[float]] | None = None) -> None:
        self.default = list(default)
        self.per_list = dict(per_list or {})
        self.calls = 0

    def candidate_scores(self, request: RerankRequest) -> torch.Tensor:
        self.calls += 1
        i = int(request.item_ids[0].split("-")[0][1:])
        return torch.tensor(self.per_list.get(i, self.default), dtype=torch.float64)


class Broken:
    def candidate_scores(self, request: RerankRequest) -> torch.Tensor:
        raise ValueError("x" * 300)


def reranker(version: str, model: object, name: str = "table") -> Component:
    return Component("reranker", name, version, model)


def uniform(version: str = "cur") -> Component:
    return reranker(version, TableScorer(ZEROS))


# -- independent references -----------------------------------------------------------------------
def pl_reference(scores: Sequence[float], k: int | None = None) -> float:
    """Plackett--Luce log-prob of the first ``k`` placements of the order 0..n-1, term by term."""
    s = [float(v) for v in scores]
    k = k or len(s)
    return sum(s[j] - math.log(sum(math.exp(v) for v in s[j:])) for j in range(k))


def ips(reward: Sequence[float], w: Sequence[float]) -> float:
    return sum(r * x for r, x in zip(reward, w)) / len(reward)


def snips(reward: Sequence[float], w: Sequence[float]) -> float:
    return sum(r * x for r, x in zip(reward, w)) / sum(w)


def bootstrap_lower(reward: np.ndarray, w_new: np.ndarray, w_cur: np.ndarray, value, seed: int, n_bootstrap: int,
                    confidence: float) -> float:
    """Paired bootstrap: the same resampled rounds for both policies, then the (1 - confidence) percentile."""
    rng = np.random.default_rng(seed)
    n = len(reward)
    diffs = []
    for row in rng.integers(0, n, size=(n_bootstrap, n)):
        r = [float(reward[j]) for j in row]
        diffs.append(value(r, [float(w_new[j]) for j in row]) - value(r, [float(w_cur[j]) for j in row]))
    return float(np.percentile(diffs, 100 * (1 - confidence)))


def weight(scores: Sequence[float], logged: float, clip: float = 50.0) -> float:
    return min(math.exp(pl_reference(scores, 3) - logged), clip)


def rewards(n: int) -> list[float]:
    return [((i * 7) % 5) / 4 for i in range(n)]  # 0, 0.25, ..., 1 in a scrambled order


# -- configuration and small helpers -------------------------------------------------------------
def test_the_default_configuration_is_the_documented_one():
    cfg = GateConfig()
    assert (cfg.enabled, cfg.estimator, cfg.max_relative_drop, cfg.min_samples, cfg.clip, cfg.window) == \
        (True, "snipw", 0.05, 30, 50.0, 2000)
    assert (cfg.prefix_k, cfg.confidence, cfg.n_bootstrap, cfg.seed, cfg.floor_cold_start, cfg.accept_without_data) \
        == (3, 0.9, 300, 0, True, False)
    assert PromotionGate().config == cfg and PromotionGate(None).config == cfg
    own = GateConfig(min_samples=3)
    assert PromotionGate(own).config is own


@pytest.mark.parametrize("kwargs,message", [
    ({"estimator": "dr"}, "gate estimator must be 'ipw' or 'snipw', got 'dr'"),
    ({"max_relative_drop": -1e-9}, "max_relative_drop must be >= 0"),
    ({"prefix_k": -1}, "prefix_k must be >= 0"),
    ({"confidence": -0.01}, r"confidence must be in \[0, 1\)"),
    ({"confidence": 1.0}, r"confidence must be in \[0, 1\)"),
])
def test_each_invalid_setting_is_refused_with_its_own_message(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        GateConfig(**kwargs)


def test_the_edges_of_the_valid_settings_are_accepted():
    for kwargs in ({"estimator": "ipw"}, {"estimator": "snipw"}, {"max_relative_drop": 0.0}, {"prefix_k": 0},
                   {"confidence": 0.0}, {"confidence": 0.999}):
        GateConfig(**kwargs)


def test_a_decision_serialises_every_field():
    decision = GateDecision(False, "why", 7, 0.5, 0.25, "ipw")
    assert decision.as_dict() == {"accepted": False, "reason": "why", "n": 7, "estimator": "ipw",
                                  "current_value": 0.5, "candidate_value": 0.25, "lower_bound": None}
    assert GateDecision(True, "ok", 0, lower_bound=-0.1).as_dict() == {
        "accepted": True, "reason": "ok", "n": 0, "estimator": "snipw", "current_value": None,
        "candidate_value": None, "lower_bound": -0.1}


def test_the_top_k_log_prob_is_logged_under_logprob_top_k():
    assert prefix_key(3) == "logprob_top3" and prefix_key(12) == "logprob_top12"


def test_only_explored_lists_with_logged_log_probs_and_several_items_are_usable():
    assert usable(example(0, 1.0)) and usable(example(0, 1.0), prefix_k=3)
    assert usable(example(0, 1.0, n=2)), "two items already have an order to weigh"
    assert usable(example(0, 1.0, explored=0.5))
    assert not usable(example(0, 1.0, n=1)), "a single item has no order"
    assert not usable(example(0, 1.0, explored=0.0))
    assert not usable(example(0, 1.0, explored=None)), "no 'explored' flag: served greedily"
    assert not usable(example(0, 1.0, explored="")), "an empty flag is not an explored round"
    assert not usable(example(0, 1.0, list_logprob=None))
    assert not usable(example(0, 1.0, list_logprob=None), prefix_k=3)
    # the top-k log-prob is needed only when the gate uses top-k weights, and it must be a number
    assert usable(example(0, 1.0, top3=None), prefix_k=0)
    assert not usable(example(0, 1.0, top3=None), prefix_k=3)
    assert not usable(example(0, 1.0, top3=None), prefix_k=2)
    ex = example(0, 1.0)
    text = ex.model_copy(update={"impression": ex.impression.model_copy(
        update={"context": {"explored": 1.0, "logprob_top3": "-1.5"}})})
    assert not usable(text, prefix_k=3)


def test_the_logged_log_prob_is_the_top_k_one_or_the_whole_list_one():
    ex = example(0, 1.0, top3=-2.5, list_logprob=-4.0)
    assert logged_logprob(ex, 3) == -2.5 and logged_logprob(ex, 0) == -4.0 and logged_logprob(ex) == -4.0


def test_a_logged_list_becomes_the_request_it_was_served_as():
    items = [ShownItem(item_id="a", position=1, scores={"click": 0.2, "long_view": 0.7}, calibrated={"click": 0.25},
                       features=[1.0, 2.0]),
             ShownItem(item_id="b", position=2, scores={"click": 0.4}, features=[3.0, 4.0]),
             ShownItem(item_id="c", position=3, scores={"click": 0.6, "long_view": 0.8}, calibrated={},
                       features=[5.0, 6.0]),
             ShownItem(item_id="d", position=4, scores={"click": 0.1, "long_view": 0.3},
                       calibrated={"click": 0.9, "long_view": 0.05}, features=[7.0, 8.0])]
    imp = Impression(schema=IMPRESSION_SCHEMA, event_id="e", request_id="r", ts=1.0, user_id="u7", query="cats",
                     items=items, fusion=FusionDecision(weights={"click": 0.7, "long_view": 0.3}), list_logprob=-2.0,
                     context={"explored": 1.0, "device": "tv"})
    ex = LabeledList(example_id="x", request_id="r", impression=imp, list_reward=1.0, query_reward=0.0,
                     labels=[ItemLabels(item_id=it.item_id, position=it.position) for it in items],
                     join=JoinInfo(closed_by="window", window_s=1.0, feedback_count=0, closed_at_ts=1.0))
    req = request_from_example(ex)
    assert req.item_ids == ("a", "b", "c", "d")
    assert list(req.task_scores) == ["click", "long_view"]  # the first item's tasks
    # calibrated where logged, the upstream score where not, 0.5 where neither
    assert req.task_scores["click"].tolist() == [0.25, 0.4, 0.6, 0.9]
    assert req.task_scores["long_view"].tolist() == [0.7, 0.5, 0.8, 0.05]
    assert req.upstream_scores["click"].tolist() == [0.2, 0.4, 0.6, 0.1]
    assert req.upstream_scores["long_view"].tolist() == [0.7, 0.5, 0.8, 0.3]
    assert all(t.dtype == torch.float64 for t in (*req.task_scores.values(), *req.upstream_scores.values()))
    assert req.features.dtype == torch.float32 and req.features.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert req.context == {"explored": 1.0, "device": "tv", "user_id": "u7", "query": "cats",
                           "fusion_weights": {"click": 0.7, "long_view": 0.3}}
    # features only when every item has them, all of one length; no fusion logged: no fusion weights
    ragged = imp.model_copy(update={"items": [items[0], items[1].model_copy(update={"features": [3.0]})],
                                    "fusion": None})
    req = request_from_example(ex.model_copy(update={"impression": ragged, "labels": ex.labels[:2]}))
    assert tuple(req.features.shape) == (2, 0) and "fusion_weights" not in req.context
    partial = imp.model_copy(update={"items": [items[0], items[1].model_copy(update={"features": None, "features_f32": None})]})
    req = request_from_example(ex.model_copy(update={"impression": partial, "labels": ex.labels[:2]}))
    assert tuple(req.features.shape) == (2, 0)


@pytest.mark.parametrize("prefix_k", [0, 2, 3])
def test_policy_log_probs_are_the_plackett_luce_log_probs_of_the_shown_order(prefix_k):
    per_list = {0: [0.5, -1.0, 2.0, 0.3, 1.1], 1: [2.0, 1.0, 0.0, -1.0, -2.0], 2: [0.0, 0.0, 3.0, 0.0, -0.5]}
    examples = [example(i, 1.0, n=5) for i in range(3)]
    model = reranker("1", TableScorer(ZEROS, per_list))
    got = policy_logprobs(model, examples, prefix_k)
    want = [pl_reference(per_list[i], prefix_k or None) for i in range(3)]
    assert got == pytest.approx(want, rel=1e-12)
    requests = [request_from_example(ex) for ex in examples]
    assert policy_logprobs(model, examples, prefix_k, requests) == pytest.approx(want, rel=1e-12)


# -- weights and values -----------------------------------------------------------------------------
@pytest.mark.parametrize("cache", [False, True])
def test_weights_are_clipped_likelihood_ratios_of_the_top_k_or_of_the_whole_list(cache):
    # five items: the top-3 log-prob is not the whole list's
    per_list = {0: [1.0, 0.0, 0.0, 0.0, 0.7], 1: [0.0, 1.0, -1.0, 0.5, -0.3], 2: [40.0, 30.0, 20.0, 10.0, 0.0]}
    examples = [example(i, 1.0, n=5, top3=-2.0 - i, list_logprob=-3.0 - i) for i in range(3)]
    model = reranker("1", TableScorer(ZEROS, per_list))
    w = PromotionGate(GateConfig(clip=20.0)).weights(model, examples, cache=cache)
    assert w[:2] == pytest.approx([math.exp(pl_reference(per_list[i], 3) + 2.0 + i) for i in range(2)], rel=1e-12)
    assert w[2] == 20.0  # exp(~4) > clip
    whole = PromotionGate(GateConfig(clip=20.0, prefix_k=0)).weights(model, examples, cache=cache)
    assert whole[:2] == pytest.approx([math.exp(pl_reference(per_list[i]) + 3.0 + i) for i in range(2)], rel=1e-12)


def test_log_ratios_are_bounded_so_weights_stay_positive_and_finite():
    # the log-ratio is clipped to [-700, 700] before exp: never 0 (SNIPS stays defined), never inf
    examples = [example(0, 1.0, top3=-800.0), example(1, 1.0, top3=800.0)]
    model = reranker("1", TableScorer(ZEROS))
    w = PromotionGate(GateConfig(clip=math.inf)).weights(model, examples)
    assert w[0] == np.exp(700.0) and w[1] == np.exp(-700.0) > 0


def test_estimate_is_ips_or_snips_of_the_clipped_weights():
    n = 12
    per_list = {i: [0.3 * (i % 4), 0.0, -0.2 * (i % 3), 0.1] for i in range(n)}
    examples = [example(i, r) for i, r in enumerate(rewards(n))]
    model = reranker("1", TableScorer(ZEROS, per_list))
    w = [weight(per_list[i], UNIFORM_TOP3) for i in range(n)]
    assert PromotionGate(GateConfig(estimator="ipw")).estimate(model, examples) == \
        pytest.approx(ips(rewards(n), w), rel=1e-12)
    assert PromotionGate(GateConfig(estimator="snipw")).estimate(model, examples) == \
        pytest.approx(snips(rewards(n), w), rel=1e-12)
    assert PromotionGate(GateConfig(estimator="snipw")).estimate(model, examples, cache=True) == \
        pytest.approx(snips(rewards(n), w), rel=1e-12)


def test_estimate_scores_the_model_afresh_unless_asked_to_cache():
    examples = [example(i, r) for i, r in enumerate(rewards(6))]
    model = TableScorer(FAVOUR)
    gate = PromotionGate(GateConfig())
    first = gate.estimate(reranker("1", model), examples)
    assert gate.estimate(reranker("1", model), examples) == first and model.calls == 12
    gate.estimate(reranker("1", model), examples, cache=True)
    gate.estimate(reranker("1", model), examples, cache=True)
    assert model.calls == 18


def test_snips_of_small_weights_is_still_self_normalised():
    # a logging policy that was nearly sure of its order and a uniform model: weights (1/120)/0.9 each
    n = 40
    examples = [example(i, r, n=6, top3=math.log(0.9)) for i, r in enumerate(rewards(n))]
    model = reranker("1", TableScorer([0.0] * 6))
    w = 1 / 120 / 0.9
    assert n * w < 1
    assert PromotionGate(GateConfig(estimator="snipw")).estimate(model, examples) == \
        pytest.approx(sum(rewards(n)) / n, rel=1e-9)
    gate = PromotionGate(GateConfig(estimator="snipw", min_samples=n, confidence=0.0, floor_cold_start=False))
    decision = gate.decide(model, model, examples)
    assert decision.current_value == pytest.approx(sum(rewards(n)) / n, rel=1e-9)


def test_weights_clipped_to_zero_give_a_zero_estimate():
    examples = [example(i, 1.0) for i in range(5)]
    model = reranker("1", TableScorer(FAVOUR))
    assert PromotionGate(GateConfig(estimator="snipw", clip=0.0)).estimate(model, examples) == 0.0
    assert PromotionGate(GateConfig(estimator="ipw", clip=0.0)).estimate(model, examples) == 0.0


# -- the paired bootstrap -----------------------------------------------------------------------------
@pytest.mark.parametrize("estimator,value", [("ipw", ips), ("snipw", snips)])
@pytest.mark.parametrize("seed,n_bootstrap,confidence", [(0, 300, 0.9), (7, 50, 0.8), (3, 11, 0.5)])
def test_the_lower_bound_is_the_percentile_of_paired_bootstrap_differences(estimator, value, seed, n_bootstrap,
                                                                           confidence):
    rng = np.random.default_rng(123)
    reward = rng.uniform(0, 1, 25)
    w_new, w_cur = rng.exponential(1.0, 25), rng.exponential(1.0, 25)
    gate = PromotionGate(GateConfig(estimator=estimator, seed=seed, n_bootstrap=n_bootstrap, confidence=confidence))
    got = gate.difference_lower_bound(reward, w_new, w_cur)
    assert got == pytest.approx(bootstrap_lower(reward, w_new, w_cur, value, seed, n_bootstrap, confidence),
                                rel=1e-9, abs=1e-12)


def test_the_bootstrap_is_determined_by_its_seed():
    rng = np.random.default_rng(5)
    reward, w_new, w_cur = rng.uniform(0, 1, 30), rng.exponential(1.0, 30), rng.exponential(1.0, 30)
    first = PromotionGate(GateConfig(seed=4)).difference_lower_bound(reward, w_new, w_cur)
    assert PromotionGate(GateConfig(seed=4)).difference_lower_bound(reward, w_new, w_cur) == first
    assert PromotionGate(GateConfig(seed=5)).difference_lower_bound(reward, w_new, w_cur) != first


# -- decisions ------------------------------------------------------------------------------------------
def test_a_disabled_gate_accepts_without_looking():
    decision = PromotionGate(GateConfig(enabled=False, estimator="ipw")).decide(uniform(), reranker("x", Broken()), [])
    assert decision == GateDecision(True, "gate disabled", 0, None, None, "ipw")


def test_too_few_usable_examples_keep_the_serving_policy_and_say_how_many():
    unusable = [example(100, 1.0, explored=0.0), example(101, 1.0, n=1), example(102, 1.0, top3=None),
                example(103, 1.0, list_logprob=None)]
    examples = unusable + [example(i, 1.0) for i in range(9)]
    strict = PromotionGate(GateConfig(min_samples=10, estimator="ipw"))
    decision = strict.decide(uniform(), reranker("x", Broken()), examples)
    assert decision == GateDecision(False, "insufficient data (9 < 10 explored examples)", 9, None, None, "ipw")
    lenient = PromotionGate(GateConfig(min_samples=10, accept_without_data=True))
    decision = lenient.decide(uniform(), reranker("x", Broken()), examples)
    assert decision == GateDecision(True, "insufficient data (9 < 10 explored examples)", 9, None, None, "snipw")


def test_exactly_the_minimum_number_of_examples_is_enough_to_judge():
    examples = [example(i, r) for i, r in enumerate(rewards(10))]
    decision = PromotionGate(GateConfig(min_samples=10)).decide(uniform(), uniform("new"), examples)
    assert decision.n == 10 and decision.accepted and not decision.reason.startswith("insufficient")


def test_the_window_keeps_the_most_recent_usable_examples():
    # the oldest examples have reward 100: a window that kept them would show a different value
    examples = [example(i, 100.0) for i in range(5)] + [example(100, 1.0, explored=0.0)] + \
        [example(10 + i, r) for i, r in enumerate(rewards(8))]
    gate = PromotionGate(GateConfig(window=8, min_samples=8, estimator="ipw", confidence=0.0, floor_cold_start=False))
    decision = gate.decide(uniform(), uniform("new"), examples)
    assert decision.n == 8 and decision.current_value == pytest.approx(sum(rewards(8)) / 8, rel=1e-12)


def test_a_candidate_that_cannot_score_the_logged_lists_is_refused_with_the_error():
    examples = [example(i, 1.0) for i in range(6)]
    gate = PromotionGate(GateConfig(min_samples=5, estimator="ipw"))
    decision = gate.decide(uniform(), reranker("x", Broken()), examples)
    assert decision == GateDecision(False, "candidate could not be evaluated: ValueError: " + "x" * 200, 6, None, None,
                                    "ipw")


def test_the_candidate_keeps_serving_when_not_worse_and_the_reason_gives_both_values():
    n = 20
    per_list = {i: [0.4 * (i % 3), 0.0, 0.2, -0.1 * (i % 2)] for i in range(n)}
    examples = [example(i, r) for i, r in enumerate(rewards(n))]
    current, candidate = uniform(), reranker("new", TableScorer(ZEROS, per_list))
    decision = PromotionGate(GateConfig(min_samples=n, floor_cold_start=False, confidence=0.0,
                                        max_relative_drop=0.5)).decide(current, candidate, examples)
    v_cur = snips(rewards(n), [1.0] * n)
    v_new = snips(rewards(n), [weight(per_list[i], UNIFORM_TOP3) for i in range(n)])
    assert v_new > v_cur * 0.5
    assert decision == GateDecision(True, f"estimated value {v_new:.4f} vs current {v_cur:.4f}", n,
                                    pytest.approx(v_cur, rel=1e-12), pytest.approx(v_new, rel=1e-12), "snipw")


def exact_examples(n: int = 32, reward: float = -0.25) -> list[LabeledList]:
    return [example(i, reward) for i in range(n)]


def test_a_drop_of_exactly_the_allowed_share_passes_and_a_larger_one_is_blocked():
    # IPS with weights 1 (current = logging) and 2 (candidate clipped at 2) on 32 rounds of reward
    # -0.25: every value is a dyadic fraction, so the boundary is hit exactly
    examples = exact_examples()
    config = GateConfig(estimator="ipw", clip=2.0, max_relative_drop=0.5, min_samples=32, confidence=0.0,
                        floor_cold_start=False)
    # half the rounds at weight 2: V_new = -0.375 = V_cur - 0.5 * |V_cur|
    half = reranker("half", TableScorer(ZEROS, {i: FAVOUR for i in range(16)}))
    decision = PromotionGate(config).decide(uniform(), half, examples)
    assert decision == GateDecision(True, "estimated value -0.3750 vs current -0.2500", 32, -0.25, -0.375, "ipw")
    more = reranker("more", TableScorer(ZEROS, {i: FAVOUR for i in range(17)}))  # V_new = -12.25 / 32
    decision = PromotionGate(config).decide(uniform(), more, examples)
    assert decision == GateDecision(False, "estimated value -0.3828 < current -0.2500 - 50%", 32, -0.25, -12.25 / 32,
                                    "ipw")


def test_a_lower_bound_of_exactly_minus_the_allowed_drop_passes():
    # every round at weight 2: each bootstrap difference is exactly -0.25 = -1.0 * |V_cur|
    examples = exact_examples()
    candidate = reranker("new", TableScorer(FAVOUR))
    config = GateConfig(estimator="ipw", clip=2.0, max_relative_drop=1.0, min_samples=32, confidence=0.9,
                        floor_cold_start=False)
    decision = PromotionGate(config).decide(uniform(), candidate, examples)
    assert decision == GateDecision(True, "estimated value -0.5000 vs current -0.2500", 32, -0.25, -0.5, "ipw",
                                    pytest.approx(-0.25, abs=1e-12))
    blocked = PromotionGate(GateConfig(estimator="ipw", clip=2.0, max_relative_drop=0.99, min_samples=32,
                                       confidence=0.0, floor_cold_start=False)).decide(uniform(), candidate, examples)
    assert not blocked.accepted and blocked.reason == "estimated value -0.5000 < current -0.2500 - 99%"


@pytest.mark.parametrize("estimator", ["ipw", "snipw"])
@pytest.mark.parametrize("confidence", [0.0, 0.9])
def test_with_no_allowed_drop_an_equally_good_candidate_still_passes(estimator, confidence):
    examples = [example(i, r) for i, r in enumerate(rewards(30))]
    config = GateConfig(estimator=estimator, max_relative_drop=0.0, min_samples=30, confidence=confidence,
                        floor_cold_start=False)
    decision = PromotionGate(config).decide(uniform(), uniform("same-scores"), examples)
    assert decision.accepted and decision.candidate_value == decision.current_value


def test_the_allowed_drop_is_relative_to_the_size_of_a_negative_current_value():
    # V_cur = -1: a candidate at -1.03 is within 5 % of |V_cur|, one at -1.0625 is not
    examples = [example(i, -1.0) for i in range(32)]
    config = GateConfig(estimator="ipw", clip=2.0, min_samples=32, confidence=0.0, floor_cold_start=False)
    one = reranker("one", TableScorer(ZEROS, {0: FAVOUR}))  # V_new = -33/32 = -1.03125
    assert PromotionGate(config).decide(uniform(), one, examples).accepted
    two = reranker("two", TableScorer(ZEROS, {0: FAVOUR, 1: FAVOUR}))  # V_new = -1.0625
    decision = PromotionGate(config).decide(uniform(), two, examples)
    assert decision == GateDecision(False, "estimated value -1.0625 < current -1.0000 - 5%", 32, -1.0, -1.0625, "ipw")


def test_a_current_value_of_zero_allows_no_real_drop():
    # rewards +1/-1 in equal numbers: V_cur = 0, so the allowed drop is 5 % of 1e-9
    examples = [example(i, 1.0 if i % 2 else -1.0) for i in range(32)]
    config = GateConfig(estimator="ipw", clip=2.0, min_samples=32, confidence=0.0, floor_cold_start=False)
    candidate = reranker("new", TableScorer(ZEROS, {0: FAVOUR}))  # doubles one reward of -1: V_new = -1/32
    decision = PromotionGate(config).decide(uniform(), candidate, examples)
    assert decision == GateDecision(False, "estimated value -0.0312 < current 0.0000 - 5%", 32, 0.0, -1 / 32, "ipw")


@pytest.mark.parametrize("estimator,value,lucky", [("ipw", ips, (0,)), ("snipw", snips, (0, 1, 20))])
def test_a_lucky_point_estimate_with_a_poor_lower_bound_is_blocked(estimator, value, lucky):
    # the candidate's value rests on one or three logged rounds (weight ~24); all others have weight ~0
    n = 40
    reward = [1.0] * 20 + [0.0] * 20
    per_list = {i: (FAVOUR if i in lucky else AVOID) for i in range(n)}
    examples = [example(i, r) for i, r in enumerate(reward)]
    candidate = reranker("new", TableScorer(ZEROS, per_list))
    gate = PromotionGate(GateConfig(estimator=estimator, min_samples=n, floor_cold_start=False))
    decision = gate.decide(uniform(), candidate, examples)
    w_new = np.array([weight(per_list[i], UNIFORM_TOP3) for i in range(n)])
    v_cur, v_new = 0.5, value(reward, w_new)
    assert v_new > v_cur  # the point estimate alone would promote it
    lower = bootstrap_lower(np.array(reward), w_new, np.ones(n), value, 0, 300, 0.9)
    assert lower < -0.05 * v_cur
    assert decision == GateDecision(False, f"estimated value {v_new:.4f} vs current {v_cur:.4f}, but the 90% lower "
                                           f"bound of the difference {lower:.4f} is below -{0.05 * v_cur:.4f}", n,
                                    pytest.approx(v_cur, rel=1e-12), pytest.approx(v_new, rel=1e-9), estimator,
                                    pytest.approx(lower, rel=1e-9))
    assert PromotionGate(GateConfig(estimator=estimator, min_samples=n, floor_cold_start=False, confidence=0.0)).decide(
        uniform(), candidate, examples).accepted


def test_without_a_confidence_level_the_point_estimates_alone_decide():
    """``confidence=0`` means point estimates only: a better candidate passes even on logs where
    every bootstrap resample would make it look worse (rewards built so that each of the gate's
    resamples has the same difference, 1/n below the full-sample one)."""
    n, n_bootstrap = 32, 20
    idx = np.random.default_rng(0).integers(0, n, size=(n_bootstrap, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)
    d = np.linalg.lstsq(counts - 1.0, -np.ones(n_bootstrap), rcond=None)[0]  # sum_i (c_bi - 1) d_i = -1 for every b
    reward = d - d.mean() + 0.4 / n  # mean 0.4/n: V_cur = 0.4/n, V_new = 0.8/n with every weight doubled
    examples = [example(i, float(r)) for i, r in enumerate(reward)]
    candidate = reranker("new", TableScorer(FAVOUR))
    config = GateConfig(estimator="ipw", clip=2.0, min_samples=n, n_bootstrap=n_bootstrap, confidence=0.0,
                        floor_cold_start=False)
    v_cur, v_new = ips(reward, [1.0] * n), ips(reward, [2.0] * n)
    allowed = 0.05 * v_cur
    lower = bootstrap_lower(reward, np.full(n, 2.0), np.ones(n), ips, 0, n_bootstrap, 0.5)
    assert v_new > v_cur and lower == pytest.approx(v_cur - 1 / n) and lower < -allowed
    decision = PromotionGate(config).decide(uniform(), candidate, examples)
    assert decision.accepted and decision.reason == f"estimated value {v_new:.4f} vs current {v_cur:.4f}"
    blocked = PromotionGate(GateConfig(estimator="ipw", clip=2.0, min_samples=n, n_bootstrap=n_bootstrap,
                                       confidence=0.5, floor_cold_start=False)).decide(uniform(), candidate, examples)
    assert not blocked.accepted and "50% lower bound of the difference" in blocked.reason


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_non_finite_estimate_refuses_the_candidate():
    # clip=inf and a log-ratio at its 700 bound: weight ~1e304, times a reward of 1e6 overflows
    n = 5
    examples = [example(i, 1e6, top3=-800.0) for i in range(n)]
    steep = [0.0, 400.0 / 3, 800.0 / 3, 400.0]  # log-prob of the shown top 3 ~ -800: weight ~1
    config = GateConfig(estimator="ipw", clip=math.inf, min_samples=n, floor_cold_start=False)
    finite, huge = reranker("steep", TableScorer(steep)), reranker("huge", TableScorer([3000.0, 2000.0, 1000.0, 0.0]))
    decision = PromotionGate(config).decide(finite, huge, examples)
    assert (decision.accepted, decision.reason, decision.n, decision.estimator) == \
        (False, "non-finite estimate", n, "ipw")
    assert math.isfinite(decision.current_value) and decision.candidate_value == math.inf
    decision = PromotionGate(config).decide(huge, finite, examples)
    assert (decision.accepted, decision.reason, decision.n, decision.estimator) == \
        (False, "non-finite estimate", n, "ipw")
    assert decision.current_value == math.inf and math.isfinite(decision.candidate_value)


# -- the cold-start floor -----------------------------------------------------------------------------
CLICKS = [0.9, 0.6, 0.3, 0.1]  # the cold start (fused click logit) prefers the shown order


def cold_start_weight() -> float:
    logits = [math.log(p / (1 - p)) for p in CLICKS]
    return weight(logits, UNIFORM_TOP3)


def test_a_cold_start_better_than_the_current_snapshot_is_the_reference():
    n = 30
    examples = [example(i, r, clicks=CLICKS) for i, r in enumerate(rewards(n))]
    v_cur, v_cold = ips(rewards(n), [1.0] * n), ips(rewards(n), [cold_start_weight()] * n)
    assert v_cold > v_cur
    config = GateConfig(estimator="ipw", min_samples=n, confidence=0.0)
    decision = PromotionGate(config).decide(uniform(), uniform("same-scores"), examples)
    assert decision == GateDecision(False, f"estimated value {v_cur:.4f} < cold-start {v_cold:.4f} - 5%", n,
                                    pytest.approx(v_cold, rel=1e-6), pytest.approx(v_cur, rel=1e-12), "ipw")
    # without the floor the current snapshot is the reference
    loose = PromotionGate(GateConfig(estimator="ipw", min_samples=n, confidence=0.0, floor_cold_start=False))
    decision = loose.decide(uniform(), uniform("same-scores"), examples)
    assert decision.accepted and decision.reason == f"estimated value {v_cur:.4f} vs current {v_cur:.4f}"
    # with nothing serving yet the cold start is the current policy
    decision = PromotionGate(config).decide(None, uniform("new"), examples)
    assert decision.reason == f"estimated value {v_cur:.4f} < current {v_cold:.4f} - 5%"


def test_a_cold_start_only_as_good_as_the_current_snapshot_leaves_the_current_one_as_reference():
    n = 30
    examples = [example(i, r, clicks=CLICKS) for i, r in enumerate(rewards(n))]
    current = reranker("1", FusedScoreReranker(), name="fused-score")  # the cold start's own scores
    config = GateConfig(estimator="ipw", min_samples=n, confidence=0.0)
    decision = PromotionGate(config).decide(current, current, examples)
    v = ips(rewards(n), [cold_start_weight()] * n)
    assert decision.accepted and decision.reason == f"estimated value {v:.4f} vs current {v:.4f}"


# -- caching of the serving policy's log-probs -------------------------------------------------------
def test_the_serving_policy_is_scored_once_per_example_and_the_candidate_every_time():
    n = 10
    examples = [example(i, r) for i, r in enumerate(rewards(n))]
    current, candidate = TableScorer(ZEROS), TableScorer(ZEROS)
    gate = PromotionGate(GateConfig(min_samples=n))
    for _ in range(2):
        gate.decide(reranker("1", current), reranker("2", candidate), examples)
    assert (current.calls, candidate.calls) == (n, 2 * n)
    assert len(gate._cache) == 2 * n  # the serving policy's and the cold start's log-probs
    gate.decide(reranker("1", current), reranker("2", candidate), examples + [example(n, 1.0)])
    assert (current.calls, candidate.calls) == (n + 1, 3 * n + 1)
    gate.decide(reranker("1-new", current), reranker("2", candidate), examples)  # a swap: a new version serves
    assert current.calls == 2 * n + 1


def test_the_log_prob_cache_is_emptied_only_past_twenty_windows_of_entries():
    # window 2: at most 40 cached entries are kept; changed scores show whether an entry was cached
    examples = [example(i, 1.0) for i in range(41)]
    model = TableScorer(ZEROS)
    component = reranker("1", model)
    gate = PromotionGate(GateConfig(window=2))
    old = math.exp(pl_reference(ZEROS, 3) - UNIFORM_TOP3)
    gate.weights(component, examples[:40], cache=True)
    model.default = FAVOUR
    new = weight(FAVOUR, UNIFORM_TOP3)
    assert gate.weights(component, examples[:40], cache=True) == pytest.approx([old] * 40)  # 40 entries: kept
    assert gate.weights(component, examples, cache=True) == pytest.approx([old] * 40 + [new])  # now 41 entries
    assert gate.weights(component, examples, cache=True) == pytest.approx([new] * 41)  # past 40: emptied first
    assert gate.weights(component, examples[:1]) == pytest.approx([new])
