"""The impression emitter's request-path half: never blocks, counts what it cannot buffer."""

from __future__ import annotations

import time

from serving.emitter import ImpressionEmitter


def test_offer_never_blocks_and_counts_drops_when_the_buffer_is_full():
    emitter = ImpressionEmitter(bootstrap=None, topic="t", max_queue=2)  # no broker: nothing drains the buffer
    started = time.perf_counter()
    results = [emitter.offer(b"k", b"v") for _ in range(5)]
    assert time.perf_counter() - started < 1.0  # generous: a blocking put would hang forever here
    assert results == [True, True, False, False, False]
    assert emitter.stats.as_dict() == {"offered": 5, "acked": 0, "failed": 0, "dropped": 3, "too_large": 0,
                                       "producer_rebuilds": 0, "resent": 0}
    assert emitter.queued == 2


def test_lost_impressions_make_the_emitter_report_degraded_by_why():
    emitter = ImpressionEmitter(bootstrap=None, topic="t", max_queue=1)
    assert emitter.health() == []
    for _ in range(3):
        emitter.offer(b"k", b"v")
    assert emitter.health() == ["impressions: 2 dropped (buffer full) in the last 30 s"]
