"""The learner worker (Faust) on the real broker: learns everything once, dead-letters bad input."""

from __future__ import annotations

import re

import json
import math

import pytest
import torch

from learners.runtime.checkpoint import CheckpointStore
from learners.runtime.process import LearnerProcess
from learners.runtime.runner import digest_of
from simulator.examples import produce_examples, simulated_examples
from streams.consume import read_topic
from streams.dead_letter import DeadLetter

pytestmark = pytest.mark.integration


def test_worker_learns_each_example_once_and_dead_letters_bad_records(settings, tmp_path):
    examples = simulated_examples(300, seed=11)
    produce_examples(settings, examples[:200])
    # re-delivered examples (same example_id) and two bad records in the middle
    produce_examples(settings, [b"{not json", b'{"schema":"streamrank.labeled_list.v1"}'],
                     raw_keys=[b"bad-1", b"bad-2"])
    produce_examples(settings, examples[150:300])
    worker = LearnerProcess(settings, "umnn", tmp_path / "ckpt",
                            ["--batch-size", "32", "--checkpoint-every", "3", "--idle-flush", "1",
                             "--progress", "0.5", "--stop-after", "300"]).start()
    try:
        assert worker.wait_exit(timeout=120) == 0, worker.log_tail()
    finally:
        worker.stop()
    seq, state = CheckpointStore(tmp_path / "ckpt", "umnn").load_latest()
    runtime = state.meta["runtime"]
    assert runtime["applied"] == 300
    assert int(runtime["digest"]) == digest_of([e.example_id for e in examples])
    assert runtime["skipped_ids"] == 50
    assert runtime["dead_lettered"] == 2
    assert sum(runtime["offsets"].values()) + len(runtime["offsets"]) == 352  # every record consumed
    assert all(math.isfinite(float(t.float().abs().max())) for t in state.tensors.values() if t.numel())
    status = worker.status()
    assert status is not None and status["applied"] == 300 and status["lag"] in (0, None)

    letters = []
    read_topic(settings.kafka_bootstrap, settings.topics.dead_letter, lambda r: letters.append(DeadLetter.from_record(r)),
               expected=2, idle_s=5)
    assert sorted(letter.key for letter in letters) == [b"bad-1", b"bad-2"]
    assert {letter.reason for letter in letters} == {"bad_json", "missing_field"}
    assert all(letter.topic == settings.topics.examples for letter in letters)


def test_worker_publishes_checkpoints_as_snapshots_with_their_offsets(settings, tmp_path, monkeypatch):
    from feature_store.snapshots import SnapshotRegistry

    monkeypatch.setenv("STREAMRANK_SNAPSHOT_INTERVAL_S", "1")  # publishing while it learns, as in the demo
    examples = simulated_examples(96, seed=12)
    produce_examples(settings, examples)
    worker = LearnerProcess(settings, "platt", tmp_path / "ckpt",
                            ["--batch-size", "16", "--checkpoint-every", "2", "--idle-flush", "1", "--publish",
                             "--stop-after", "96"]).start()
    try:
        assert worker.wait_exit(timeout=120) == 0, worker.log_tail()
    finally:
        worker.stop()
    registry = SnapshotRegistry(settings.redis_url, settings, announce_kafka=False)
    manifest, state = registry.load("platt")
    _, checkpoint = CheckpointStore(tmp_path / "ckpt", "platt").load_latest()
    assert state.meta["runtime"]["applied"] == 96
    assert len(checkpoint.meta["runtime"]["recent_ids"]) == 96 and "recent_ids" not in state.meta["runtime"]
    assert manifest.offsets == checkpoint.meta["runtime"]["offsets"]
    assert all(torch.equal(state.tensors[k], checkpoint.tensors[k]) for k in checkpoint.tensors)
    # The last snapshot, published while the worker shut down, was announced on Kafka too (it
    # used to be published at interpreter exit, after the producer had been closed).
    announced = []
    read_topic(settings.kafka_bootstrap, settings.topics.model_updates,
               lambda r: announced.append(json.loads(r.value)), idle_s=3)
    assert announced and announced[-1]["name"] == "platt" and announced[-1]["version"] == manifest.version
    log_text = worker.log_tail(100_000)
    assert "not on Kafka" not in log_text and "Error submitting job" not in log_text, log_text[-3000:]
    assert worker.status()["final"] is True


# One list-wise family is enough to show the worker is generic (drpo runs the same path; it was
# checked by hand with `streamrank learn --model drpo`); each extra model costs ~15 s of CI.
@pytest.mark.parametrize("model", ["ldro"])
def test_the_same_worker_runs_the_list_wise_families_by_name_with_a_decode_worker(settings, tmp_path, model):
    examples = simulated_examples(48, seed=13, with_features=True)
    produce_examples(settings, examples)
    worker = LearnerProcess(settings, model, tmp_path / "ckpt",
                            ["--batch-size", "16", "--checkpoint-every", "2", "--idle-flush", "1",
                             "--stop-after", "48", "--progress", "0.5", "--decode-workers", "1"]).start()
    try:
        assert worker.wait_exit(timeout=120) == 0, worker.log_tail()
    finally:
        worker.stop()
    # what an operator reads in its log file: a start line, progress at INFO (the default
    # --log-level is warning) with the model's real losses, and no ANSI colour codes
    log_text = worker.log_tail(200_000)
    assert f"learn {model}: reading {settings.topics.examples}" in log_text
    progress = [line for line in log_text.splitlines() if "streamrank.progress" in line and "ex/s" in line]
    assert progress and all(" INFO " in line for line in progress), log_text[-3000:]
    assert re.search(r"loss=-?\d", progress[-1]) and "None" not in progress[-1], progress[-1]
    assert "\x1b[" not in log_text
    assert "DeprecationWarning" not in log_text  # understood third-party noise is quiet
    _, state = CheckpointStore(tmp_path / "ckpt", model).load_latest()
    assert state.meta["family"] == model
    assert state.meta["runtime"]["applied"] == 48
    assert int(state.meta["runtime"]["digest"]) == digest_of([e.example_id for e in examples])
    # the records (which carry their features) were decoded by the decode worker process
    assert worker.status()["decode_workers"] == {"workers": 1, "decoded": 48, "broken": None}
