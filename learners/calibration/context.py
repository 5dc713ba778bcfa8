"""Calibration rows from LabeledLists, and the hashed context encoder h(x).

A row is one shown item for one task: the raw upstream prediction ``p_hat`` (from
``ShownItem.scores[task]``), its label (``ItemLabels.<task>``) and the context field values.
Items without a score for the task are not rows for that task (nothing to calibrate).

Context fields (configurable): ``position`` and ``item`` are per item; ``user`` and
``query`` come from the impression; any other name is read from ``Impression.context``
(e.g. OBD's ``user_feature_0``). Each value is hashed (blake2b, stable across processes and
runs, unlike ``hash()``) into ``buckets`` rows of a per-field embedding table, so unseen
items and users need no vocabulary and the state has a fixed shape for checkpoints.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from contracts.events import LabeledList

BINARY_TASKS = ("click", "long_view", "like", "follow", "share")
P_CLIP = 1e-6


@dataclass
class TaskRows:
    """All rows of one task in a batch (aligned lists)."""

    p_hat: list[float] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    fields: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.p_hat)

    def logits(self) -> torch.Tensor:
        p = torch.tensor(self.p_hat, dtype=torch.float32).clamp(P_CLIP, 1 - P_CLIP)
        return torch.logit(p)

    def label_tensor(self) -> torch.Tensor:
        return torch.tensor(self.labels, dtype=torch.float32)


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    unknown = [t for t in tasks if t not in BINARY_TASKS]
    if unknown or not tasks:
        raise ValueError(f"calibration tasks must be binary labels among {BINARY_TASKS}, got {list(tasks)}")
    return tuple(tasks)


def field_value(example: LabeledList, index: int, name: str) -> Any:
    item = example.impression.items[index]
    if name == "position":
        return item.position
    if name == "item":
        return item.item_id
    if name == "user":
        return example.impression.user_id
    if name == "query":
        return example.impression.query
    return example.impression.context.get(name)


def extract_rows(batch: Sequence[LabeledList], tasks: Sequence[str], fields: Sequence[str]) -> dict[str, TaskRows]:
    rows = {task: TaskRows(fields={f: [] for f in fields}) for task in tasks}
    for example in batch:
        for i, (item, label) in enumerate(zip(example.impression.items, example.labels)):
            for task in tasks:
                score = item.scores.get(task)
                if score is None or not math.isfinite(score):
                    continue
                r = rows[task]
                r.p_hat.append(float(score))
                r.labels.append(float(getattr(label, task)))
                for f in fields:
                    r.fields[f].append(field_value(example, i, f))
    return rows


def request_context(context: dict[str, Any], n: int) -> dict[str, Sequence[Any]]:
    """A serving request's context as per-row columns of length ``n`` (scalars and 0-d tensors broadcast)."""
    out: dict[str, Sequence[Any]] = {}
    for name, value in context.items():
        if isinstance(value, torch.Tensor):
            value = value.tolist() if value.dim() else value.item()
        out[name] = value if isinstance(value, (list, tuple)) else [value] * n
    return out


def stable_bucket(field_name: str, value: Any, buckets: int) -> int:
    digest = hashlib.blake2b(f"{field_name}\x00{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


class ContextEncoder(nn.Module):
    """h(x) = concat over fields of a hashed embedding: ``[n, len(fields) * dim]``."""

    def __init__(self, fields: Sequence[str], buckets: int = 1024, dim: int = 8) -> None:
        super().__init__()
        self.fields = tuple(fields)
        self.buckets = int(buckets)
        self.dim = int(dim)
        self.table = nn.Embedding(max(1, len(self.fields)) * self.buckets, self.dim)
        nn.init.normal_(self.table.weight, 0.0, 1e-2)
        self._cache: dict[tuple[str, Any], int] = {}

    @property
    def out_dim(self) -> int:
        return len(self.fields) * self.dim

    def indices(self, values: dict[str, Sequence[Any]], n: int) -> torch.Tensor:
        cols = []
        for k, name in enumerate(self.fields):
            column = values.get(name)
            if column is None or isinstance(column, (str, int, float)) or column is None:
                column = [column] * n  # request-level scalar (or missing) -> broadcast
            if len(column) != n:
                raise ValueError(f"context field {name!r} has {len(column)} values for {n} rows")
            cols.append(self._column(k, name, column))
        if not cols:
            return torch.zeros(n, 0, dtype=torch.long)
        return torch.tensor(cols, dtype=torch.long).T.contiguous()

    def _column(self, k: int, name: str, column: Sequence[Any]) -> list[int]:
        """``index`` of every value: cached ones by one dict lookup each (the serving path's hot loop)."""
        get, offset = self._cache.get, k * self.buckets
        found = [get((name, v)) for v in column]  # a tensor value misses here (hashed by id): index() has it
        return [offset + b if b is not None else self.index(k, name, v.item() if isinstance(v, torch.Tensor) else v)
                for b, v in zip(found, column)]

    def index(self, k: int, name: str, value: Any) -> int:
        """The embedding row of ``value`` of the ``k``-th field ``name`` (hashes are cached)."""
        key = (name, value)
        idx = self._cache.get(key)
        if idx is None:
            idx = stable_bucket(name, value, self.buckets)
            if len(self._cache) < 200_000:
                self._cache[key] = idx
        return idx + k * self.buckets

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.shape[1] == 0:
            return torch.zeros(indices.shape[0], 0)
        return self.table(indices).reshape(indices.shape[0], -1)
