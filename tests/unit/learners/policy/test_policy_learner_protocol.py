"""The Learner protocol, run over every list-wise policy (LDRO, GRPO, DRPO), River-style."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from contracts.learner import Learner, LearnerState, RerankRequest
from learners.policy.batch import PolicyInputError
from learners.policy.evaluation import rerank_request
from learners.fusion.learner import build_drpo
from learners.registry import build_learner
from simulator.session import SessionSimulator

MODELS = ["ldro", "grpo", "drpo", "drpo_contextual"]
SMALL = {"ldro": {"group_size": 4, "teacher_pretrain_updates": 1}, "grpo": {"group_size": 4},
         "drpo": {"group_size": 4, "reference_every": 2},
         # DRPO as ``streamrank eval fusion`` runs it: the context-weighted reward model, the query type
         "drpo_contextual": {"group_size": 4, "reference_every": 2, "reward_model": "contextual",
                             "query_context": True}}


def build(name: str, seed: int = 0, **overrides):
    config = {**SMALL[name], **overrides}
    if name == "drpo_contextual":  # the registry names families; the variant's name is in its config
        return build_drpo(n_features=300, seed=seed, **config)
    return build_learner(name, n_features=300, seed=seed, **config)


def through_process_boundary(state: LearnerState) -> LearnerState:
    """What a checkpoint goes through: safetensors bytes + a JSON manifest (no pickle)."""
    return LearnerState(tensors=st_load(st_save(state.tensors)), meta=json.loads(json.dumps(state.meta)))


def assert_same_state(a: LearnerState, b: LearnerState) -> None:
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.meta == b.meta


@pytest.mark.parametrize("name", MODELS)
def test_satisfies_the_protocol_and_state_has_optimizer_and_rng(name):
    learner = build(name)
    assert isinstance(learner, Learner) and learner.name == name.split("_")[0]
    state = learner.state_dict()
    assert any(k.startswith("optim.") for k in state.tensors) or learner.updates == 0
    assert {"rng.learn", "rng.serve"} <= set(state.tensors) and state.meta["updates"] == 0
    assert state.meta["state_format"] == 2
    json.dumps(state.meta)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_given_seed_and_input_order(name, examples):
    a, b = build(name), build(name)
    for chunk in (examples[:16], examples[16:32]):
        assert a.learn_many(chunk) == b.learn_many(chunk)
    assert_same_state(a.state_dict(), b.state_dict())
    c = build(name, seed=1)
    c.learn_many(examples[:16])
    c.learn_many(examples[16:32])
    differs = [k for k in a.state_dict().tensors if not torch.equal(a.state_dict().tensors[k], c.state_dict().tensors[k])]
    assert differs, "another seed must give another model"


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_is_bit_exact_and_continues_identically(name, examples):
    a = build(name)
    a.learn_many(examples[:16])
    a.learn_many(examples[16:32])
    state = a.state_dict()
    assert any(k.startswith("optim.") and ".state." in k for k in state.tensors)
    b = build(name, seed=99)  # a different initialisation, overwritten by the checkpoint
    b.load_state_dict(through_process_boundary(state))
    assert_same_state(b.state_dict(), state)
    assert a.learn_many(examples[32:48]) == b.learn_many(examples[32:48])
    assert_same_state(a.state_dict(), b.state_dict())
    request = rerank_request_from(examples[0])
    assert a.rerank(request, explore=True) == b.rerank(request, explore=True)


def rerank_request_from(example) -> RerankRequest:
    items = example.impression.items
    return RerankRequest(item_ids=tuple(i.item_id for i in items),
                         features=torch.tensor(np.array([i.feature_row() for i in items]), dtype=torch.float32),
                         task_scores={t: torch.tensor([i.scores[t] for i in items], dtype=torch.float64)
                                      for t in items[0].scores},
                         context=dict(example.impression.context))


@pytest.mark.parametrize("name", MODELS)
def test_no_nan_on_one_item_lists_mixed_lengths_and_empty_batches(name, examples, one_item_examples):
    learner = build(name)
    before = learner.state_dict()
    assert learner.learn_many([]) == {"examples": 0.0}
    assert_same_state(learner.state_dict(), before)
    for batch in (one_item_examples, one_item_examples[:1], [*one_item_examples[:3], *examples[:3]]):
        metrics = learner.learn_many(batch)
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert all(torch.isfinite(t.float()).all() for t in learner.state_dict().tensors.values())
    result = learner.rerank(rerank_request_from(one_item_examples[0]), explore=True)
    assert result.order == [0] and all(math.isfinite(s) for s in result.scores)


@pytest.mark.parametrize("name", MODELS)
def test_rerank_returns_a_permutation_with_its_log_prob(name, examples):
    learner = build(name)
    learner.learn_many(examples[:16])
    request = rerank_request_from(examples[3])
    n = len(request.item_ids)
    greedy = learner.rerank(request)
    assert sorted(greedy.order) == list(range(n)) and len(greedy.scores) == n
    assert greedy.order == sorted(range(n), key=lambda i: -greedy.scores[i])
    samples = [learner.rerank(request, explore=True) for _ in range(8)]
    assert len({tuple(s.order) for s in samples}) > 1, "exploration must vary the list"
    if name.startswith("drpo"):
        assert greedy.logprob is None and set(greedy.extras["fusion"]) == {"click", "long_view", "watch_time"}
        assert math.isfinite(greedy.extras["fusion_logprob"])
        weights, logprob = learner.fusion(request)
        assert weights == greedy.extras["fusion"] and logprob == greedy.extras["fusion_logprob"]
    else:
        assert all(s.logprob <= 0.0 for s in samples) and greedy.logprob <= 0.0
        # the greedy list is the PL mode: at least as likely as any sampled list
        assert all(greedy.logprob >= s.logprob - 1e-6 for s in samples)


BAD_INPUTS = [
    ("features", lambda r: RerankRequest(r.item_ids, r.features[:, :10], r.task_scores, r.context)),
    ("task_scores.click", lambda r: RerankRequest(r.item_ids, r.features, {**r.task_scores, "click": r.task_scores["click"][:2]}, r.context)),
    ("task_scores", lambda r: RerankRequest(r.item_ids, r.features, {**r.task_scores, "long_view": r.task_scores["long_view"] * float("nan")}, r.context)),
    ("item_ids", lambda r: RerankRequest((), r.features[:0], {}, r.context)),
]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("field,corrupt", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_requests_are_refused_naming_the_field(name, field, corrupt, examples):
    learner = build(name)
    with pytest.raises(PolicyInputError) as err:
        learner.rerank(corrupt(rerank_request_from(examples[0])))
    assert err.value.field == field


@pytest.mark.parametrize("name", MODELS)
def test_a_bad_example_is_skipped_and_named_and_the_rest_learned_as_without_it(name, examples):
    items = list(examples[9].impression.items)
    items[2] = items[2].model_copy(update={"features": list(items[2].feature_row()[:5]), "features_f32": None})
    bad = examples[9].model_copy(update={"impression": examples[9].impression.model_copy(update={"items": items})})
    learner, clean = build(name), build(name)
    metrics = learner.learn_many([examples[8], bad, examples[10]])
    assert metrics["rejected"] == 1.0 and metrics["examples"] == 2.0
    assert [(r.example_id, r.field) for r in learner.last_rejected] == [(bad.example_id, "impression.items.2.features")]
    clean.learn_many([examples[8], examples[10]])
    assert_same_state(learner.state_dict(), clean.state_dict())
    assert learner.learn_many([bad]) == {"examples": 0.0, "rejected": 1.0}


@pytest.mark.parametrize("name", MODELS)
def test_refuses_a_checkpoint_of_another_family_or_config(name):
    learner = build(name)
    other = build("drpo" if name != "drpo" else "ldro")
    with pytest.raises(ValueError):
        learner.load_state_dict(other.state_dict())
    changed = build(name, group_size=5)
    with pytest.raises(ValueError, match="config differs"):
        learner.load_state_dict(changed.state_dict())


def test_registry_builds_the_policy_families_with_their_switches():
    grpo = build_learner("grpo", n_features=300)
    assert (grpo.config.decoupled, grpo.config.rank_weighted, grpo.config.distill) == (False, False, False)
    ldro = build_learner("ldro", n_features=300)
    assert (ldro.config.decoupled, ldro.config.rank_weighted, ldro.config.distill) == (True, True, True)
    with pytest.raises(ValueError, match="unknown LDRO settings"):
        build_learner("ldro", n_feature=3)
    with pytest.raises(ValueError, match="unknown DRPO settings"):
        build_learner("drpo", group=3)


def test_rerank_request_from_the_simulator_matches_the_impression(letor, kuairand):
    sim = SessionSimulator(letor, kuairand, seed=0)
    req = sim.next_request()
    rr = rerank_request(req)
    assert rr.item_ids == tuple(c.item_id for c in req.candidates)
    assert rr.features.shape == (len(req.candidates), 300)
    assert rr.context["user_activity"] == req.user_activity


@pytest.mark.parametrize("name", MODELS)
def test_a_snapshot_rebuilds_as_serving_does(name, examples):
    """serving.components: ``build_learner(name, **meta['config'])`` then ``load_state_dict``."""
    learner = build(name)
    learner.learn_many(examples[:16])
    state = through_process_boundary(learner.state_dict())
    rebuilt = build_learner(state.meta["model"], **state.meta["config"])
    rebuilt.load_state_dict(state)
    assert rebuilt.config == learner.config
    request = rerank_request_from(examples[1])
    assert rebuilt.rerank(request) == learner.rerank(request)
