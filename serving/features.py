"""Where serving gets dense item features when a request does not carry them.

* ``request``: only the features in the request (candidates without features get none).
* ``feast``: the item features of the applied Feast repo (``letor_document:features`` by
  default), read with :class:`feature_store.online_read.DirectFeatureReader`: one pipelined
  Redis round trip for the N candidates (and the user and query). Items the store does not
  know get zeros and are counted (``missing``), so one unknown item never fails a request.
  When the online store cannot be reached (Redis down or stalled past the reader's timeout),
  the request is served without item features (``[n, 0]``, as when no item is known: the
  models rank by the task scores) and counted (``unavailable``, in ``/healthz``) instead of
  failing with a 500; the next request tries the store again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

import torch
from redis.exceptions import RedisError

from common.config import Settings

DEFAULT_ITEM_FEATURE = "letor_document:features"
WARN_EVERY_S = 10.0  # one warning per outage-interval, not one per request

log = logging.getLogger(__name__)


class FeastItemFeatures:
    """Item feature vectors from the Feast online store (Redis)."""

    def __init__(self, settings: Settings, feature: str = DEFAULT_ITEM_FEATURE) -> None:
        from feature_store.online_read import applied_reader  # noqa: PLC0415 - Feast is slow to import

        self.reader = applied_reader(settings, [feature])
        self.reference = feature  # what impressions name instead of copying the rows
        self.output = feature.replace(":", "__")
        self.missing = 0
        self.unavailable = 0  # requests served without item features because the store was unreachable
        self._warned_at = float("-inf")
        self._lock = threading.Lock()

    def fetch(self, user_id: str | None, query: str | None, item_ids: Sequence[str]) -> torch.Tensor:
        """``[n, d]`` float32 features of ``item_ids`` (zeros for unknown items; ``[n, 0]`` if none is known)."""
        try:
            out, known = self.reader.read_item_vectors(item_ids, self.output)
        except (RedisError, OSError) as exc:
            with self._lock:
                self.unavailable += 1
                warn, now = False, time.monotonic()
                if now - self._warned_at >= WARN_EVERY_S:
                    warn, self._warned_at = True, now
            if warn:
                log.warning("feature store unreachable (%s: %s): serving without item features (%d requests so far)",
                            type(exc).__name__, exc, self.unavailable)
            return torch.zeros((len(item_ids), 0))
        missing = int(known.size - known.sum())
        if missing:
            with self._lock:
                self.missing += missing
        return torch.from_numpy(out)


def build_feature_source(kind: str, settings: Settings) -> FeastItemFeatures | None:
    if kind == "request":
        return None
    if kind == "feast":
        return FeastItemFeatures(settings)
    raise ValueError(f"feature_source must be 'request' or 'feast', got {kind!r}")
