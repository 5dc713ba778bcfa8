"""Config rendering, feature-store settings, the repo's definitions and the stats agent's validation."""

from __future__ import annotations

import ast

import pytest

from common.config import load_settings
from contracts.events import encode
from feature_store.feast_repo import DEFINITIONS, redis_connection_string, redis_url_from_connection_string, render_repo
from feature_store.offline_data import ITEM_STATS_COLUMNS, QUERY_STATS_COLUMNS
from feature_store.settings import FeatureStoreSettings, load_feature_store_settings
from feature_store.stats_agent import RawRecord, validate
from feature_store.stream_stats import ItemStats, QueryStats, StatsPrior


@pytest.mark.parametrize("url, expected", [
    ("redis://127.0.0.1:6390/0", "127.0.0.1:6390,db=0"),
    ("127.0.0.1:7000", "127.0.0.1:7000,db=0"),
    ("redis://:s3cret@10.0.0.5:6379/2", "10.0.0.5:6379,db=2,password=s3cret"),
])
def test_redis_url_to_feast_connection_string_and_back(url, expected):
    assert redis_connection_string(url) == expected
    again = redis_url_from_connection_string(expected)
    assert redis_connection_string(again) == expected


def test_rendered_yaml_points_at_the_configured_redis_and_holds_only_definitions(tmp_path):
    settings = load_settings({"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_REDIS": "127.0.0.1:6555"})
    repo = render_repo(settings, FeatureStoreSettings(feast_project="unit_proj"))
    text = repo.yaml.read_text()
    assert "project: unit_proj" in text and 'connection_string: "127.0.0.1:6555,db=0"' in text
    assert "entity_key_serialization_version: 3" in text and "type: redis" in text
    assert sorted(p.name for p in repo.path.glob("*.py")) == sorted(p.name for p in DEFINITIONS.glob("*.py"))
    with pytest.raises(ValueError, match="alphanumeric"):
        FeatureStoreSettings(feast_project="bad-name")


def test_definitions_folder_imports_nothing_from_the_project():
    # Feast imports every .py in the repo folder: keep it to definitions (feast, stdlib) only.
    for module in DEFINITIONS.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert imported <= {"datetime", "pathlib", "feast"}, (module, imported)


def test_stats_views_declare_exactly_the_columns_the_stats_code_writes():
    text = (DEFINITIONS / "definitions.py").read_text()
    for column in ITEM_STATS_COLUMNS + QUERY_STATS_COLUMNS:
        assert f'"{column}"' in text
    assert set(ItemStats().row(StatsPrior())) == set(ITEM_STATS_COLUMNS)
    assert set(QueryStats().row(StatsPrior())) == set(QUERY_STATS_COLUMNS)


def test_env_overrides_defaults():
    cfg = load_feature_store_settings(env={"STREAMRANK_STATS_BATCH": "17", "STREAMRANK_FEAST_PROJECT": "p2"})
    assert (cfg.stats_batch, cfg.feast_project, cfg.stats_latency_ms) == (17, "p2", 500.0)


def test_bad_records_are_rejected_with_reason_and_the_rest_kept(shared_data):
    from simulator.examples import feature_examples

    good = feature_examples(2, seed=1, data_root=shared_data)
    impression_only = encode(good[0].impression)
    records = [RawRecord(b"k0", encode(good[0]), "t", 0, 0), RawRecord(b"k1", b"{broken", "t", 0, 1),
               RawRecord(b"k2", impression_only, "t", 1, 7), RawRecord(b"k3", None, "t", 1, 8),
               RawRecord(b"k4", encode(good[1]), "t", 2, 3)]
    ok, bad = validate(records, max_bytes=1_000_000)
    assert [ex.example_id for ex in ok] == [good[0].example_id, good[1].example_id]
    assert [(b.record.offset, b.error.reason) for b in bad] == [(1, "bad_json"), (7, "bad_value"), (8, "empty_value")]
    headers = dict(bad[1].headers())
    assert headers["dl.offset"] == b"7" and headers["dl.partition"] == b"1" and headers["dl.field"] == b"schema"


def test_config_file_section_is_read_and_env_wins(tmp_path):
    config = tmp_path / "streamrank.toml"
    config.write_text('[feature_store]\nsnapshot_interval_s = 7\nsnapshot_keep = 3\nunrelated = "x"\n')
    env = {"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_CONFIG": str(config)}
    cfg = load_feature_store_settings(load_settings(env), env=env)
    assert (cfg.snapshot_interval_s, cfg.snapshot_keep) == (7.0, 3)
    env["STREAMRANK_SNAPSHOT_KEEP"] = "8"
    assert load_feature_store_settings(load_settings(env), env=env).snapshot_keep == 8
