"""Shared fixtures of the learners' unit tests."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.kuairand import KuaiRandMarginals
from simulator.letor import LetorDataset, LetorQuery

ACTIVITIES = ("full_active", "high_active", "middle_active", "low_active", "2_14_day_new")


@pytest.fixture(scope="module")
def sources() -> tuple[LetorDataset, KuaiRandMarginals]:
    """Small synthetic LETOR queries and KuaiRand users for the calibration simulator (no shared data)."""
    rng = np.random.default_rng(0)
    queries = tuple(LetorQuery(q, tuple(f"q{q}-d{j}" for j in range(12)), np.zeros((12, 2), np.float32),
                               rng.integers(0, 5, size=12)) for q in range(30))
    users = KuaiRandMarginals(np.arange(3), np.ones(3), np.arange(500),
                              tuple(ACTIVITIES[i % len(ACTIVITIES)] for i in range(500)))
    return LetorDataset(queries, 2, 4), users
