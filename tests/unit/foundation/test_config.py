"""One config: env wins over the stack's state file; topic names carry the prefix."""

from __future__ import annotations

import json

import pytest

from common.config import TOPIC_NAMES, Topics, load_settings


def test_env_overrides_and_prefix(tmp_path):
    s = load_settings({"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_KAFKA": "k:1", "STREAMRANK_REDIS": "r:2",
                       "STREAMRANK_TOPIC_PREFIX": "prod.", "STREAMRANK_PARTITIONS": "8"})
    assert (s.kafka_bootstrap, s.redis_url, s.partitions) == ("k:1", "redis://r:2/0", 8)
    assert s.topics.all() == {name: f"prod.{name}" for name in TOPIC_NAMES}


def test_falls_back_to_stack_state_file(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({"kafka": "127.0.0.1:9", "redis": "127.0.0.1:8",
                                                     "topic_prefix": "x.", "partitions": 2}))
    s = load_settings({"STREAMRANK_HOME": str(tmp_path)})
    assert (s.kafka, s.redis, s.topics.prefix, s.partitions) == ("127.0.0.1:9", "127.0.0.1:8", "x.", 2)
    assert load_settings({"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_KAFKA": "e:1"}).kafka == "e:1"


def test_missing_endpoints_give_a_clear_error(tmp_path):
    s = load_settings({"STREAMRANK_HOME": str(tmp_path)})
    with pytest.raises(RuntimeError, match="STREAMRANK_KAFKA"):
        s.kafka_bootstrap
    with pytest.raises(RuntimeError, match="STREAMRANK_REDIS"):
        s.redis_url


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="PARTITIONS"):
        load_settings({"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_PARTITIONS": "0"})
    with pytest.raises(KeyError, match="unknown topic"):
        Topics().name("clicks")
