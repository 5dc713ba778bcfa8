"""The learner runtime's intake of records that decode worker processes decoded.

A mixin of :class:`learners.runtime.runner.LearnerRuntime` (its state: the record queue, the batch
being built, the dedupe sets), kept apart so the runtime module holds the in-process path and the
bookkeeping. :mod:`learners.ingest.decode_pool` returns one verdict per record, chunk by chunk and in
log order; here each becomes exactly what the in-process :meth:`LearnerRuntime._accept` would have
done with that record: the same dead letter, the same dedupe, the same row in the same place (rows are
copied a chunk's run at a time, before anything else is written into the batch and before the slot
they sit in is reused), and a ``["main"]`` verdict is simply decoded in process.
"""

from __future__ import annotations

import logging
from contextlib import closing
from typing import Any, Sequence

from learners.ingest.decode_pool import DecodePool, DecodePoolError
from learners.policy.batch import Rejected
from learners.runtime.batching import Record, StepResult, _Pending, batch_builder
from streams.dead_letter import DeadLetter

log = logging.getLogger(__name__)


class WorkerIntake:
    """The decode-worker half of the runtime's intake (see the module docstring), and the three steps
    both halves end in: a dead letter, a skipped duplicate, an example queued for the batch."""

    def _accept_decoded(self, admitted: Sequence[Record], pool: DecodePool, result: StepResult, now: float) -> None:
        """Take the ``admitted`` records (past the offset checks, in log order) from the workers' verdicts,
        learning each batch as it fills, as the in-process loop of ``offer`` does."""
        at = 0
        with closing(pool.verdicts([r.value or b"" for r in admitted])) as chunks:
            for verdicts, arrays in chunks:
                for verdict in verdicts:
                    self._accept_verdict(admitted[at], verdict, arrays, result, now)
                    at += 1
                    while self._queued_examples >= self.config.batch_size:
                        self._learn_next(self.config.batch_size, result)
                self._copy_rows()  # before the slot is reused

    def _accept_verdict(self, rec: Record, verdict: list, arrays: Any, result: StepResult, now: float) -> None:
        """:meth:`_accept` for a record a decode worker decoded (:mod:`learners.ingest.decode_worker`
        gives the verdicts): the same dead letter, dedupe and row as in process."""
        kind = verdict[0]
        if kind != "main":
            self.worker_decoded += 1
        if kind == "dead":
            self._dead_letter(rec, verdict[1], verdict[2], verdict[3], result)
            return
        if kind not in ("ok", "rej"):  # "main": the worker left this record to the process
            self._copy_rows()  # rows before it go first
            self._accept(rec, result, now)
            return
        example_id = verdict[1]
        if self._duplicate(rec, example_id):
            return
        if self._built is None:
            self._built = batch_builder(self.learner, self.config.batch_size)
        if kind == "ok":  # copied with its neighbours (one block per run) by _copy_rows
            if self._rows_from is not arrays:
                self._copy_rows()
                self._rows_from = arrays
            self._rows.append((int(verdict[2]), int(verdict[3]), example_id))
        else:
            self._rejected.append(Rejected(example_id, verdict[2], verdict[3]))
        self._enqueue(rec, example_id, now)

    def _copy_rows(self) -> None:
        """Copy the worker rows accepted so far into the batch being built (log order is kept: every
        in-process add and every sealed batch copies them first)."""
        if self._rows:
            self._built.add_rows(self._rows_from, self._rows)
            self._rows = []

    def _decode_pool(self) -> DecodePool | None:
        """The decode workers (``config.decode_workers``), started at the first records; ``None`` when
        off, for a learner whose batch builder has no worker form (the calibrators), or when they could
        not be started (logged once; the learner decodes in process rather than stop)."""
        if self._pool is not None or self.config.decode_workers < 1 or self._pool_refused:
            return self._pool
        spec = getattr(batch_builder(self.learner, 1), "spec", None)
        if spec is None:
            self._pool_refused = True
            return None
        try:
            self._pool = DecodePool(spec(), self.config.decode_workers, max_bytes=self.config.max_event_bytes,
                                    fill=self.prepare is not None)
        except (DecodePoolError, OSError) as exc:
            log.error("%s: decode workers not started (%s): decoding in process", self.model_name, exc)
            self._pool_refused = True
        return self._pool

    def close(self) -> None:
        """Apply what is queued for the update stage, stop its thread and the decode workers."""
        try:
            self.stage.close()
        finally:
            if self._pool is not None and self._owns_pool:
                self._pool.close()
            self._pool = None

    def _dead_letter(self, rec: Record, reason: str, field: str, detail: str, result: StepResult) -> None:
        dead = DeadLetter(reason=reason, field=field, detail=detail, topic=rec.topic,
                          partition=rec.partition, offset=rec.offset, key=rec.key, value=rec.value)
        result.dead_letters.append(dead)
        self._intake[2] += 1
        self._queue.append(_Pending(rec, None))

    def _duplicate(self, rec: Record, example_id: str) -> bool:
        """Whether ``example_id`` was applied recently or is queued (then the record is consumed as skipped)."""
        if example_id in self._recent_set or example_id in self._queued_ids:
            self._intake[1] += 1
            self._queue.append(_Pending(rec, None))
            return True
        return False

    def _enqueue(self, rec: Record, example_id: str, now: float) -> None:
        self._queue.append(_Pending(rec, example_id, now))
        self._queued_ids.add(example_id)
        self._queued_examples += 1
