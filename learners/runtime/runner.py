"""The generic learner runtime: effectively-once incremental learning from the ``examples`` topic.

Transport-free (the Faust worker in ``learners/runtime/worker.py`` feeds it; tests can feed it
directly). For any registered learner it:

1. takes raw records ``(topic, partition, offset, key, value)`` in arrival order;
2. **skips** records at or below the partition's applied offset (re-deliveries after a
   restart or rebalance) and examples whose ``example_id`` was applied recently (the same
   example produced twice upstream);
3. asks for a **seek** when a partition jumps past the next expected offset (Faust committed
   ahead of the last checkpoint, then crashed), or starts far behind it (a new consumer group
   at the earliest offset): records of that partition are dropped until the expected offset
   arrives (DESIGN.md, "Learners on a stream: two traps");
4. decodes through :func:`contracts.fast_decode.decode_example`: a compiled msgspec accept-filter
   of the contract whose every refusal is decided again by :func:`contracts.events.decode` (the
   one validation path), so verdicts are the contract's and no pydantic object is built per
   example on the hot path; a bad record becomes a :class:`streams.dead_letter.DeadLetter`
   (original bytes; reason, field and source topic/partition/offset in headers) and is never
   retried; a good one is written at once into the learner's batch arrays
   (``learner.batch_builder``, :mod:`learners.ingest`) and dropped. A learner without a batch
   builder gets the contract's pydantic :class:`~contracts.events.LabeledList` for its ``learn_many``.
   With ``decode_workers`` the decoding and the writing into rows run in worker processes
   (:mod:`learners.ingest.decode_pool`): the same function gives the same verdict there, and this
   process keeps every decision that depends on state (offsets, seeks, dedupe, batch boundaries) and
   copies the accepted rows in log order, so models, dead letters and checkpoints are the same;
5. cuts the accepted examples into batches of exactly ``batch_size`` (a partial batch only
   by :meth:`LearnerRuntime.flush`, e.g. when the stream went idle), so batch boundaries
   depend on the log, not on fetch timing: the same log and checkpoint cadence give
   bit-identical models with or without a crash in between. ``max_wait_s`` trades that for
   latency: a partial batch is learned once its oldest example has waited that long, so at a
   low rate an example is not held until ``batch_size`` more arrive (the closed loop's
   staleness); boundaries then depend on arrival timing, like an idle flush;
6. hands each full batch to the update stage (:mod:`learners.runtime.pipeline`: inline, or with
   ``prefetch`` on its own thread so the next batch is decoded while this one is learned); there,
   after each batch, advances the applied offsets to the last record consumed per partition,
   and every ``checkpoint_every`` batches writes ``learner.state_dict()`` plus its own
   bookkeeping under ``meta["runtime"]`` atomically (:class:`learners.runtime.checkpoint.CheckpointStore`),
   then calls the ``on_checkpoint`` hooks ``(model_name, state, metrics)`` (snapshot
   publishing plugs in here).

Bookkeeping in the state (``meta["runtime"]``): ``offsets`` {"topic:partition": last applied
offset}, ``recent_ids`` (bounded, oldest first), ``applied`` (examples learned), ``digest``
(sum of 64-bit example-id hashes mod 2^64: with ``applied`` it proves each example was
applied exactly once), ``skipped``/``dead_lettered`` counters and ``batches``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from typing import Any, Callable, Sequence

from contracts.events import LABELED_LIST_SCHEMA, EventError, LabeledList, decode
from contracts.fast_decode import LabeledListS, decode_example
from contracts.learner import RUNTIME_META_KEY, Learner, LearnerState
from learners.runtime.batching import (  # noqa: F401 - re-exported: the runtime's public names
    DIGEST_MOD,
    Record,
    RuntimeConfig,
    StepResult,
    _Pending,
    _Sealed,
    batch_builder,
    digest_of,
    example_digest,
    learn_built,
    timing_summary,
)
from learners.ingest.decode_pool import DecodePool
from learners.runtime.checkpoint import CheckpointStore
from learners.runtime.worker_intake import WorkerIntake
from learners.runtime.pipeline import UpdateStage

log = logging.getLogger(__name__)
CheckpointHook = Callable[[str, LearnerState, dict], None]


class LearnerRuntime(WorkerIntake):
    """Feeds one learner from raw records with effectively-once bookkeeping and checkpoints."""

    def __init__(self, model_name: str, learner: Learner, store: CheckpointStore | None = None,
                 config: RuntimeConfig | None = None, decode_pool: DecodePool | None = None) -> None:
        """``decode_pool``: running decode workers to use instead of starting ``config.decode_workers``
        (benches share one across runtimes; the caller closes it)."""
        self.model_name = model_name
        self.learner = learner
        self.store = store
        self.config = config or RuntimeConfig()
        self.on_checkpoint: list[CheckpointHook] = []
        #: applied to each batch before ``learn_many`` (e.g. learners.runtime.feature_fill.FeatureFill:
        #: item features that the impression names instead of carrying)
        self.prepare: Callable[[list[Any]], list[Any]] | None = None
        #: the learner writes examples into its own batch arrays, so they may stay msgspec structs
        self._structs = getattr(learner, "batch_builder", None) is not None
        self.offsets: dict[str, int] = {}  # last applied offset per "topic:partition"
        self.recent_ids: deque[str] = deque(maxlen=self.config.recent_ids or None)
        self._recent_set: set[str] = set()
        self.applied = 0
        self.digest = 0
        self.skipped_offsets = 0
        self.skipped_ids = 0
        self.dead_lettered = 0
        self.batches = 0
        self.checkpoint_seq: int | None = None
        self._since_checkpoint = 0
        self._checkpointed_at = time.monotonic()
        self._queue: deque[_Pending] = deque()
        self._built: Any = None  # the batch being written (learner.batch_builder), None until an example comes
        self._rejected: list = []
        self._intake = [0, 0, 0]  # skipped offsets, skipped ids, dead letters as seen by the decoder
        self.stage = UpdateStage(threaded=self.config.prefetch, name=f"learn-{model_name}")
        self._pool: DecodePool | None = decode_pool  # decode workers (config.decode_workers), started on first records
        self._owns_pool = decode_pool is None
        self._rows: list[tuple[int, int, str]] = []  # worker rows (slot row, items, id) not yet copied
        self._rows_from: Any = None  # the slot arrays they are in
        self._pool_refused = False
        self.worker_decoded = 0  # records whose verdict came from a decode worker
        self._queued_examples = 0
        self._queued_ids: set[str] = set()
        self._rewinding: dict[str, int] = {}  # tp -> offset we are waiting for after a seek
        self._seen_next: dict[str, int] = {}  # tp -> next offset expected from the transport
        self.last_metrics: dict[str, float] = {}
        self.last_record_at = time.monotonic()
        self.started_at = time.monotonic()
        self._applied_at_start = 0
        #: seconds per step of the last batches: "wait" (oldest example offered -> its batch
        #: starts), "learn" (feature fill + learn_many), "checkpoint" (state copy, write, hooks)
        self.timings: dict[str, deque[float]] = {k: deque(maxlen=500) for k in ("wait", "learn", "checkpoint")}

    # -- restore / checkpoint -----------------------------------------------------------------
    def restore(self) -> bool:
        """Load the newest valid checkpoint into the learner; ``False`` when there is none."""
        if self.store is None:
            return False
        found = self.store.load_latest()
        if found is None:
            return False
        seq, state = found
        self.load_state(state)
        self.checkpoint_seq = seq
        log.info("%s: resumed from checkpoint %s (%d examples applied, offsets %s)", self.model_name, seq,
                 self.applied, self.offsets)
        return True

    def load_state(self, state: LearnerState) -> None:
        meta = dict(state.meta)
        runtime = meta.pop(RUNTIME_META_KEY, {}) or {}
        self.learner.load_state_dict(LearnerState(tensors=state.tensors, meta=meta))
        self.offsets = {k: int(v) for k, v in runtime.get("offsets", {}).items()}
        self.recent_ids.clear()
        self.recent_ids.extend(runtime.get("recent_ids", []))
        self._recent_set = set(self.recent_ids)
        self.applied = int(runtime.get("applied", 0))
        self.digest = int(runtime.get("digest", "0"))
        self.skipped_offsets = int(runtime.get("skipped_offsets", 0))
        self.skipped_ids = int(runtime.get("skipped_ids", 0))
        self.dead_lettered = int(runtime.get("dead_lettered", 0))
        self.batches = int(runtime.get("batches", 0))
        self._intake = [self.skipped_offsets, self.skipped_ids, self.dead_lettered]
        self._seen_next = {tp: off + 1 for tp, off in self.offsets.items()}
        self._applied_at_start = self.applied

    def runtime_meta(self) -> dict[str, Any]:
        return {"offsets": dict(sorted(self.offsets.items())), "recent_ids": list(self.recent_ids),
                "applied": self.applied, "digest": str(self.digest), "skipped_offsets": self.skipped_offsets,
                "skipped_ids": self.skipped_ids, "dead_lettered": self.dead_lettered, "batches": self.batches}

    def state(self) -> LearnerState:
        state = self.learner.state_dict()
        meta = copy.deepcopy(state.meta)
        meta[RUNTIME_META_KEY] = self.runtime_meta()
        return LearnerState(tensors=state.tensors, meta=meta)

    def checkpoint(self) -> LearnerState:
        """Write a checkpoint now (when a store is configured) and run the hooks (after every queued update)."""
        self.stage.drain()
        if not self._queue:  # nothing decoded is waiting: the intake counters are all applied
            self.skipped_offsets, self.skipped_ids, self.dead_lettered = self._intake
        started = time.monotonic()
        try:
            return self._checkpoint()
        finally:
            self.timings["checkpoint"].append(time.monotonic() - started)

    def _timed_checkpoint(self) -> None:
        started = time.monotonic()
        self._checkpoint()
        self.timings["checkpoint"].append(time.monotonic() - started)

    def _checkpoint(self) -> LearnerState:
        state = self.state()
        if self.store is not None:
            info = self.store.save(state)
            self.checkpoint_seq = info.seq
        self._since_checkpoint = 0
        self._checkpointed_at = time.monotonic()
        metrics = dict(self.last_metrics)
        metrics.update(applied=float(self.applied), batches=float(self.batches))
        for hook in list(self.on_checkpoint):
            try:
                hook(self.model_name, state, metrics)
            except Exception:  # noqa: BLE001 - a failing publisher must not stop learning
                log.exception("%s: on_checkpoint hook %r failed", self.model_name, hook)
        return state

    # -- records --------------------------------------------------------------------------------
    def next_offset(self, tp: str) -> int | None:
        return self._seen_next.get(tp)

    def expect(self, tp: str, offset: int) -> None:
        """Set where a partition without checkpointed offsets must start (its earliest offset)."""
        if tp not in self._seen_next:
            self._seen_next[tp] = int(offset)

    def offer(self, records: Sequence[Record], wait: bool = True) -> StepResult:
        """Take records in arrival order; learn every full batch; return seeks and dead letters.

        ``wait=False`` (with ``prefetch``) returns once the records are decoded and their full
        batches queued for the update stage; :meth:`drain` (and every checkpoint) waits for them."""
        result = StepResult()
        now = time.monotonic()
        if records:
            self.last_record_at = now
        pool = self._decode_pool() if records else None
        admitted: list[Record] | None = [] if pool is not None else None
        for rec in records:
            tp = rec.tp
            waiting = self._rewinding.get(tp)
            if waiting is not None:
                if rec.offset != waiting:
                    continue  # stale pre-seek record; the seek will deliver it again
                del self._rewinding[tp]
            expected = self._seen_next.get(tp)
            if expected is not None and rec.offset < expected:
                self._intake[0] += 1
                if expected - rec.offset >= self.config.seek_forward_min and waiting is None:
                    self._rewinding[tp] = expected  # e.g. a new consumer group starting at the earliest offset
                    result.seeks[tp] = expected
                continue
            if expected is not None and rec.offset > expected and waiting is None:
                # The transport skipped records we never applied: rewind once to the expected offset.
                self._rewinding[tp] = expected
                result.seeks[tp] = expected
                log.warning("%s: %s jumped to offset %d, expected %d: seeking back", self.model_name, tp,
                            rec.offset, expected)
                continue
            self._seen_next[tp] = rec.offset + 1
            if admitted is not None:  # decoded by the workers below, in the same order
                admitted.append(rec)
                continue
            self._accept(rec, result, now)
            while self._queued_examples >= self.config.batch_size:
                self._learn_next(self.config.batch_size, result)
        if admitted:
            self._accept_decoded(admitted, pool, result, now)
        if self.wait_expired():
            self._learn_next(self._queued_examples, result)
        self._drain_consumed()
        if wait:
            self.stage.drain()
        return result

    def drain(self) -> None:
        """Wait for every queued update (and checkpoint) to be applied."""
        self.stage.drain()

    def oldest_wait(self, now: float | None = None) -> float | None:
        """Seconds the oldest queued example has waited to be learned (``None``: none queued)."""
        first = next((p for p in self._queue if p.example_id is not None), None)
        if first is None:
            return None
        return (time.monotonic() if now is None else now) - first.offered_at

    def wait_expired(self, now: float | None = None) -> bool:
        """Whether ``max_wait_s`` says the queued partial batch is due now."""
        if self.config.max_wait_s is None or not self._queued_examples:
            return False
        waited = self.oldest_wait(now)
        return waited is not None and waited >= self.config.max_wait_s

    def flush(self) -> StepResult:
        """Learn the queued examples as one partial batch (the stream went idle)."""
        result = StepResult()
        if self._queued_examples:
            self._learn_next(self._queued_examples, result)
        self._drain_consumed()
        self.stage.drain()
        return result

    @property
    def queued(self) -> int:
        return self._queued_examples

    def _accept(self, rec: Record, result: StepResult, now: float) -> None:
        """Decode (the contract's verdict, see :func:`contracts.fast_decode.decode_example`) and write
        the example into the batch being built."""
        raw, max_bytes = rec.value or b"", self.config.max_event_bytes
        try:
            event: LabeledList | LabeledListS
            if self._structs:
                event = decode_example(raw, max_bytes)
            else:
                event = decode(raw, expected=LABELED_LIST_SCHEMA, max_bytes=max_bytes)  # type: ignore[assignment]
        except EventError as exc:
            self._dead_letter(rec, exc.reason, exc.field, exc.detail, result)
            return
        assert isinstance(event, (LabeledList, LabeledListS))
        if self._duplicate(rec, event.example_id):
            return
        if self.prepare is not None:
            event = self.prepare([event])[0]
        if self._built is None:
            self._built = batch_builder(self.learner, self.config.batch_size)
        rejected = self._built.add(event)
        if rejected is not None:
            self._rejected.append(rejected)
        self._enqueue(rec, event.example_id, now)

    def _learn_next(self, n: int, result: StepResult) -> None:
        """Seal the batch being built (its ``n`` queued examples) and hand it to the update stage."""
        self._copy_rows()
        taken: list[_Pending] = []
        count = 0
        while self._queue and count < n:
            item = self._queue.popleft()
            taken.append(item)
            if item.example_id is not None:
                count += 1
        self._queued_examples -= count
        sealed = _Sealed(self._built, self._rejected, taken, tuple(self._intake))
        self._built, self._rejected = None, []
        result.learned_batches += 1
        if self._since_checkpoint + 1 >= self.config.checkpoint_every:
            result.checkpoints += 1
        self.stage.submit(lambda: self._apply(sealed))

    def _apply(self, sealed: _Sealed) -> None:
        """Update stage: learn the sealed batch, then advance offsets and ids; checkpoint when due."""
        started = time.monotonic()
        oldest = next((p.offered_at for p in sealed.taken if p.example_id is not None), started)
        self.timings["wait"].append(max(0.0, started - oldest))
        metrics = learn_built(self.learner, sealed.built, sealed.rejected)
        self.timings["learn"].append(time.monotonic() - started)
        self.last_metrics = {k: float(v) for k, v in metrics.items()}
        self.batches += 1
        ids = [p.example_id for p in sealed.taken if p.example_id is not None]
        for example_id in ids:
            self._remember(example_id)  # before leaving the queued set: never in neither (dedupe races)
            self._queued_ids.discard(example_id)
            self.digest = (self.digest + example_digest(example_id)) % DIGEST_MOD
        self.applied += len(ids)
        self._consumed(sealed.taken, sealed.counters)
        self._since_checkpoint += 1
        interval = self.config.checkpoint_interval_s
        if (self._since_checkpoint >= self.config.checkpoint_every
                or (interval is not None and time.monotonic() - self._checkpointed_at >= interval)):
            self._timed_checkpoint()

    def _consumed(self, taken: Sequence[_Pending], counters: tuple[int, int, int]) -> None:
        for p in taken:
            self._advance(p.record)
        self.skipped_offsets, self.skipped_ids, self.dead_lettered = counters

    def _drain_consumed(self) -> None:
        """Records consumed without learning advance offsets once nothing queued precedes them."""
        taken = []
        while self._queue and self._queue[0].example_id is None:
            taken.append(self._queue.popleft())
        if taken:
            counters = tuple(self._intake)
            self.stage.submit(lambda: self._consumed(taken, counters))

    def _advance(self, rec: Record) -> None:
        if rec.offset > self.offsets.get(rec.tp, -1):
            self.offsets[rec.tp] = rec.offset

    def _remember(self, example_id: str) -> None:
        if self.recent_ids.maxlen == 0:
            return
        if self.recent_ids.maxlen is not None and len(self.recent_ids) == self.recent_ids.maxlen:
            self._recent_set.discard(self.recent_ids[0])
        self.recent_ids.append(example_id)
        self._recent_set.add(example_id)

    def status(self) -> dict[str, Any]:
        elapsed = max(1e-9, time.monotonic() - self.started_at)
        return {"model": self.model_name, "applied": self.applied, "batches": self.batches, "queued": self.queued,
                "skipped_offsets": self.skipped_offsets, "skipped_ids": self.skipped_ids,
                "dead_lettered": self.dead_lettered, "checkpoint_seq": self.checkpoint_seq,
                "offsets": dict(sorted(self.offsets.items())), "digest": str(self.digest),
                "examples_per_s": round((self.applied - self._applied_at_start) / elapsed, 2), "metrics": self.last_metrics,
                "feature_fill": {k: getattr(self.prepare, k) for k in ("filled", "missing", "errors")
                                 if hasattr(self.prepare, k)},
                "timings_s": timing_summary(self.timings),
                "decode_workers": {"workers": self.config.decode_workers, "decoded": self.worker_decoded,
                                   "broken": self._pool.broken if self._pool is not None else None}}


