r"""Warm-up replay for the online calibrators: extra Adam steps on past rows while the stream is young.

What: during the first ``replay_updates`` updates, each update of
:class:`~learners.calibration.learner.NeuralCalibrationLearner` is followed by ``replay_steps``
more steps, each on rows drawn uniformly without replacement from a reservoir of the rows learned
so far (the current batch included), as many per task as the batch had. After the warm-up the
reservoir is dropped and the learner is the plain online learner again.

Why: a prequential calibrator starts at the identity and, at one Adam step per batch, needs many
batches to learn the context offsets (a per-group bias of 0.8 in logit space is ~80 steps at
lr 1e-2); isotonic regression refits on everything it has seen at every batch and has nothing
context-dependent to learn, so it wins the first part of the stream. Replaying the early history
gives the network more steps on the data it already has, where it needs them, without the
overfitting of more passes on one batch (``passes``) or of replay for the whole stream (both
measured worse; BENCHMARKS.md, "Choosing the online settings").

Sources: experience replay (Lin 1992, "Self-improving reactive agents based on reinforcement
learning, planning and teaching"); the reservoir is Vitter's Algorithm R (1985, "Random sampling
with a reservoir"): row :math:`i` (0-based count of rows offered) replaces a uniformly drawn slot
with probability ``capacity / (i + 1)`` once the reservoir is full, so the reservoir is a uniform
sample of every row offered. Draws use the learner's generator, so learning stays deterministic
given the seed and the input order, and the reservoir is part of the learner's state while it
exists (:meth:`WarmupReplay.state_tensors`).
"""

from __future__ import annotations

from typing import Sequence

import torch

#: One task's rows: (raw logit [n], label [n], context index [n, fields]).
Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class WarmupReplay:
    """Per-task reservoirs of learned rows and the replay batches drawn from them."""

    def __init__(self, tasks: Sequence[str], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay_rows (the reservoir's capacity) must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.tasks = tuple(tasks)
        self.rows: dict[str, Rows] = {}
        self.offered: dict[str, int] = dict.fromkeys(self.tasks, 0)

    def size(self, task: str) -> int:
        return int(self.rows[task][0].shape[0]) if task in self.rows else 0

    def add(self, task_rows: dict[str, Rows], generator: torch.Generator) -> None:
        """Offer a batch's rows (CPU tensors) to the reservoirs (Algorithm R)."""
        for task, (logit, label, index) in task_rows.items():
            n = int(logit.shape[0])
            if n == 0:
                continue
            if task not in self.rows:
                self.rows[task] = (logit[:0].clone(), label[:0].clone(), index[:0].clone())
            kept = self.rows[task]
            free = self.capacity - int(kept[0].shape[0])
            head = min(free, n)
            if head:
                kept = tuple(torch.cat([old, new[:head]]) for old, new in zip(kept, (logit, label, index)))
            seen = self.offered[task] + head
            if head < n:  # full: row `seen + j` replaces a random slot with probability capacity / (seen + j + 1)
                kept = tuple(t.clone() for t in kept)  # state_tensors handed out the stored ones
                counts = torch.arange(seen, seen + n - head, dtype=torch.float64) + 1.0
                slots = torch.floor(torch.rand(n - head, generator=generator, dtype=torch.float64) * counts).long()
                taken = torch.nonzero(slots < self.capacity).flatten()
                # rows placed one after another: a slot keeps the last row that drew it
                latest = torch.full((self.capacity,), -1, dtype=torch.long).scatter_reduce(
                    0, slots[taken], taken, reduce="amax")
                placed = torch.nonzero(latest >= 0).flatten()
                for dst, src in zip(kept, (logit, label, index)):
                    dst[placed] = src[head + latest[placed]]
            self.rows[task] = kept  # type: ignore[assignment]
            self.offered[task] += n

    def sample(self, sizes: dict[str, int], generator: torch.Generator) -> dict[str, Rows]:
        """``sizes[task]`` rows of each task, uniformly without replacement (all of them if fewer)."""
        out: dict[str, Rows] = {}
        for task, want in sizes.items():
            have = self.size(task)
            if have == 0 or want <= 0:
                continue
            pick = torch.randperm(have, generator=generator)[:want]
            out[task] = tuple(t[pick] for t in self.rows[task])  # type: ignore[assignment]
        return out

    def clear(self) -> None:
        """Drop the reservoirs (the warm-up is over; the memory goes back)."""
        self.rows.clear()
        self.offered = dict.fromkeys(self.tasks, 0)

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for task, (logit, label, index) in self.rows.items():
            out.update({f"{prefix}{task}.logit": logit, f"{prefix}{task}.label": label,
                        f"{prefix}{task}.index": index,
                        f"{prefix}{task}.offered": torch.tensor([self.offered[task]], dtype=torch.int64)})
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.clear()
        for task in self.tasks:
            key = f"{prefix}{task}."
            if f"{key}logit" not in tensors:
                continue
            rows = (tensors[f"{key}logit"].clone(), tensors[f"{key}label"].clone(), tensors[f"{key}index"].clone())
            if not rows[0].shape[0] == rows[1].shape[0] == rows[2].shape[0] or rows[0].shape[0] > self.capacity:
                raise ValueError(f"replay reservoir of {task!r} in the checkpoint is malformed")
            self.rows[task] = rows
            self.offered[task] = int(tensors[f"{key}offered"][0])
