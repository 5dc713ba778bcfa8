"""The tensor-native learn path: batch builders equal the object path, the update stage keeps the log's order.

Features come in both of the contract's spellings: ``features_f32`` (what the simulator, like our
other producers, writes) and the JSON float list ``features`` (old logs, other clients)."""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import pytest
import torch

from contracts.events import LABELED_LIST_SCHEMA, EventError, decode, encode, f32_bytes
from contracts.fast_decode import LabeledListS, decode_example
from learners.calibration.context import extract_rows
from learners.ingest.lists import ListArrays
from learners.policy.batch import DEFAULT_TASKS, from_examples
from learners.registry import build_learner
from learners.runtime.checkpoint import state_sha256
from learners.runtime.pipeline import UpdateStage
from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig
from simulator.examples import simulated_examples

D = 300  # the LETOR feature count the simulator serves


@pytest.fixture(scope="module")
def examples():
    return simulated_examples(40, seed=3, max_candidates=8, with_features=True)


def _float_list(item):
    """``item`` with its features in the JSON float-list spelling (the same float32 values)."""
    row = item.feature_row()
    return item if row is None else item.model_copy(update={"features": [float(v) for v in row],
                                                            "features_f32": None})


def _with_items(example, fn):
    imp = example.impression
    return example.model_copy(update={"impression": imp.model_copy(update={"items": [fn(it) for it in imp.items]})})


def _float_lists(example):
    return _with_items(example, _float_list)


def _varied(examples):
    """Shuffled positions, missing features on some items, a list without features, calibrated scores
    (some tasks, every task), an upstream score missing, lists in the float-list spelling and lists
    mixing the two."""
    out = []
    for b, ex in enumerate(examples):
        items = list(ex.impression.items)
        assert all(it.features_f32 is not None and it.features is None for it in items)  # the producers' default
        if b % 3 == 0:
            items = items[::-1]  # served positions out of list order
        if b % 4 == 1:
            items = [it.model_copy(update={"features_f32": None}) if i % 2 else it for i, it in enumerate(items)]
        if b % 6 == 5:
            items = [_float_list(it) for it in items]
        if b % 7 == 3:
            items = [_float_list(it) if i % 2 else it for i, it in enumerate(items)]
        if b % 5 == 2:
            items = [it.model_copy(update={"calibrated": {"click": 0.25}}) for it in items]
        if b % 5 == 4:  # every task calibrated (what our servers log)
            items = [it.model_copy(update={"calibrated": {t: 0.1 + 0.2 * k for k, t in enumerate(DEFAULT_TASKS)}})
                     for it in items]
        if b % 8 == 6:  # upstream scores missing a task on one item: 0.5 for it there
            items = [it.model_copy(update={"scores": {DEFAULT_TASKS[0]: 0.3}}) if i == 1 else it
                     for i, it in enumerate(items)]
        labels = {lab.item_id: lab for lab in ex.labels}
        imp = ex.impression.model_copy(update={"items": items})
        out.append(ex.model_copy(update={"impression": imp, "labels": [labels[it.item_id] for it in items]}))
    return out


def _equal_batches(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(y)) and torch.equal(x.isnan(), y.isnan()), f.name
        else:
            assert x == y, f.name


@pytest.mark.parametrize("task_inputs", ["calibrated", "upstream"])
def test_list_arrays_equal_the_object_path_element_for_element(examples, task_inputs):
    batch = _varied(examples)
    built = ListArrays(len(batch), D, DEFAULT_TASKS, task_inputs, items=2)  # grows past 2 items on the way
    assert all(built.add(ex) is None for ex in batch)
    _equal_batches(built.take(), from_examples(batch, D, DEFAULT_TASKS, task_inputs))


@pytest.mark.parametrize("tasks", [DEFAULT_TASKS[:1], ()])
def test_one_task_or_none_fills_the_same_rows(examples, tasks):
    batch = _varied(examples)
    built = ListArrays(len(batch), D, tasks)
    assert all(built.add(ex) is None for ex in batch)
    _equal_batches(built.take(), from_examples(batch, D, tasks))


@pytest.mark.parametrize("task_inputs", ["calibrated", "upstream"])
def test_list_arrays_from_the_runtimes_structs_equal_the_object_path(examples, task_inputs):
    batch = _varied(examples)
    structs = [decode_example(encode(ex)) for ex in batch]
    assert all(type(s) is LabeledListS for s in structs)
    built = ListArrays(len(batch), D, DEFAULT_TASKS, task_inputs, items=2)
    assert all(built.add(s) is None for s in structs)
    _equal_batches(built.take(), from_examples(batch, D, DEFAULT_TASKS, task_inputs))


def test_binary_and_float_list_features_fill_the_same_rows(examples):
    binary = ListArrays(len(examples), D, DEFAULT_TASKS)
    floats = ListArrays(len(examples), D, DEFAULT_TASKS)
    for ex in examples:
        assert binary.add(decode_example(encode(ex))) is None
        assert floats.add(decode_example(encode(_float_lists(ex)))) is None
    _equal_batches(binary.take(), floats.take())
    assert binary.take().features.abs().sum() > 0


def test_list_arrays_pad_to_a_longer_length_with_masked_items(examples):
    built = ListArrays(4, D, DEFAULT_TASKS)
    for ex in examples[:4]:
        built.add(ex)
    longest = built.longest
    padded = built.take(pad_to=longest + 3)
    assert padded.mask.shape[1] == longest + 3 and not padded.mask[:, longest:].any()
    assert torch.equal(padded.features[:, :longest], from_examples(examples[:4], D).features)


@pytest.mark.parametrize("spelling", ["features", "features_f32"])
def test_a_wrong_feature_length_is_rejected_with_its_field_and_the_row_left_free(examples, spelling):
    bad_items = list(examples[1].impression.items)
    short = [1.0, 2.0] if spelling == "features" else f32_bytes([1.0, 2.0])
    bad_items[2] = bad_items[2].model_copy(update={"features": None, "features_f32": None, spelling: short})
    bad = examples[1].model_copy(update={"impression": examples[1].impression.model_copy(update={"items": bad_items})})
    built = ListArrays(3, D, DEFAULT_TASKS)
    assert built.add(examples[0]) is None
    rejected = built.add(decode_example(encode(bad)))
    assert (rejected.example_id, rejected.field) == (bad.example_id, f"impression.items.2.{spelling}")
    assert built.add(examples[2]) is None
    _equal_batches(built.take(), from_examples([examples[0], examples[2]], D))


@pytest.mark.parametrize("model", ["umnn", "isotonic"])
def test_row_arrays_equal_the_object_path(examples, model):
    learner = build_learner(model)
    built = learner.batch_builder(len(examples))
    for ex in examples:
        built.add(ex)
    rows = extract_rows(examples, learner.tasks, learner.config.context_fields)
    for task, r in rows.items():
        assert torch.equal(built.logits(task, 1e-6), r.logits())
        assert torch.equal(built.label_tensor(task), r.label_tensor())
        if model == "umnn":
            assert torch.equal(built.index_tensor(task), learner.encoder.indices(r.fields, len(r)))


@pytest.mark.parametrize("model", ["umnn", "isotonic"])
def test_row_arrays_from_the_runtimes_structs_equal_the_object_path(examples, model):
    learner = build_learner(model)
    from_structs, from_models = learner.batch_builder(len(examples)), learner.batch_builder(len(examples))
    for ex in examples:
        from_structs.add(decode_example(encode(ex)))
        from_models.add(ex)
    for task in learner.tasks:
        assert torch.equal(from_structs.logits(task, 1e-6), from_models.logits(task, 1e-6))
        assert torch.equal(from_structs.label_tensor(task), from_models.label_tensor(task))
        assert torch.equal(from_structs.index_tensor(task), from_models.index_tensor(task))


def _bad_examples(example):
    """Records the contract refuses, each for a different reason, built from a valid example's bytes:
    in the float-list spelling (a NaN, a string), in the binary one (a NaN, 7 bytes, both spellings
    on one item), and in neither (a wrong type, labels out of order)."""
    listed = encode(_float_lists(example))
    first = _float_lists(example).impression.items[0].features
    head = ("[" + ",".join(repr(v) for v in first[:2])).encode()
    assert listed.count(head) >= 1
    value = encode(example)
    blob = base64.b64encode(example.impression.items[0].features_f32)
    assert value.count(blob) == 1
    nan = base64.b64encode(f32_bytes([np.nan]) + example.impression.items[0].features_f32[4:])
    both = b'"features":[1.0],"features_f32":' + b'"' + blob + b'"'
    return [listed.replace(head, b"[NaN", 1), listed.replace(head, b'["0.5"', 1),
            value.replace(blob, nan, 1), value.replace(blob, base64.b64encode(b"\0" * 7), 1),
            value.replace(b'"features_f32":"' + blob + b'"', both, 1),
            value.replace(b'"list_reward":', b'"list_reward":true,"x":', 1),
            encode(example.model_copy(update={"labels": list(reversed(example.labels))}))]


def test_the_runtime_learns_structs_as_learn_many_learns_models_and_dead_letters_with_the_contracts_reason(examples):
    bad = _bad_examples(examples[0])
    verdicts = []
    for value in bad:
        with pytest.raises(EventError) as err:
            decode(value, expected=LABELED_LIST_SCHEMA)
        verdicts.append((err.value.reason, err.value.field))
    assert len(set(verdicts)) == len(bad)
    recs = _records(examples[:16])
    for k, value in enumerate(bad):
        recs.insert(3 + 4 * k, Record("t", 0, 0, b"bad", value))
    recs = [dataclasses.replace(r, offset=i) for i, r in enumerate(recs)]
    rt = LearnerRuntime("ldro", build_learner("ldro", n_features=D), None, RuntimeConfig(batch_size=8))
    result = rt.offer(recs)
    assert [(d.reason, d.field) for d in result.dead_letters] == verdicts
    assert [d.value for d in result.dead_letters] == bad and rt.applied == 16
    reference = build_learner("ldro", n_features=D)
    for start in (0, 8):
        reference.learn_many(examples[start:start + 8])
    assert state_sha256(rt.learner.state_dict()) == state_sha256(reference.state_dict())


def _records(examples):
    return [Record("t", 0, i, ex.request_id.encode(), encode(ex)) for i, ex in enumerate(examples)]


@pytest.mark.parametrize("model", ["ldro", "drpo", "umnn"])
def test_the_prefetching_runtime_learns_the_same_model_as_the_inline_one(examples, model):
    recs = _records(examples)
    recs.insert(7, Record("t", 0, 999, b"bad", b"{not json"))  # a dead letter inside a batch
    recs = [dataclasses.replace(r, offset=i) for i, r in enumerate(recs)] + _records(examples[:5])  # + duplicates
    cfg = {"n_features": D} if model != "umnn" else {}
    states = []
    for prefetch in (False, True):
        rt = LearnerRuntime(model, build_learner(model, **cfg), None,
                            RuntimeConfig(batch_size=8, checkpoint_every=2, prefetch=prefetch))
        for start in range(0, len(recs), 5):
            result = rt.offer(recs[start:start + 5], wait=False)
            assert not result.seeks
        rt.flush()
        states.append(rt.state())
    assert state_sha256(states[0]) == state_sha256(states[1])
    assert states[1].meta["runtime"]["applied"] == 40 and states[1].meta["runtime"]["dead_lettered"] == 1


def test_the_update_stage_runs_in_order_and_a_failure_stays_raised():
    seen = []
    stage = UpdateStage(threaded=True, depth=1)
    for i in range(5):
        stage.submit(lambda i=i: seen.append(i))
    stage.drain()
    assert seen == [0, 1, 2, 3, 4]

    def boom():
        raise FloatingPointError("non-finite loss")

    stage.submit(boom)
    with pytest.raises(FloatingPointError):
        stage.drain()
    with pytest.raises(FloatingPointError):
        stage.submit(lambda: seen.append(99))
    assert 99 not in seen
