"""kill -9 of the online store's Redis while the stats agent pushes: it retries, loses nothing, counts nothing twice."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from durable_redis import DurableRedis

from contracts.events import encode
from feature_store.feast_repo import apply
from feature_store.settings import FeatureStoreSettings
from feature_store.stats_agent import RawRecord, StatsRuntime
from feature_store.stream_stats import StatsBook
from simulator.examples import feature_examples

pytestmark = pytest.mark.faults


def test_push_retries_through_a_redis_restart(tmp_path, embedded_stack, shared_data, caplog):
    server = DurableRedis(tmp_path)
    server.start()
    try:
        settings = replace(embedded_stack, home=tmp_path / "home", redis=server.url)
        fs = FeatureStoreSettings(feast_project="faults", stats_half_life_s=600.0)
        repo = apply(settings, fs, data_root=shared_data, limit=20, progress=False, use_cli=False)
        examples = feature_examples(30, seed=5, data_root=shared_data)
        records = [RawRecord(ex.request_id.encode(), encode(ex), "examples", 0, n) for n, ex in enumerate(examples)]
        runtime = StatsRuntime(settings, fs, repo.path, retries=12)
        assert runtime.process(records[:15]) == []

        server.kill9()
        restart = threading.Timer(1.5, server.start)  # Redis comes back while the batch is retrying
        restart.start()
        with caplog.at_level("WARNING", logger="feature_store.stats_agent"):
            assert runtime.process(records[15:]) == []
        restart.join()
        assert any("stats push failed" in r.getMessage() for r in caplog.records)  # the outage was hit

        # A push that gives up keeps its rows pending; the next batch (even an empty one) writes them.
        server.kill9()
        impatient = runtime
        impatient.retries = 1  # (redis-py itself retries a refused connection with back-off first)
        with pytest.raises(Exception):
            impatient.process(records[:0] + [RawRecord(b"x", encode(examples[0].model_copy(
                update={"example_id": "fresh-id"})), "examples", 0, 99)])
        assert impatient.book.dirty_items  # nothing was lost
        server.start()
        assert impatient.process([]) == []
        assert not impatient.book.dirty_items
        examples = examples + [examples[0].model_copy(update={"example_id": "fresh-id"})]

        expected = StatsBook(fs.stats_half_life_s)
        expected.add_all(examples)
        items, queries = expected.pending_rows()
        store = repo.store()
        ids = sorted(items)
        got = store.get_online_features(["item_stats:impressions", "item_stats:clicks"],
                                        entity_rows=[{"item_id": i} for i in ids]).to_dict()
        assert got["impressions"] == pytest.approx([items[i]["impressions"] for i in ids], rel=1e-9)
        assert got["clicks"] == pytest.approx([items[i]["clicks"] for i in ids], rel=1e-9, abs=1e-12)
        q = sorted(queries)
        qgot = store.get_online_features(["query_stats:requests"], entity_rows=[{"query_id": x} for x in q]).to_dict()
        assert qgot["requests"] == pytest.approx([queries[x]["requests"] for x in q], rel=1e-9)
    finally:
        server.stop()
