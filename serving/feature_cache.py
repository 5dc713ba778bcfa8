"""A bounded cache of recent item-feature rows (LRU with a TTL) for serving through a feature-store outage.

Every successful read from the online store refreshes the rows it returned; when the store cannot
be reached, :class:`serving.features.FeastItemFeatures` answers from here what it can. Bounded in
both ways that matter: at most ``max_items`` rows (least recently used evicted first), and no row
older than ``ttl_s`` is served (item features change slowly, but a cache must not turn an outage
into serving day-old data silently). Memory: ``max_items`` x the feature width x 4 bytes (20,000
rows of 300 float32 features: 24 MB).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np


class FeatureCache:
    """item id -> (float32 row, stored at) with LRU eviction and a TTL; thread-safe."""

    def __init__(self, max_items: int = 20_000, ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._clock = clock
        self._rows: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def put_many(self, item_ids: Sequence[str], rows: np.ndarray, known: np.ndarray) -> None:
        """Remember the ``known`` rows of ``rows`` (one per item id)."""
        if not self.max_items or rows.shape[1] == 0:
            return
        now = self._clock()
        with self._lock:
            for item_id, row, ok in zip(item_ids, rows, known):
                if ok:
                    self._rows[item_id] = (row.copy(), now)
                    self._rows.move_to_end(item_id)
            while len(self._rows) > self.max_items:
                self._rows.popitem(last=False)

    def get_many(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``([n, d] float32, known mask)`` from the fresh cached rows (``d`` of the first hit; 0 if none)."""
        now = self._clock()
        found: list[np.ndarray | None] = []
        with self._lock:
            for item_id in item_ids:
                entry = self._rows.get(item_id)
                if entry is not None and now - entry[1] > self.ttl_s:
                    del self._rows[item_id]
                    entry = None
                if entry is not None:
                    self._rows.move_to_end(item_id)
                found.append(entry[0] if entry is not None else None)
        width = next((row.shape[0] for row in found if row is not None), 0)
        out = np.zeros((len(found), width), dtype=np.float32)
        known = np.zeros(len(found), dtype=bool)
        for i, row in enumerate(found):
            if row is not None and row.shape[0] == width:
                out[i], known[i] = row, True
        return out, known
