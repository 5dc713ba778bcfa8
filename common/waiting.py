"""Poll a condition until it holds, a deadline passes, or something says to give up.

One loop for every "wait until ready" in the project (the stack's brokers, worker and learner
child processes, the demo's start-up, tests). tenacity or backoff would do the same with a
decorator per call site; a 30-line function keeps the call sites plain and adds no dependency.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from common.errors import StreamrankError

T = TypeVar("T")


class WaitTimeout(StreamrankError, TimeoutError):
    """The condition did not hold within the timeout; ``last_error`` is the probe's last exception."""

    def __init__(self, message: str, last_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.last_error = last_error


class WaitAborted(StreamrankError, RuntimeError):
    """``abort`` reported a reason to stop waiting (a child process exited, say)."""


def poll_until(check: Callable[[], T], timeout: float, *, interval: float = 0.05, what: str = "condition",
               abort: Callable[[], str | None] | None = None,
               tolerate: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``check`` every ``interval`` s until it returns a truthy value, and return that value.

    ``abort`` is called first on every round; a non-empty string it returns raises
    :class:`WaitAborted` with that message. Exceptions of the ``tolerate`` types from ``check``
    count as "not yet" (a probe of a server that is still starting). After ``timeout`` seconds
    :class:`WaitTimeout` names ``what``. ``check`` runs at least once, even with ``timeout <= 0``.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if abort is not None and (reason := abort()):
            raise WaitAborted(reason)
        try:
            value = check()
        except tolerate as exc:
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error is not None else ""
            raise WaitTimeout(f"{what} not reached after {timeout:.0f}s{detail}", last_error)
        time.sleep(interval)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Like :func:`poll_until` but answers ``False`` on timeout instead of raising."""
    try:
        return bool(poll_until(predicate, timeout, interval=interval))
    except WaitTimeout:
        return False
