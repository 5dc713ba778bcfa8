"""A decode worker process: record bytes in a shared slot -> validated rows in the same slot.

Started by :class:`learners.ingest.decode_pool.DecodePool` as ``python -m
learners.ingest.decode_worker`` with pipes on stdin/stdout (JSON frames, :mod:`learners.ingest.slots`).
The first frame names the builder (:meth:`learners.ingest.lists.ListArrays.spec`), the slots'
inherited file descriptors and their sizes; each later frame ``{"slot": s, "sizes": [...]}`` asks it to decode the records in
slot ``s``'s input area with the learner process's own decoder
(:func:`contracts.fast_decode.decode_example`: the contract's verdicts) and to write the accepted
examples with the same :meth:`~learners.ingest.lists.ListArrays.add` into the slot's rows. The reply
gives one verdict per record, in order:

* ``["ok", example_id, row, items]``: written into row ``row``;
* ``["rej", example_id, field, detail]``: decoded, but the builder refused it (a feature vector of the
  wrong length): the runtime hands it to the learner as a rejected example, as in process;
* ``["dead", reason, field, detail]``: the contract refused it (the dead-letter headers);
* ``["main"]``: the learner process must decode this one itself: its items name their features
  (``fill``: the runtime fills them from the feature store), the list is longer than the slot, or
  anything unexpected happened (the in-process path then decides, exactly as without workers).

The worker learns nothing and keeps no state between chunks, so its verdicts cannot depend on timing;
deduplication, offsets and batch boundaries stay in the learner process. It exits at end of input
(the learner process closed the pipe, or died).
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from contracts.events import EventError, features_to_fill  # noqa: E402
from contracts.fast_decode import decode_example  # noqa: E402
from learners.ingest.lists import PER_ITEM, ListArrays  # noqa: E402
from learners.ingest.slots import Slot, read_frame, write_frame  # noqa: E402


def verdicts(builder: ListArrays, values: list[Any], max_bytes: int, fill: bool) -> list[list]:
    """Decode ``values`` into ``builder`` (cleared first); one verdict per value (module docstring)."""
    builder.clear()
    out: list[list] = []
    for raw in values:
        try:
            example = decode_example(bytes(raw), max_bytes)
        except EventError as exc:
            out.append(["dead", exc.reason, exc.field, exc.detail])
            continue
        m = len(example.impression.items)
        if m > builder.n or (fill and features_to_fill(example) is not None):
            out.append(["main"])
            continue
        try:
            rejected = builder.add(example)
        except Exception:  # noqa: BLE001 - the learner process decides (and reports) it in process
            out.append(["main"])
            continue
        if rejected is not None:
            out.append(["rej", example.example_id, rejected.field, rejected.detail])
        else:
            row = builder.count - 1
            for name in PER_ITEM:  # zero past the list (a slot is reused): the learner copies runs of rows as blocks
                builder.a[name][row, m:] = 0
            out.append(["ok", example.example_id, row, m])
    return out


def main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    init = read_frame(stdin)
    if init is None:
        return 0
    spec, rows, n = init["spec"], int(init["rows"]), int(init["items"])
    d, k = int(spec["n_features"]), len(spec["tasks"])
    slots = [Slot(int(fd), rows, n, d, k, int(init["input_bytes"])) for fd in init["fds"]]
    builders = [ListArrays.over(slot.arrays, spec) for slot in slots]
    write_frame(stdout, {"ready": os.getpid()})
    while True:
        request = read_frame(stdin)
        if request is None:
            return 0
        s = int(request["slot"])
        values = slots[s].read_input([int(x) for x in request["sizes"]])
        write_frame(stdout, {"slot": s, "verdicts": verdicts(builders[s], values, int(init["max_bytes"]),
                                                             bool(init["fill"]))})


if __name__ == "__main__":
    sys.exit(main())
