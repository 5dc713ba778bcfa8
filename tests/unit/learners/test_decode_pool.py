"""Decode worker processes: the same verdicts, rows, dead letters, batches and model as decoding in process.

The workers are real processes (``python -m learners.ingest.decode_worker``) over real shared-memory
slots; the reference is the same runtime with ``decode_workers=0``."""

from __future__ import annotations

import glob
import os
import signal

import numpy as np
import pytest

from contracts.events import ITEM_FEATURES_KEY, FusionDecision, encode, f32_bytes
from contracts.fast_decode import decode_example, replaced
from learners.ingest.decode_pool import DecodePool
from learners.ingest.decode_worker import verdicts
from learners.ingest.lists import ListArrays, array_shapes
from learners.policy.batch import DEFAULT_TASKS
from learners.registry import build_learner
from learners.runtime.checkpoint import state_sha256
from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig
from simulator.examples import simulated_examples
from test_ingest import D, _bad_examples, _equal_batches, _varied  # same directory: on sys.path

SPEC = {"n_features": D, "tasks": list(DEFAULT_TASKS), "task_inputs": "calibrated"}


def _logged(example, b):
    """Every third list with the serving policy's log-probabilities (list and fusion), as a learned
    reranker logs them; the others without (NaN in the batch)."""
    if b % 3:
        return example
    fusion = FusionDecision(weights={t: 0.5 + 0.1 * k + 0.01 * b for k, t in enumerate(DEFAULT_TASKS)},
                            logprob=-2.0 - 0.01 * b)
    imp = example.impression.model_copy(update={"list_logprob": -1.5 - 0.1 * b, "fusion": fusion})
    return example.model_copy(update={"impression": imp})


@pytest.fixture(scope="module")
def examples():
    return [_logged(ex, b) for b, ex in enumerate(_varied(simulated_examples(40, seed=3, max_candidates=8,
                                                                              with_features=True)))]


def _wrong_length(example):
    """``example`` with one item's features_f32 two floats long: decoded, then refused by the builder."""
    items = list(example.impression.items)
    items[1] = items[1].model_copy(update={"features": None, "features_f32": f32_bytes([1.0, 2.0])})
    return example.model_copy(update={"example_id": example.example_id + "-short",
                                      "impression": example.impression.model_copy(update={"items": items})})


def _truncated(example, k):
    """``example`` with its first ``k`` items (a shorter list)."""
    imp = example.impression.model_copy(update={"items": example.impression.items[:k]})
    return example.model_copy(update={"impression": imp, "labels": example.labels[:k]})


def _named(example):
    """``example`` as serving logs it by default: items name their feature (the runtime fills them)."""
    items = [it.model_copy(update={"features": None, "features_f32": None}) for it in example.impression.items]
    context = {**example.impression.context, ITEM_FEATURES_KEY: "letor_document:features"}
    return example.model_copy(update={"example_id": example.example_id + "-named",
                                      "impression": example.impression.model_copy(update={"items": items,
                                                                                         "context": context})})


def _log(examples):
    """Good lists, the contract's refusals, a builder refusal, named features and re-delivered ids."""
    values = [encode(ex) for ex in examples]
    for k, bad in enumerate(_bad_examples(examples[0])):
        values.insert(3 + 5 * k, bad)
    values.insert(11, encode(_wrong_length(examples[4])))
    values.insert(17, encode(_named(examples[6])))
    values += [encode(ex) for ex in examples[:6]]  # the same example ids again
    return [Record("t", 0, i, b"k", v) for i, v in enumerate(values)]


def _run(recs, workers, prepare=None, model="ldro", kill_after=None):
    rt = LearnerRuntime(model, build_learner(model, n_features=D), None,
                        RuntimeConfig(batch_size=8, checkpoint_every=3, prefetch=True, decode_workers=workers))
    rt.prepare = prepare
    letters, rejected = [], []
    for start in range(0, len(recs), 13):
        if kill_after is not None and start >= kill_after and rt._pool is not None and not rt._pool.broken:
            rt._pool.workers[0].proc.kill()
            rt._pool.workers[0].proc.wait()
        letters += rt.offer(recs[start:start + 13]).dead_letters
        rt.drain()
        rejected += [(r.example_id, r.field) for r in rt.learner.last_rejected] if rt.batches else []
    letters += rt.flush().dead_letters
    pool = rt._pool
    state = rt.state()
    rt.close()
    return state, [(d.offset, d.reason, d.field, d.detail) for d in letters], pool


@pytest.mark.parametrize("model", ["ldro", "drpo"])
def test_workers_learn_the_same_model_with_the_same_dead_letters_as_in_process(examples, model):
    recs = _log(examples)
    (ref, ref_letters, _), (got, got_letters, pool) = _run(recs, 0, model=model), _run(recs, 2, model=model)
    assert pool is not None and pool.broken is None  # the workers did the decoding
    assert len(ref_letters) == 7 and got_letters == ref_letters
    for key in ("applied", "digest", "skipped_ids", "dead_lettered", "offsets", "batches"):
        assert got.meta["runtime"][key] == ref.meta["runtime"][key], key
    assert ref.meta["runtime"]["applied"] == 42 and ref.meta["runtime"]["skipped_ids"] == 6
    assert state_sha256(got) == state_sha256(ref)


def test_a_worker_that_dies_hands_the_rest_to_the_process_and_nothing_is_lost(examples, caplog):
    recs = _log(examples)
    ref, ref_letters, _ = _run(recs, 0)
    got, got_letters, pool = _run(recs, 1, kill_after=20)
    assert pool is None or pool.broken  # closed, or broken and closed
    assert "decode workers stopped" in caplog.text
    assert got_letters == ref_letters and state_sha256(got) == state_sha256(ref)


def test_named_features_are_left_to_the_process_and_filled_there(examples):
    recs = _log(examples)
    rows = {it.item_id: it.feature_row() for ex in examples for it in ex.impression.items}
    filled = []

    def fill(batch):  # what FeatureFill does, for the examples whose items name their feature
        out = []
        for ex in batch:
            if ex.impression.context.get(ITEM_FEATURES_KEY):
                filled.append(ex.example_id)
                items = [replaced(it, features_f32=f32_bytes(rows[it.item_id])) for it in ex.impression.items]
                ex = replaced(ex, impression=replaced(ex.impression, items=items))
            out.append(ex)
        return out

    ref, _, _ = _run(recs, 0, prepare=fill)
    assert filled == [examples[6].example_id + "-named"]
    got, _, pool = _run(recs, 1, prepare=fill)
    assert filled == [examples[6].example_id + "-named"] * 2 and pool.broken is None
    assert state_sha256(got) == state_sha256(ref)


def test_rows_copied_in_runs_from_a_reused_slot_equal_rows_written_in_place(examples):
    slot = {name: np.zeros(shape, dtype) for name, (shape, dtype) in array_shapes(4, 10, D, len(DEFAULT_TASKS)).items()}
    worker = ListArrays.over(slot, SPEC)
    direct, copied = ListArrays(8, D, DEFAULT_TASKS), ListArrays(8, D, DEFAULT_TASKS, items=2)  # copied must grow
    long = examples[:4]
    short = [_truncated(ex, 3 + k % 2) for k, ex in enumerate(examples[4:8])]  # stale items must not leak
    assert max(len(ex.impression.items) for ex in short) < min(len(ex.impression.items) for ex in long)
    for chunk in (long, short):
        got = verdicts(worker, [encode(ex) for ex in chunk], 1_000_000, fill=False)
        assert [v[0] for v in got] == ["ok"] * 4
        rows = [(v[2], v[3], v[1]) for v in got]
        copied.add_rows(slot, [rows[0], rows[2], rows[3]])  # two runs: row 0, rows 2-3
        copied.add_rows(slot, [rows[1]])
        for ex in (chunk[0], chunk[2], chunk[3], chunk[1]):
            assert direct.add(decode_example(encode(ex))) is None
    assert copied.example_ids == direct.example_ids and copied.items == direct.items
    _equal_batches(copied.take(), direct.take())


def test_worker_verdicts_name_each_kind_of_record(examples):
    slot = {name: np.zeros(shape, dtype) for name, (shape, dtype) in array_shapes(8, 10, D, len(DEFAULT_TASKS)).items()}
    long_list = simulated_examples(1, seed=1, max_candidates=20, with_features=True)[0]
    assert len(long_list.impression.items) > 10
    values = [encode(examples[0]), b"{not json", encode(_wrong_length(examples[1])), encode(_named(examples[2])),
              encode(long_list)]
    got = verdicts(ListArrays.over(slot, SPEC), values, 1_000_000, fill=True)
    assert got[0] == ["ok", examples[0].example_id, 0, len(examples[0].impression.items)]
    assert got[1][:2] == ["dead", "bad_json"]
    assert got[2] == ["rej", examples[1].example_id + "-short", "impression.items.1.features_f32",
                      "has 2 values, the model expects 300"]
    assert got[3] == ["main"] and got[4] == ["main"]
    assert verdicts(ListArrays.over(slot, SPEC), values[3:4], 1_000_000, fill=False)[0][0] == "ok"  # zeros, as in process


def test_slot_files_are_gone_once_the_workers_mapped_them_and_the_workers_exit_on_close():
    before = set(glob.glob("/dev/shm/streamrank-decode-*"))
    pool = DecodePool(SPEC, workers=2, rows=4, items=10, slots=2)
    try:
        assert set(glob.glob(f"/dev/shm/streamrank-decode-{os.getpid()}-*")) - before == set()
        procs = [w.proc for w in pool.workers]
        assert all(p.poll() is None for p in procs)
        records = [encode(ex) for ex in simulated_examples(9, seed=2, max_candidates=6, with_features=True)]
        chunks = [verdicts for verdicts, _ in pool.verdicts(records)]
        assert [len(c) for c in chunks] == [4, 4, 1] and [v[0] for c in chunks for v in c] == ["ok"] * 9
    finally:
        pool.close()
    assert all(p.returncode == 0 for p in procs)


def test_a_record_larger_than_a_slot_is_decoded_in_process(examples):
    values = [encode(ex) for ex in examples[:5]]
    pool = DecodePool(SPEC, workers=1, rows=2, items=10, slots=1, input_bytes=max(map(len, values)) - 1)
    try:
        small = min(range(5), key=lambda i: len(values[i]))
        kinds = [v[0] for verdicts, _ in pool.verdicts(values) for v in verdicts]
        assert kinds.count("main") >= 1 and kinds[small] == "ok" and len(kinds) == 5
        assert kinds[max(range(5), key=lambda i: len(values[i]))] == "main"
    finally:
        pool.close()


def test_a_hung_worker_times_out_and_its_records_are_decoded_in_process(examples, caplog):
    values = [encode(ex) for ex in examples[:6]]
    pool = DecodePool(SPEC, workers=1, rows=4, items=10, slots=2, timeout_s=1.0)
    try:
        os.kill(pool.workers[0].proc.pid, signal.SIGSTOP)  # alive, never answers
        chunks = list(pool.verdicts(values))
        assert [v for verdicts, _ in chunks for v in verdicts] == [["main"]] * 6
        assert "did not answer" in pool.broken and "decode workers stopped" in caplog.text
        assert list(pool.verdicts(values[:2])) == [([["main"]] * 2, None)]  # stays in process
    finally:
        pool.close()


def test_workers_that_cannot_start_leave_the_learner_decoding_in_process(examples, monkeypatch, caplog):
    recs = _log(examples)
    ref, ref_letters, _ = _run(recs, 0)
    monkeypatch.setattr("learners.ingest.decode_pool.sys.executable", "/nonexistent/python")
    got, got_letters, pool = _run(recs, 1)
    assert pool is None and "decode workers not started" in caplog.text
    assert got_letters == ref_letters and state_sha256(got) == state_sha256(ref)
