"""The local cache serving falls back on during a feature-store outage: bounded (LRU) and fresh (TTL)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.feature_cache import FeatureCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rows(*values: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([[v, v] for v in values], dtype=np.float32), np.ones(len(values), dtype=bool)


def test_hits_come_back_in_request_order_and_misses_are_zeros():
    cache = FeatureCache(max_items=10)
    cache.put_many(["a", "b"], *rows(1.0, 2.0))
    out, known = cache.get_many(["b", "x", "a"])
    assert out.tolist() == [[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]] and known.tolist() == [True, False, True]
    empty, none = cache.get_many(["x"])
    assert empty.shape == (1, 0) and not none.any()


def test_unknown_rows_are_not_cached_and_the_stored_row_is_a_copy():
    cache = FeatureCache(max_items=10)
    matrix, known = rows(1.0, 2.0)
    known[1] = False
    cache.put_many(["a", "b"], matrix, known)
    matrix[0] = 9.0
    out, hit = cache.get_many(["a", "b"])
    assert out[0].tolist() == [1.0, 1.0] and hit.tolist() == [True, False] and len(cache) == 1


def test_least_recently_used_rows_are_evicted_beyond_the_bound():
    cache = FeatureCache(max_items=2)
    cache.put_many(["a", "b"], *rows(1.0, 2.0))
    cache.get_many(["a"])  # a is now more recent than b
    cache.put_many(["c"], *rows(3.0))
    assert len(cache) == 2 and cache.get_many(["a", "b", "c"])[1].tolist() == [True, False, True]


def test_rows_older_than_the_ttl_are_never_served():
    clock = Clock()
    cache = FeatureCache(max_items=10, ttl_s=30.0, clock=clock)
    cache.put_many(["a"], *rows(1.0))
    clock.now = 30.0
    assert cache.get_many(["a"])[1].tolist() == [True]
    clock.now = 30.5
    assert cache.get_many(["a"])[1].tolist() == [False] and len(cache) == 0


@pytest.mark.parametrize("kwargs,match", [({"max_items": -1}, "max_items"), ({"ttl_s": 0}, "ttl_s")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureCache(**kwargs)
