"""LDRO and DRPO under ``streamrank learn`` on the real broker: lists served by the policy, labelled,
produced to ``examples``, learned by the worker, checkpointed and served again."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from support import fresh_topics

from contracts.events import LABELED_LIST_SCHEMA, FusionDecision, decode
from learners.policy.evaluation import labeled_example, rerank_request
from learners.registry import build_learner
from learners.runtime.checkpoint import CheckpointStore
from learners.runtime.process import LearnerProcess
from simulator.click_models import ClickModel
from simulator.examples import produce_examples
from simulator.kuairand import load_kuairand
from simulator.letor import load_letor
from simulator.session import SessionSimulator, SimulatorConfig
from streams.consume import read_topic

pytestmark = pytest.mark.integration
N_EXAMPLES, BATCH = 128, 32
SETTINGS = {"ldro": {"group_size": 4}, "drpo": {"group_size": 4}}


def served_examples(model: str, shared_data, n: int):
    """Lists the (untrained) policy served with exploration, answered by the simulator and labelled."""
    dataset = load_letor(shared_data / "letor" / "rank.train")
    sim = SessionSimulator(dataset, load_kuairand(shared_data / "kuairand"),
                           SimulatorConfig(click_model=ClickModel("pbm", max_grade=4), max_candidates=12),
                           seed=4, namespace=f"serve-{model}")
    server = build_learner(model, n_features=dataset.n_features, seed=123, **SETTINGS[model])
    out = []
    for request in sim.requests(n):
        result = server.rerank(rerank_request(request), explore=True)
        if model == "drpo":
            fusion = FusionDecision(weights=result.extras["fusion"], logprob=result.extras["fusion_logprob"])
            out.append(labeled_example(sim, request, result.order, source="serving", fusion=fusion))
        else:
            out.append(labeled_example(sim, request, result.order, source="serving", list_logprob=result.logprob))
    return out


@pytest.mark.parametrize("model", ["ldro", "drpo"])
def test_worker_learns_the_policy_from_the_examples_topic(settings, tmp_path, shared_data, model):
    topics = fresh_topics(settings, partitions=1)  # one partition: the log order is the batch order
    examples = served_examples(model, shared_data, N_EXAMPLES)
    assert produce_examples(topics, examples) == N_EXAMPLES
    # what the worker will read is exactly what was served
    seen = []
    read_topic(topics.kafka_bootstrap, topics.topics.examples, lambda r: seen.append(decode(r.value, LABELED_LIST_SCHEMA)),
               expected=N_EXAMPLES, idle_s=3)
    assert [e.example_id for e in seen] == [e.example_id for e in examples]
    sets = [arg for key, value in SETTINGS[model].items() for arg in ("--set", f"{key}={value}")]
    worker = LearnerProcess(topics, model, tmp_path / "ckpt",
                            ["--batch-size", str(BATCH), "--checkpoint-every", "1", "--idle-flush", "1",
                             "--progress", "0.5", "--stop-after", str(N_EXAMPLES), *sets]).start()
    try:
        assert worker.wait_exit(timeout=240) == 0, worker.log_tail()
    finally:
        worker.stop()
    _, state = CheckpointStore(tmp_path / "ckpt", model).load_latest()
    assert state.meta["runtime"]["applied"] == N_EXAMPLES
    assert state.meta["updates"] == N_EXAMPLES // BATCH and state.meta["examples_seen"] == N_EXAMPLES

    # the same model as learning in-process from the same batches in log order (with the
    # worker's torch thread count: float reductions, hence Adam's early steps, depend on it)
    before = torch.get_num_threads()
    torch.set_num_threads(fresh_process_threads())
    try:
        reference = build_learner(model, **SETTINGS[model])
        for start in range(0, N_EXAMPLES, BATCH):
            reference.learn_many(seen[start:start + BATCH])
    finally:
        torch.set_num_threads(before)
    expected = reference.state_dict()
    assert expected.tensors.keys() <= state.tensors.keys()
    for name, tensor in expected.tensors.items():
        assert torch.allclose(state.tensors[name].float(), tensor.float(), atol=1e-4, rtol=1e-3), name
    assert state.meta["running"] == pytest.approx(expected.meta["running"], rel=1e-4)

    # the checkpoint serves again after a round trip through the manifest's config
    served = build_learner(model, **state.meta["config"])
    served.load_state_dict(state)
    result = served.rerank(rerank_request_for(examples[0]))
    assert sorted(result.order) == list(range(len(examples[0].impression.items)))
    assert all(math.isfinite(s) for s in result.scores)


def fresh_process_threads() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def rerank_request_for(example):
    from contracts.learner import RerankRequest  # noqa: PLC0415

    items = example.impression.items
    return RerankRequest(item_ids=tuple(i.item_id for i in items),
                         features=torch.tensor(np.array([i.feature_row() for i in items]), dtype=torch.float32),
                         task_scores={t: torch.tensor([i.scores[t] for i in items], dtype=torch.float64)
                                      for t in items[0].scores},
                         context=dict(example.impression.context))
