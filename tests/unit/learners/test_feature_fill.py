"""FeatureFill: only impressions that name a feature and lack rows are filled; a failing store
never stops a batch."""

from __future__ import annotations

import torch

from contracts.events import ITEM_FEATURES_KEY
from learners.runtime.feature_fill import FeatureFill
from simulator.examples import feature_examples


def named(example, ref="letor_document:features"):
    items = [it.model_copy(update={"features": None, "features_f32": None}) for it in example.impression.items]
    impression = example.impression.model_copy(update={"items": items, "context": {**example.impression.context,
                                                                                   ITEM_FEATURES_KEY: ref}})
    return example.model_copy(update={"impression": impression})


def test_fills_only_named_examples_and_reads_each_item_once(shared_data):
    plain, with_ref = feature_examples(2, seed=1, data_root=shared_data, max_candidates=4, with_features=False)
    with_ref = named(with_ref)
    calls = []

    def read(ref, item_ids):
        calls.append((ref, list(item_ids)))
        return [[float(len(i)), 1.0] if i != with_ref.impression.items[0].item_id else None for i in item_ids]

    fill = FeatureFill(read)
    out = fill([plain, with_ref])
    assert out[0] is plain  # no feature named: untouched
    assert calls == [("letor_document:features", sorted({it.item_id for it in with_ref.impression.items}))]
    first, *rest = out[1].impression.items
    assert first.features is None and all(list(it.features) == [float(len(it.item_id)), 1.0] for it in rest)
    assert all(not it.features.flags.writeable for it in rest)  # cached rows are shared: read-only
    assert (fill.filled, fill.missing, fill.errors) == (len(rest), 1, 0)
    assert out[1].example_id == with_ref.example_id and out[1].labels == with_ref.labels


def test_a_failing_store_leaves_the_batch_as_it_came(shared_data):
    example = named(feature_examples(1, seed=2, data_root=shared_data, max_candidates=3)[0])

    def down(ref, item_ids):
        raise ConnectionError("redis: connection refused")

    fill = FeatureFill(down)
    assert fill([example]) == [example]
    assert fill.errors == 1 and fill.filled == 0


def test_rows_are_cached_so_examples_filled_one_by_one_read_each_item_once(shared_data):
    examples = [named(e) for e in feature_examples(3, seed=3, data_root=shared_data, max_candidates=4)]
    examples.append(examples[0].model_copy(update={"example_id": "again"}))  # the same items again
    calls = []

    def read(ref, item_ids):
        calls.append(list(item_ids))
        return [[1.0, 2.0] for _ in item_ids]

    fill = FeatureFill(read, cache_s=3600)
    for example in examples:
        fill([example])
    read_ids = [i for call in calls for i in call]
    assert sorted(read_ids) == sorted({it.item_id for e in examples for it in e.impression.items})
    assert fill.reads == len(calls) <= 3
    expired = FeatureFill(read, cache_s=0.0)
    expired([examples[0]])
    expired([examples[0]])
    assert expired.reads == 2  # past cache_s a row is read again


def test_the_runtimes_structs_are_filled_like_the_models(shared_data):
    from contracts.events import encode
    from contracts.fast_decode import LabeledListS, decode_example

    example = named(feature_examples(1, seed=4, data_root=shared_data, max_candidates=4)[0])
    struct = decode_example(encode(example))
    assert type(struct) is LabeledListS

    def read(ref, item_ids):
        return [[float(len(i)), 2.0] for i in item_ids]

    (from_model,), (from_struct,) = FeatureFill(read)([example]), FeatureFill(read)([struct])
    assert type(from_struct) is LabeledListS and struct.impression.items[0].features is None  # a copy
    assert [list(it.features) for it in from_struct.impression.items] == [
        list(it.features) for it in from_model.impression.items]
    assert all(it.features is not None for it in from_struct.impression.items)
    assert from_struct.labels == struct.labels and from_struct.example_id == example.example_id
    from learners.ingest.lists import ListArrays
    from learners.policy.batch import from_examples

    built = ListArrays(2, 2, ("click",))
    assert built.add(from_struct) is None and built.add(from_model) is None
    reference = from_examples([from_model.model_copy(update={"impression": from_model.impression.model_copy(update={
        "items": [it.model_copy(update={"features": list(it.features)}) for it in from_model.impression.items]})})],
        2, ("click",))
    for row in (0, 1):  # array rows land in the batch as the same floats a list of them gives
        assert torch.equal(built.take().features[row], reference.features[0])
