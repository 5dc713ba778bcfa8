"""The demo's users send each feedback event when its (scaled) event time comes."""

from __future__ import annotations

import threading
import time

import pytest

from contracts.events import FEEDBACK_SCHEMA, Feedback
from loop.users import FeedbackClock, scale_session
from loop.metrics import Served


def feedback(request_id: str, n: int, ts: float, kind: str = "click") -> Feedback:
    return Feedback(schema=FEEDBACK_SCHEMA, event_id=f"{request_id}:fb{n}", request_id=request_id,
                    item_id="d1" if kind != "session_end" else None, ts=ts, kind=kind, value=1.0)


def test_scale_session_compresses_times_around_the_moment_the_list_was_shown():
    events = [feedback("r", 0, 110.0), feedback("r", 1, 130.0, "session_end")]
    scaled = scale_session(events, shown_at=100.0, scale=0.1)
    assert [e.ts for e in scaled] == [101.0, 103.0]
    assert [e.event_id for e in scaled] == ["r:fb0", "r:fb1"] and events[0].ts == 110.0  # originals untouched
    assert scale_session(events, 100.0, 1.0) == events


def test_clock_sends_in_event_time_order_no_earlier_than_due_and_marks_the_last_event():
    sent: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def send(request_id: str, event: Feedback) -> None:
        with lock:
            sent.append((request_id, event.event_id, time.time()))

    clock = FeedbackClock(send)
    now = time.time()
    first, second = Served(t=now, request_id="a", ok=True, latency_s=0.0), Served(t=now, request_id="b", ok=True,
                                                                                    latency_s=0.0)
    clock.schedule("a", [feedback("a", 0, now + 0.30), feedback("a", 1, now + 0.60, "session_end")], first)
    clock.schedule("b", [feedback("b", 0, now + 0.10)], second)
    assert clock.pending() == 3
    clock.drain(timeout_s=5)
    clock.close()
    assert [e for _, e, _ in sent] == ["b:fb0", "a:fb0", "a:fb1"]
    due = {"b:fb0": now + 0.10, "a:fb0": now + 0.30, "a:fb1": now + 0.60}
    for _, event_id, at in sent:
        assert at >= due[event_id] - 0.01, event_id
    assert first.feedback_done_at >= now + 0.60 - 0.01 and second.feedback_done_at >= now + 0.10 - 0.01
    assert first.feedback_done_at >= second.feedback_done_at
    # each event's (event time, production time), for the staleness of what the window kept
    assert [ts for ts, _ in first.feedback_sent] == pytest.approx([now + 0.30, now + 0.60], abs=1e-5)
    assert all(produced >= ts - 0.01 for ts, produced in first.feedback_sent)
    assert first.feedback_sent[-1][1] == first.feedback_done_at
