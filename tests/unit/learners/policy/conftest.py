"""Labelled lists from the real LETOR + KuaiRand simulator, built by the production labelling path."""

from __future__ import annotations

import pytest

from learners.policy.evaluation import labeled_example
from simulator.click_models import ClickModel
from simulator.kuairand import load_kuairand
from simulator.letor import load_letor
from simulator.session import SessionSimulator, SimulatorConfig


@pytest.fixture(scope="session")
def letor(shared_data):
    return load_letor(shared_data / "letor" / "rank.train")


@pytest.fixture(scope="session")
def kuairand(shared_data):
    return load_kuairand(shared_data / "kuairand")


def make_examples(letor, kuairand, n: int, seed: int = 0, max_candidates: int | None = None):
    sim = SessionSimulator(letor, kuairand, SimulatorConfig(click_model=ClickModel(max_grade=letor.max_grade),
                                                            max_candidates=max_candidates), seed=seed)
    return [labeled_example(sim, r, range(len(r.candidates)), source="logged") for r in sim.requests(n)]


@pytest.fixture(scope="session")
def examples(letor, kuairand):
    return make_examples(letor, kuairand, 48)


@pytest.fixture(scope="session")
def one_item_examples(letor, kuairand):
    return make_examples(letor, kuairand, 6, seed=5, max_candidates=1)
