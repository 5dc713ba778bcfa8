"""One protocol for every online learner (after River's ``learn_many``/``predict`` API).

A learner consumes :class:`~contracts.events.LabeledList` examples in micro-batches and can
be checkpointed and restored exactly:

* ``learn_many(batch) -> metrics``: one incremental update from a batch of examples.
* ``state_dict() -> LearnerState`` / ``load_state_dict(state)``: model weights, optimizer
  state, RNG state, counters and the Kafka offsets already applied, split into tensors
  (saved as safetensors) and JSON-able metadata (saved in the manifest). Never pickle.

Model-specific inference (``score`` for calibrators, ``rerank`` for LDRO/DRPO) is declared
by each family; the serving layer depends only on those. Calibrators implement
:class:`Calibrator` (``calibrate(task_scores, context) -> task_scores``, monotone per task).

The learner runtime (``learners/runtime/runner.py``) stores its stream bookkeeping (applied offsets
per partition, recent example ids, counters) in ``LearnerState.meta[RUNTIME_META_KEY]``;
learners must leave that key alone and must accept (ignore) it in ``load_state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from contracts.events import LabeledList


@dataclass
class LearnerState:
    """A checkpoint: tensors (safetensors-able, flat names) + JSON-able metadata."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, tensor in self.tensors.items():
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"LearnerState.tensors[{name!r}] is {type(tensor).__name__}, not a tensor")


#: Meta key reserved for the learner runtime's stream bookkeeping (offsets, example ids).
RUNTIME_META_KEY = "runtime"


def publishable_meta(meta: dict) -> dict:
    """A checkpoint's meta as a snapshot publishes it: the runtime bookkeeping without the recent
    example ids (up to 20k, restart bookkeeping only; serving never reads them, and every snapshot
    and its ``model-updates`` announcement would carry them)."""
    out = dict(meta)
    out[RUNTIME_META_KEY] = {k: v for k, v in (meta.get(RUNTIME_META_KEY) or {}).items() if k != "recent_ids"}
    return out


@runtime_checkable
class Learner(Protocol):
    """What every model family implements. ``name`` identifies the model in snapshots and topics."""

    name: str

    def learn_many(self, batch: Sequence[LabeledList]) -> dict[str, float]:
        """Apply one update from ``batch``; return scalar metrics (loss, ...)."""

    def state_dict(self) -> LearnerState:
        """Everything needed to continue learning bit-for-bit after a restart."""

    def load_state_dict(self, state: LearnerState) -> None:
        """Restore from :meth:`state_dict`'s output."""


@runtime_checkable
class Calibrator(Protocol):
    """A learner whose inference maps raw task scores to calibrated probabilities (serving uses this)."""

    name: str
    tasks: tuple[str, ...]

    def calibrate(self, task_scores: dict[str, torch.Tensor], context: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per task: raw ``p_hat`` [n] -> calibrated ``p`` [n], monotone non-decreasing in ``p_hat``.

        ``context`` holds per-item fields as lists/tensors of length n (``position``,
        ``item``) and request-level fields as scalars (``user``, impression context keys).
        Tasks without a calibrator are returned unchanged.
        """


@dataclass(frozen=True)
class RerankRequest:
    """What serving hands a list-wise model: the candidates of one request.

    ``features`` is ``[n, d]`` dense item features; ``task_scores`` maps task -> ``[n]``
    (calibrated when a calibrator ran first); ``upstream_scores`` the request's own scores
    before calibration (``None``: the same as ``task_scores``); ``context`` holds
    request-level fields.
    """

    item_ids: tuple[str, ...]
    features: torch.Tensor
    task_scores: dict[str, torch.Tensor]
    context: dict[str, Any] = field(default_factory=dict)
    upstream_scores: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class RerankResult:
    """A ranked list: ``order`` indexes the request's candidates, best first."""

    order: list[int]
    scores: list[float]
    logprob: float | None = None  # log-prob of this order under the (sampling) policy
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. fusion weights and their log-prob
