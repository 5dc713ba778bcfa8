"""Labelled training examples straight from the simulator, without running the streams join.

Each simulated request is shown in the upstream order, answered by the simulator, and all of
its feedback is folded into a :class:`~streams.rewards.ListOutcome` and labelled by
:func:`streams.labeling.label_impression` — what the join emits when a window closes. Tests,
benchmarks and the stats agent use these to feed learners and features in isolation.
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

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def simulated_labeled_lists(n: int, seed: int = 0, data: Path = SHARED_DATA, max_candidates: int | None = 10,
                            namespace: str = "sim", with_features: bool = False,
                            window_s: float = 60.0) -> list[LabeledList]:
    """``n`` LabeledLists of simulated LETOR sessions (upstream click/long_view/watch_time scores included)."""
    dataset = load_letor(Path(data) / "letor" / "rank.train")
    config = SimulatorConfig(click_model=ClickModel("pbm", max_grade=max(1, dataset.max_grade)),
                             max_candidates=max_candidates, with_features=with_features)
    sim = SessionSimulator(dataset, load_kuairand(Path(data) / "kuairand"), config, seed=seed, namespace=namespace)
    weights = RewardWeights()
    out = []
    for request in sim.requests(n):
        impression = sim.impression(request)
        feedback = sim.respond(request)
        outcome = ListOutcome()
        for fb in feedback:
            outcome.add(fb.item_id, fb.kind, fb.value)
        closed = max([impression.ts, *(fb.ts for fb in feedback)])
        join = JoinInfo(closed_by="window", window_s=window_s, feedback_count=len(feedback), closed_at_ts=closed)
        out.append(label_impression(impression, outcome, weights, join))
    return out
