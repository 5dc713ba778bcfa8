"""Validated examples written straight into a calibrator's per-task row arrays.

A calibration row is one shown item for one task (:mod:`learners.calibration.context`): the raw
upstream ``p_hat``, the item's label and the hashed context indices of ``h(x)``. :class:`RowArrays`
appends each decoded example's rows to growable numpy arrays (doubling, so a batch allocates
O(log rows) times) and hashes the context fields as it goes, so the update gets three tensors
per task and never walks example objects. Row order, values and indices are those of
:func:`learners.calibration.context.extract_rows` followed by ``ContextEncoder.indices`` (a
test holds the two together).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from contracts.events import LabeledList
from contracts.fast_decode import LabeledListS

#: ``index(field_position, field_name, value) -> embedding row`` (``ContextEncoder.index``)
IndexOf = Callable[[int, str, Any], int]


class _Grow:
    """A growable 1-d or 2-d numpy array."""

    def __init__(self, dtype: Any, width: int | None = None, capacity: int = 1024) -> None:
        shape = (capacity,) if width is None else (capacity, width)
        self.data = np.zeros(shape, dtype=dtype)
        self.size = 0

    def reserve(self, extra: int) -> None:
        need = self.size + extra
        if need > len(self.data):
            grown = np.zeros((max(need, 2 * len(self.data)), *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown

    def view(self) -> np.ndarray:
        return self.data[: self.size]


class RowArrays:
    """The rows of a batch of examples, per task: ``p_hat``, label and context indices."""

    def __init__(self, tasks: Sequence[str], fields: Sequence[str], index_of: IndexOf | None) -> None:
        self.tasks, self.fields, self.index_of = tuple(tasks), tuple(fields), index_of
        width = len(self.fields) if index_of is not None else 0
        self.p_hat = {t: _Grow(np.float64) for t in self.tasks}
        self.labels = {t: _Grow(np.float32) for t in self.tasks}
        self.index = {t: _Grow(np.int64, width) for t in self.tasks}
        self.count = 0
        self.example_ids: list[str] = []

    def add(self, example: LabeledList | LabeledListS) -> None:
        """Append ``example``'s rows (items without a finite score for a task are no row of it)."""
        items: Sequence[Any] = example.impression.items  # models or msgspec structs: the same attributes
        for i, (item, label) in enumerate(zip(items, example.labels)):
            context: list[int] | None = None
            for task in self.tasks:
                score = item.scores.get(task)
                if score is None or not math.isfinite(score):
                    continue
                if context is None:
                    context = self._context(example, i)
                p, y, idx = self.p_hat[task], self.labels[task], self.index[task]
                p.reserve(1), y.reserve(1), idx.reserve(1)
                p.data[p.size] = score
                y.data[y.size] = getattr(label, task)
                if context:
                    idx.data[idx.size] = context
                p.size += 1
                y.size += 1
                idx.size += 1
        self.example_ids.append(example.example_id)
        self.count += 1
        return None

    def _context(self, example: LabeledList | LabeledListS, i: int) -> list[int]:
        if self.index_of is None or not self.fields:
            return []
        imp = example.impression
        item = imp.items[i]
        out = []
        for k, name in enumerate(self.fields):
            if name == "position":
                value: Any = item.position
            elif name == "item":
                value = item.item_id
            elif name == "user":
                value = imp.user_id
            elif name == "query":
                value = imp.query
            else:
                value = imp.context.get(name)
            out.append(self.index_of(k, name, value))
        return out

    def rows(self, task: str) -> int:
        return self.p_hat[task].size

    def p_hat_tensor(self, task: str) -> torch.Tensor:
        return torch.from_numpy(self.p_hat[task].view().astype(np.float32))

    def logits(self, task: str, clip: float) -> torch.Tensor:
        return torch.logit(self.p_hat_tensor(task).clamp(clip, 1 - clip))

    def label_tensor(self, task: str) -> torch.Tensor:
        return torch.from_numpy(self.labels[task].view().copy())

    def index_tensor(self, task: str) -> torch.Tensor:
        grow = self.index[task]
        if grow.data.ndim == 1:
            return torch.zeros(grow.size, 0, dtype=torch.long)
        return torch.from_numpy(grow.view().copy())
