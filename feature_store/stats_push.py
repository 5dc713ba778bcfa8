"""Writes the stats agent's rows to the online store through Feast (push sources) and reads them back to resume.

Feast is the writer: rows go through ``FeatureStore.push(<push source>, df, to=PushMode.ONLINE)``
(the push sources ``item_stats_push`` / ``query_stats_push`` of ``feature_store/repo``). Feast's
Redis store drops a write whose ``event_timestamp`` is not newer than the stored one, so each
row is stamped with a strictly increasing wall-clock time (the write time); the event time of
the data is the ``last_ts`` feature.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Mapping

import pandas as pd

from feature_store.offline_data import ITEM_STATS_COLUMNS, QUERY_STATS_COLUMNS
from feature_store.online_read import DirectFeatureReader
from feature_store.stream_stats import StatsBook

ITEM_PUSH_SOURCE = "item_stats_push"
QUERY_PUSH_SOURCE = "query_stats_push"


class StatsPusher:
    """Pushes changed stats rows in batches and seeds a :class:`StatsBook` from what is stored."""

    def __init__(self, store) -> None:
        from feast.data_source import PushMode  # noqa: PLC0415

        self.store = store
        self._online = PushMode.ONLINE
        self.reader = DirectFeatureReader(store, [f"item_stats:{c}" for c in ITEM_STATS_COLUMNS]
                                          + [f"query_stats:{c}" for c in QUERY_STATS_COLUMNS])
        self._last_stamp_ns = 0
        self.pushed_rows = 0

    def _stamp(self) -> datetime:
        now = max(time.time_ns(), self._last_stamp_ns + 1_000)  # Feast keeps microseconds
        self._last_stamp_ns = now
        return datetime.fromtimestamp(now / 1e9, tz=timezone.utc)

    def seed(self, book: StatsBook, item_ids: list[str], query_ids: list[str]) -> None:
        """Load stored stats of keys the book has not seen (after a restart the counts go on)."""
        new_items = [i for i in dict.fromkeys(item_ids) if i not in book.items]
        for item_id, row in zip(new_items, self.reader.read_entities("item", new_items) if new_items else []):
            book.seed_item(item_id, {k.split("__", 1)[1]: v for k, v in row.items()})
        new_queries = [q for q in dict.fromkeys(query_ids) if q not in book.queries]
        for query_id, row in zip(new_queries, self.reader.read_entities("query", new_queries) if new_queries else []):
            book.seed_query(query_id, {k.split("__", 1)[1]: v for k, v in row.items()})

    def _frame(self, key: str, rows: Mapping[str, Mapping[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
        stamp = pd.Timestamp(self._stamp())
        df = pd.DataFrame([{key: k, **{c: float(row[c]) for c in columns}} for k, row in rows.items()])
        df["event_timestamp"] = stamp
        return df

    def push(self, items: Mapping[str, Mapping[str, Any]], queries: Mapping[str, Mapping[str, Any]]) -> int:
        """Write the rows (one push per source); returns the number of rows written."""
        if items:
            self.store.push(ITEM_PUSH_SOURCE, self._frame("item_id", items, ITEM_STATS_COLUMNS), to=self._online)
        if queries:
            self.store.push(QUERY_PUSH_SOURCE, self._frame("query_id", queries, QUERY_STATS_COLUMNS), to=self._online)
        self.pushed_rows += len(items) + len(queries)
        return len(items) + len(queries)
