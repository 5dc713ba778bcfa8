"""Decode worker processes for the learner runtime: record bytes decoded off the update's process.

Why: a learner process decodes each ``examples`` record (msgspec + the contract's checks, ~0.1 ms
for a 50-item list with 300 float32 features) and writes it into the batch arrays on the same
interpreter that runs the update, and an update thread does not overlap that work because both
hold the GIL most of the time (``learners/runtime/pipeline.py``: an LDRO update beside the decoding
thread took 0.136 s a batch instead of 0.111 s). Here ``workers`` separate processes
(:mod:`learners.ingest.decode_worker`, started with :mod:`subprocess`, not fork) decode chunks of
records into shared-memory slots (:mod:`learners.ingest.slots`: unlinked ``/dev/shm`` files whose
descriptors the workers inherit), and the learner process only copies
the accepted rows into its batch (:meth:`learners.ingest.lists.ListArrays.add_rows`, one block copy
per array for a chunk's run of rows) while its update runs.

What stays in the learner process, so every guarantee holds unchanged: the offsets, seeks and
deduplication (a worker only says what each record *is*), the batch boundaries, the dead-letter
records (built from the worker's verdict: the same reason, field and detail as
:func:`contracts.fast_decode.decode_example` gives in process, since it is that function), and every
record the worker hands back as ``["main"]`` (features named for the feature fill, longer lists,
anything unexpected), which the runtime decodes itself. If a worker dies the pool stops, logs why, and
the chunk in flight and everything after it are decoded in process: nothing is lost or applied twice.

Chunks are dispatched round-robin and collected strictly in order (:meth:`DecodePool.verdicts`), with
``slots`` chunks in flight per worker; the slot files have no name once created (nothing is left in
``/dev/shm`` whichever process dies, whenever). Only list-wise learners (LDRO, GRPO, DRPO: builders
with a :meth:`~learners.ingest.lists.ListArrays.spec`) use it; the calibrators' rows are cheap to
decode and their update dominates (``bench/learn_bench.py``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from learners.ingest.slots import Slot, read_frame, write_frame

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
MAIN = ["main"]
#: one chunk: ``(verdicts, arrays)``, a verdict per record; ``arrays`` are the slot's rows that the
#: ``ok`` verdicts point at (``None`` when every verdict is ``main``), valid until the iterator is advanced
Chunk = tuple[list[list], dict[str, np.ndarray] | None]


class DecodePoolError(RuntimeError):
    """A decode worker could not be started or stopped answering."""


class _Worker:
    def __init__(self, index: int, spec: dict[str, Any], rows: int, items: int, slots: int, input_bytes: int,
                 max_bytes: int, fill: bool, timeout_s: float) -> None:
        d, k = int(spec["n_features"]), len(spec["tasks"])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1"}
        self.timeout_s = timeout_s
        self.slots: list[Slot] = []
        self.proc: subprocess.Popen | None = None
        started = False
        try:
            for _ in range(slots):
                self.slots.append(Slot.create(rows, items, d, k, input_bytes, prefix=f"streamrank-decode-{os.getpid()}-"))
            fds = [slot.fd for slot in self.slots]
            self.proc = subprocess.Popen([sys.executable, "-m", "learners.ingest.decode_worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(ROOT),
                                         bufsize=0, pass_fds=fds)
            write_frame(self.proc.stdin, {"spec": spec, "rows": rows, "items": items, "input_bytes": input_bytes,
                                          "max_bytes": max_bytes, "fill": fill, "fds": fds})
            ready = read_frame(self.proc.stdout, self.timeout_s + 60)  # the first answer waits for imports
            started = bool(ready) and "ready" in ready
        finally:
            if not started:
                self.close()
        if not started:
            code = self.proc.returncode if self.proc is not None else None
            raise DecodePoolError(f"decode worker {index} did not start (exit code {code})")
        self.free: deque[int] = deque(range(slots))

    def send(self, slot: int, values: Sequence[bytes]) -> None:
        self.slots[slot].write_input(list(values))
        write_frame(self.proc.stdin, {"slot": slot, "sizes": [len(v) for v in values]})

    def receive(self) -> dict[str, Any]:
        try:
            reply = read_frame(self.proc.stdout, self.timeout_s)
        except TimeoutError as exc:  # a hung worker: the pool stops, the process decodes the rest
            self.proc.kill()
            raise DecodePoolError(f"decode worker pid {self.proc.pid} did not answer: {exc}") from None
        if reply is None:
            raise DecodePoolError(f"decode worker pid {self.proc.pid} stopped (exit code {self.proc.poll()})")
        return reply

    def close(self) -> None:
        if self.proc is not None:  # end of input: the worker exits; one that does not is killed
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for slot in self.slots:
            slot.close()


class DecodePool:
    """``workers`` decode processes, each with ``slots`` chunks of up to ``rows`` records in flight.

    The defaults (4 slots of 64 records, lists of up to 100 items: ~31 MB of ``/dev/shm`` per worker
    with 300 features) keep a whole 256-list batch in flight per worker, so the workers decode the next
    batch while this process runs the update, whether that runs inline or on the update thread."""

    def __init__(self, spec: dict[str, Any], workers: int, rows: int = 64, items: int = 100, slots: int = 4,
                 input_bytes: int = 8 << 20, max_bytes: int = 1_000_000, fill: bool = False,
                 timeout_s: float = 120.0) -> None:
        """``timeout_s``: a chunk not answered within it means a hung worker (a chunk takes ~15 ms)."""
        if workers < 1 or rows < 1 or slots < 1:
            raise ValueError(f"workers, rows and slots must be >= 1, got {workers}, {rows}, {slots}")
        self.rows, self.input_bytes = rows, input_bytes
        self.workers: list[_Worker] = []
        self.broken: str | None = None
        try:
            for i in range(workers):
                self.workers.append(_Worker(i, spec, rows, items, slots, input_bytes, max_bytes, fill, timeout_s))
        except BaseException:
            self.close()
            raise
        self._next = 0  # round-robin

    def _chunks(self, values: Sequence[bytes]) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each chunk: up to ``rows`` records and ``input_bytes`` bytes; a record
        too large for a slot is a chunk of its own, decoded in process (stop - start == 0 marks it)."""
        start = 0
        while start < len(values):
            stop, size = start, 0
            while stop < len(values) and stop - start < self.rows and size + len(values[stop]) <= self.input_bytes:
                size += len(values[stop])
                stop += 1
            if stop == start:  # one record larger than the input area
                yield start, start
                start += 1
            else:
                yield start, stop
                start = stop

    def verdicts(self, values: Sequence[bytes]) -> Iterator[Chunk]:
        """The verdicts of ``values`` chunk by chunk, in order (module docstring); ``["main"]`` for all
        the rest once the pool is broken. A chunk's slot is reused only after the caller asked for the
        next chunk (or closed the iterator), so its arrays are valid while the caller copies them."""
        if self.broken:
            if values:
                yield [MAIN] * len(values), None
            return
        chunks = deque(self._chunks(values))
        flight: deque[tuple[_Worker, int, int, int]] = deque()  # worker, slot, start, stop
        done = 0
        try:
            while chunks or flight:
                while chunks:  # keep every free slot busy
                    start, stop = chunks[0]
                    if stop == start:
                        if flight:
                            break  # in order: wait for the chunks before it
                        chunks.popleft()
                        yield [MAIN], None
                        done += 1
                        continue
                    worker = self.workers[self._next]
                    if not worker.free:
                        break
                    chunks.popleft()
                    slot = worker.free.popleft()
                    worker.send(slot, values[start:stop])
                    flight.append((worker, slot, start, stop))
                    self._next = (self._next + 1) % len(self.workers)
                if not flight:
                    if chunks and chunks[0][0] != chunks[0][1]:
                        raise DecodePoolError("no free slot and nothing in flight (a slot was never given back)")
                    continue
                worker, slot, start, stop = flight.popleft()
                reply = worker.receive()
                if reply.get("slot") != slot or len(reply["verdicts"]) != stop - start:
                    raise DecodePoolError(f"decode worker pid {worker.proc.pid} answered out of order")
                try:
                    yield reply["verdicts"], worker.slots[slot].arrays
                    done += stop - start
                finally:  # also when the caller closes the iterator after this chunk
                    worker.free.append(slot)
        except (DecodePoolError, OSError, ValueError) as exc:
            self.broken = str(exc)
            log.error("decode workers stopped (%s): decoding in process from here on", exc)
            self.close()
            flight.clear()
            if len(values) > done:
                yield [MAIN] * (len(values) - done), None
        finally:  # the caller stopped early (an error of its own): collect the answers still owed
            if flight and not self.broken:
                try:
                    for worker, slot, _, _ in flight:
                        worker.receive()
                        worker.free.append(slot)
                except (DecodePoolError, OSError, ValueError) as exc:
                    self.broken = str(exc)
                    self.close()

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids (benches read their CPU time)."""
        return [worker.proc.pid for worker in self.workers]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []
