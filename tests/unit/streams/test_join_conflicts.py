"""A second impression for a request is dead-lettered at every stage of the first one's life:
open, closing (its example sent, not yet acknowledged) and closed (tombstone).

A CI run (hostile-input fault test) once missed one conflicting impression's letter: its
original's session had ended in the same batch, so the entry was closing, and the conflict was
counted as a re-delivered duplicate instead of refused.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Future
from types import SimpleNamespace

from common.config import load_settings
from streams.agents import Joiner
from streams.dead_letter import DeadLetter
from streams.join import JoinConfig
from streams.metrics import StreamMetrics
from streams.rewards import RewardWeights

SETTINGS = load_settings({"STREAMRANK_HOME": "/nonexistent-streamrank-home"})
IMP, FB = SETTINGS.topics.impressions, SETTINGS.topics.feedback


def impression(event_id: str, order: tuple[str, ...] = ("a", "b")) -> bytes:
    return json.dumps({"schema": "streamrank.impression.v1", "event_id": event_id, "request_id": "r1", "ts": 100.0,
                       "user_id": "u", "items": [{"item_id": i, "position": p} for p, i in enumerate(order, 1)]}
                      ).encode()


def session_end() -> bytes:
    return json.dumps({"schema": "streamrank.feedback.v1", "event_id": "f-end", "request_id": "r1", "ts": 101.0,
                       "kind": "session_end"}).encode()


class Sent:
    """The join's writes, recorded: examples keep their delivery callback until the test acks them."""

    def __init__(self) -> None:
        self.examples: list[tuple[str, object]] = []
        self.table: dict[str, dict] = {}

    def example(self, rid: str, _example: bytes, callback) -> None:
        self.examples.append((rid, callback))

    def put(self, rid: str, entry: dict) -> None:
        self.table[rid] = entry

    def flush_soon(self) -> None:
        pass

    async def flush_in_background(self) -> None:
        pass


def joiner_with(sent: Sent) -> Joiner:
    joiner = Joiner(SimpleNamespace(), SETTINGS, JoinConfig(window_s=30.0), RewardWeights(), StreamMetrics("w"), {},
                    None, None)
    joiner.writes = sent
    return joiner


def ingest(joiner: Joiner, topic: str, value: bytes, offset: int, dirty: dict, dead: list[DeadLetter]) -> None:
    record = SimpleNamespace(value=value, key=b"r1", offset=offset, timestamp=None)
    joiner._ingest(record, topic, 0, "impressions" if topic == IMP else "feedback", dirty, dead)


def test_a_conflicting_impression_is_refused_while_the_first_ones_example_is_in_flight_and_after():
    sent = Sent()
    joiner = joiner_with(sent)
    dirty: dict[str, dict] = {}
    dead: list[DeadLetter] = []
    ingest(joiner, IMP, impression("i1"), 0, dirty, dead)
    ingest(joiner, IMP, impression("i1-conflict", ("b", "a")), 1, dirty, dead)  # open entry
    assert [(d.reason, d.offset) for d in dead] == [("conflicting_impression", 1)]

    ingest(joiner, FB, session_end(), 0, dirty, dead)
    closed = asyncio.run(joiner.close_due({0}, dirty))
    assert closed == ["r1"] and len(sent.examples) == 1  # sent, not yet acknowledged
    ingest(joiner, IMP, impression("i1"), 2, {}, dead)  # the same impression again: a re-delivery
    ingest(joiner, IMP, impression("i1-late-conflict", ("b", "a")), 3, {}, dead)  # closing entry
    assert [(d.reason, d.offset) for d in dead] == [("conflicting_impression", 1), ("conflicting_impression", 3)]
    assert dead[-1].value == impression("i1-late-conflict", ("b", "a")) and "'i1'" in dead[-1].detail
    assert joiner.metrics.counts["duplicates"] == 1

    acked: Future = Future()
    acked.set_result(None)
    sent.examples[0][1](acked)  # the broker acknowledged the example: the entry is a tombstone now
    assert "r1" not in joiner.closing and sent.table["r1"]["closed"] is not None
    joiner.state = {rid.encode(): entry for rid, entry in sent.table.items()}
    ingest(joiner, IMP, impression("i1-after-close", ("b", "a")), 4, {}, dead)  # closed entry
    assert [d.offset for d in dead] == [1, 3, 4] and {d.reason for d in dead} == {"conflicting_impression"}
