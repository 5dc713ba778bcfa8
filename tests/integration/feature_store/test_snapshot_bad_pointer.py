"""A bad ``current`` pointer heals on the next publish (issue 17), against the real Redis.

Each row is something an operator, a bug or bit rot could leave in ``NS:{model}:current``; before
the fix each one blocked every later publish (Lua ``attempt to compare number with nil`` or
``STALE current is already v999999``) until someone rolled back by hand.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from support import settings_env, stage_cli

from contracts.learner import LearnerState
from feature_store.snapshots import SnapshotCorrupt, SnapshotRegistry
from streamrank.cli.features import register

pytestmark = pytest.mark.integration


def state(value: float) -> LearnerState:
    return LearnerState(tensors={"w": torch.full((3,), value)}, meta={"offsets": {"examples": {"0": int(value)}}})


@pytest.fixture
def registry(settings, redis_client):
    reg = SnapshotRegistry(redis_client, settings, announce_kafka=False)
    yield reg
    reg.close()


BAD_POINTERS = {
    "garbage text": lambda reg, r: r.set(reg._key("ldro", "current"), b"garbage"),
    "far-future version": lambda reg, r: r.set(reg._key("ldro", "current"), b"999999"),
    "undecodable bytes": lambda reg, r: r.set(reg._key("ldro", "current"), b"\xff\xfe\x00"),
    "unreadable manifest": lambda reg, r: r.set(reg._manifest_key("ldro", "2"), b"{not json"),
    "manifest of the wrong types": lambda reg, r: r.set(reg._manifest_key("ldro", "2"), json.dumps(
        {**json.loads(r.get(reg._manifest_key("ldro", "2"))), "created_at": "yesterday"})),
    "manifest deleted": lambda reg, r: r.delete(reg._manifest_key("ldro", "2")),
}


@pytest.mark.parametrize("damage", BAD_POINTERS.values(), ids=BAD_POINTERS.keys())
def test_the_next_publish_replaces_a_bad_pointer_and_counts_it(registry, redis_client, damage):
    registry.publish("ldro", state(1.0))
    registry.publish("ldro", state(2.0))
    damage(registry, redis_client)
    assert registry.pointer_problem("ldro") is not None
    assert registry.good_current_version("ldro") is None

    manifest = registry.publish("ldro", state(3.0))

    assert manifest.version == "3" and manifest.parent is None  # a bad pointer is no parent
    assert registry.current_version("ldro") == "3" and registry.pointer_problem("ldro") is None
    assert registry.load("ldro")[1].tensors["w"].tolist() == [3.0, 3.0, 3.0]
    assert registry.bad_pointer_heals("ldro") == 1 and registry.bad_pointers_healed == 1
    registry.publish("ldro", state(4.0))  # a good pointer is not counted as healed
    assert registry.bad_pointer_heals("ldro") == 1


def test_a_good_pointer_still_refuses_a_stale_publish(registry):
    v1 = registry.publish("ldro", state(1.0))
    registry.publish("ldro", state(2.0))
    with pytest.raises(SnapshotCorrupt, match="STALE current is already v2"):
        registry._point_to(v1, event="publish")
    assert registry.current_version("ldro") == "2" and registry.bad_pointer_heals("ldro") == 0


def test_a_rollback_also_replaces_a_bad_pointer(registry, redis_client):
    registry.publish("ldro", state(1.0))
    redis_client.set(registry._key("ldro", "current"), b"999999")
    assert registry.rollback("ldro", "1").version == "1"
    assert registry.current_version("ldro") == "1" and registry.bad_pointer_heals("ldro") == 1


@pytest.mark.parametrize("seq", [None, b"not a number", b"1"], ids=["seq lost", "seq garbage", "seq behind"])
def test_a_lost_or_garbage_sequence_never_reuses_a_kept_version(registry, redis_client, seq):
    registry.publish("ldro", state(1.0))
    registry.publish("ldro", state(2.0))
    if seq is None:
        redis_client.delete(registry._key("ldro", "seq"))
    else:
        redis_client.set(registry._key("ldro", "seq"), seq)
    assert registry.publish("ldro", state(3.0)).version == "3"
    assert registry.load("ldro", "2")[1].tensors["w"].tolist() == [2.0, 2.0, 2.0]  # v2 not overwritten


def test_snapshots_list_shows_a_bad_version_and_a_bad_pointer_instead_of_dying(registry, redis_client, settings):
    registry.publish("ldro", state(1.0))
    registry.publish("ldro", state(2.0))
    redis_client.set(registry._manifest_key("ldro", "1"), b"\x00garbage")
    redis_client.set(registry._key("ldro", "current"), b"999999")
    cli, runner = stage_cli(register), CliRunner(env=settings_env(settings))

    listed = runner.invoke(cli, ["snapshots", "list", "ldro"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith("BAD POINTER: current pointer v999999") and "no version '999999'" in lines[0]
    assert lines[1].startswith("! v1") and "BAD: unreadable manifest" in lines[1]
    assert lines[2].startswith("  v2")
    rows = json.loads(runner.invoke(cli, ["snapshots", "list", "ldro", "--json"]).output)
    assert [(r["version"], bool(r["bad"])) for r in rows] == [("1", True), ("2", False)]
    overview = runner.invoke(cli, ["snapshots", "list"])
    assert overview.exit_code == 0 and "ldro  current v999999  BAD POINTER" in overview.output
    verified = runner.invoke(cli, ["snapshots", "verify", "ldro", "--all"])
    assert verified.exit_code == 1 and "v1: REFUSED: SnapshotCorrupt" in verified.output and "v2: ok" in verified.output
