"""The learner runtime without a broker: skips by offset and example id, seeks, dead letters, deterministic batches."""

from __future__ import annotations

import pytest
import torch

from contracts.events import encode
from learners.registry import build_learner
from learners.runtime.checkpoint import CheckpointStore, state_sha256
from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig, digest_of
from simulator.examples import simulated_examples

TOPIC = "t.examples"


@pytest.fixture(scope="module")
def examples():
    return simulated_examples(70, seed=5)


def records(examples, partition=0, start=0):
    return [Record(TOPIC, partition, start + i, ex.request_id.encode(), encode(ex)) for i, ex in enumerate(examples)]


def runtime(store=None, batch=8, every=2, model="platt") -> LearnerRuntime:
    return LearnerRuntime(model, build_learner(model), store, RuntimeConfig(batch_size=batch, checkpoint_every=every))


def test_batches_depend_on_the_log_not_on_how_records_arrive(examples):
    recs = records(examples)
    whole = runtime()
    whole.offer(recs)
    whole.flush()
    pieces = runtime()
    for chunk in (recs[:3], recs[3:20], recs[20:21], recs[21:]):
        pieces.offer(chunk)
    pieces.flush()
    assert state_sha256(whole.state()) == state_sha256(pieces.state())
    assert whole.batches == 70 // 8 + 1


def test_redelivered_offsets_and_example_ids_are_applied_once(examples):
    rt = runtime()
    rt.offer(records(examples[:40]))
    rt.offer(records(examples[:16]))  # same offsets again (restart / rebalance)
    rt.offer(records(examples[30:50], start=40))  # examples 30..39 again at new offsets (upstream re-delivery)
    rt.flush()
    assert rt.applied == 50
    assert rt.skipped_offsets == 16 and rt.skipped_ids == 10
    assert rt.digest == digest_of([e.example_id for e in examples[:50]])
    assert rt.offsets == {f"{TOPIC}:0": 59}


def test_bad_records_become_dead_letters_and_do_not_stop_learning(examples):
    rt = runtime()
    recs = records(examples[:10])
    bad = [Record(TOPIC, 0, 10, b"k1", b"{not json"), Record(TOPIC, 0, 11, b"k2", b'{"schema":"streamrank.impression.v1"}')]
    result = rt.offer([*recs, *bad])
    result_flush = rt.flush()
    letters = result.dead_letters + result_flush.dead_letters
    assert [(d.offset, d.reason) for d in letters] == [(10, "bad_json"), (11, "bad_value")]
    assert all(d.topic == TOPIC and d.value for d in letters)
    assert rt.applied == 10 and rt.offsets == {f"{TOPIC}:0": 11}


def test_a_partition_that_jumps_ahead_is_sought_back_and_stale_records_dropped(examples):
    rt = runtime(batch=100)
    rt.offer(records(examples[:5]))
    result = rt.offer(records(examples[10:15], start=10))  # offsets 5..9 never arrived
    assert result.seeks == {f"{TOPIC}:0": 5}
    assert rt.queued == 5
    rt.offer(records(examples[5:15], start=5))  # after the seek
    rt.flush()
    assert rt.applied == 15 and rt.digest == digest_of([e.example_id for e in examples[:15]])


def test_a_partition_far_behind_the_checkpoint_is_sought_forward(examples, tmp_path):
    rt = LearnerRuntime("platt", build_learner("platt"), None, RuntimeConfig(batch_size=4, seek_forward_min=10))
    rt.expect(f"{TOPIC}:0", 30)
    result = rt.offer(records(examples[:3]))
    assert result.seeks == {f"{TOPIC}:0": 30} and rt.applied == 0


def test_checkpoints_follow_the_cadence_call_hooks_and_restore_the_position(examples, tmp_path):
    store = CheckpointStore(tmp_path, "platt")
    rt = runtime(store)
    seen = []
    rt.on_checkpoint.append(lambda name, state, metrics: seen.append((name, state.meta["runtime"]["applied"], metrics)))
    rt.offer(records(examples[:35]))  # 4 batches of 8 -> checkpoints after batches 2 and 4
    assert [s[1] for s in seen] == [16, 32] and seen[0][0] == "platt" and "loss" in seen[0][2]
    resumed = runtime(CheckpointStore(tmp_path, "platt"))
    assert resumed.restore()
    assert resumed.applied == 32 and resumed.offsets == {f"{TOPIC}:0": 31}
    assert state_sha256(resumed.state()) == state_sha256(store.load_latest()[1])
    # resuming and finishing equals never stopping
    resumed.offer(records(examples))
    resumed.flush()
    straight = runtime()
    straight.offer(records(examples))
    straight.flush()
    for name, tensor in straight.state().tensors.items():
        assert torch.equal(tensor, resumed.state().tensors[name]), name


def test_a_failing_hook_does_not_stop_learning(examples, tmp_path):
    rt = runtime(CheckpointStore(tmp_path, "platt"), every=1)
    rt.on_checkpoint.append(lambda *a: 1 / 0)
    rt.offer(records(examples[:16]))
    assert rt.applied == 16 and rt.checkpoint_seq == 2


def test_max_wait_learns_a_partial_batch_once_its_oldest_example_waited(examples, monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr("learners.runtime.runner.time.monotonic", lambda: clock["now"])
    rt = LearnerRuntime("platt", build_learner("platt"), None,
                        RuntimeConfig(batch_size=16, checkpoint_every=1, max_wait_s=0.2))
    rt.offer(records(examples[:3]))  # 3 < 16 and nobody waited yet: held
    assert (rt.queued, rt.applied) == (3, 0)
    assert rt.oldest_wait() == 0.0 and not rt.wait_expired()
    clock["now"] += 0.15
    rt.offer(records(examples[3:5], start=3))  # the oldest waited 0.15 s < 0.2 s
    assert (rt.queued, rt.applied) == (5, 0)
    clock["now"] += 0.06
    assert rt.wait_expired()  # what the worker's timer asks when no record comes
    rt.offer(records(examples[5:6], start=5))  # the oldest waited 0.21 s: learn all 6 now
    assert (rt.queued, rt.applied, rt.batches) == (0, 6, 1)
    assert rt.offsets == {f"{TOPIC}:0": 5} and rt.oldest_wait() is None
    # full batches still come first: 20 at once learn one batch of 16 and hold 4 (nobody waited)
    rt.offer(records(examples[6:26], start=6))
    assert (rt.queued, rt.applied, rt.batches) == (4, 22, 2)


def test_without_max_wait_a_partial_batch_waits_for_the_batch_to_fill(examples, monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr("learners.runtime.runner.time.monotonic", lambda: clock["now"])
    rt = runtime(batch=16)
    rt.offer(records(examples[:3]))
    clock["now"] += 3600.0
    rt.offer(records(examples[3:5], start=3))
    assert (rt.queued, rt.applied) == (5, 0) and not rt.wait_expired()
    with pytest.raises(ValueError):
        RuntimeConfig(max_wait_s=-1.0)


def test_a_checkpoint_interval_checkpoints_a_slow_stream_between_batch_counts(examples, monkeypatch):
    """``checkpoint_interval_s``: after a batch, a checkpoint once that long passed since the last one,
    however few batches (``streamrank learn --publish`` sets it to the snapshot interval)."""
    clock = {"now": 100.0}
    monkeypatch.setattr("learners.runtime.runner.time.monotonic", lambda: clock["now"])
    rt = LearnerRuntime("platt", build_learner("platt"), None,
                        RuntimeConfig(batch_size=8, checkpoint_every=100, checkpoint_interval_s=60.0))
    seen = []
    rt.on_checkpoint.append(lambda name, state, metrics: seen.append(state.meta["runtime"]["applied"]))
    rt.offer(records(examples[:8]))
    clock["now"] += 59.9
    rt.offer(records(examples[8:16], start=8))
    assert seen == []  # 2 batches, 59.9 s: neither bound reached
    clock["now"] += 0.1
    rt.offer(records(examples[16:24], start=16))
    assert seen == [24]  # 60 s since the start: checkpointed after this batch
    clock["now"] += 30.0
    rt.offer(records(examples[24:32], start=24))
    assert seen == [24]  # the interval restarts at each checkpoint
    with pytest.raises(ValueError):
        RuntimeConfig(checkpoint_interval_s=0.0)
