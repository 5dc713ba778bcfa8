r"""Streaming item and query statistics with exponential time decay (pure; the stats agent drives it).

Every count is an exponentially decayed sum in event time with half-life :math:`H`
(``STREAMRANK_STATS_HALF_LIFE_S``): at the latest event time :math:`T` seen for a key,

.. math:: S(T) = \sum_i 2^{-(T - t_i)/H}\, x_i

so recent behaviour dominates while old evidence fades (the standard time-decayed counter of
streaming CTR estimation, e.g. Cormode et al., "Forward decay", ICDE 2009, with an exponential
decay function). Updating keeps :math:`(S, T)`: an event at :math:`t \ge T` rescales
:math:`S` by :math:`2^{-(t-T)/H}` and adds :math:`x`; a late event (:math:`t < T`) adds
:math:`2^{-(T-t)/H} x` without moving :math:`T`. The result is therefore independent of the
order in which examples arrive (a unit test checks it with hypothesis).

Rates are smoothed towards a prior with strength :math:`a` (a Beta prior, as in
empirical-Bayes CTR smoothing): :math:`\widehat{ctr} = (C + a\,p_0)/(N + a)`.

Items (from each LabeledList label): ``impressions`` (1 per shown item), ``clicks``,
``long_views``, ``watch_time_ms`` (play time), ``click_rate``, ``long_view_rate``,
``mean_watch_time_ms`` (per click). Queries (one per LabeledList with a query):
``requests``, ``clicked_lists`` (lists with at least one click), ``reformulations``,
``satisfaction_sum`` (sum of ``query_reward``), ``list_reward_sum``, and the smoothed
``click_through_rate``, ``reformulation_rate``, ``satisfaction``, ``mean_list_reward``.
``last_ts`` is :math:`T`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Iterable, Mapping

from contracts.events import LabeledList


@dataclass(frozen=True)
class StatsPrior:
    """Prior means and strength for the smoothed rates."""

    strength: float = 5.0
    click_rate: float = 0.1
    long_view_rate: float = 0.05
    watch_time_ms: float = 10_000.0
    click_through_rate: float = 0.5
    reformulation_rate: float = 0.3
    satisfaction: float = 0.3
    list_reward: float = 1.0


def _decay(dt: float, half_life: float) -> float:
    return math.pow(2.0, -dt / half_life)


@dataclass
class DecayedSums:
    """Decayed sums of a few named quantities at reference time ``last_ts`` (base class)."""

    last_ts: float = 0.0

    def _names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "last_ts"]

    def observe(self, ts: float, values: Mapping[str, float], half_life: float) -> None:
        """Fold one observation at event time ``ts`` into the sums (order-independent)."""
        names = self._names()
        if ts >= self.last_ts:  # the new latest event: age the sums to ts, then add
            factor = _decay(ts - self.last_ts, half_life)
            for name in names:
                setattr(self, name, getattr(self, name) * factor + float(values.get(name, 0.0)))
            self.last_ts = ts
        else:  # a late event: add it aged to last_ts
            weight = _decay(self.last_ts - ts, half_life)
            for name in names:
                setattr(self, name, getattr(self, name) + weight * float(values.get(name, 0.0)))

    def at(self, ts: float, half_life: float) -> dict[str, float]:
        """The sums decayed forward to ``ts`` (>= ``last_ts``), e.g. for reading at request time."""
        factor = _decay(max(0.0, ts - self.last_ts), half_life)
        return {name: getattr(self, name) * factor for name in self._names()}


@dataclass
class ItemStats(DecayedSums):
    impressions: float = 0.0
    clicks: float = 0.0
    long_views: float = 0.0
    watch_time_ms: float = 0.0

    def row(self, prior: StatsPrior) -> dict[str, float]:
        a = prior.strength
        return {"impressions": self.impressions, "clicks": self.clicks, "long_views": self.long_views,
                "watch_time_ms": self.watch_time_ms,
                "click_rate": (self.clicks + a * prior.click_rate) / (self.impressions + a),
                "long_view_rate": (self.long_views + a * prior.long_view_rate) / (self.impressions + a),
                "mean_watch_time_ms": (self.watch_time_ms + a * prior.watch_time_ms) / (self.clicks + a),
                "last_ts": self.last_ts}


@dataclass
class QueryStats(DecayedSums):
    requests: float = 0.0
    clicked_lists: float = 0.0
    reformulations: float = 0.0
    satisfaction_sum: float = 0.0
    list_reward_sum: float = 0.0

    def row(self, prior: StatsPrior) -> dict[str, float]:
        a, n = prior.strength, self.requests
        return {"requests": n, "clicked_lists": self.clicked_lists, "reformulations": self.reformulations,
                "satisfaction_sum": self.satisfaction_sum, "list_reward_sum": self.list_reward_sum,
                "click_through_rate": (self.clicked_lists + a * prior.click_through_rate) / (n + a),
                "reformulation_rate": (self.reformulations + a * prior.reformulation_rate) / (n + a),
                "satisfaction": (self.satisfaction_sum + a * prior.satisfaction) / (n + a),
                "mean_list_reward": (self.list_reward_sum + a * prior.list_reward) / (n + a),
                "last_ts": self.last_ts}


ITEM_SUMS = ("impressions", "clicks", "long_views", "watch_time_ms")
QUERY_SUMS = ("requests", "clicked_lists", "reformulations", "satisfaction_sum", "list_reward_sum")


class StatsBook:
    """Per-item and per-query decayed stats, fed LabeledLists; tracks which keys changed since the last flush.

    Re-deliveries of an example (same ``example_id``) within the last ``remember`` examples are
    skipped, so an at-least-once redelivery after a rebalance does not double count.
    """

    def __init__(self, half_life_s: float, prior: StatsPrior | None = None, remember: int = 100_000) -> None:
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self.half_life = half_life_s
        self.prior = prior or StatsPrior()
        self.items: dict[str, ItemStats] = {}
        self.queries: dict[str, QueryStats] = {}
        self.dirty_items: set[str] = set()
        self.dirty_queries: set[str] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.duplicates = 0

    def seed_item(self, item_id: str, sums: Mapping[str, float | None]) -> None:
        """Start ``item_id`` from stored values (e.g. read back from the online store after a restart)."""
        if item_id in self.items or sums.get("last_ts") is None:
            return
        self.items[item_id] = ItemStats(last_ts=float(sums["last_ts"]),
                                        **{n: float(sums.get(n) or 0.0) for n in ITEM_SUMS})

    def seed_query(self, query_id: str, sums: Mapping[str, float | None]) -> None:
        if query_id in self.queries or sums.get("last_ts") is None:
            return
        self.queries[query_id] = QueryStats(last_ts=float(sums["last_ts"]),
                                            **{n: float(sums.get(n) or 0.0) for n in QUERY_SUMS})

    def add(self, example: LabeledList) -> bool:
        """Fold one example in; returns False for a remembered duplicate."""
        if example.example_id in self._seen:
            self.duplicates += 1
            return False
        self._seen[example.example_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        ts = example.impression.ts
        for label in example.labels:
            stats = self.items.setdefault(label.item_id, ItemStats())
            stats.observe(ts, {"impressions": 1.0, "clicks": label.click, "long_views": label.long_view,
                               "watch_time_ms": label.play_time_ms}, self.half_life)
            self.dirty_items.add(label.item_id)
        query = example.impression.query
        if query:
            stats = self.queries.setdefault(query, QueryStats())
            stats.observe(ts, {"requests": 1.0, "clicked_lists": float(any(lab.click for lab in example.labels)),
                               "reformulations": float(example.reformulated),
                               "satisfaction_sum": example.query_reward, "list_reward_sum": example.list_reward},
                          self.half_life)
            self.dirty_queries.add(query)
        return True

    def add_all(self, examples: Iterable[LabeledList]) -> int:
        return sum(self.add(example) for example in examples)

    def pending_rows(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """Rows of the items and queries changed since the last :meth:`mark_clean`."""
        items = {i: self.items[i].row(self.prior) for i in sorted(self.dirty_items)}
        queries = {q: self.queries[q].row(self.prior) for q in sorted(self.dirty_queries)}
        return items, queries

    def mark_clean(self) -> None:
        """Call once the pending rows are safely written."""
        self.dirty_items.clear()
        self.dirty_queries.clear()
