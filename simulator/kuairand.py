"""KuaiRand-Pure marginals that ground the short-video simulator (durations, user activity).

Only the real empirical distributions are used: each simulated document is mapped to a real
KuaiRand video (its ``video_duration``) and each simulated user to a real KuaiRand user (its
``user_active_degree``), deterministically by seed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.paths import data_path

#: How likely a user of each KuaiRand activity degree is to give a reaction at all (scales
#: the examination probability). A simulator choice, not a KuaiRand statistic.
ACTIVITY_ENGAGEMENT = {"full_active": 1.0, "high_active": 0.9, "middle_active": 0.75, "low_active": 0.6,
                       "2_14_day_new": 0.8, "single_day_new": 0.7, "UNKNOWN": 0.7}


@dataclass(frozen=True)
class KuaiRandMarginals:
    video_ids: np.ndarray  # int
    durations_ms: np.ndarray  # float, > 0
    user_ids: np.ndarray  # int
    user_activity: tuple[str, ...]

    def engagement(self, activity: str) -> float:
        return ACTIVITY_ENGAGEMENT.get(activity, 0.7)


def default_kuairand_dir() -> Path:
    return data_path("kuairand")


def load_kuairand(directory: str | Path | None = None) -> KuaiRandMarginals:
    """Read video durations and user activity degrees (rows with missing values are skipped)."""
    directory = Path(directory) if directory else default_kuairand_dir()
    video_ids, durations = [], []
    with (directory / "video_features_basic_pure.csv").open() as fh:
        for row in csv.DictReader(fh):
            try:
                duration = float(row["video_duration"])
            except (TypeError, ValueError):
                continue
            if duration > 0:
                video_ids.append(int(row["video_id"]))
                durations.append(duration)
    user_ids, activity = [], []
    with (directory / "user_features_pure.csv").open() as fh:
        for row in csv.DictReader(fh):
            user_ids.append(int(row["user_id"]))
            activity.append(row.get("user_active_degree") or "UNKNOWN")
    return KuaiRandMarginals(np.asarray(video_ids), np.asarray(durations, dtype=np.float64),
                             np.asarray(user_ids), tuple(activity))
