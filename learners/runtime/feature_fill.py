"""Item features for examples whose impression names them instead of carrying them.

Serving fetches item features from the feature store and, by default, does not copy the rows
into the impression (``ServeConfig.log_fetched_features``): it writes the feature it used into
the impression context (``context["item_features"] = "view:feature"``,
:data:`contracts.events.ITEM_FEATURES_KEY`). Before a batch is learned, :class:`FeatureFill`
reads those rows back from the same online store by item id, one pipelined Redis round trip
per batch and feature (:meth:`feature_store.online_read.DirectFeatureReader.read_item_vectors`),
and returns copies of the examples (the decoder's msgspec structs or the contract's models alike,
:func:`contracts.fast_decode.replaced`) with ``features`` set on every item.

The runtime fills each example as it is decoded (:mod:`learners.runtime.runner`), so rows are
cached per feature and item for ``cache_s`` seconds (at most ``cache_items`` rows): a batch's
examples share most items, and only the items not seen within ``cache_s`` cost a round trip.
Rows are kept as read-only 1-d numpy arrays (the reader's own, or float64 copies of its lists:
the same values), so writing a filled list into the batch arrays (:mod:`learners.ingest.lists`)
is one array copy per item instead of converting 300 Python floats each time the item is seen.

What this trades: the learner sees the feature *as it is now* (give or take ``cache_s``), not as it was at serving time.
For item content features (the LETOR document vectors have no TTL and never change) the two
are the same; a feature that changes faster than the learner reads it back should be logged
(``log_fetched_features``) instead. An example whose items already carry features, or whose
impression names no feature, passes through untouched. Items the store does not know get no
features (the policy batch then uses zeros, as for any impression without features) and are
counted in ``missing``; a failed read (Redis down) is counted in ``errors`` and the batch is
learned as it came, so an outage of the store slows learning down instead of stopping it.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np

from contracts.events import LabeledList, features_to_fill, item_feature_count
from contracts.fast_decode import LabeledListS, replaced

Example = LabeledList | LabeledListS  # the runtime hands over the decoder's struct, tests the model

log = logging.getLogger(__name__)

#: ``read(feature_ref, item_ids) -> rows`` (a row per item id: a list of floats or a 1-d numpy
#: array; ``None`` for an unknown item)
Row = Sequence[float] | np.ndarray
RowReader = Callable[[str, Sequence[str]], Sequence[Row | None]]


def _frozen_row(row: Row | None) -> np.ndarray | None:
    if row is None:
        return None
    out = row if isinstance(row, np.ndarray) else np.asarray(row, dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"a feature row is 1-d, got shape {out.shape}")
    out = out.view()
    out.flags.writeable = False  # shared by every example that shows the item
    return out


class FeatureFill:
    """Fills item features named by ``context["item_features"]`` from a row reader."""

    def __init__(self, read: RowReader, cache_s: float = 60.0, cache_items: int = 200_000) -> None:
        self.read = read
        self.cache_s = cache_s
        self.cache_items = cache_items
        self._cache: dict[tuple[str, str], tuple[float, np.ndarray | None]] = {}
        self.filled = 0  # items that got features
        self.missing = 0  # items the store did not know
        self.errors = 0  # failed reads (the batch went on without them)
        self.reads = 0  # round trips to the store

    def _rows(self, ref: str, item_ids: list[str]) -> dict[str, np.ndarray | None]:
        """Rows of ``item_ids``: cached ones younger than ``cache_s``, the others in one read."""
        now = time.monotonic()
        out: dict[str, np.ndarray | None] = {}
        wanted = []
        for item_id in item_ids:
            hit = self._cache.get((ref, item_id))
            if hit is not None and now - hit[0] < self.cache_s:
                out[item_id] = hit[1]
            else:
                wanted.append(item_id)
        if wanted:
            self.reads += 1
            rows = self.read(ref, wanted)
            if len(self._cache) + len(wanted) > self.cache_items:
                self._cache.clear()
            for item_id, row in zip(wanted, rows):
                frozen = _frozen_row(row)
                self._cache[(ref, item_id)] = (now, frozen)
                out[item_id] = frozen
        return out

    def __call__(self, examples: Sequence[Example]) -> list[Example]:
        wanted: dict[str, list[int]] = {}  # feature ref -> indexes of examples that need it
        for i, example in enumerate(examples):
            ref = features_to_fill(example)
            if ref is not None:
                wanted.setdefault(ref, []).append(i)
        if not wanted:
            return list(examples)
        out = list(examples)
        for ref, indexes in wanted.items():
            item_ids = sorted({item.item_id for i in indexes for item in examples[i].impression.items})
            try:
                rows = self._rows(ref, item_ids)
            except Exception as exc:  # noqa: BLE001 - store down: learn the batch as it came
                self.errors += 1
                log.warning("feature fill: reading %s for %d items failed: %s", ref, len(item_ids), exc)
                continue
            for i in indexes:
                out[i] = self._filled(examples[i], rows)
        return out

    def _filled(self, example: Example, rows: dict[str, np.ndarray | None]) -> Example:
        items = []
        for item in example.impression.items:
            carried = item_feature_count(item) is not None
            row = rows.get(item.item_id) if not carried else None
            if not carried and row is None:
                self.missing += 1
            if row is not None:
                self.filled += 1
                item = replaced(item, features=row)
            items.append(item)
        return replaced(example, impression=replaced(example.impression, items=items))


def feast_row_reader(settings, fs=None) -> RowReader:
    """Rows from the applied Feast repo's Redis online store (the one serving reads); ``fs``:
    :class:`feature_store.settings.FeatureStoreSettings` (default: loaded from ``settings``)."""
    from feature_store.online_read import DirectFeatureReader, applied_reader  # noqa: PLC0415

    readers: dict[str, DirectFeatureReader] = {}

    def read(ref: str, item_ids: Sequence[str]) -> list[Row | None]:
        reader = readers.get(ref)
        if reader is None:
            reader = readers[ref] = applied_reader(settings, [ref], fs)
        matrix, known = reader.read_item_vectors(item_ids, ref.replace(":", "__"))
        return [matrix[i] if ok else None for i, ok in enumerate(known)]

    return read
