"""Where serving gets dense item features when a request does not carry them.

* ``request``: only the features in the request (candidates without features get none).
* ``feast``: the item features of the applied Feast repo (``letor_document:features`` by
  default), read with :class:`feature_store.online_read.DirectFeatureReader`: one pipelined
  Redis round trip for the N candidates (and the user and query). Items the store does not
  know get zeros and are counted (``missing``), so one unknown item never fails a request.

Degrading instead of failing (issue 17). Every read that succeeds refreshes a bounded local
cache of rows (:class:`serving.feature_cache.FeatureCache`, LRU with a TTL). When the online
store cannot be reached (Redis down or stalled past the reader's timeout), a request is served
from the cached rows of its items if any are fresh (``source="cache"``), else without item
features (``[n, 0]``, as when no item is known: the models rank by the task scores;
``source="none"``); either way the read is ``degraded="features"`` (the response and
``/metrics`` say so) and counted (``unavailable``), never an HTTP 500; the next request tries
the store again. Items the store answers for but no longer has while the cache does (Redis
restarted empty) are also filled from the cache and marked degraded. ``health()`` gives
``/healthz`` its reasons: the store unreachable in the last ``window_s``, or most items read in
that window missing from it (the rows went away: the materialize repair job,
:class:`feature_store.scheduling.MaterializeRepair`, brings them back).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from redis.exceptions import RedisError

from common.config import Settings
from serving.feature_cache import FeatureCache

DEFAULT_ITEM_FEATURE = "letor_document:features"
WARN_EVERY_S = 10.0  # one warning per outage-interval, not one per request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureRead:
    """The ``[n, d]`` features of one request and where they came from: ``store``, ``cache`` or ``none``."""

    features: torch.Tensor
    source: str = "store"

    @property
    def degraded(self) -> str | None:
        """``"features"`` when the online store did not supply them all, else None."""
        return None if self.source == "store" else "features"


class FeastItemFeatures:
    """Item feature vectors from the Feast online store (Redis), with a local cache for outages."""

    def __init__(self, settings: Settings, feature: str = DEFAULT_ITEM_FEATURE, cache: FeatureCache | None = None,
                 window_s: float = 30.0, missing_alarm_share: float = 0.5, missing_alarm_items: int = 20) -> None:
        from feature_store.online_read import applied_reader  # noqa: PLC0415 - Feast is slow to import

        self.reader = applied_reader(settings, [feature])
        self.reference = feature  # what impressions name instead of copying the rows
        self.output = feature.replace(":", "__")
        self.cache = cache if cache is not None else FeatureCache()
        self.window_s = window_s
        self.missing_alarm_share = missing_alarm_share
        self.missing_alarm_items = missing_alarm_items
        self.missing = 0
        self.unavailable = 0  # requests whose read failed because the store was unreachable
        self.from_cache = 0  # requests served (partly) from the local cache
        self._unreachable_at: collections.deque[float] = collections.deque(maxlen=10_000)
        self._reads: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=10_000)
        self._warned_at = float("-inf")
        self._lock = threading.Lock()

    def fetch(self, user_id: str | None, query: str | None, item_ids: Sequence[str]) -> torch.Tensor:
        """``[n, d]`` float32 features of ``item_ids`` (zeros for unknown items; ``[n, 0]`` if none is known)."""
        return self.read(user_id, query, item_ids).features

    def read(self, user_id: str | None, query: str | None, item_ids: Sequence[str]) -> FeatureRead:
        """The features of ``item_ids`` and their source (see the module docstring)."""
        try:
            out, known = self.reader.read_item_vectors(item_ids, self.output)
        except (RedisError, OSError) as exc:
            self._note_unreachable(exc)
            cached, hit = self.cache.get_many(item_ids)
            if hit.any():
                with self._lock:
                    self.from_cache += 1
                return FeatureRead(torch.from_numpy(cached), "cache")
            return FeatureRead(torch.zeros((len(item_ids), 0)), "none")
        self.cache.put_many(item_ids, out, known)
        missing = int(known.size - known.sum())
        source = "store"
        if missing:
            out, known, source = self._fill_from_cache(item_ids, out, known)
        with self._lock:
            self.missing += missing
            self._reads.append((time.monotonic(), len(item_ids), missing))
            self.from_cache += source == "cache"
        return FeatureRead(torch.from_numpy(out), source)

    def rows(self, feature: str, item_ids: Sequence[str]) -> np.ndarray | None:
        """``[n, d]`` rows of ``item_ids`` for the promotion gate, which scores logged lists that name
        ``feature`` instead of carrying it (zeros for unknown items, as served); ``None`` for another
        feature or when neither the store nor the cache has any of them. Not counted as requests."""
        if feature != self.reference:
            return None
        try:
            out, known = self.reader.read_item_vectors(item_ids, self.output)
        except (RedisError, OSError):
            out, known = self.cache.get_many(item_ids)
        if out.shape[1] == 0 or not known.any():
            return None
        return out

    def _fill_from_cache(self, item_ids: Sequence[str], out: np.ndarray,
                         known: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Rows the store no longer has but the cache does (the store lost them): filled, marked degraded."""
        cached, hit = self.cache.get_many(item_ids)
        fill = hit & ~known
        if not fill.any() or (out.shape[1] and cached.shape[1] != out.shape[1]):
            return out, known, "store"
        if out.shape[1] == 0:
            out = np.zeros_like(cached)
        out[fill] = cached[fill]
        return out, known | fill, "cache"

    def _note_unreachable(self, exc: BaseException) -> None:
        with self._lock:
            self.unavailable += 1
            now = time.monotonic()
            self._unreachable_at.append(now)
            warn = now - self._warned_at >= WARN_EVERY_S
            if warn:
                self._warned_at = now
        if warn:
            log.warning("feature store unreachable (%s: %s): serving from the local cache or without item features "
                        "(%d requests so far)", type(exc).__name__, exc, self.unavailable)

    def health(self) -> list[str]:
        """Why the features are degraded now (empty: they are not), for ``/healthz``."""
        since = time.monotonic() - self.window_s
        with self._lock:
            unreachable = sum(1 for t in self._unreachable_at if t >= since)
            recent = [(n, m) for t, n, m in self._reads if t >= since]
        reasons = []
        if unreachable:
            reasons.append(f"features: the feature store was unreachable for {unreachable} requests in the last "
                           f"{self.window_s:.0f} s (served from the local cache or without item features)")
        requested, missing = sum(n for n, _ in recent), sum(m for _, m in recent)
        if requested >= self.missing_alarm_items and missing >= self.missing_alarm_share * requested:
            reasons.append(f"features: {missing} of the {requested} items read in the last {self.window_s:.0f} s "
                           f"are missing from the online store (rows lost? re-materialization repairs them)")
        return reasons


def build_feature_source(kind: str, settings: Settings) -> FeastItemFeatures | None:
    if kind == "request":
        return None
    if kind == "feast":
        return FeastItemFeatures(settings)
    raise ValueError(f"feature_source must be 'request' or 'feast', got {kind!r}")
