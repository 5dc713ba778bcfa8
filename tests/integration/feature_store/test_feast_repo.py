"""The real Feast repo on the real Redis: `feast apply` (Feast's CLI), materialize, reads, the stats agent."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from kafka import KafkaProducer
from support import REPO, fresh_topics, settings_env

from contracts.events import encode
from feature_store.feast_repo import apply, materialize_all
from feature_store.online_read import DEFAULT_FEATURES, DirectFeatureReader, FeastSdkReader, FeatureReadError
from feature_store.scheduling import incremental_materialize_job
from feature_store.settings import FeatureStoreSettings
from feature_store.stats_agent import RawRecord, StatsRuntime
from feature_store.stream_stats import StatsBook
from simulator.examples import feature_examples
from simulator.letor import load_letor
from streamrank.cli.features import register
from streams.consume import read_topic

pytestmark = pytest.mark.integration
HALF_LIFE = 3600.0


@pytest.fixture(scope="module")
def feast_env(embedded_stack, tmp_path_factory, shared_data):
    home = tmp_path_factory.mktemp("feast-home")
    settings = replace(embedded_stack, home=home)
    fs = FeatureStoreSettings(feast_project=f"it_{uuid.uuid4().hex[:8]}", stats_batch=50, stats_latency_ms=200,
                              stats_half_life_s=HALF_LIFE)
    repo = apply(settings, fs, data_root=shared_data, limit=400, progress=False)  # runs `feast -c <repo> apply`
    store = repo.store()
    materialize_all(repo, store=store)
    return settings, fs, repo, store


def test_feast_cli_apply_registered_every_view(feast_env):
    _, _, repo, store = feast_env  # the fixture ran Feast's own CLI: `feast -c <repo> apply`
    assert {fv.name for fv in store.list_feature_views()} == {
        "user_profile", "obd_user", "letor_document", "kuairand_video", "obd_item", "item_stats", "query_stats"}
    assert {"item_stats_push", "query_stats_push"} <= {ds.name for ds in store.list_data_sources()}
    assert {e.name for e in store.list_entities()} >= {"user", "item", "query"}
    assert (repo.data / "registry.db").exists() and (repo.data / "user_profile.parquet").exists()


def test_materialized_real_data_reads_back_through_feast(feast_env, shared_data):
    _, _, _, store = feast_env
    with (shared_data / "kuairand" / "user_features_pure.csv").open() as fh:
        user = next(csv.DictReader(fh))
    with (shared_data / "obd" / "random" / "all" / "item_context.csv").open() as fh:
        obd_item = next(csv.DictReader(fh))
    got = store.get_online_features(
        ["user_profile:activity", "user_profile:fans_user_num", "letor_document:features",
         "obd_item:item_feature_1", "kuairand_video:duration_ms"],
        entity_rows=[{"user_id": f"kr{user['user_id']}", "item_id": "q1-d1"},
                     {"user_id": "kr-unknown", "item_id": obd_item["item_id"]}]).to_dict()
    assert got["activity"] == [user["user_active_degree"], None]
    assert got["fans_user_num"] == [int(user["fans_user_num"]), None]
    letor = load_letor(shared_data / "letor" / "rank.train")
    np.testing.assert_array_equal(np.asarray(got["features"][0], dtype=np.float32), letor.queries[1].features[1])
    assert got["item_feature_1"] == [None, obd_item["item_feature_1"]]


def test_direct_pipelined_read_equals_feast_sdk(feast_env):
    _, _, _, store = feast_env
    direct, sdk = DirectFeatureReader(store), FeastSdkReader(store)
    items = [f"q0-d{j}" for j in range(8)] + ["kv1", "kv2", "nope"]
    a, b = direct.read("kr0", "q0", items), sdk.read("kr0", "q0", items)
    assert a == b
    assert a.user["user_profile__activity"] is not None
    assert a.items[0]["letor_document__features"] is not None and a.items[-1]["letor_document__features"] is None
    assert len(a.items) == len(items) and set(a.items[0]) == {r.replace(":", "__") for r in DEFAULT_FEATURES
                                                              if r.split(":")[0] in ("letor_document", "kuairand_video",
                                                                                     "item_stats")}
    with pytest.raises(FeatureReadError, match="unknown feature view 'nope'"):
        DirectFeatureReader(store, ["nope:x"])
    with pytest.raises(FeatureReadError, match="has no feature"):
        DirectFeatureReader(store, ["item_stats:ctr_typo"])


def test_scheduled_incremental_materialize_loads_new_offline_rows_and_cli_reads_them(feast_env):
    settings, fs, repo, store = feast_env
    path = repo.data / "kuairand_video.parquet"
    videos = pd.read_parquet(path)
    new = videos.head(1).copy()
    new["item_id"], new["duration_ms"], new["event_timestamp"] = "kv-new", 1234.0, pd.Timestamp.now(tz="UTC")
    pd.concat([videos, new]).to_parquet(path, index=False)
    job = incremental_materialize_job(settings, fs)
    read = DirectFeatureReader(store, ["kuairand_video:duration_ms"])
    assert read.read(None, None, ["kv-new"]).items == [{"kuairand_video__duration_ms": None}]
    job()
    assert read.read(None, None, ["kv-new"]).items == [{"kuairand_video__duration_ms": 1234.0}]

    runner = CliRunner(env={**settings_env(settings), "STREAMRANK_FEAST_PROJECT": fs.feast_project})
    root = click.Group("root")
    register(root, click.Group("eval"))
    out = runner.invoke(root, ["features", "read", "--user", "kr0", "kv-new", "q1-d1"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["items"]["kv-new"]["kuairand_video__duration_ms"] == 1234.0
    assert doc["user"]["user_profile__activity"] is not None
    bad = runner.invoke(root, ["features", "materialize", "--view", "nope"])
    assert bad.exit_code != 0 and "unknown or offline-only feature views: ['nope']" in bad.output


def _start_agent(settings, fs) -> subprocess.Popen:
    env = settings_env(settings)
    env.update(STREAMRANK_FEAST_PROJECT=fs.feast_project, STREAMRANK_STATS_BATCH=str(fs.stats_batch),
               STREAMRANK_STATS_LATENCY_MS=str(fs.stats_latency_ms), STREAMRANK_STATS_HALF_LIFE_S=str(HALF_LIFE))
    log = open(settings.home / f"agent-{time.time_ns()}.log", "wb")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "feature_store.stats_agent"], env=env, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)


def _produce(settings, payloads) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for key, value in payloads:
        producer.send(settings.topics.examples, key=key, value=value)
    producer.flush()
    producer.close()


def _wait_for_stats(store, expected: dict[str, dict[str, float]], timeout: float = 240.0) -> dict:
    ids = sorted(expected)
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        got = store.get_online_features(["item_stats:impressions", "item_stats:clicks", "item_stats:click_rate"],
                                        entity_rows=[{"item_id": i} for i in ids]).to_dict()
        if all(g is not None and abs(g - expected[i]["impressions"]) < 1e-6 * max(1, g)
               for i, g in zip(ids, got["impressions"])):
            return got
        time.sleep(0.5)
    raise AssertionError(f"stats never matched: {list(zip(ids, got.get('impressions', [])))[:5]}")


def test_stats_agent_pushes_stats_read_back_through_feast_and_dead_letters_bad_records(feast_env, embedded_stack,
                                                                                        shared_data):
    base, fs, repo, store = feast_env
    settings = replace(fresh_topics(embedded_stack), home=base.home)
    examples = feature_examples(80, seed=11, data_root=shared_data)
    first, second = examples[:50], examples[50:]
    expected = StatsBook(HALF_LIFE)
    expected.add_all(first)

    agent = _start_agent(settings, fs)
    try:
        _produce(settings, [(ex.request_id.encode(), encode(ex)) for ex in first[:25]]
                 + [(b"bad-1", b'{"schema": "streamrank.labeled_list.v1", "oops": 1}')]
                 + [(ex.request_id.encode(), encode(ex)) for ex in first[25:]])
        items, queries = expected.pending_rows()
        got = _wait_for_stats(store, items)
        ids = sorted(items)
        np.testing.assert_allclose(got["clicks"], [items[i]["clicks"] for i in ids], rtol=1e-9)
        np.testing.assert_allclose(got["click_rate"], [items[i]["click_rate"] for i in ids], rtol=1e-9)
        q = sorted(queries)
        qgot = store.get_online_features(["query_stats:requests", "query_stats:satisfaction"],
                                         entity_rows=[{"query_id": x} for x in q]).to_dict()
        np.testing.assert_allclose(qgot["requests"], [queries[x]["requests"] for x in q], rtol=1e-9)
        np.testing.assert_allclose(qgot["satisfaction"], [queries[x]["satisfaction"] for x in q], rtol=1e-9)

        dead = []
        read_topic(settings.kafka_bootstrap, settings.topics.dead_letter, dead.append, expected=1, idle_s=5)
        assert [(r.key, dict(r.headers)["dl.reason"]) for r in dead] == [(b"bad-1", b"missing_field")]
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()

    # A restarted agent starts with empty memory: its counts must continue from the stored ones.
    restarted = StatsRuntime(settings, fs, repo.path)
    rejected = restarted.process([RawRecord(ex.request_id.encode(), encode(ex), settings.topics.examples, 0, n)
                                  for n, ex in enumerate(second)])
    assert rejected == []
    expected.add_all(second)
    items, _ = expected.pending_rows()
    _wait_for_stats(store, items, timeout=5)


def test_learner_feature_fill_reads_the_rows_serving_fetched(feast_env, shared_data):
    """Impressions that name ``letor_document:features`` instead of carrying it: the learners'
    FeatureFill reads the same rows back from the Redis online store, by item id, before a
    batch is learned (unknown items stay without features and are counted)."""
    from contracts.events import ITEM_FEATURES_KEY
    from learners.registry import build_learner
    from learners.runtime.feature_fill import FeatureFill, feast_row_reader
    from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig

    settings, fs, _, store = feast_env
    letor = load_letor(shared_data / "letor" / "rank.train")
    examples = feature_examples(4, seed=3, data_root=shared_data, max_candidates=6, with_features=False)
    rows = {doc: q.features[j] for q in letor.queries[:40] for j, doc in enumerate(q.doc_ids)}
    pool = list(rows)
    named = []
    for k, example in enumerate(examples):
        items = [item.model_copy(update={"item_id": pool[6 * k + j] if j < 5 else "unknown-item", "features": None})
                 for j, item in enumerate(example.impression.items)]
        impression = example.impression.model_copy(
            update={"items": items, "context": {**example.impression.context, ITEM_FEATURES_KEY: "letor_document:features"}})
        rename = {old.item_id: new.item_id for old, new in zip(example.impression.items, items)}
        labels = [label.model_copy(update={"item_id": rename[label.item_id]}) for label in example.labels]
        named.append(example.model_copy(update={"impression": impression, "labels": labels}))
    fill = FeatureFill(feast_row_reader(settings, fs))
    filled = fill(named)
    for example in filled:
        for item in example.impression.items:
            if item.item_id == "unknown-item":
                assert item.features is None
            else:
                np.testing.assert_array_equal(np.asarray(item.features, dtype=np.float32), rows[item.item_id])
    n_unknown = sum(it.item_id == "unknown-item" for ex in named for it in ex.impression.items)
    assert fill.missing == n_unknown and fill.filled == sum(len(ex.impression.items) for ex in named) - n_unknown
    assert fill.errors == 0
    # the inputs are untouched, and the serving reader agrees row for row
    assert all(it.features is None for ex in named for it in ex.impression.items)
    matrix, known = DirectFeatureReader(store, ["letor_document:features"]).read_item_vectors(
        [letor.queries[0].doc_ids[0], "unknown-item"], "letor_document__features")
    assert known.tolist() == [True, False] and matrix[1].tolist() == [0.0] * matrix.shape[1]
    np.testing.assert_array_equal(matrix[0], letor.queries[0].features[0])
    # more items than one script call takes (HGET_MANY_CHUNK): every row in its place across chunks
    from feature_store.online_read import HGET_MANY_CHUNK  # noqa: PLC0415

    reader = DirectFeatureReader(store, ["letor_document:features"])
    docs = [d for q in letor.queries[:40] for d in q.doc_ids]
    many = [docs[k % len(docs)] if k % 7 else "unknown-item" for k in range(2 * HGET_MANY_CHUNK + 3)]
    matrix, known = reader.read_item_vectors(many, "letor_document__features")
    alone = {item: reader.read_item_vectors([item], "letor_document__features") for item in set(many)}
    assert known.sum() > HGET_MANY_CHUNK and not known[0]
    for k, item in enumerate(many):
        row, row_known = alone[item]
        assert known[k] == row_known[0]
        np.testing.assert_array_equal(matrix[k], row[0] if row_known[0] else 0.0)

    # in the runtime: what the learner learns from is the filled batch (its batch arrays, learners.ingest)
    seen = []
    learner = build_learner("ldro")
    learn_built = learner.learn_built
    learner.learn_built = lambda built, *rest: (seen.append(built.a["features"][:built.count].copy()),
                                                learn_built(built, *rest))[1]
    runtime = LearnerRuntime("ldro", learner, None, RuntimeConfig(batch_size=len(named)))
    runtime.prepare = fill
    step = runtime.offer([Record(topic="examples", partition=0, offset=i, value=encode(ex), key=None)
                          for i, ex in enumerate(named)])
    assert not step.dead_letters, step.dead_letters
    assert len(seen) == 1 and len(seen[0]) == len(named)
    for b, example in enumerate(named):
        for i, item in enumerate(sorted(example.impression.items, key=lambda it: it.position)):
            if item.item_id == "unknown-item":
                assert not seen[0][b, i].any()  # no row: zeros, as serving scores it
            else:
                np.testing.assert_array_equal(seen[0][b, i], np.asarray(rows[item.item_id], dtype=np.float32))
    assert runtime.status()["feature_fill"]["errors"] == 0

