"""What the learner runtime passes around: records, its config, step results, batches in flight, digests.

Split from :mod:`learners.runtime.runner` (which re-exports the public names) so the runtime
module holds only the record-to-update logic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from contracts.events import LabeledList
from contracts.learner import Learner
from streams.dead_letter import DeadLetter

DIGEST_MOD = 1 << 64


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
    #: run updates on a background thread (:mod:`learners.runtime.pipeline`) so decoding the next
    #: batch overlaps learning this one; same batches, same model, same checkpoints as inline
    prefetch: bool = False
    #: decode records in this many worker processes (:mod:`learners.ingest.decode_pool`) while the
    #: update runs in this one; 0: decode in process. Same verdicts, rows, batches and checkpoints.
    decode_workers: int = 0

    def __post_init__(self) -> None:
        if (self.batch_size < 1 or self.checkpoint_every < 1 or self.recent_ids < 0 or self.decode_workers < 0
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
    example_id: str | None  # None: consumed without learning (duplicate id, dead letter)
    offered_at: float = 0.0  # time.monotonic() when offered (for max_wait_s)


@dataclass
class _Sealed:
    """A batch handed to the update stage: the built tensors, its records and the intake counters."""

    built: Any
    rejected: list
    taken: list[_Pending]
    counters: tuple[int, int, int]


class _ExampleList(list):
    """The batch builder of a learner without one of its own: the decoded examples, for ``learn_many``."""

    @property
    def count(self) -> int:
        return len(self)

    def add(self, example: LabeledList) -> None:
        self.append(example)


def batch_builder(learner: Learner, capacity: int) -> Any:
    """The learner's own batch builder (:mod:`learners.ingest`), else a plain list of examples."""
    make = getattr(learner, "batch_builder", None)
    return make(capacity) if make is not None else _ExampleList()


def learn_built(learner: Learner, built: Any, rejected: Sequence[Any]) -> dict[str, float]:
    if isinstance(built, _ExampleList):
        return learner.learn_many(list(built))
    if rejected:
        return learner.learn_built(built, rejected)  # type: ignore[attr-defined]
    return learner.learn_built(built)  # type: ignore[attr-defined]


def timing_summary(timings: dict[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """p50 / p99 / max of each list of durations (seconds), for status files."""
    out: dict[str, dict[str, float]] = {}
    for name, values in timings.items():
        if len(values):
            p50, p99, top = np.percentile(np.asarray(values, dtype=np.float64), [50, 99, 100])
            out[name] = {"n": len(values), "p50": round(float(p50), 4), "p99": round(float(p99), 4),
                         "max": round(float(top), 4)}
    return out
