"""The shared-memory slot a decode worker fills and the learner process reads: layout and framing.

A *slot* is one unlinked file of ``/dev/shm`` (a tmpfs: memory, not disk) whose descriptor the
worker inherits, mapped by both processes. It
holds the record bytes of one chunk (the *input* area, written by the learner process) and the
chunk's rows in the :func:`learners.ingest.lists.array_shapes` layout (written by the worker).
Both sides compute the same offsets from the same numbers (:func:`slot_layout`), so nothing but
small JSON frames crosses the pipes: no pickle across the process boundary.

Frames on the worker's stdin/stdout: a 4-byte little-endian length, then that many bytes of JSON.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import struct
import tempfile
import time
from typing import Any, BinaryIO

import numpy as np

from learners.ingest.lists import array_shapes

ALIGN = 64
_LENGTH = struct.Struct("<I")


def slot_layout(rows: int, n: int, d: int, k: int, input_bytes: int) -> tuple[dict[str, tuple[int, tuple, type]], int, int]:
    """``({name: (offset, shape, dtype)}, input_offset, total_bytes)`` of a slot."""
    offset, layout = 0, {}
    for name, (shape, dtype) in array_shapes(rows, n, d, k).items():
        layout[name] = (offset, shape, dtype)
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        offset += -(-size // ALIGN) * ALIGN
    return layout, offset, offset + input_bytes


class Slot:
    """One mapped slot: the row arrays (numpy views) and the input area.

    :meth:`create` makes an anonymous file (created in ``/dev/shm``, unlinked at once) and keeps its
    descriptor ``fd`` open so a worker process can inherit it (``subprocess.Popen(pass_fds=...)``) and
    map it with ``Slot(fd, ...)``: no name exists once ``create`` returns, so nothing is left behind
    whenever either process dies."""

    def __init__(self, fd: int, rows: int, n: int, d: int, k: int, input_bytes: int) -> None:
        layout, self.input_offset, total = slot_layout(rows, n, d, k, input_bytes)
        self.fd, self.input_bytes, self.total = fd, input_bytes, total
        self.map = mmap.mmap(fd, total)
        self.arrays = {name: np.ndarray(shape, dtype=dtype, buffer=self.map, offset=off)
                       for name, (off, shape, dtype) in layout.items()}

    @classmethod
    def create(cls, rows: int, n: int, d: int, k: int, input_bytes: int, prefix: str = "streamrank-decode-") -> "Slot":
        total = slot_layout(rows, n, d, k, input_bytes)[2]
        fd, path = tempfile.mkstemp(prefix=prefix, dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        try:
            os.unlink(path)
            os.ftruncate(fd, total)
            return cls(fd, rows, n, d, k, input_bytes)
        except BaseException:
            os.close(fd)
            raise

    def write_input(self, values: list[bytes]) -> None:
        """Copy ``values`` one after another into the input area (one copy each, no joined buffer)."""
        total = sum(len(v) for v in values)
        if total > self.input_bytes:
            raise ValueError(f"chunk of {total} bytes over the slot's {self.input_bytes}")
        at = self.input_offset
        for value in values:
            self.map[at:at + len(value)] = value
            at += len(value)

    def read_input(self, sizes: list[int]) -> list[bytes]:
        out, at = [], self.input_offset
        for size in sizes:
            out.append(self.map[at:at + size])
            at += size
        return out

    def close(self) -> None:
        self.arrays = {}
        try:
            self.map.close()
        except BufferError:  # a numpy view still alive somewhere: the mapping goes with the process
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass


def write_frame(stream: BinaryIO, doc: Any) -> None:
    data = memoryview(_LENGTH.pack(len(payload := json.dumps(doc, separators=(",", ":")).encode())) + payload)
    while data:  # an unbuffered pipe may take part of it
        written = stream.write(data)
        data = data[written if written is not None else len(data):]
    stream.flush()


def read_frame(stream: BinaryIO, timeout_s: float | None = None) -> Any | None:
    """The next frame's JSON; ``None`` at end of stream (the other side closed or died).

    Reads ``stream.fileno()`` directly (frames are the only thing read from it, so no buffer sits in
    between); a frame that has not fully arrived within ``timeout_s`` raises :class:`TimeoutError`
    (the other side hangs)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    head = _read_exact(stream.fileno(), _LENGTH.size, deadline)
    if head is None:
        return None
    payload = _read_exact(stream.fileno(), _LENGTH.unpack(head)[0], deadline)
    return None if payload is None else json.loads(payload)


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    parts, missing = [], size
    while missing:
        if deadline is not None and not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError(f"no complete frame within the deadline ({size - missing} of {size} bytes)")
        part = os.read(fd, missing)
        if not part:
            return None
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)
