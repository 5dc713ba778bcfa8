"""Replay pacing and limits (the broker path itself is covered in tests/integration/test_replay.py)."""

from __future__ import annotations

import json
import time

import pytest

from common.config import load_settings
from streams.replay import replay


class RecordingProducer:
    """Collects (monotonic time, topic, key, value) instead of sending: isolates the pacing logic."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, bytes, bytes]] = []

    def send(self, topic, key, value):
        self.sent.append((time.monotonic(), topic, key, value))
        return self

    def add_errback(self, _callback):  # the future kafka-python's send returns: this one never fails
        return self

    def flush(self):
        pass


def write_log(path, gaps):
    ts, lines = 1000.0, []
    for n, gap in enumerate(gaps):
        ts += gap
        lines.append(json.dumps({"schema": "streamrank.feedback.v1", "event_id": f"e{n}", "request_id": f"r{n}",
                                 "item_id": "a", "ts": ts, "kind": "click", "value": 1}))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def settings(tmp_path):
    return load_settings({"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_KAFKA": "unused:1",
                          "STREAMRANK_TOPIC_PREFIX": "p."})


def test_speed_scales_event_time_gaps(tmp_path, settings):
    log = tmp_path / "log.jsonl"
    write_log(log, [0, 2.0, 0, 4.0])  # event-time gaps in seconds
    producer = RecordingProducer()
    replay([log], settings, speed=10.0, producer=producer, progress=False)
    times = [t for t, *_ in producer.sent]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.2 - 0.01 and gaps[2] >= 0.4 - 0.01  # never earlier than the scaled gap
    assert times[-1] - times[0] >= 0.6 - 0.01
    assert [topic for _, topic, *_ in producer.sent] == ["p.feedback"] * 4
    assert [key for _, _, key, _ in producer.sent] == [b"r0", b"r1", b"r2", b"r3"]


def test_limit_counts_lines_and_max_speed_does_not_sleep(tmp_path, settings):
    log = tmp_path / "log.jsonl"
    write_log(log, [0, 3600.0, 3600.0, 3600.0])
    producer = RecordingProducer()
    started = time.monotonic()
    summary = replay([log], settings, limit=3, producer=producer, progress=False)
    assert summary.events == 3 and len(producer.sent) == 3
    assert time.monotonic() - started < 60  # hours of event time were not slept through


def test_bad_speed_is_refused(tmp_path, settings):
    with pytest.raises(ValueError, match="speed"):
        replay([tmp_path / "none.jsonl"], settings, speed=0, producer=RecordingProducer(), progress=False)
