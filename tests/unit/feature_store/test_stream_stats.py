"""Decayed item/query statistics: the formula, order independence, smoothing, duplicates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from feature_store.stream_stats import ItemStats, QueryStats, StatsBook, StatsPrior
from simulator.examples import feature_examples

H = 100.0


def test_decayed_sum_matches_the_closed_form():
    stats = ItemStats()
    events = [(10.0, 1, 0), (60.0, 0, 0), (210.0, 1, 1)]
    for ts, click, lv in events:
        stats.observe(ts, {"impressions": 1, "clicks": click, "long_views": lv}, H)
    T = 210.0
    assert stats.last_ts == T
    assert stats.impressions == pytest.approx(sum(2 ** (-(T - t) / H) for t, _, _ in events))
    assert stats.clicks == pytest.approx(2 ** (-(T - 10.0) / H) + 1.0)
    assert stats.long_views == pytest.approx(1.0)
    assert stats.at(T + H, H)["impressions"] == pytest.approx(stats.impressions / 2)


@given(st.permutations(list(range(12))), st.lists(st.floats(0, 1e4), min_size=12, max_size=12))
@hsettings(max_examples=60, deadline=None)
def test_arrival_order_does_not_change_the_result(order, times):
    events = [(times[i], i % 3 == 0, float(i) * 100) for i in range(12)]

    def fold(seq):
        stats = ItemStats()
        for ts, click, watch in seq:
            stats.observe(ts, {"impressions": 1, "clicks": click, "watch_time_ms": watch}, H)
        return stats

    a, b = fold(events), fold([events[i] for i in order])
    assert a.last_ts == b.last_ts
    for name in ("impressions", "clicks", "watch_time_ms"):
        assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=1e-9, abs_tol=1e-9)


def test_rates_are_smoothed_towards_the_prior():
    prior = StatsPrior(strength=4.0, click_rate=0.25)
    empty = ItemStats().row(prior)
    assert empty["click_rate"] == pytest.approx(0.25)
    stats = ItemStats(impressions=4.0, clicks=4.0)
    assert stats.row(prior)["click_rate"] == pytest.approx((4 + 1) / 8)
    q = QueryStats(requests=6.0, reformulations=0.0).row(StatsPrior(strength=4.0, reformulation_rate=0.5))
    assert q["reformulation_rate"] == pytest.approx(2 / 10)


def test_book_counts_simulated_examples_and_skips_redeliveries(shared_data):
    examples = feature_examples(30, seed=4, data_root=shared_data)
    book = StatsBook(half_life_s=1e9)  # effectively no decay: sums are plain counts
    assert book.add_all(examples) == 30
    assert book.add_all(examples[:5]) == 0 and book.duplicates == 5
    items, queries = book.pending_rows()
    shown = {}
    clicks = {}
    for ex in examples:
        for lab in ex.labels:
            shown[lab.item_id] = shown.get(lab.item_id, 0) + 1
            clicks[lab.item_id] = clicks.get(lab.item_id, 0) + lab.click
    assert set(items) == set(shown)
    for item_id, n in shown.items():
        assert items[item_id]["impressions"] == pytest.approx(n, rel=1e-6)
        assert items[item_id]["clicks"] == pytest.approx(clicks[item_id], rel=1e-6)
    by_query = {}
    for ex in examples:
        by_query.setdefault(ex.impression.query, []).append(ex)
    for query, exs in by_query.items():
        assert queries[query]["requests"] == pytest.approx(len(exs), rel=1e-6)
        assert queries[query]["reformulations"] == pytest.approx(sum(e.reformulated for e in exs), rel=1e-6)
    book.mark_clean()
    assert book.pending_rows() == ({}, {})


def test_seeding_continues_stored_counts():
    book = StatsBook(half_life_s=H)
    book.seed_item("a", {"impressions": 3.0, "clicks": 1.0, "long_views": 0.0, "watch_time_ms": 10.0, "last_ts": 50.0})
    book.seed_item("b", {"impressions": None, "last_ts": None})  # never written: starts empty
    assert book.items["a"].impressions == 3.0 and "b" not in book.items
    book.items["a"].observe(150.0, {"impressions": 1}, H)
    assert book.items["a"].impressions == pytest.approx(3.0 / 2 + 1)
    with pytest.raises(ValueError, match="half_life_s"):
        StatsBook(half_life_s=0)
