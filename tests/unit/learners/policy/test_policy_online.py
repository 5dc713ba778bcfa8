"""Short online runs on the real-data simulator through the production labelling path."""

from __future__ import annotations

import pytest
import torch

from learners.policy.evaluation import HeldOut, policy_metrics, rerank_request, train_drpo, train_list_policy
from learners.registry import build_learner
from simulator.click_models import ClickModel
from simulator.session import SessionSimulator, SimulatorConfig

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split(letor):
    return letor.split(0.25, seed=0)


def simulator(dataset, kuairand, seed, namespace):
    return SessionSimulator(dataset, kuairand, SimulatorConfig(click_model=ClickModel("pbm", max_grade=4)),
                            seed=seed, namespace=namespace)


def test_ldro_learns_from_simulated_clicks_to_beat_the_logged_order_on_held_out_queries(split, kuairand):
    train, test = split
    held_out = HeldOut.build(simulator(test, kuairand, 10_000, "heldout"), 150, train.n_features)
    logged = held_out.logged_ndcg()["ndcg@10"]
    untrained = held_out.ndcg(build_learner("ldro", n_features=300).scores_for(held_out.batch))["ndcg@10"]
    run = train_list_policy("ldro", simulator(train, kuairand, 0, "train"), held_out, interactions=1000,
                            batch_size=32, warmup=200, seed=0, eval_every=0, progress=False)
    assert untrained < logged
    assert run.final["ndcg@10"] > logged + 0.02, (run.final, logged)


def test_drpo_serves_logged_fusion_decisions_and_keeps_a_fused_ranking_above_click_only(split, kuairand):
    train, test = split
    sim = simulator(train, kuairand, 0, "train")
    learner = train_drpo(sim, interactions=480, batch_size=32, seed=0, progress=False)
    assert learner.updates == 15 and learner.examples_seen == 480
    test_sim = simulator(test, kuairand, 10_000, "heldout")
    requests = [test_sim.request(i, 1.767e9 + i) for i in range(300)]
    drpo = policy_metrics(test_sim, requests, lambda r: learner.rerank(rerank_request(r)).order)
    logged = policy_metrics(test_sim, requests, lambda r: range(len(r.candidates)))
    assert drpo["ndcg@10"] > logged["ndcg@10"] + 0.03
    weights, logprob = learner.fusion(rerank_request(requests[0]), explore=True)
    assert set(weights) == {"click", "long_view", "watch_time"} and logprob == logprob
