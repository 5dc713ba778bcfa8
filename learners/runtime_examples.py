"""Training examples for the learner worker without the streams stage: LETOR simulator sessions → LabeledLists.

:func:`simulated_examples` runs the real-data simulator (LETOR lists, KuaiRand users and
durations), labels each impression with its own feedback through
:func:`streams.labeling.label_impression` (the streams stage's pure labeling function), and
:func:`produce_examples` writes them to the ``examples`` topic keyed by request id, exactly
as the join agent would. Used by the worker's tests and for trying ``streamrank learn``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from simulator.click_models import ClickModel
from simulator.kuairand import load_kuairand
from simulator.letor import load_letor
from simulator.session import SessionSimulator, SimulatorConfig
from streamrank.config import Settings
from streams.events import JoinInfo, LabeledList, encode
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def simulated_examples(n: int, seed: int = 0, data: Path = SHARED_DATA, max_candidates: int | None = 10,
                       namespace: str = "learn", with_features: bool = False) -> list[LabeledList]:
    """``n`` LabeledLists from simulated LETOR sessions (upstream click/long_view scores included)."""
    dataset = load_letor(data / "letor" / "rank.train")
    config = SimulatorConfig(click_model=ClickModel("pbm", max_grade=max(1, dataset.max_grade)),
                             max_candidates=max_candidates, with_features=with_features)
    sim = SessionSimulator(dataset, load_kuairand(data / "kuairand"), config, seed=seed, namespace=namespace)
    weights = RewardWeights()
    out = []
    for request in sim.requests(n):
        impression = sim.impression(request)
        feedback = sim.respond(request)
        outcome = ListOutcome()
        for fb in feedback:
            outcome.add(fb.item_id, fb.kind, fb.value)
        closed = max([impression.ts, *(fb.ts for fb in feedback)])
        join = JoinInfo(closed_by="window", window_s=60.0, feedback_count=len(feedback), closed_at_ts=closed)
        out.append(label_impression(impression, outcome, weights, join))
    return out


def produce_examples(settings: Settings, examples: Iterable[LabeledList | bytes], raw_keys: Sequence[bytes] | None = None,
                     producer=None) -> int:
    """Produce examples (or raw bytes, for bad-input tests) to the ``examples`` topic; returns the count."""
    from streams.replay import make_producer  # noqa: PLC0415

    own = producer is None
    producer = producer or make_producer(settings.kafka_bootstrap)
    count = 0
    try:
        for i, ex in enumerate(examples):
            if isinstance(ex, LabeledList):
                key, value = ex.request_id.encode(), encode(ex)
            else:
                key, value = (raw_keys[i] if raw_keys else b"bad"), ex
            producer.send(settings.topics.examples, key=key, value=value)
            count += 1
        producer.flush()
    finally:
        if own:
            producer.close()
    return count
