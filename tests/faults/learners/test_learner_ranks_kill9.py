"""Two data-parallel ranks (``streamrank learn --ranks 2``) on the real broker: one model, every example once.

* A clean run over 4 partitions with re-delivered examples and bad records: the checkpoint
  rank 0 writes holds every partition's offset, each example applied exactly once (count and
  order-free digest of example ids), the bad records dead-lettered with their reasons.
* kill -9 of one rank (rank 1: the one that does not checkpoint) after two checkpoints; the
  launcher stops the other; a restart of both resumes from the checkpoint: nothing lost,
  nothing applied twice.
"""

from __future__ import annotations

import os
import signal

import pytest
from support import fresh_topics

from learners.runtime.checkpoint import CheckpointStore
from learners.runtime.process import LearnerProcess
from learners.runtime.runner import digest_of
from simulator.examples import produce_examples, simulated_examples
from streams.consume import read_topic
from streams.dead_letter import DeadLetter

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BATCH = 16
CONFIG = ["--set", "steps=16", "--set", "context_hidden=[32,32]", "--set", "integrand_hidden=[16,16]",
          "--set", "sc_weight=0"]
ARGS = ["--ranks", "2", "--log-level", "info", "--batch-size", str(BATCH), "--checkpoint-every", "3", "--within", "0.1", *CONFIG]


def test_two_ranks_learn_every_partition_once_and_dead_letter_bad_records(embedded_stack, tmp_path):
    settings = fresh_topics(embedded_stack, partitions=4)
    examples = simulated_examples(200, seed=31)
    produce_examples(settings, examples[:150])
    produce_examples(settings, [b"{not json", b'{"schema":"streamrank.labeled_list.v1"}'], raw_keys=[b"bad-1", b"bad-2"])
    produce_examples(settings, examples[120:])  # 30 re-delivered examples
    worker = LearnerProcess(settings, "umnn", tmp_path, [*ARGS, "--stop-after", "200"]).start()
    try:
        assert worker.wait_exit(timeout=180) == 0, worker.log_tail()
    finally:
        worker.stop()
    _, state = CheckpointStore(tmp_path, "umnn").load_latest()
    runtime = state.meta["runtime"]
    assert runtime["applied"] == 200 and state.meta["counters"]["examples"] == 200
    assert int(runtime["digest"]) == digest_of([e.example_id for e in examples])
    assert runtime["skipped_ids"] == 30 and runtime["dead_lettered"] == 2
    assert sorted(runtime["offsets"]) == [f"{settings.topics.examples}:{p}" for p in range(4)]
    assert sum(runtime["offsets"].values()) + 4 == 232  # every record of every partition consumed
    letters = []
    read_topic(settings.kafka_bootstrap, settings.topics.dead_letter, lambda r: letters.append(DeadLetter.from_record(r)),
               expected=2, idle_s=5)
    assert {(letter.key, letter.reason) for letter in letters} == {(b"bad-1", "bad_json"), (b"bad-2", "missing_field")}


def test_kill9_of_a_rank_then_restart_of_all_applies_each_example_exactly_once(embedded_stack, tmp_path):
    settings = fresh_topics(embedded_stack, partitions=4)
    examples = simulated_examples(40 * BATCH, seed=32)
    produce_examples(settings, examples[:400])
    produce_examples(settings, examples[360:])  # 40 re-delivered
    total = len(examples)
    first = LearnerProcess(settings, "umnn", tmp_path, [*ARGS, "--stop-after", str(total)]).start()
    try:
        first.wait_until(lambda: (first.store.latest_seq() or 0) >= 2, timeout=150, what="two checkpoints", poll=0.01)
        os.kill(int((first.store.dir / "ranks" / "rank1.pid").read_text()), signal.SIGKILL)
        assert first.wait_exit(timeout=60) != 0  # the launcher stopped rank 0 and reported the failure
    finally:
        first.stop()
    _, state = first.store.load_latest()
    applied_at_kill = state.meta["runtime"]["applied"]
    assert 0 < applied_at_kill < total, "the ranks finished before the kill; make the log longer"
    second = LearnerProcess(settings, "umnn", tmp_path, [*ARGS, "--stop-after", str(total)]).start()
    try:
        assert second.wait_exit(timeout=180) == 0, second.log_tail()
    finally:
        second.stop()
    _, state = second.store.load_latest()
    runtime = state.meta["runtime"]
    assert runtime["applied"] == total and state.meta["counters"]["examples"] == total
    assert int(runtime["digest"]) == digest_of([e.example_id for e in examples])
