"""The hot-swap path of serving.components, in-process: snapshots of real learners (linear-pl, LDRO, DRPO,
histogram calibration) rebuilt into components, the canary request, the canary check that refuses a broken
model with the reason, the warm-up, and the role calls with their cold-start fallbacks.

A few checks need a model output that no healthy learner produces (a column instead of a vector, a ranking
with a duplicate, ...); those use a thin stand-in that edits a real model's answer, named after the fault.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import pytest
import torch

from contracts.learner import LearnerState, RerankRequest, RerankResult
from learners.registry import build_learner
from serving.baseline import FusedScoreReranker, LinearListScorer, logit, pl_logprob
from serving.components import (
    Component,
    ComponentError,
    build_component_model,
    calibrate,
    canary_request,
    candidate_scores,
    candidate_scores_many,
    check_component,
    fusion,
    rerank,
    warm_up,
)

TASKS = ("click", "long_view")


# -- real models and their snapshots ------------------------------------------------------------------------------
def linear(n_features: int = 3, seed: int = 0) -> LinearListScorer:
    """A linear PL scorer with distinct, non-trivial weights (so that a wrong model or input shows)."""
    model = LinearListScorer(n_features=n_features, tasks=TASKS, seed=seed)
    with torch.no_grad():
        model.task_weight.copy_(torch.tensor([0.7, -0.4]))
        model.feature_weight.copy_(torch.linspace(-1.0, 1.5, n_features))
        model.bias.fill_(0.25)
    model.updates = 5
    return model


def ldro(n_features: int = 3, **config: Any):
    model = build_learner("ldro", n_features=n_features, tasks=TASKS, hidden=8, seed=3, **config)
    with torch.no_grad():  # away from the near-uniform start, so that scores differ between candidates
        for p in model.student.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    return model


def drpo(n_features: int = 3):
    return build_learner("drpo", n_features=n_features, tasks=TASKS, hidden=8, seed=1)


def histogram_state(rates: dict[str, float]) -> LearnerState:
    """A histogram-calibration snapshot whose every bin of ``task`` holds ``rates[task]``.

    One observation per bin, no p_hat mass: the bin's rate is (positives + prior * 0) / (1 + prior) with the
    default prior 1, so positives = 2 * rate. Rates outside [0, 1] or NaN are what a corrupted snapshot holds.
    """
    state = build_learner("histogram", tasks=TASKS).state_dict()
    for task, rate in rates.items():
        bins = state.tensors[f"hist.{task}.count"].shape
        state.tensors[f"hist.{task}.count"] = torch.ones(bins, dtype=torch.float64)
        state.tensors[f"hist.{task}.positives"] = torch.full(bins, 2.0 * rate, dtype=torch.float64)
        state.tensors[f"hist.{task}.sum_p"] = torch.zeros(bins, dtype=torch.float64)
    return state


def served(role: str, name: str, model: Any) -> Component:
    """The component the watcher would serve: the model rebuilt from its snapshot."""
    return Component(role, name, "3", build_component_model(name, model.state_dict()))


def request(gen: torch.Generator, n: int, n_features: int = 3, context: dict | None = None) -> RerankRequest:
    scores = {t: torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05 for t in TASKS}
    return RerankRequest(item_ids=tuple(f"i{k}" for k in range(n)), features=torch.rand(n, n_features, generator=gen),
                         task_scores=scores, context=dict(context or {}))


# -- stand-ins for faults no healthy model has ---------------------------------------------------------------------
class EditedReranker:
    """A real scorer whose ``rerank`` answer is edited (``changes`` replaces fields of the RerankResult)."""

    def __init__(self, inner: LinearListScorer, **changes: Any) -> None:
        self.inner = inner
        self.changes = changes

    def rerank(self, request: RerankRequest, explore: bool = False) -> RerankResult:
        result = self.inner.rerank(request, explore=explore)
        return dataclasses.replace(result, **{k: f(result) for k, f in self.changes.items()})

    def candidate_scores(self, request: RerankRequest) -> torch.Tensor:
        return self.inner.candidate_scores(request)


class NaNCandidateScores(EditedReranker):
    """Ranks like a real scorer, but its per-candidate scores (the gate's input) are NaN."""

    def candidate_scores(self, request: RerankRequest) -> torch.Tensor:
        return torch.full((len(request.item_ids),), float("nan"), dtype=torch.float64)


class ScoresOnly:
    """Only the promotion gate's call of a real scorer (no ``rerank``)."""

    def __init__(self, inner: Any) -> None:
        self.candidate_scores = inner.candidate_scores


class BatchedScoresOnly:
    """Only the batched promotion-gate call of a real LDRO (no per-request call, no ``rerank``)."""

    def __init__(self, inner: Any) -> None:
        self.candidate_scores_many = inner.candidate_scores_many


class EditedCalibrator:
    """A real calibrator whose output per task goes through ``edit``; ``only`` keeps just those tasks."""

    def __init__(self, inner: Any, edit=lambda v: v, only: tuple[str, ...] | None = None) -> None:
        self.inner, self.edit, self.only = inner, edit, only

    def calibrate(self, task_scores: dict[str, torch.Tensor], context: dict[str, Any]) -> dict[str, Any]:
        out = self.inner.calibrate(task_scores, context)
        return {t: self.edit(v) for t, v in out.items() if self.only is None or t in self.only}


class ExploringByDefault:
    """A real DRPO ranking whose ``rerank`` samples unless told otherwise (no ``candidate_scores``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def rerank(self, request: RerankRequest, explore: bool = True) -> RerankResult:
        return self.inner.rerank(request, explore=explore)


class FixedFusion:
    """A fusion model that answers the given weights and log-prob whatever the request."""

    def __init__(self, weights: dict[Any, float], logprob: float | None) -> None:
        self.weights, self.logprob = weights, logprob

    def fusion_weights(self, task_scores, context, explore=False):
        return dict(self.weights), self.logprob


def refusal(component: Component, canary: RerankRequest) -> str:
    with pytest.raises(ComponentError) as info:
        check_component(component, canary)
    return str(info.value)


# -- building a component from a snapshot -------------------------------------------------------------------------
def test_a_linear_pl_snapshot_is_rebuilt_with_its_config_weights_and_counters_in_eval_mode():
    original = linear(n_features=3)
    rebuilt = build_component_model("linear-pl", original.state_dict())
    assert isinstance(rebuilt, LinearListScorer) and rebuilt.n_features == 3 and rebuilt.tasks == TASKS
    for name, tensor in original.state_dict().tensors.items():
        assert torch.equal(rebuilt.state_dict().tensors[name], tensor), name
    assert rebuilt.updates == 5
    assert rebuilt.training is False  # served models run in eval mode
    canary = canary_request(3, TASKS)
    assert torch.equal(rebuilt.candidate_scores(canary), original.candidate_scores(canary))


def test_a_serving_baseline_snapshot_under_another_name_is_built_from_its_meta_model():
    state = linear(n_features=2).state_dict()
    assert state.meta["family"] == "serving.baseline" and state.meta["model"] == "linear-pl"
    rebuilt = build_component_model("house-ranker", state)
    assert isinstance(rebuilt, LinearListScorer) and rebuilt.n_features == 2


def test_linear_pl_by_name_needs_neither_family_nor_model_in_the_meta():
    state = linear(n_features=2).state_dict()
    bare = LearnerState(tensors=state.tensors, meta={"config": state.meta["config"]})
    rebuilt = build_component_model("linear-pl", bare)
    assert isinstance(rebuilt, LinearListScorer) and rebuilt.n_features == 2
    assert torch.equal(rebuilt.feature_weight, state.tensors["feature_weight"])


def test_a_snapshot_without_config_is_built_with_the_default_config():
    default = LinearListScorer()
    with torch.no_grad():
        default.bias.fill_(-2.0)
    state = default.state_dict()
    rebuilt = build_component_model("linear-pl", LearnerState(tensors=state.tensors, meta={"family": "serving.baseline"}))
    assert rebuilt.n_features == 0 and float(rebuilt.bias.detach()) == -2.0


def test_a_learner_snapshot_is_rebuilt_through_the_registry_with_its_own_config():
    original = ldro(n_features=3)
    rebuilt = build_component_model("ldro", original.state_dict())
    assert type(rebuilt) is type(original) and rebuilt.config.n_features == 3 and rebuilt.config.hidden == 8
    canary = canary_request(3, TASKS)
    assert torch.equal(rebuilt.candidate_scores(canary), original.candidate_scores(canary))


def test_weights_that_do_not_fit_the_model_are_refused_with_the_loader_message_cut_at_300_chars():
    state = linear(n_features=2).state_dict()
    state.tensors.update({f"extra_{i}_" + "x" * 40: torch.zeros(1) for i in range(10)})  # > 300 chars of names
    with pytest.raises(RuntimeError) as direct:
        LinearListScorer(n_features=2, tasks=TASKS).load_state_dict(state)
    loader_message = str(direct.value)
    assert len(loader_message) > 301
    with pytest.raises(ComponentError) as info:
        build_component_model("linear-pl", state)
    assert str(info.value) == f"linear-pl: weights do not fit the model: {loader_message[:300]}"


def test_a_config_that_cannot_build_the_model_falls_back_to_the_default_and_its_weights_are_refused():
    state = ldro(n_features=3).state_dict()
    state.meta["config"] = {**state.meta["config"], "hidden": "8"}  # a str size: the network cannot be built
    with pytest.raises(TypeError):
        build_learner("ldro", **state.meta["config"])
    with pytest.raises(ComponentError, match="ldro: weights do not fit the model"):
        build_component_model("ldro", state)


# -- warm-up -------------------------------------------------------------------------------------------------------
def test_warm_up_times_each_learner_family_skips_builtins_and_logs_unknown_names_without_stopping(caplog):
    with pytest.raises(ValueError) as unknown:
        build_learner("no-such-model")
    caplog.set_level(logging.WARNING, logger="serving.components")
    started = time.perf_counter()
    took = warm_up(["", "linear-pl", "no-such-model", "isotonic"])
    elapsed = time.perf_counter() - started
    assert set(took) == {"isotonic"}  # the family after a failing name is still built
    assert isinstance(took["isotonic"], float) and 0.0 < took["isotonic"] <= elapsed
    messages = [r.getMessage() for r in caplog.records if r.name == "serving.components"]
    assert messages == [f"warm-up of no-such-model failed: {unknown.value}"]  # blanks and built-ins: no attempt


def test_warm_up_of_nothing_but_builtins_times_nothing():
    assert warm_up(["linear-pl", "isotonic"]).keys() == {"isotonic"}
    assert warm_up([]) == {}


# -- canary request ------------------------------------------------------------------------------------------------
def test_the_canary_has_the_requested_shape_and_probabilities_inside_0_05_to_0_95():
    canary = canary_request(5, TASKS, n=400, seed=7)
    assert len(canary.item_ids) == 400 and len(set(canary.item_ids)) == 400
    assert canary.features.shape == (400, 5) and canary.features.dtype == torch.float32
    assert float(canary.features.min()) >= 0.0 and float(canary.features.max()) < 1.0
    assert set(canary.task_scores) == set(TASKS)
    for scores in canary.task_scores.values():
        assert scores.shape == (400,) and scores.dtype == torch.float64
        # uniform on [0.05, 0.95): 400 draws reach within 0.02 of both ends
        assert 0.05 <= float(scores.min()) < 0.07 and 0.93 < float(scores.max()) < 0.95
    # request-level fields as a served request carries them (serving.app sets user_id and query), marked canary
    assert canary.context == {"user_id": "canary", "query": "canary"}


def test_the_default_canary_has_8_candidates_and_no_features_gives_an_empty_feature_matrix():
    canary = canary_request(0, ("click",))
    assert len(canary.item_ids) == 8 and canary.features.shape == (8, 0)
    assert canary.task_scores["click"].shape == (8,)


def test_the_canary_is_the_same_for_the_same_seed_and_differs_for_another():
    def same(a: RerankRequest, b: RerankRequest) -> bool:
        return (a.item_ids == b.item_ids and torch.equal(a.features, b.features)
                and all(torch.equal(a.task_scores[t], b.task_scores[t]) for t in TASKS))

    torch.manual_seed(0)
    first = canary_request(3, TASKS)
    torch.manual_seed(1)  # the global RNG plays no part
    assert same(first, canary_request(3, TASKS))
    assert same(first, canary_request(3, TASKS, seed=1234))  # 1234 is the default seed
    other = canary_request(3, TASKS, seed=1235)
    assert not torch.equal(first.features, other.features)
    assert all(not torch.equal(first.task_scores[t], other.task_scores[t]) for t in TASKS)


# -- the canary check ----------------------------------------------------------------------------------------------
def test_healthy_components_of_every_role_pass_the_canary():
    canary = canary_request(3, TASKS)
    check_component(served("reranker", "linear-pl", linear()), canary)
    check_component(served("reranker", "ldro", ldro()), canary)
    check_component(served("reranker", "drpo", drpo()), canary)  # a fused ranking has no list log-prob: allowed
    check_component(served("fusion", "drpo", drpo()), canary)
    check_component(Component("calibrator", "histogram", "1", build_component_model("histogram", histogram_state(
        {"click": 0.3, "long_view": 0.6}))), canary)


def test_a_calibrator_answering_exactly_0_and_1_passes():
    model = build_component_model("histogram", histogram_state({"click": 0.0, "long_view": 1.0}))
    out = model.calibrate(canary_request(0, TASKS).task_scores, {})
    assert torch.all(out["click"] == 0.0) and torch.all(out["long_view"] == 1.0)
    check_component(Component("calibrator", "histogram", "1", model), canary_request(0, TASKS))


@pytest.mark.parametrize("rate", [float("nan"), 1.5, -0.5], ids=["nan", "above-1", "below-0"])
def test_a_calibrator_answering_no_probability_is_refused_naming_the_task(rate):
    model = build_component_model("histogram", histogram_state({"long_view": rate}))
    message = refusal(Component("calibrator", "histogram", "4", model), canary_request(0, TASKS))
    assert message == "calibrator histogram v4: bad output for long_view"


def test_a_calibrator_answering_a_column_instead_of_a_vector_is_refused():
    inner = build_component_model("histogram", histogram_state({"click": 0.3}))
    column = EditedCalibrator(inner, edit=lambda v: v.reshape(-1, 1))
    message = refusal(Component("calibrator", "histogram", "4", column), canary_request(0, TASKS))
    assert message == "calibrator histogram v4: bad output for click"


def test_a_calibrator_answering_text_is_refused_as_a_canary_failure():
    inner = build_component_model("histogram", histogram_state({"click": 0.3}))
    text = EditedCalibrator(inner, edit=lambda v: ["high"] * len(v))
    message = refusal(Component("calibrator", "histogram", "4", text), canary_request(0, TASKS))
    assert message.startswith("calibrator histogram v4 failed the canary: ValueError: ")


def test_a_fusion_model_with_nan_weights_is_refused():
    model = drpo()
    with torch.no_grad():
        model.policy.mean_head.bias.fill_(float("nan"))
    message = refusal(served("fusion", "drpo", model), canary_request(0, TASKS))
    assert message.startswith("fusion drpo v3: non-finite weights {")


def test_a_fusion_model_broken_only_for_one_user_context_is_refused_by_a_canary_carrying_that_context():
    model = drpo()
    with torch.no_grad():
        model.policy.context.weight[:, 0] = 3e38  # the "full_active" column: overflows for those users only
    component = served("fusion", "drpo", model)
    check_component(component, canary_request(3, TASKS))  # the default canary's context does not reach it
    canary = dataclasses.replace(canary_request(3, TASKS), context={"user_activity": "full_active"})
    assert refusal(component, canary).startswith("fusion drpo v3: non-finite weights")


def test_a_fusion_model_with_finite_weights_but_a_nan_log_prob_is_refused():
    model = drpo()
    with torch.no_grad():
        model.policy.log_std.fill_(float("nan"))  # the mean (the served weights) stays finite
    weights, logprob = model.fusion_weights(canary_request(0, TASKS).task_scores, {})
    assert all(math.isfinite(w) for w in weights.values()) and math.isnan(logprob)
    assert refusal(served("fusion", "drpo", model), canary_request(0, TASKS)).startswith("fusion drpo v3: non-finite")


@pytest.mark.parametrize("weights,logprob", [({}, 0.0), ({"click": math.inf}, 0.0), ({"click": 1.0}, -math.inf)],
                         ids=["no-weights", "inf-weight", "inf-logprob"])
def test_a_fusion_model_answering_no_usable_weights_is_refused(weights, logprob):
    message = refusal(Component("fusion", "fixed", "2", FixedFusion(weights, logprob)), canary_request(0, TASKS))
    assert message.startswith("fusion fixed v2: non-finite weights")


def test_a_fusion_model_without_a_log_prob_passes():
    check_component(Component("fusion", "fixed", "2", FixedFusion({"click": 1.0}, None)), canary_request(0, TASKS))


def test_a_reranker_with_nan_weights_is_refused():
    model = linear()
    with torch.no_grad():
        model.bias.fill_(float("nan"))
    message = refusal(served("reranker", "linear-pl", model), canary_request(3, TASKS))
    assert message == "reranker linear-pl v3: non-finite scores on the canary"


@pytest.mark.parametrize("change,reason", [
    ({"order": lambda r: [r.order[0]] * len(r.order)}, "order is not a permutation"),
    ({"order": lambda r: r.order[:-1]}, "order is not a permutation"),
    ({"scores": lambda r: r.scores[:-1]}, "non-finite scores on the canary"),
    ({"scores": lambda r: r.scores[:-1] + [math.inf]}, "non-finite scores on the canary"),
    ({"logprob": lambda r: math.nan}, "non-finite scores on the canary"),
], ids=["duplicate", "one-missing", "short-scores", "inf-score", "nan-logprob"])
def test_a_reranker_with_a_broken_answer_is_refused_naming_why(change, reason):
    edited = EditedReranker(linear(), **change)
    assert refusal(Component("reranker", "edited", "9", edited), canary_request(3, TASKS)) == f"reranker edited v9: {reason}"


def test_a_reranker_whose_gate_scores_are_not_finite_is_refused():
    model = NaNCandidateScores(linear())
    message = refusal(Component("reranker", "edited", "9", model), canary_request(3, TASKS))
    assert message == "reranker edited v9: non-finite candidate scores"


def test_a_reranker_that_fails_on_the_canary_is_refused_with_the_error_type_and_message():
    model = build_component_model("linear-pl", linear(n_features=2).state_dict())
    canary = canary_request(3, TASKS)  # three features for a model of two
    with pytest.raises(ValueError) as direct:
        model.rerank(canary)
    message = refusal(Component("reranker", "linear-pl", "3", model), canary)
    assert message == f"reranker linear-pl v3 failed the canary: ValueError: {direct.value}"


def test_a_long_canary_error_is_cut_at_300_chars():
    task = "t" * 400
    model = build_learner("ldro", n_features=0, tasks=(task,), hidden=8)
    canary = RerankRequest(item_ids=("a", "b"), features=torch.zeros(2, 0),
                           task_scores={task: torch.full((3,), 0.5, dtype=torch.float64)})  # 3 scores for 2 items
    with pytest.raises(ValueError) as direct:
        model.rerank(canary)
    error = direct.value
    assert len(str(error)) > 301
    message = refusal(Component("reranker", "ldro", "1", model), canary)
    assert message == f"reranker ldro v1 failed the canary: {type(error).__name__}: {str(error)[:300]}"


def test_checking_a_component_leaves_its_exploration_random_stream_untouched():
    """The canary asks for the greedy answer: served exploration after a swap is the same as without the check."""
    canary = canary_request(3, TASKS)
    for role, name, model, stream in [("reranker", "linear-pl", linear(), "_generator"),
                                      ("reranker", "ldro", ldro(), "serve_generator"),
                                      ("fusion", "drpo", drpo(), "serve_generator")]:
        component = served(role, name, model)
        before = getattr(component.model, stream).get_state()
        check_component(component, canary)
        assert torch.equal(getattr(component.model, stream).get_state(), before), name


# -- role calls ----------------------------------------------------------------------------------------------------
def test_without_a_calibrator_task_scores_pass_through_unchanged():
    scores = canary_request(0, TASKS).task_scores
    assert calibrate(None, scores, {}) is scores


def test_a_calibrator_component_answers_its_model_output_as_float64_for_every_input_task():
    model = build_component_model("histogram", histogram_state({"click": 0.25, "long_view": 0.75}))
    scores = {**canary_request(0, TASKS).task_scores, "watch_time": torch.full((8,), 0.125, dtype=torch.float64)}
    out = calibrate(Component("calibrator", "histogram", "1", model), scores, {"user": "u"})
    assert set(out) == set(scores)
    assert all(v.dtype == torch.float64 for v in out.values())
    assert torch.all(out["click"] == 0.25) and torch.all(out["long_view"] == 0.75)
    assert torch.equal(out["watch_time"], scores["watch_time"])  # a task the model does not calibrate


def test_a_task_the_calibrator_leaves_out_of_its_answer_keeps_its_input_score():
    inner = build_component_model("histogram", histogram_state({"click": 0.25, "long_view": 0.75}))
    partial = EditedCalibrator(inner, only=("click",))
    scores = canary_request(0, TASKS).task_scores
    out = calibrate(Component("calibrator", "histogram", "1", partial), scores, {})
    assert torch.all(out["click"] == 0.25)
    assert torch.equal(out["long_view"], scores["long_view"])


def test_a_neural_calibrator_gets_the_request_context():
    model = build_learner("umnn", tasks=TASKS, context_fields=("user",), buckets=16, embedding_dim=2,
                          integrand_hidden=(4,), context_hidden=(4,), steps=4)
    component = Component("calibrator", "umnn", "1", model)
    scores = canary_request(0, TASKS).task_scores
    out = calibrate(component, scores, {"user": "u7"})
    expected = model.calibrate(scores, {"user": "u7"})
    assert all(torch.equal(out[t], expected[t].double()) for t in TASKS)


@pytest.mark.parametrize("configured,expected", [
    ({}, {"click": 1.0, "long_view": 1.0}),  # nothing configured: equal weights
    ({"click": 1.0}, {"click": 1.0, "long_view": 0.0}),  # tasks left out get 0: the click order
    ({"click": 2.0, "long_view": 0.5, "watch_time": 3.0}, {"click": 2.0, "long_view": 0.5}),  # only the request's tasks
], ids=["equal", "click-only", "configured"])
def test_without_a_fusion_model_the_configured_weights_are_used_with_no_log_prob(configured, expected):
    weights, logprob = fusion(None, canary_request(0, TASKS).task_scores, {}, True, configured)
    assert weights == expected and logprob is None
    assert all(type(w) is float for w in weights.values())


def test_a_fusion_component_answers_its_model_weights_for_the_context_and_explore_flag():
    scores = canary_request(0, TASKS).task_scores
    state = drpo().state_dict()
    component = Component("fusion", "drpo", "1", build_component_model("drpo", state))
    twin = build_component_model("drpo", state)  # the same snapshot: the same random stream
    context = {"user_activity": "full_active"}
    greedy = fusion(component, scores, context, False, {"click": 9.0})
    assert greedy == twin.fusion_weights(scores, context, explore=False)
    assert type(greedy[1]) is float and all(type(k) is str for k in greedy[0])
    assert greedy != fusion(component, scores, {}, False, {})  # the context is the model's input
    sampled = fusion(component, scores, context, True, {})
    assert sampled == twin.fusion_weights(scores, context, explore=True)
    assert sampled[0] != greedy[0]


def test_a_fusion_model_exposing_fuse_is_called_by_that_name_and_its_answer_normalised():
    model = drpo()
    fuse_only = type("FuseOnly", (), {"fuse": staticmethod(model.fusion_weights)})()
    scores = canary_request(0, TASKS).task_scores
    assert fusion(Component("fusion", "drpo", "1", fuse_only), scores, {}, False, {}) == model.fusion_weights(scores, {})
    weights, logprob = fusion(Component("fusion", "fixed", "1", FixedFusion({1: 2}, None)), scores, {}, False, {})
    assert weights == {"1": 2.0} and type(weights["1"]) is float and logprob is None


def test_without_a_reranker_candidates_are_ranked_by_the_sum_of_their_task_logits():
    canary = canary_request(0, TASKS, n=6, seed=3)
    fused = sum(logit(canary.task_scores[t]) for t in TASKS)  # equal fusion weights
    result = rerank(None, canary, explore=False)
    assert result.order == sorted(range(6), key=lambda i: -float(fused[i]))
    assert result.scores == pytest.approx(fused.tolist())
    assert result.logprob == pytest.approx(pl_logprob(fused, result.order))
    assert torch.allclose(candidate_scores(None, canary), fused.double())


def test_a_reranker_component_ranks_with_its_model_greedily_or_by_sampling():
    state = linear().state_dict()
    component = Component("reranker", "linear-pl", "1", build_component_model("linear-pl", state))
    twin = build_component_model("linear-pl", state)
    gen = torch.Generator().manual_seed(4)
    req = request(gen, 8)
    greedy = rerank(component, req, explore=False)
    assert greedy.order == twin.rerank(req, explore=False).order
    assert greedy.order != FusedScoreReranker().rerank(req).order  # the model's ranking, not the cold start's
    samples = [rerank(component, req, explore=True).order for _ in range(3)]
    assert samples == [twin.rerank(req, explore=True).order for _ in range(3)]
    assert any(s != greedy.order for s in samples)


def test_candidate_scores_are_the_model_gate_scores_as_float64():
    gen = torch.Generator().manual_seed(5)
    req = request(gen, 7)
    model = ldro()
    got = candidate_scores(Component("reranker", "ldro", "1", model), req)
    assert got.dtype == torch.float64 and torch.equal(got, model.candidate_scores(req).double())
    only = ScoresOnly(model)  # a model that only scores is never asked to rerank
    assert torch.equal(candidate_scores(Component("reranker", "ldro", "1", only), req), got)


def test_candidate_scores_of_a_model_without_them_are_its_greedy_ranking_scores():
    gen = torch.Generator().manual_seed(6)
    req = request(gen, 7)
    model = drpo()  # a DRPO reranker: fused scores from its (greedy or sampled) weights, no candidate_scores
    component = Component("reranker", "drpo", "1", model)
    got = candidate_scores(component, req)
    assert got.dtype == torch.float64
    assert torch.equal(got, torch.tensor(model.rerank(req, explore=False).scores, dtype=torch.float64))
    assert not torch.allclose(got, candidate_scores(None, req))
    exploring = Component("reranker", "drpo", "1", ExploringByDefault(model))  # greedy asked for explicitly
    assert torch.equal(candidate_scores(exploring, req), got)


def test_batched_candidate_scores_come_from_one_batched_pass_when_the_model_has_it():
    gen = torch.Generator().manual_seed(7)
    requests = [request(gen, n) for n in (2, 7, 30, 5)]
    model = ldro()
    got = candidate_scores_many(Component("reranker", "ldro", "1", model), requests)
    assert all(s.dtype == torch.float64 for s in got)
    assert all(torch.equal(g, s.double()) for g, s in zip(got, model.candidate_scores_many(requests)))
    only = BatchedScoresOnly(model)
    assert all(torch.equal(a, b) for a, b in zip(candidate_scores_many(Component("reranker", "ldro", "1", only),
                                                                      requests), got))
    assert candidate_scores_many(Component("reranker", "ldro", "1", model), []) == []


def test_batched_candidate_scores_equal_one_request_at_a_time_without_a_batched_pass():
    gen = torch.Generator().manual_seed(8)
    requests = [request(gen, n) for n in (3, 6, 1)]
    model = linear()
    component = Component("reranker", "linear-pl", "1", model)
    got = candidate_scores_many(component, requests)
    assert len(got) == 3
    for req, scores in zip(requests, got):
        assert scores.dtype == torch.float64 and torch.equal(scores, model.candidate_scores(req).double())
    cold = candidate_scores_many(None, requests)
    assert all(torch.equal(c, candidate_scores(None, r)) for c, r in zip(cold, requests))
    assert candidate_scores_many(component, []) == []
