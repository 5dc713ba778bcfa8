"""The update stage of the learner runtime: its ordered tasks run inline or on one background thread.

The runtime (:mod:`learners.runtime.runner`) decodes each record and writes it into the batch
being built on the caller's thread; a full batch, and the offsets of records consumed without
learning, become *tasks* submitted here in log order. With ``threaded=True`` one worker thread
runs them, so the update of batch ``k`` (torch kernels release the GIL) overlaps the decoding and
collation of batch ``k + 1``: the update never waits for Python to build its tensors. At most
``depth`` tasks wait (backpressure on the decoder, and a bound on memory). Tasks run strictly in
submission order on one thread, so the model, the applied offsets and every checkpoint are the
same as inline; :meth:`UpdateStage.drain` waits for all of them and re-raises the first error
(a non-finite loss stops the learner as it did before, just one call later; the stage stays
failed and runs nothing more).

The same also needs the same intra-op thread count: torch sets a new thread's count from a
process-wide value that ``torch.set_num_threads`` called on *another* thread changes (a server's
start-up on its event-loop thread does), while a thread that already ran a parallel op keeps its
own. A reduction split over 1 thread and over 2 rounds differently, so the worker thread takes
the count of the thread that started it. (Found because the inline-vs-threaded test lost
bit-equality when it ran after a test that served through a TestClient.)

Measured (``bench/learn_bench.py``, ``prefetch_speedup``; BENCHMARKS.md, issue 16): at the
learners' sizes the overlap buys little, 1.00-1.07x on a quiet 2-core machine, because the update
holds the GIL most of the time (many kernels of tens of microseconds between Python-level autograd
and optimizer calls): beside the decoding thread an LDRO update took 0.136 s a batch where it took
0.111 s inline (``update_stage_s_per_batch_prefetch`` / ``_inline``). Hiding the decode needs
another process: ``RuntimeConfig.decode_workers`` (:mod:`learners.ingest.decode_pool`,
``streamrank learn --decode-workers N``) or ``--ranks``.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import torch

Task = Callable[[], None]


class UpdateStage:
    """Runs submitted tasks in order, inline (``threaded=False``) or on a daemon thread."""

    def __init__(self, threaded: bool = False, depth: int = 2, name: str = "learner-update") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.threaded = threaded
        self.name = name
        self._tasks: queue.Queue[Task | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, task: Task) -> None:
        """Run ``task`` after every task submitted before it (blocks while ``depth`` tasks wait)."""
        self._raise()
        if not self.threaded:
            task()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(torch.get_num_threads(),), name=self.name,
                                            daemon=True)
            self._thread.start()
        self._tasks.put(task)

    def drain(self) -> None:
        """Wait until every submitted task ran; re-raise the first task's error."""
        if self._thread is not None:
            self._tasks.join()
        self._raise()

    def close(self) -> None:
        """Drain and stop the thread (a later submit starts a new one)."""
        if self._thread is not None:
            self._tasks.join()
            self._tasks.put(None)
            self._thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:  # sticky: a failed stage stays failed
            raise self._error

    def _run(self, threads: int) -> None:
        torch.set_num_threads(threads)  # the submitting thread's count (see the module docstring)
        while True:
            task = self._tasks.get()
            try:
                if task is None:
                    return
                if self._error is None:  # after a failure, later tasks are dropped (their records stay unapplied)
                    task()
            except BaseException as exc:  # noqa: BLE001 - handed to the submitting thread
                self._error = exc
            finally:
                self._tasks.task_done()
