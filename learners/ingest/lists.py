r"""Validated examples written straight into a list-wise policy's padded batch arrays.

:class:`ListArrays` is one batch under construction: its tensors (``B`` lists, up to ``n``
items, ``d`` features, ``K`` tasks) are allocated once, at the batch's capacity, and every
example is written into its row as it is decoded (:meth:`ListArrays.add`), so the update never
sees an example object and collation is a slice (:meth:`ListArrays.take`). The values are the
ones :func:`learners.policy.batch.from_examples` computes, element for element (a test holds the
two together): items in served-position order, :math:`g(p) = \mathrm{logit}(\mathrm{clip}(p))` of
the calibrated (else upstream) task score, the logged fusion weights and log-probs, the context
indices. A feature vector of the wrong length leaves the row unwritten and comes back as a
:class:`~learners.policy.batch.Rejected` naming the field (the runtime dead-letters it).

With ``pin=True`` the buffers are page-locked, so a copy to a CUDA device can run asynchronously.
"""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Any, Sequence

import numpy as np
import torch

from contracts.events import FEATURES_F32_DTYPE, LabeledList, item_feature_count
from contracts.fast_decode import LabeledListS
from learners.policy.batch import (
    ListBatch,
    PolicyInputError,
    Rejected,
    _features,
    activity_index,
    query_type_index,
    task_logit,
)


#: the arrays of a batch and their dtypes; per-item ones are ``[B, n, ...]``, the rest ``[B, ...]``
PER_ITEM = frozenset({"features", "task_logits", "mask", "item_rewards", "item_clicks", "item_long_views"})
NAN_DEFAULTS = frozenset({"fusion_logprob", "list_logprob"})  # NaN: not logged
TORCH_DTYPES = {np.float32: torch.float32, np.bool_: torch.bool, np.int64: torch.long}
_LABEL_COLUMNS = attrgetter("reward", "click", "long_view")


def array_shapes(rows: int, n: int, d: int, k: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and numpy dtype of each array of a batch of ``rows`` lists of up to ``n`` items, ``d``
    features and ``k`` tasks (one layout for :class:`ListArrays` and the decode workers' slots)."""
    f32 = np.float32
    return {"features": ((rows, n, d), f32), "task_logits": ((rows, n, k), f32), "mask": ((rows, n), np.bool_),
            "item_rewards": ((rows, n), f32), "item_clicks": ((rows, n), f32), "item_long_views": ((rows, n), f32),
            "activity": ((rows,), np.int64), "query_type": ((rows,), np.int64), "list_reward": ((rows,), f32),
            "query_reward": ((rows,), f32), "fusion_weights": ((rows, k), f32), "fusion_logprob": ((rows,), f32),
            "list_logprob": ((rows,), f32)}


class ListArrays:
    """A padded batch of up to ``capacity`` lists, filled row by row from decoded examples."""

    def __init__(self, capacity: int, n_features: int, tasks: Sequence[str], task_inputs: str = "calibrated",
                 items: int = 50, pin: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.n_features, self.tasks = int(capacity), int(n_features), tuple(tasks)
        self.use_calibrated = task_inputs == "calibrated"
        self.pin = pin
        self.count = 0
        self.items = 0  # real items written (the mask's sum)
        self.longest = 0
        self.example_ids: list[str] = []
        self._allocate(max(1, int(items)))

    def _zeros(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype, pin_memory=self.pin)

    def _allocate(self, n: int) -> None:
        old = getattr(self, "t", None)
        self.t = {}
        for name, (shape, dtype) in array_shapes(self.capacity, n, self.n_features, len(self.tasks)).items():
            self.t[name] = self._zeros(*shape, dtype=TORCH_DTYPES[dtype])
            if name in NAN_DEFAULTS:
                self.t[name].fill_(float("nan"))
        if old is not None:  # a longer list than any before: keep the rows already written
            for name, tensor in old.items():
                if name in PER_ITEM:
                    self.t[name][:, : tensor.shape[1]] = tensor
                else:
                    self.t[name].copy_(tensor)
        self.n = n
        self.a = {name: tensor.numpy() for name, tensor in self.t.items()}

    # -- decode workers (learners.ingest.decode_pool): rows written elsewhere, copied in here --------
    def spec(self) -> dict[str, Any]:
        """What a decode worker needs to build rows equal to this builder's (JSON)."""
        return {"n_features": self.n_features, "tasks": list(self.tasks),
                "task_inputs": "calibrated" if self.use_calibrated else "upstream"}

    @classmethod
    def over(cls, arrays: dict[str, np.ndarray], spec: dict[str, Any]) -> "ListArrays":
        """A builder writing into ``arrays`` (``array_shapes`` layout, e.g. a shared-memory slot) instead
        of its own tensors; it never grows: the caller keeps lists longer than the arrays away."""
        self = cls.__new__(cls)
        self.n_features, self.tasks = int(spec["n_features"]), tuple(spec["tasks"])
        self.use_calibrated = spec["task_inputs"] == "calibrated"
        self.pin = False
        self.capacity, self.n = arrays["features"].shape[0], arrays["features"].shape[1]
        self.a = arrays
        self.t = {}
        self.clear()
        return self

    def clear(self) -> None:
        """Forget the rows written (a slot reused for the next chunk): counters, and the per-row
        fields that :meth:`add` writes only when the example has them back at their defaults."""
        self.count = self.items = self.longest = 0
        self.example_ids = []
        for name in NAN_DEFAULTS:
            self.a[name].fill(np.nan)
        self.a["fusion_weights"].fill(0.0)

    def add_rows(self, src: dict[str, np.ndarray], rows: Sequence[tuple[int, int, str]]) -> None:
        """Append rows ``(i, m, example_id)`` (row ``i`` of ``src``, a list of ``m`` items) of arrays that
        :meth:`add` filled elsewhere (a decode worker's slot, same ``spec``, every row zero past its
        ``m`` items): the same values as ``add`` of those examples, in that order. Consecutive rows are
        copied as one block per array (a decode worker's chunk is usually one run)."""
        if self.count + len(rows) > self.capacity:
            raise ValueError(f"batch is full ({self.capacity} lists)")
        start = 0
        while start < len(rows):
            stop = start + 1
            while stop < len(rows) and rows[stop][0] == rows[stop - 1][0] + 1:
                stop += 1
            i, k = rows[start][0], stop - start
            longest = max(m for _, m, _ in rows[start:stop])
            if longest > self.n:
                self._allocate(longest)
            b = self.count
            for name, dst in self.a.items():
                if name in PER_ITEM:
                    dst[b:b + k, :longest] = src[name][i:i + k, :longest]
                else:
                    dst[b:b + k] = src[name][i:i + k]
            for _, m, example_id in rows[start:stop]:
                self.example_ids.append(example_id)
                self.items += m
            self.longest = max(self.longest, longest)
            self.count += k
            start = stop

    @property
    def full(self) -> bool:
        return self.count >= self.capacity

    def add(self, example: LabeledList | LabeledListS) -> Rejected | None:
        """Write ``example`` into the next row; a :class:`Rejected` (row left unwritten) if unusable."""
        if self.full:
            raise ValueError(f"batch is full ({self.capacity} lists)")
        imp = example.impression
        items: Sequence[Any] = imp.items  # ShownItem models or ShownItemS structs: the same attributes
        labels: Sequence[Any] = example.labels
        m, d = len(items), self.n_features
        blobs = [item.features_f32 for item in items]
        nbytes = 4 * d
        binary = None not in blobs and set(map(len, blobs)) == {nbytes}  # our producers' records
        if not binary:
            for i, item in enumerate(items):
                count = item_feature_count(item)
                if count is not None and count != d:
                    name = "features_f32" if item.features_f32 is not None else "features"
                    exc = PolicyInputError(f"impression.items.{i}.{name}",
                                           f"has {count} values, the model expects {d}")
                    return Rejected(example.example_id, exc.field, exc.detail)
        positions = [item.position for item in items]
        if positions != sorted(positions):
            order = sorted(range(m), key=positions.__getitem__)
            items = [items[i] for i in order]
            labels = [labels[i] for i in order]
            blobs = [blobs[i] for i in order]
        if m > self.n:
            self._allocate(m)
        b, a = self.count, self.a
        if d and binary:  # one np.frombuffer over the list's joined bytes, one copy into the row block
            a["features"][b, :m] = np.frombuffer(b"".join(blobs), dtype=FEATURES_F32_DTYPE).reshape(m, d)
        elif d:
            a["features"][b, :m] = _features(items, d, "impression")  # lengths checked above
        a["task_logits"][b, :m] = task_logit(self._task_probs(items))
        a["mask"][b, :m] = True
        a["item_rewards"][b, :m], a["item_clicks"][b, :m], a["item_long_views"][b, :m] = np.array(
            list(map(_LABEL_COLUMNS, labels)), dtype=np.float64).reshape(m, 3).T
        a["activity"][b] = activity_index(imp.context)
        a["query_type"][b] = query_type_index(imp.context)
        a["list_reward"][b] = example.list_reward
        a["query_reward"][b] = example.query_reward
        fusion = imp.fusion
        if fusion is not None and fusion.logprob is not None and all(t in fusion.weights for t in self.tasks):
            a["fusion_weights"][b] = [fusion.weights[t] for t in self.tasks]
            a["fusion_logprob"][b] = fusion.logprob
        if imp.list_logprob is not None:
            a["list_logprob"][b] = imp.list_logprob
        self.example_ids.append(example.example_id)
        self.longest = max(self.longest, m)
        self.items += m
        self.count += 1
        return None

    def _task_probs(self, items) -> np.ndarray:
        """``[n, K]``: each task's calibrated score (when ``use_calibrated`` and the item has any),
        else its upstream score, else 0.5. Built as nested lists and converted once (setting numpy
        elements one by one was half of :meth:`add`'s time); a list whose dicts hold every task
        (what our servers log) is read with one ``itemgetter`` call per item, else task by task."""
        tasks, use_calibrated, shape = self.tasks, self.use_calibrated, (len(items), len(self.tasks))
        if tasks:
            every = itemgetter(*tasks)  # one task: a score per item, reshaped below
            try:
                rows = [every(item.calibrated if use_calibrated and item.calibrated else item.scores) for item in items]
                return np.array(rows, dtype=np.float64).reshape(shape)
            except KeyError:  # some task missing somewhere: the defaults, item by item
                pass
        rows = []
        for item in items:
            scores, calibrated = item.scores, item.calibrated
            if calibrated and use_calibrated:
                rows.append([calibrated.get(t, scores.get(t, 0.5)) for t in tasks])
            else:
                rows.append([scores.get(t, 0.5) for t in tasks])
        return np.array(rows, dtype=np.float64).reshape(shape)

    def take(self, pad_to: int | None = None) -> ListBatch:
        """The rows written so far as a :class:`ListBatch` (views of the buffers, padded to the longest
        list, or to ``pad_to`` items when given: ranks pad to the longest list of any rank)."""
        if not self.count:
            raise PolicyInputError("batch", "is empty")
        n = max(self.longest, pad_to or 0)
        if n > self.n:
            self._allocate(n)
        B, t = self.count, self.t

        def rows(name: str) -> torch.Tensor:
            tensor = t[name][:B]
            return tensor[:, :n] if tensor.dim() >= 2 and name != "fusion_weights" else tensor

        return ListBatch(features=rows("features"), task_logits=rows("task_logits"), mask=rows("mask"),
                         activity=rows("activity"), item_rewards=rows("item_rewards"),
                         list_reward=rows("list_reward"), query_reward=rows("query_reward"),
                         fusion_weights=rows("fusion_weights"), fusion_logprob=rows("fusion_logprob"),
                         list_logprob=rows("list_logprob"), example_ids=tuple(self.example_ids),
                         query_type=rows("query_type"), item_clicks=rows("item_clicks"),
                         item_long_views=rows("item_long_views"))
