"""LabeledLists from the LETOR+KuaiRand session simulator, labelled by streams.labeling (tests, benchmarks, demos).

The join is done directly (all feedback of a request folded into a ``ListOutcome``), which is
what the streams join produces when its window closes; used to feed the stats agent without
running the join.
"""

from __future__ import annotations

from pathlib import Path

from simulator.click_models import ClickModel
from simulator.kuairand import load_kuairand
from simulator.letor import load_letor
from simulator.session import SessionSimulator, SimulatorConfig
from streams.events import JoinInfo, LabeledList
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights


def simulated_labeled_lists(n: int, seed: int = 0, data_root: Path | None = None,
                            max_candidates: int | None = 20, with_features: bool = False) -> list[LabeledList]:
    """``n`` labelled lists of simulated sessions over the real LETOR queries and KuaiRand users/videos."""
    root = Path(data_root) if data_root else Path(__file__).resolve().parents[2] / "shared" / "data"
    dataset = load_letor(root / "letor" / "rank.train")
    sim = SessionSimulator(dataset, load_kuairand(root / "kuairand"),
                           SimulatorConfig(click_model=ClickModel("pbm", max_grade=max(1, dataset.max_grade)),
                                           max_candidates=max_candidates, with_features=with_features),
                           seed=seed, namespace="fs")
    weights = RewardWeights()
    out = []
    for request in sim.requests(n):
        impression = sim.impression(request)
        feedback = sim.respond(request)
        outcome = ListOutcome()
        for fb in feedback:
            outcome.add(fb.item_id, fb.kind, fb.value)
        closed_at = max([fb.ts for fb in feedback], default=impression.ts)
        join = JoinInfo(closed_by="window", window_s=120.0, feedback_count=len(feedback), closed_at_ts=closed_at)
        out.append(label_impression(impression, outcome, weights, join))
    return out
