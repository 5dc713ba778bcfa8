r"""Tensors for list-wise policies, from :class:`LabeledList` examples or from a serving request.

Both the LDRO reranker and the DRPO fusion policy read the same per-item inputs:

* ``features``: the item's dense features as served (zeros when the impression has none);
* ``task_logits``: :math:`g(p_k) = \mathrm{logit}(\mathrm{clip}(p_k, 10^{-4}, 1-10^{-4}))` of each
  task's *calibrated* prediction when the impression carries one, else the upstream score
  (a missing task counts as :math:`p = 0.5`, i.e. :math:`g = 0`);
* the request context (``user_activity``: the real KuaiRand activity degree in the simulator;
  ``query_type``: a query-intent class, :data:`QUERY_TYPES`, when the request carries one).

Items are ordered by their served position, so index ``k`` is the ``k``-th shown item and
the served order is the identity. Lists are padded to the batch's longest; ``mask`` marks
real items. A feature vector of the wrong length is refused with :class:`PolicyInputError`
naming the field (a bad example must not silently become a different one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch

from common.errors import StreamrankError
from contracts.events import LabeledList, item_feature_count, item_feature_row
from contracts.learner import RerankRequest

DEFAULT_TASKS: tuple[str, ...] = ("click", "long_view", "watch_time")
ACTIVITY_LEVELS: tuple[str, ...] = ("full_active", "high_active", "middle_active", "low_active", "2_14_day_new",
                                    "single_day_new", "UNKNOWN")
#: Query-intent classes a request's ``context["query_type"]`` may name (what a query classifier
#: gives serving; :mod:`simulator.contextual` draws them); anything else is ``UNKNOWN``.
QUERY_TYPES: tuple[str, ...] = ("UNKNOWN", "navigational", "exploratory", "entertainment")
P_CLIP = 1e-4


log = logging.getLogger(__name__)

class PolicyInputError(StreamrankError, ValueError):
    """An example or request the policy cannot use; ``field`` names the offending field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def task_logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), P_CLIP, 1.0 - P_CLIP)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def activity_index(context: dict) -> int:
    value = context.get("user_activity", "UNKNOWN") if context else "UNKNOWN"
    return ACTIVITY_LEVELS.index(value) if value in ACTIVITY_LEVELS else ACTIVITY_LEVELS.index("UNKNOWN")


def query_type_index(context: dict) -> int:
    value = context.get("query_type", "UNKNOWN") if context else "UNKNOWN"
    return QUERY_TYPES.index(value) if value in QUERY_TYPES else 0


@dataclass
class ListBatch:
    """A padded batch of lists (``B`` lists, at most ``n`` items, ``d`` features, ``K`` tasks)."""

    features: torch.Tensor  # [B, n, d] float32
    task_logits: torch.Tensor  # [B, n, K] float32
    mask: torch.Tensor  # [B, n] bool
    activity: torch.Tensor  # [B] long
    item_rewards: torch.Tensor  # [B, n] float32 (0 for serving requests)
    list_reward: torch.Tensor  # [B]
    query_reward: torch.Tensor  # [B]
    fusion_weights: torch.Tensor  # [B, K]: the served fusion weights (0 when absent)
    fusion_logprob: torch.Tensor  # [B]: their behaviour log-prob (nan when absent)
    list_logprob: torch.Tensor  # [B]: the served order's behaviour log-prob (nan when absent)
    example_ids: tuple[str, ...] = ()
    query_type: torch.Tensor | None = None  # [B] long (index into QUERY_TYPES); None: all UNKNOWN
    #: The item-level behaviour labels of the served lists (``ItemLabels.click`` / ``long_view``;
    #: 0 for serving requests and padding): what an item-level satisfaction model learns from.
    item_clicks: torch.Tensor | None = None  # [B, n] float32; None: all 0
    item_long_views: torch.Tensor | None = None  # [B, n] float32; None: all 0

    @property
    def clicks(self) -> torch.Tensor:
        """``[B, n]`` click labels in served order (0 where the batch carries none)."""
        return self.item_clicks if self.item_clicks is not None else torch.zeros_like(self.item_rewards)

    @property
    def long_views(self) -> torch.Tensor:
        """``[B, n]`` long-view labels in served order (0 where the batch carries none)."""
        return self.item_long_views if self.item_long_views is not None else torch.zeros_like(self.item_rewards)

    @property
    def query_types(self) -> torch.Tensor:
        """``[B]`` query-type indices (0 = ``UNKNOWN`` where the requests carried none)."""
        return self.query_type if self.query_type is not None else torch.zeros(self.size, dtype=torch.long)

    @property
    def inputs(self) -> torch.Tensor:
        """Per-item model input ``[B, n, d + K]``: features then task logits."""
        return torch.cat([self.features, self.task_logits], dim=-1)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def has_fusion(self) -> torch.Tensor:
        return ~torch.isnan(self.fusion_logprob)

    def to(self, device: torch.device) -> "ListBatch":
        """The batch on ``device`` (itself when already there; pinned buffers copy asynchronously)."""
        if self.mask.device == device:
            return self
        move = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "example_ids"}
        return ListBatch(**{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                            for k, v in move.items()}, example_ids=self.example_ids)


def _features(items, n_features: int, where: str) -> np.ndarray:
    """The items' ``[n, n_features]`` float32 rows, from either feature spelling (zeros where none)."""
    for i, item in enumerate(items):
        count = item_feature_count(item)
        if count is not None and count != n_features:
            name = "features" if item.features is not None else "features_f32"
            raise PolicyInputError(f"{where}.items.{i}.{name}", f"has {count} values, the model expects {n_features}")
    if all(item.features is not None for item in items):
        return np.asarray([item.features for item in items], dtype=np.float32).reshape(len(items), n_features)
    out = np.zeros((len(items), n_features), dtype=np.float32)
    for i, item in enumerate(items):
        row = item_feature_row(item)
        if row is not None:
            out[i] = row
    return out


TASK_INPUTS = ("calibrated", "upstream")


def _task_probs(items, tasks: Sequence[str], task_inputs: str = "calibrated") -> np.ndarray:
    out = np.full((len(items), len(tasks)), 0.5, dtype=np.float64)
    for i, item in enumerate(items):
        source = item.calibrated if item.calibrated and task_inputs == "calibrated" else item.scores
        for k, task in enumerate(tasks):
            if task in source:
                out[i, k] = source[task]
            elif task in item.scores:
                out[i, k] = item.scores[task]
    return out


@dataclass(frozen=True)
class Rejected:
    """An example a learner skipped, and why (the runtime may dead-letter it with this reason)."""

    example_id: str
    field: str
    detail: str


def from_examples(batch: Sequence[LabeledList], n_features: int, tasks: Sequence[str] = DEFAULT_TASKS,
                  task_inputs: str = "calibrated") -> ListBatch:
    """Pad ``batch`` into tensors (items in served-position order).

    ``task_inputs``: the task scores a model reads, ``calibrated`` (the served calibrator's
    output logged with the impression, else the upstream score) or ``upstream`` (the request's
    own scores; a reranker that must not move when the calibrator is updated).
    """
    if not batch:
        raise PolicyInputError("batch", "is empty")
    n = max(len(ex.labels) for ex in batch)
    B, K = len(batch), len(tasks)
    features = np.zeros((B, n, n_features), dtype=np.float32)
    logits = np.zeros((B, n, K), dtype=np.float32)
    mask = np.zeros((B, n), dtype=bool)
    rewards = np.zeros((B, n), dtype=np.float32)
    clicks = np.zeros((B, n), dtype=np.float32)
    long_views = np.zeros((B, n), dtype=np.float32)
    fusion = np.zeros((B, K), dtype=np.float32)
    fusion_lp = np.full(B, np.nan, dtype=np.float32)
    list_lp = np.full(B, np.nan, dtype=np.float32)
    activity = np.zeros(B, dtype=np.int64)
    qtype = np.zeros(B, dtype=np.int64)
    for b, ex in enumerate(batch):
        imp = ex.impression
        order = sorted(range(len(imp.items)), key=lambda i: imp.items[i].position)
        items = [imp.items[i] for i in order]
        m = len(items)
        features[b, :m] = _features(items, n_features, f"examples.{b}.impression")
        logits[b, :m] = task_logit(_task_probs(items, tasks, task_inputs))
        mask[b, :m] = True
        rewards[b, :m] = [ex.labels[i].reward for i in order]
        clicks[b, :m] = [ex.labels[i].click for i in order]
        long_views[b, :m] = [ex.labels[i].long_view for i in order]
        activity[b] = activity_index(imp.context)
        qtype[b] = query_type_index(imp.context)
        if imp.fusion is not None and imp.fusion.logprob is not None and all(t in imp.fusion.weights for t in tasks):
            fusion[b] = [imp.fusion.weights[t] for t in tasks]
            fusion_lp[b] = imp.fusion.logprob
        if imp.list_logprob is not None:
            list_lp[b] = imp.list_logprob
    return ListBatch(
        features=torch.from_numpy(features), task_logits=torch.from_numpy(logits), mask=torch.from_numpy(mask),
        activity=torch.from_numpy(activity), item_rewards=torch.from_numpy(rewards),
        list_reward=torch.tensor([ex.list_reward for ex in batch], dtype=torch.float32),
        query_reward=torch.tensor([ex.query_reward for ex in batch], dtype=torch.float32),
        fusion_weights=torch.from_numpy(fusion), fusion_logprob=torch.from_numpy(fusion_lp),
        list_logprob=torch.from_numpy(list_lp), example_ids=tuple(ex.example_id for ex in batch),
        query_type=torch.from_numpy(qtype), item_clicks=torch.from_numpy(clicks),
        item_long_views=torch.from_numpy(long_views))


def from_request(request: RerankRequest, n_features: int, tasks: Sequence[str] = DEFAULT_TASKS,
                 task_inputs: str = "calibrated") -> ListBatch:
    """A one-list batch from a serving request (candidates in the request's order); ``task_inputs``
    as in :func:`from_examples`."""
    n = len(request.item_ids)
    if n == 0:
        raise PolicyInputError("item_ids", "a request needs at least one candidate")
    features = torch.as_tensor(request.features, dtype=torch.float32)
    if features.numel() == 0 and n_features > 0:
        features = torch.zeros(n, n_features)
    if features.shape != (n, n_features):
        raise PolicyInputError("features", f"shape {tuple(features.shape)}, expected ({n}, {n_features})")
    probs = np.full((n, len(tasks)), 0.5)
    scores = request.task_scores
    if task_inputs == "upstream" and request.upstream_scores is not None:
        scores = request.upstream_scores
    for k, task in enumerate(tasks):
        if task in scores:
            values = torch.as_tensor(scores[task], dtype=torch.float64).numpy()
            if values.shape != (n,):
                raise PolicyInputError(f"task_scores.{task}", f"shape {values.shape}, expected ({n},)")
            probs[:, k] = values
    if not np.isfinite(probs).all() or not torch.isfinite(features).all():
        raise PolicyInputError("task_scores" if not np.isfinite(probs).all() else "features", "not finite")
    nan = torch.full((1,), float("nan"))
    return ListBatch(
        features=features.unsqueeze(0), task_logits=torch.from_numpy(task_logit(probs)).unsqueeze(0),
        mask=torch.ones(1, n, dtype=torch.bool), activity=torch.tensor([activity_index(request.context)]),
        item_rewards=torch.zeros(1, n), list_reward=torch.zeros(1), query_reward=torch.zeros(1),
        fusion_weights=torch.zeros(1, len(tasks)), fusion_logprob=nan.clone(), list_logprob=nan.clone(),
        query_type=torch.tensor([query_type_index(request.context)]))


def from_task_scores(items: Sequence[tuple[dict[str, Any], dict[str, Any]]],
                     tasks: Sequence[str] = DEFAULT_TASKS) -> ListBatch:
    """A padded batch of ``(task_scores, context)`` lists without item features (``d = 0``).

    What a fusion policy reads at serving time (task logits, the mask, activity and query type):
    building the ``[n, d]`` zero features :func:`from_request` needs would cost more than the policy.
    A task a list does not score gets probability 0.5 (logit 0), as in :func:`from_request`."""
    if not items:
        raise PolicyInputError("items", "is empty")
    sizes = [len(next(iter(scores.values()))) if scores else 0 for scores, _ in items]
    if min(sizes) == 0:
        raise PolicyInputError("task_scores", "a request needs at least one candidate and one task")
    B, n, K = len(items), max(sizes), len(tasks)
    probs = np.full((B, n, K), 0.5)
    mask = np.zeros((B, n), dtype=bool)
    for b, ((scores, _), m) in enumerate(zip(items, sizes)):
        mask[b, :m] = True
        for k, task in enumerate(tasks):
            if task in scores:
                values = torch.as_tensor(scores[task], dtype=torch.float64).numpy()
                if values.shape != (m,):
                    raise PolicyInputError(f"task_scores.{task}", f"shape {values.shape}, expected ({m},)")
                probs[b, :m, k] = values
    if not np.isfinite(probs).all():
        raise PolicyInputError("task_scores", "not finite")
    nan = torch.full((B,), float("nan"))
    return ListBatch(
        features=torch.zeros(B, n, 0), task_logits=torch.from_numpy(task_logit(probs)).float(),
        mask=torch.from_numpy(mask), activity=torch.tensor([activity_index(c) for _, c in items]),
        item_rewards=torch.zeros(B, n), list_reward=torch.zeros(B), query_reward=torch.zeros(B),
        fusion_weights=torch.zeros(B, K), fusion_logprob=nan.clone(), list_logprob=nan.clone(),
        query_type=torch.tensor([query_type_index(c) for _, c in items]))


def stack_lists(lists: Sequence[ListBatch]) -> ListBatch:
    """Concatenate batches along ``B``, padding every list to the longest (mask ``False`` on the
    padding): one forward pass for many lists, e.g. the promotion gate scoring 150 logged lists."""
    if not lists:
        raise PolicyInputError("lists", "is empty")
    n = max(int(b.mask.shape[1]) for b in lists)

    def pad(t: torch.Tensor, value: float | bool = 0) -> torch.Tensor:
        if t.shape[1] == n:
            return t
        shape = (t.shape[0], n - t.shape[1], *t.shape[2:])
        return torch.cat([t, torch.full(shape, value, dtype=t.dtype)], dim=1)

    return ListBatch(
        features=torch.cat([pad(b.features) for b in lists]), task_logits=torch.cat([pad(b.task_logits) for b in lists]),
        mask=torch.cat([pad(b.mask, False) for b in lists]), activity=torch.cat([b.activity for b in lists]),
        item_rewards=torch.cat([pad(b.item_rewards) for b in lists]),
        list_reward=torch.cat([b.list_reward for b in lists]), query_reward=torch.cat([b.query_reward for b in lists]),
        fusion_weights=torch.cat([b.fusion_weights for b in lists]),
        fusion_logprob=torch.cat([b.fusion_logprob for b in lists]),
        list_logprob=torch.cat([b.list_logprob for b in lists]),
        example_ids=tuple(e for b in lists for e in b.example_ids),
        query_type=torch.cat([b.query_types for b in lists]),
        item_clicks=torch.cat([pad(b.clicks) for b in lists]),
        item_long_views=torch.cat([pad(b.long_views) for b in lists]))


class ListPolicyLearning:
    """``learn_many`` shared by the list-wise policies (LDRO, GRPO, DRPO).

    Examples are written into a padded batch as they come (:meth:`batch_builder`,
    :class:`learners.ingest.lists.ListArrays`); unusable ones (e.g. a feature vector of the wrong
    length) are skipped, logged and listed in ``last_rejected`` (metric ``rejected``), never the
    reason a batch fails; :meth:`learn_built` hands the rest to the family's ``update``. Needs
    ``name``, ``config.n_features``, ``config.tasks``, ``update(ListBatch)``, ``examples_seen``,
    ``last_rejected`` and ``device``.
    """

    def batch_builder(self, capacity: int):  # -> learners.ingest.lists.ListArrays (imported lazily: no cycle)
        from learners.ingest.lists import ListArrays  # noqa: PLC0415

        return ListArrays(max(1, capacity), self.config.n_features, self.config.tasks,
                          getattr(self.config, "task_inputs", "calibrated"), pin=self.device.type == "cuda")

    def learn_built(self, built, rejected: Sequence[Rejected] = ()) -> dict[str, float]:
        """One update from the examples written into ``built``; ``rejected``: those it refused."""
        self.last_rejected = list(rejected)
        for r in self.last_rejected:
            log.warning("%s: skipped example %s: %s: %s", self.name, r.example_id, r.field, r.detail)
        if not built.count:
            return {"examples": 0.0, "rejected": float(len(self.last_rejected))} if rejected else {"examples": 0.0}
        self._built_rows, self._built_items = built.count, built.items
        lists = built.take(self.pad_to(built.longest)).to(self.device)
        metrics = self.update(lists)
        self.examples_seen += built.count
        metrics["rejected"] = float(len(self.last_rejected))
        return metrics

    def pad_to(self, longest: int) -> int:
        """Items to pad this batch to: alone, its own longest list; on data-parallel ranks the union's
        (and ``noise_rows`` says which rows of the union's sampling noise are this rank's)."""
        sync = getattr(self, "sync", None)
        if sync is None:
            self.noise_rows = None
            return longest
        built_rows = getattr(self, "_built_rows", 0)
        offset, total, union_longest = sync.layout(built_rows, longest, getattr(self, "_built_items", 0))
        self.noise_rows = (offset, total) if not sync.idle else (0, total)
        return max(union_longest, longest)

    def learn_many(self, batch: Sequence[LabeledList]) -> dict[str, float]:
        built = self.batch_builder(len(batch))
        rejected = [r for r in (built.add(ex) for ex in batch) if r is not None]
        return self.learn_built(built, rejected)
