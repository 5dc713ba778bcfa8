"""Dynamic micro-batching of ``POST /rerank``: concurrent requests scored in one padded batch.

Why: the models' cost per request is mostly fixed per call (hundreds of small torch ops for
50 rows), not per row, so scoring 8 concurrent requests in one pass costs far less than 8
passes (Triton's dynamic batcher does the same for GPU models). One scoring thread owns the
models; the event loop parses and validates requests and answers them, so parsing the next
requests overlaps the current batch.

When a batch closes: the scoring thread takes everything queued (at most ``max_batch``). It
waits for more only while a request has *arrived and is being parsed* (the handler calls
:meth:`MicroBatcher.expect` on arrival) and for at most ``window_s`` after the batch's first
request was queued; so a lone client never waits (p50 unchanged), and under load the batch
fills with the requests that are already in the server.

Versions are never mixed: each job carries the :class:`~serving.holder.Bundle` its handler read
on arrival, and a batch is split into one group per bundle; a hot swap between two requests of
one batch scores them on their own models. A group that raises is retried request by request,
so one bad request fails alone (its exception goes to its own handler).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

#: ``run(bundle, payloads) -> results``: one result per payload, in order.
BatchFn = Callable[[Any, Sequence[Any]], Sequence[Any]]


@dataclass
class Job:
    bundle: Any
    payload: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher did (``/metrics``, the bench): batches, requests, the largest batch."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def add(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


class MicroBatcher:
    """A scoring thread fed by ``await submit(bundle, payload)`` (see the module docstring)."""

    def __init__(self, run: BatchFn, window_s: float = 0.001, max_batch: int = 16, name: str = "rerank-batcher"):
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"window_s must be >= 0 and max_batch >= 1, got {window_s}, {max_batch}")
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._jobs: deque[Job] = deque()
        self._expected = 0  # requests arrived and not yet submitted (being read or validated)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- the event loop's side ---------------------------------------------------------------
    def expect(self) -> None:
        """A request arrived: a batch being formed may wait for it (up to the window)."""
        with self._cond:
            self._expected += 1

    def unexpect(self) -> None:
        """An expected request will not be submitted (it was refused while parsing)."""
        with self._cond:
            self._expected = max(0, self._expected - 1)
            self._cond.notify()

    async def submit(self, bundle: Any, payload: Any, expected: bool = True) -> Any:
        """Score ``payload`` on ``bundle`` in the next batch; its result, or its exception raised here."""
        loop = asyncio.get_running_loop()
        job = Job(bundle, payload, loop.create_future(), loop)
        with self._cond:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            if expected:
                self._expected = max(0, self._expected - 1)
            self._jobs.append(job)
            self._cond.notify()
        return await job.future

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the scoring thread ------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            deadline = self._jobs[0].queued_at + self.window_s
            while len(self._jobs) < self.max_batch and self._expected > 0 and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            self.stats.add(len(jobs))
            groups: dict[int, list[Job]] = {}
            for job in jobs:  # one group per bundle, in arrival order
                groups.setdefault(id(job.bundle), []).append(job)
            for group in groups.values():
                self._score(group)

    def _score(self, group: list[Job]) -> None:
        try:
            results: Sequence[Any] = self.run(group[0].bundle, [job.payload for job in group])
            if len(results) != len(group):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(group)} requests")
            outcomes = list(zip(group, results, [None] * len(group)))
        except Exception as exc:  # noqa: BLE001 - re-raised in the handlers
            if len(group) > 1:  # find the request at fault: each alone
                for job in group:
                    self._score([job])
                return
            outcomes = [(group[0], None, exc)]
        for job, result, exc in outcomes:
            job.loop.call_soon_threadsafe(_settle, job.future, result, exc)


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
