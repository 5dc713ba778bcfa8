"""Replay real-data logs into the real broker and read them back."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from support import fresh_topics

from contracts.events import decode
from simulator.click_models import ClickModel
from simulator.kuairand import load_kuairand
from simulator.letor import load_letor
from simulator.logs import simulated_sessions, write_log
from simulator.obd import obd_events
from simulator.session import SessionSimulator, SimulatorConfig
from streams.consume import read_topic
from streams.replay import replay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def letor_log(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("logs") / "letor.jsonl"
    dataset = load_letor(shared_data / "letor" / "rank.train")
    sim = SessionSimulator(dataset, load_kuairand(shared_data / "kuairand"),
                           SimulatorConfig(click_model=ClickModel("pbm")), seed=3, namespace="letor")
    write_log(simulated_sessions(sim, 120), path)
    return path


def topic_contents(settings, logical: str, expected: int) -> dict[int, list[tuple[bytes, bytes]]]:
    by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    read_topic(settings.kafka_bootstrap, settings.topics.name(logical),
               lambda r: by_partition[r.partition].append((r.key, r.value)), expected=expected, idle_s=5)
    return dict(by_partition)


def test_replay_routes_every_event_to_its_topic_keyed_by_request_id(settings, letor_log):
    lines = letor_log.read_bytes().splitlines()
    summary = replay([letor_log], settings, progress=False)
    assert summary.errors == []
    n_imp = sum(b'"streamrank.impression.v1"' in line for line in lines)
    assert summary.by_topic == {"impressions": n_imp, "feedback": len(lines) - n_imp}
    impressions = topic_contents(settings, "impressions", n_imp)
    records = [rec for part in impressions.values() for rec in part]
    assert len(records) == n_imp
    for key, value in records:
        assert decode(value).request_id.encode() == key
    # Per-partition order is the log's order.
    log_order = [line for line in lines if b'"streamrank.impression.v1"' in line]
    for part in impressions.values():
        values = [v for _, v in part]
        positions = [log_order.index(v) for v in values]
        assert positions == sorted(positions)


def records_by_offset(settings, logical: str, expected: int) -> dict[int, dict[int, tuple[bytes, bytes]]]:
    by_partition: dict[int, dict[int, tuple[bytes, bytes]]] = defaultdict(dict)
    read_topic(settings.kafka_bootstrap, settings.topics.name(logical),
               lambda r: by_partition[r.partition].__setitem__(r.offset, (r.key, r.value)), expected=expected,
               idle_s=5)
    return dict(by_partition)


def test_replaying_twice_gives_identical_topic_contents(embedded_stack, letor_log):
    """Same partitions, same offsets, same records. The session's broker is shared by the whole suite,
    and its storage keeper (common.retention) deletes the oldest records once the log passes its bound:
    read records first, but a fresh test topic's too when those are not enough: a topic may have lost a
    prefix by the time it is read (a CI run saw every partition of the second topic start ~40 records in). So each partition
    must end at the same offset in both topics, what either holds must be one run of offsets up to
    that end, and the records at the offsets both still hold must be identical."""
    first, second = fresh_topics(embedded_stack), fresh_topics(embedded_stack)
    n = len(letor_log.read_bytes().splitlines())
    replay([letor_log], first, progress=False)
    replay([letor_log], second, progress=False)
    for logical in ("impressions", "feedback"):
        total = n  # upper bound; read stops when idle
        a, b = records_by_offset(first, logical, total), records_by_offset(second, logical, total)
        assert a.keys() == b.keys() and a
        compared = 0
        for partition in a:
            left, right = a[partition], b[partition]
            for held in (left, right):
                assert sorted(held) == list(range(min(held), max(held) + 1))  # a trim only cuts a prefix
            assert max(left) == max(right)
            both = left.keys() & right.keys()
            assert {o: left[o] for o in both} == {o: right[o] for o in both}
            compared += len(both)
        assert compared >= sum(len(v) for v in a.values()) // 2


def test_malformed_lines_are_reported_with_line_numbers_and_do_not_stop_replay(settings, tmp_path, letor_log):
    good = letor_log.read_bytes().splitlines()[:10]
    bad_log = tmp_path / "mixed.jsonl"
    bad_log.write_bytes(b"\n".join([good[0], b"{not json", good[1], b'{"schema":"streamrank.feedback.v1"}',
                                    *good[2:]]) + b"\n")
    summary = replay([bad_log], settings, progress=False)
    assert summary.events == 10
    assert [(e.line, e.reason) for e in summary.errors] == [(2, "bad_json"), (4, "missing_field")]


def test_obd_log_replays_with_propensities(settings, tmp_path, shared_data):
    path = tmp_path / "obd.jsonl"
    csv_path = tmp_path / "obd.csv"
    rows = (shared_data / "obd" / "random" / "all" / "all.csv").read_text().splitlines()[:301]
    csv_path.write_text("\n".join(rows) + "\n")
    summary = write_log(obd_events(csv_path), path)
    assert summary.impressions == 300
    result = replay([path], settings, progress=False)
    assert result.by_topic["impressions"] == 300
    got = topic_contents(settings, "impressions", 300)
    events = [decode(v) for part in got.values() for _, v in part]
    assert len(events) == 300
    assert all(0 < e.items[0].propensity <= 1 for e in events)


def _with_oversized_first(letor_log: Path, tmp_path: Path, size: int) -> tuple[Path, int]:
    """``letor_log`` with a schema-valid impression of about ``size`` bytes (a long context string)
    as line 1; returns the new log and how many normal lines follow it."""
    import json

    lines = [line for line in letor_log.read_text().splitlines() if line.strip()]
    big = json.loads(next(line for line in lines if '"streamrank.impression.v1"' in line))
    big["request_id"] = "oversized-request"
    big["context"] = {"blob": "x" * size}
    path = tmp_path / "with_oversized.jsonl"
    path.write_text("\n".join([json.dumps(big), *lines]) + "\n")
    return path, len(lines)


def test_an_oversized_line_is_reported_and_never_sent(settings, tmp_path, letor_log):
    path, normal = _with_oversized_first(letor_log, tmp_path, 2 * 1024 * 1024)
    summary = replay([path], settings, progress=False)
    assert [(e.line, e.reason) for e in summary.errors] == [(1, "too_large")]
    assert (summary.events, summary.producer_rebuilds, summary.lost) == (normal, 0, 0)


def test_a_producer_the_broker_wedged_is_rebuilt_and_every_normal_line_lands(settings, tmp_path, letor_log):
    """A limit above the broker's own (~1 MB): the line is sent, the broker refuses it, and the
    idempotent producer that fails every later send is replaced (issue 17)."""
    from dataclasses import replace as with_fields

    path, normal = _with_oversized_first(letor_log, tmp_path, 2 * 1024 * 1024)
    summary = replay([path], with_fields(settings, max_event_bytes=8 << 20), progress=False)
    assert summary.errors == [] and summary.events == normal + 1
    assert summary.lost == 1 and summary.producer_rebuilds >= 1, summary.as_dict()
    landed = [record for logical in ("impressions", "feedback")
              for records in topic_contents(settings, logical, expected=1).values() for record in records]
    normal_lines = {line.encode() for line in path.read_text().splitlines()[1:] if line.strip()}
    # at least once: every normal line lands; one the broker took just before the producer broke may
    # land twice when it is sent again (the join drops a repeated event id)
    assert {value for _key, value in landed} == normal_lines, summary.as_dict()
    assert normal <= len(landed) <= normal + summary.resent, summary.as_dict()
