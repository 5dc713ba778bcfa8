"""`streamrank snapshots list|show|rollback|verify` against the real Redis."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from support import settings_env, stage_cli

from contracts.learner import LearnerState
from feature_store.snapshots import SnapshotRegistry
from streamrank.cli.features import register

pytestmark = pytest.mark.integration


@pytest.fixture
def cli():
    return stage_cli(register)


def state(value: float) -> LearnerState:
    return LearnerState(tensors={"w": torch.full((4, 4), value)}, meta={"offsets": {"examples": {"0": int(value)}}})


def test_snapshot_commands(cli, settings, redis_client):
    registry = SnapshotRegistry(redis_client, settings, announce_kafka=False)
    registry.publish("ldro", state(1.0), metrics={"ndcg": 0.5})
    registry.publish("ldro", state(2.0), metrics={"ndcg": 0.6})
    runner = CliRunner(env=settings_env(settings))

    listed = runner.invoke(cli, ["snapshots", "list", "ldro"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith("  v1") and lines[1].startswith("* v2") and '"ndcg": 0.6' in lines[1]
    assert json.loads(runner.invoke(cli, ["snapshots", "list", "--json"]).output) == {"ldro": "2"}

    shown = runner.invoke(cli, ["snapshots", "show", "ldro", "--version", "1"])
    assert json.loads(shown.output)["offsets"] == {"examples": {"0": 1}}

    rolled = runner.invoke(cli, ["snapshots", "rollback", "ldro", "1"])
    assert rolled.exit_code == 0 and "current v2 -> v1" in rolled.output
    assert registry.current_version("ldro") == "1"

    assert runner.invoke(cli, ["snapshots", "verify", "ldro"]).exit_code == 0
    redis_client.set(registry._blob_key("ldro", "2"), b"rotten")
    refused = runner.invoke(cli, ["snapshots", "verify", "ldro", "--all"])
    assert refused.exit_code == 1 and "v1: ok" in refused.output and "v2: REFUSED: SnapshotCorrupt" in refused.output
    bad = runner.invoke(cli, ["snapshots", "rollback", "ldro", "2"])
    assert bad.exit_code != 0 and "cannot roll ldro back to v2" in bad.output
    missing = runner.invoke(cli, ["snapshots", "show", "ldro", "--version", "9"])
    assert missing.exit_code != 0 and "no version '9'" in missing.output
