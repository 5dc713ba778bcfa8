"""The promotion gate scores logged lists with the item features they were served with, also when
the impression only names them (a server fetching features from the feature store logs the
feature's name, ``context["item_features"]``, not the rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contracts.events import IMPRESSION_SCHEMA, ITEM_FEATURES_KEY, FusionDecision, Impression, JoinInfo, ShownItem
from serving.baseline import pl_logprob
from serving.gate import GateConfig, PromotionGate
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights
from test_gate_logic import scorer  # same directory: on sys.path; ranks by its one item feature

FEATURE = "documents:vector"


def named_features_example(i: int, gen: torch.Generator, rows: dict[str, list[float]]):
    """A list explored by ``scorer(1.0)`` (a PL sample over its relevance feature) whose impression
    names the feature instead of carrying it; clicks on the relevant items of the top 2."""
    relevance = torch.rand(6, generator=gen, dtype=torch.float64)
    u = torch.rand(6, generator=gen, dtype=torch.float64).clamp_min(1e-12)
    order = torch.argsort(relevance - torch.log(-torch.log(u)), descending=True).tolist()
    items = [ShownItem(item_id=f"{i}-{j}", position=p, scores={"click": 0.3}) for p, j in enumerate(order, 1)]
    for j in range(6):
        rows[f"{i}-{j}"] = [float(relevance[j])]
    imp = Impression(schema=IMPRESSION_SCHEMA, event_id=f"e{i}", request_id=f"r{i}", ts=1.0, user_id="u", items=items,
                     fusion=FusionDecision(weights={"click": 1.0}), list_logprob=pl_logprob(relevance, order),
                     context={"explored": 1.0, "logprob_top3": pl_logprob(relevance, order, 3),
                              ITEM_FEATURES_KEY: FEATURE})
    outcome = ListOutcome()
    for item in items[:2]:
        if rows[item.item_id][0] > 0.5:
            outcome.add(item.item_id, "click", 1.0)
    return label_impression(imp, outcome, RewardWeights(), JoinInfo(closed_by="window", window_s=1, feedback_count=0,
                                                                      closed_at_ts=1.0))


@pytest.fixture(scope="module")
def logs():
    gen, rows = torch.Generator().manual_seed(0), {}
    examples = [named_features_example(i, gen, rows) for i in range(120)]
    assert all(it.features is None and it.features_f32 is None for ex in examples for it in ex.impression.items)

    def read(feature: str, item_ids):
        return np.array([rows[i] for i in item_ids], dtype=np.float32) if feature == FEATURE else None

    return examples, read


def test_the_serving_policy_reproduces_its_logged_propensities_when_the_named_features_are_read_back(logs):
    examples, read = logs
    gate = PromotionGate(GateConfig(min_samples=30), item_features=read)
    # the logging policy evaluated on its own explored rounds: every weight is exactly 1
    assert gate.weights(scorer(1.0), gate.scorable(examples)) == pytest.approx(np.ones(len(examples)), rel=1e-6)


def test_a_feature_using_candidate_is_judged_on_the_features_it_serves_with(logs):
    examples, read = logs
    gate = PromotionGate(GateConfig(min_samples=30), item_features=read)
    better = gate.decide(scorer(1.0), scorer(4.0), examples)
    assert better.accepted and better.candidate_value > better.current_value and better.n == len(examples)
    # Scored with zero features every one of these policies is the uniform one, so a candidate
    # that ranks by *inverse* relevance would look as good as the serving one and pass.
    worse = gate.decide(scorer(1.0), scorer(-4.0), examples)
    assert not worse.accepted and worse.candidate_value < 0.8 * worse.current_value


def test_lists_whose_named_features_cannot_be_read_are_left_out_not_scored_on_zeros(logs):
    examples, read = logs
    unreadable = PromotionGate(GateConfig(min_samples=30), item_features=lambda feature, ids: None)
    verdict = unreadable.decide(scorer(1.0), scorer(-4.0), examples)
    assert not verdict.accepted and verdict.n == 0 and "insufficient data" in verdict.reason
    without_reader = PromotionGate(GateConfig(min_samples=30)).decide(scorer(1.0), scorer(-4.0), examples)
    assert not without_reader.accepted and "insufficient data" in without_reader.reason
    # half of them readable: the gate judges on that half
    readable = {it.item_id for ex in examples[::2] for it in ex.impression.items}
    half = PromotionGate(GateConfig(min_samples=30), item_features=lambda f, ids: read(f, ids) if ids[0] in readable else None)
    assert half.decide(scorer(1.0), scorer(4.0), examples).n == len(examples) // 2


def test_the_gates_requests_read_the_named_features_without_a_scorable_pass_first(logs):
    examples, read = logs
    gate = PromotionGate(GateConfig(min_samples=30), item_features=read)
    assert gate.weights(scorer(1.0), examples[:20]) == pytest.approx(np.ones(20), rel=1e-6)


def test_a_read_back_is_float32_whatever_the_store_answers_and_a_failed_read_names_the_example(logs):
    from serving.gate import FeaturesUnavailable, request_from_example  # noqa: PLC0415

    examples, read = logs
    request = request_from_example(examples[0], lambda feature, ids: read(feature, ids).astype(np.float64).tolist())
    assert request.features.dtype == torch.float32 and request.features.shape == (6, 1)
    assert torch.equal(request.features, torch.from_numpy(read(FEATURE, request.item_ids)))
    with pytest.raises(FeaturesUnavailable, match=rf"^example {examples[0].example_id}: item features "
                                                  rf"'documents:vector' cannot be read$"):
        request_from_example(examples[0], lambda feature, ids: read(feature, ids)[:3])  # rows missing


def test_a_one_item_list_carrying_its_own_features_needs_no_read():
    from serving.gate import request_from_example  # noqa: PLC0415

    imp = Impression(schema=IMPRESSION_SCHEMA, event_id="e", request_id="r", ts=1.0, user_id="u",
                     items=[ShownItem(item_id="a", position=1, scores={"click": 0.3}, features=[0.5, 0.25])])
    example = label_impression(imp, ListOutcome(), RewardWeights(), JoinInfo(closed_by="window", window_s=1,
                                                                             feedback_count=0, closed_at_ts=1.0))
    request = request_from_example(example, None)
    assert request.features.tolist() == [[0.5, 0.25]]
