"""The micro-batcher: concurrent requests share a batch, bundles are never mixed, a bad request
fails alone, and a lone request does not wait for the window."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.microbatch import MicroBatcher


class Recorder:
    """A batch function that records each call's bundle and payloads; payload "bad" raises."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, list]] = []
        self.gate = gate

    def __call__(self, bundle, payloads):
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append((bundle, list(payloads)))
        if "bad" in payloads:
            raise ValueError("bad payload")
        return [(bundle, p) for p in payloads]


async def behind_a_running_batch(batcher: MicroBatcher, gate: threading.Event, jobs: list[tuple[str, object]]):
    """Submit ``jobs`` ((bundle, payload) pairs) while the scoring thread is busy with a first request
    (blocked on ``gate``), then let it go: the jobs can only be scored in the batches that follow.
    Returns their results (exceptions included), in submission order."""
    blocker = asyncio.ensure_future(batcher.submit("v1", "blocker", expected=False))
    await asyncio.sleep(0.05)  # the scoring thread now waits on the gate with the blocker alone
    futures = [asyncio.ensure_future(batcher.submit(bundle, payload, expected=False)) for bundle, payload in jobs]
    await asyncio.sleep(0.05)
    gate.set()
    assert await blocker == ("v1", "blocker")
    return await asyncio.gather(*futures, return_exceptions=True)


def test_requests_queued_while_a_batch_runs_are_scored_together_in_one_call():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = MicroBatcher(run, window_s=0.0, max_batch=16)
    answers = asyncio.run(behind_a_running_batch(batcher, gate, [("v1", i) for i in range(1, 6)]))
    batcher.close()
    assert answers == [("v1", i) for i in range(1, 6)]
    assert [len(p) for _, p in run.calls] == [1, 5]
    assert batcher.stats.batches == 2 and batcher.stats.requests == 6 and batcher.stats.largest == 5


def test_a_batch_is_split_by_bundle_so_a_swap_inside_a_batch_never_mixes_versions():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = MicroBatcher(run, window_s=0.0, max_batch=16)
    jobs = [(bundle, i) for i, bundle in enumerate(["v1", "v2", "v1", "v2", "v2"])]
    answers = asyncio.run(behind_a_running_batch(batcher, gate, jobs))
    batcher.close()
    assert answers == [("v1", 0), ("v2", 1), ("v1", 2), ("v2", 3), ("v2", 4)]
    assert run.calls[1:] == [("v1", [0, 2]), ("v2", [1, 3, 4])]


def test_one_bad_request_fails_alone_and_its_batch_neighbours_are_answered():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = MicroBatcher(run, window_s=0.0, max_batch=16)
    ok1, bad, ok2 = asyncio.run(behind_a_running_batch(batcher, gate, [("v1", "ok1"), ("v1", "bad"), ("v1", "ok2")]))
    batcher.close()
    assert ok1 == ("v1", "ok1") and ok2 == ("v1", "ok2")
    assert isinstance(bad, ValueError) and "bad payload" in str(bad)


def test_max_batch_caps_a_batch():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = MicroBatcher(run, window_s=0.0, max_batch=3)
    jobs = [("v1", i) for i in range(7)]
    assert asyncio.run(behind_a_running_batch(batcher, gate, jobs)) == jobs
    batcher.close()
    assert [len(p) for _, p in run.calls] == [1, 3, 3, 1]


def test_a_lone_request_does_not_wait_for_the_window():
    batcher = MicroBatcher(Recorder(), window_s=30.0, max_batch=16)

    async def main():
        batcher.expect()
        return await asyncio.wait_for(batcher.submit("A", 1), timeout=5.0)

    assert asyncio.run(main()) == ("A", 1)
    batcher.close()


def test_the_window_waits_for_a_request_that_has_arrived_and_is_being_parsed():
    run = Recorder()
    batcher = MicroBatcher(run, window_s=30.0, max_batch=16)

    async def main():
        batcher.expect()
        batcher.expect()  # a second request arrived; it is still being parsed
        first = asyncio.ensure_future(batcher.submit("A", 1))
        await asyncio.sleep(0.2)
        assert not first.done()  # the batch waits for the expected request
        second = asyncio.ensure_future(batcher.submit("A", 2))
        return await asyncio.wait_for(asyncio.gather(first, second), timeout=5.0)

    assert asyncio.run(main()) == [("A", 1), ("A", 2)]
    batcher.close()
    assert run.calls == [("A", [1, 2])]


def test_a_request_refused_while_parsing_releases_the_window():
    run = Recorder()
    batcher = MicroBatcher(run, window_s=30.0, max_batch=16)

    async def main():
        batcher.expect()
        batcher.expect()
        first = asyncio.ensure_future(batcher.submit("A", 1))
        await asyncio.sleep(0.1)
        batcher.unexpect()  # the other request was a 422: nothing more is coming
        return await asyncio.wait_for(first, timeout=5.0)

    assert asyncio.run(main()) == ("A", 1)
    batcher.close()


@pytest.mark.parametrize("window, size", [(-0.001, 4), (0.001, 0)])
def test_bad_settings_are_refused(window, size):
    with pytest.raises(ValueError, match="window_s must be >= 0 and max_batch >= 1"):
        MicroBatcher(Recorder(), window_s=window, max_batch=size)
