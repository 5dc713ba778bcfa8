"""LabeledLists from the LETOR+KuaiRand session simulator, labelled by streams.labeling (tests, benchmarks, demos).

The join is done directly (all feedback of a request folded into a ``ListOutcome``), which is
what the streams join produces when its window closes; used to feed the stats agent without
running the join.
"""

from __future__ import annotations

from pathlib import Path

from simulator.examples import SHARED_DATA
from simulator.examples import simulated_labeled_lists as _simulated
from streams.events import LabeledList


def simulated_labeled_lists(n: int, seed: int = 0, data_root: Path | None = None,
                            max_candidates: int | None = 20, with_features: bool = False) -> list[LabeledList]:
    """``n`` labelled lists of simulated sessions over the real LETOR queries and KuaiRand users/videos."""
    return _simulated(n, seed=seed, data=Path(data_root) if data_root else SHARED_DATA, max_candidates=max_candidates,
                      namespace="fs", with_features=with_features, window_s=120.0)
