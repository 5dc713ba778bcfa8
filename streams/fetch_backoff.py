"""Client-side long poll: pause a consumer's fetches to a broker that answered with no records.

Why: a Kafka broker holds a fetch request until data arrives or ``fetch.max.wait.ms``
passes (Faust asks for 1,500 ms), so a caught-up consumer sends about one request per
second. The embedded noida broker answers at once instead (measured: an idle
``AIOKafkaConsumer`` sent 8,488 fetch requests in 5 s, a quarter of a core in the client
alone). In the streams worker, Faust's consumer thread reads the whole backlog into the stream
buffer in the first second and then spins like that for the rest of the run, taking CPU and
the GIL from the agent: py-spy put 17% of the worker's samples in fetch-request socket
writes (bench/join_bench.py, BENCHMARKS.md "Streams join").

:func:`install` wraps aiokafka's per-node fetch task so that a fetch that brought no new
records waits ``backoff_s`` before the node may be fetched from again (the wait happens while
the node counts as in flight, which is what keeps the fetcher loop from re-sending). A
fetch that brought records returns at once, so a consumer with a backlog is never slowed,
and on a broker that does honour the max wait an empty answer already took ~1.5 s, so the
extra pause is noise. The cost is at most ``backoff_s`` of extra latency for the first record
after an idle spell.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

#: The unwrapped aiokafka method (kept so :func:`uninstall` and tests can restore it).
_ORIGINAL = Fetcher._proc_fetch_request  # noqa: SLF001
_state: dict[str, float] = {"backoff_s": 0.0}


async def _proc_fetch_request_with_backoff(self: Fetcher, assignment: Any, node_id: int, request: Any) -> bool:
    got_records = await _ORIGINAL(self, assignment, node_id, request)
    backoff = _state["backoff_s"]
    if not got_records and backoff > 0 and assignment.active:
        try:
            await asyncio.sleep(backoff)
        except asyncio.CancelledError:  # close() or unassignment: same contract as aiokafka's own task
            return False
    return got_records


def install(backoff_s: float) -> None:
    """Make every aiokafka consumer in this process wait ``backoff_s`` after an empty fetch (0 disables)."""
    if backoff_s < 0:
        raise ValueError(f"empty-fetch backoff must be >= 0, got {backoff_s!r}")
    _state["backoff_s"] = float(backoff_s)
    Fetcher._proc_fetch_request = _proc_fetch_request_with_backoff  # noqa: SLF001


def uninstall() -> None:
    """Restore aiokafka's own fetch task."""
    _state["backoff_s"] = 0.0
    Fetcher._proc_fetch_request = _ORIGINAL  # noqa: SLF001


def installed_backoff_s() -> float:
    """The active backoff (0.0 when not installed)."""
    return _state["backoff_s"] if Fetcher._proc_fetch_request is _proc_fetch_request_with_backoff else 0.0  # noqa: SLF001
