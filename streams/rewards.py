r"""Rewards from joined feedback: item-, list- and query-level. Pure functions; weights in config.

* **Item reward** (a weighted sum of engagement signals, as multi-task fusion in short-video
  recommendation does, e.g. SaFRO §3):

  .. math:: r_i = w_c\,click_i + w_{lv}\,long\_view_i + w_{wt}\,\min(1, t_i / d_i)
             + w_l\,like_i + w_f\,follow_i + w_s\,share_i

  where :math:`t_i` is play time and :math:`d_i` the video duration (watch ratio; when the
  duration is unknown, :math:`t_i / t_{ref}` with a reference time).
* **List reward**: position-discounted sum :math:`R = \sum_i r_i / \log_2(1 + pos_i)` (DCG form).
* **Query satisfaction proxy** (SaFRO's query-level behaviour proxy, reconstructed): 1 when the
  user had at least one long view and did not reformulate the query within the window, else 0;
  a click without a long view and without reformulation counts ``partial_credit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

BINARY_KINDS = ("click", "long_view", "like", "follow", "share")


@dataclass(frozen=True)
class RewardWeights:
    click: float = 1.0
    long_view: float = 2.0
    watch_ratio: float = 1.0
    like: float = 1.0
    follow: float = 2.0
    share: float = 2.0
    reference_play_ms: float = 60_000.0
    partial_credit: float = 0.3

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> "RewardWeights":
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown reward weights: {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in values.items()})


@dataclass
class ItemOutcome:
    """Aggregated feedback for one shown item (after deduplication by event id)."""

    click: int = 0
    long_view: int = 0
    play_time_ms: float = 0.0
    like: int = 0
    follow: int = 0
    share: int = 0

    def add(self, kind: str, value: float) -> None:
        if kind == "play_time_ms":
            self.play_time_ms = max(self.play_time_ms, value)  # cumulative play-time reports: keep the largest
        elif kind in BINARY_KINDS:
            setattr(self, kind, 1 if value > 0 else getattr(self, kind))


def watch_ratio(play_time_ms: float, duration_ms: float | None, reference_ms: float) -> float:
    denominator = duration_ms if duration_ms and duration_ms > 0 else reference_ms
    return min(1.0, max(0.0, play_time_ms / denominator))


def item_reward(outcome: ItemOutcome, duration_ms: float | None, weights: RewardWeights) -> float:
    return (weights.click * outcome.click + weights.long_view * outcome.long_view
            + weights.watch_ratio * watch_ratio(outcome.play_time_ms, duration_ms, weights.reference_play_ms)
            + weights.like * outcome.like + weights.follow * outcome.follow + weights.share * outcome.share)


def list_reward(item_rewards: Iterable[float], positions: Iterable[int]) -> float:
    return float(sum(r / math.log2(1.0 + p) for r, p in zip(item_rewards, positions, strict=True)))


def query_satisfaction(outcomes: Iterable[ItemOutcome], reformulated: bool, weights: RewardWeights) -> float:
    if reformulated:
        return 0.0
    outcomes = list(outcomes)
    if any(o.long_view for o in outcomes):
        return 1.0
    if any(o.click for o in outcomes):
        return weights.partial_credit
    return 0.0


@dataclass
class ListOutcome:
    """Everything the join collected for one impression."""

    items: dict[str, ItemOutcome] = field(default_factory=dict)
    reformulated: bool = False

    def add(self, item_id: str | None, kind: str, value: float) -> None:
        if kind == "reformulate":
            self.reformulated = True
        elif kind == "session_end":
            return
        elif item_id is not None:
            self.items.setdefault(item_id, ItemOutcome()).add(kind, value)
