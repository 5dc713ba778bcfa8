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
4. decodes through :func:`contracts.events.decode`; a bad record becomes a
   :class:`streams.dead_letter.DeadLetter` (original bytes; reason, field and source
   topic/partition/offset in headers) and is never retried;
5. cuts the accepted examples into batches of exactly ``batch_size`` (a partial batch only
   by :meth:`LearnerRuntime.flush`, e.g. when the stream went idle), so batch boundaries
   depend on the log, not on fetch timing: the same log and checkpoint cadence give
   bit-identical models with or without a crash in between. ``max_wait_s`` trades that for
   latency: a partial batch is learned once its oldest example has waited that long, so at a
   low rate an example is not held until ``batch_size`` more arrive (the closed loop's
   staleness); boundaries then depend on arrival timing, like an idle flush;
6. after each batch advances the applied offsets to the last record consumed per partition,
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
import hashlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from contracts.events import LABELED_LIST_SCHEMA, EventError, LabeledList, decode
from contracts.learner import RUNTIME_META_KEY, Learner, LearnerState
from learners.runtime.checkpoint import CheckpointStore
from streams.dead_letter import DeadLetter

log = logging.getLogger(__name__)
DIGEST_MOD = 1 << 64
CheckpointHook = Callable[[str, LearnerState, dict], None]


def example_digest(example_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(example_id.encode(), digest_size=8).digest(), "little")


def digest_of(example_ids: Sequence[str]) -> int:
    return sum(example_digest(e) for e in example_ids) % DIGEST_MOD


@dataclass(frozen=True)
class Record:
    """One Kafka record as the runtime sees it (transport-neutral)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class RuntimeConfig:
    batch_size: int = 256
    checkpoint_every: int = 10  # batches
    #: also checkpoint after a batch once this many seconds passed since the last checkpoint
    #: (``None``: by batch count only). A slow stream of examples then still gets checkpoints
    #: (and, with ``--publish``, snapshots) at this cadence instead of every ``checkpoint_every``
    #: full batches: at 16 examples/s, 10 batches of 256 take 160 s.
    checkpoint_interval_s: float | None = None
    recent_ids: int = 20_000
    max_event_bytes: int = 1_000_000
    seek_forward_min: int = 1_000  # a partition this far behind the checkpoint is sought forward, not read
    #: learn a partial batch once its oldest queued example has waited this long (seconds since
    #: it was offered); ``None``: only full batches (and explicit flushes), log-determined boundaries
    max_wait_s: float | None = None

    def __post_init__(self) -> None:
        if (self.batch_size < 1 or self.checkpoint_every < 1 or self.recent_ids < 0
                or (self.max_wait_s is not None and self.max_wait_s < 0)
                or (self.checkpoint_interval_s is not None and self.checkpoint_interval_s <= 0)):
            raise ValueError(f"invalid runtime config {self}")


@dataclass
class StepResult:
    """What one :meth:`LearnerRuntime.offer` call did and what the transport must do."""

    learned_batches: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    seeks: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> offset to seek to
    checkpoints: int = 0


@dataclass
class _Pending:
    record: Record
    example: LabeledList | None  # None: consumed without learning (duplicate id, dead letter)
    offered_at: float = 0.0  # time.monotonic() when offered (for max_wait_s)


class LearnerRuntime:
    """Feeds one learner from raw records with effectively-once bookkeeping and checkpoints."""

    def __init__(self, model_name: str, learner: Learner, store: CheckpointStore | None = None,
                 config: RuntimeConfig | None = None) -> None:
        self.model_name = model_name
        self.learner = learner
        self.store = store
        self.config = config or RuntimeConfig()
        self.on_checkpoint: list[CheckpointHook] = []
        #: applied to each batch before ``learn_many`` (e.g. learners.runtime.feature_fill.FeatureFill:
        #: item features that the impression names instead of carrying)
        self.prepare: Callable[[list[LabeledList]], list[LabeledList]] | None = None
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
        self._queue: list[_Pending] = []
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
        """Write a checkpoint now (when a store is configured) and run the hooks."""
        started = time.monotonic()
        try:
            return self._checkpoint()
        finally:
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

    def offer(self, records: Sequence[Record]) -> StepResult:
        """Take records in arrival order; learn every full batch; return seeks and dead letters."""
        result = StepResult()
        now = time.monotonic()
        if records:
            self.last_record_at = now
        for rec in records:
            tp = rec.tp
            waiting = self._rewinding.get(tp)
            if waiting is not None:
                if rec.offset != waiting:
                    continue  # stale pre-seek record; the seek will deliver it again
                del self._rewinding[tp]
            expected = self._seen_next.get(tp)
            if expected is not None and rec.offset < expected:
                self.skipped_offsets += 1
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
            self._accept(rec, result, now)
            while self._queued_examples >= self.config.batch_size:
                self._learn_next(self.config.batch_size, result)
        if self.wait_expired():
            self._learn_next(self._queued_examples, result)
        self._drain_consumed()
        return result

    def oldest_wait(self, now: float | None = None) -> float | None:
        """Seconds the oldest queued example has waited to be learned (``None``: none queued)."""
        first = next((p for p in self._queue if p.example is not None), None)
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
        return result

    @property
    def queued(self) -> int:
        return self._queued_examples

    def _accept(self, rec: Record, result: StepResult, now: float) -> None:
        try:
            event = decode(rec.value or b"", expected=LABELED_LIST_SCHEMA, max_bytes=self.config.max_event_bytes)
        except EventError as exc:
            dead = DeadLetter(reason=exc.reason, field=exc.field, detail=exc.detail, topic=rec.topic,
                              partition=rec.partition, offset=rec.offset, key=rec.key, value=rec.value)
            result.dead_letters.append(dead)
            self.dead_lettered += 1
            self._queue.append(_Pending(rec, None))
            return
        assert isinstance(event, LabeledList)
        if event.example_id in self._recent_set or event.example_id in self._queued_ids:
            self.skipped_ids += 1
            self._queue.append(_Pending(rec, None))
            return
        self._queue.append(_Pending(rec, event, now))
        self._queued_ids.add(event.example_id)
        self._queued_examples += 1

    def _learn_next(self, n: int, result: StepResult) -> None:
        taken: list[_Pending] = []
        count = 0
        while self._queue and count < n:
            item = self._queue.pop(0)
            taken.append(item)
            if item.example is not None:
                count += 1
        examples = [p.example for p in taken if p.example is not None]
        started = time.monotonic()
        oldest = next((p.offered_at for p in taken if p.example is not None), started)
        self.timings["wait"].append(max(0.0, started - oldest))
        if self.prepare is not None:
            examples = self.prepare(examples)
        metrics = self.learner.learn_many(examples)
        self.timings["learn"].append(time.monotonic() - started)
        self.last_metrics = {k: float(v) for k, v in metrics.items()}
        self.batches += 1
        self._queued_examples -= len(examples)
        for ex in examples:
            self._queued_ids.discard(ex.example_id)
            self._remember(ex.example_id)
            self.digest = (self.digest + example_digest(ex.example_id)) % DIGEST_MOD
        self.applied += len(examples)
        for p in taken:
            self._advance(p.record)
        result.learned_batches += 1
        self._since_checkpoint += 1
        interval = self.config.checkpoint_interval_s
        if (self._since_checkpoint >= self.config.checkpoint_every
                or (interval is not None and time.monotonic() - self._checkpointed_at >= interval)):
            self.checkpoint()
            result.checkpoints += 1

    def _drain_consumed(self) -> None:
        """Records consumed without learning advance offsets once nothing queued precedes them."""
        while self._queue and self._queue[0].example is None:
            self._advance(self._queue.pop(0).record)

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
                "timings_s": timing_summary(self.timings)}


def timing_summary(timings: dict[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """p50 / p99 / max of each list of durations (seconds), for status files."""
    out: dict[str, dict[str, float]] = {}
    for name, values in timings.items():
        if len(values):
            p50, p99, top = np.percentile(np.asarray(values, dtype=np.float64), [50, 99, 100])
            out[name] = {"n": len(values), "p50": round(float(p50), 4), "p99": round(float(p99), 4),
                         "max": round(float(top), 4)}
    return out
