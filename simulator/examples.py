"""Labelled training examples straight from the simulator, without running the streams join.

Each simulated request is shown in the upstream order, answered by the simulator, and all of
its feedback is folded into a :class:`~streams.rewards.ListOutcome` and labelled by
:func:`streams.labeling.label_impression`: what the join emits when a window closes. Tests,
benchmarks and the stats agent use these to feed learners and features in isolation;
:func:`produce_examples` writes them to the ``examples`` topic keyed by request id, exactly as
the join agent would (for the learner worker's tests and for trying ``streamrank learn``).

Three entry points, one generator: :func:`simulated_labeled_lists` (any namespace and window),
:func:`simulated_examples` (the learners' defaults) and :func:`feature_examples` (the feature
store's: 20 candidates, a 120 s window, ids under ``fs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from common.config import Settings
from common.paths import shared_data
from contracts.events import JoinInfo, LabeledList, encode
from simulator.click_models import ClickModel
from simulator.kuairand import load_kuairand
from simulator.letor import load_letor
from simulator.session import SessionSimulator, SimulatorConfig
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights


def simulated_labeled_lists(n: int, seed: int = 0, data: Path | None = None, max_candidates: int | None = 10,
                            namespace: str = "sim", with_features: bool = False,
                            window_s: float = 60.0) -> list[LabeledList]:
    """``n`` LabeledLists of simulated LETOR sessions (upstream click/long_view/watch_time scores included)."""
    data = Path(data) if data else shared_data()
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
        join = JoinInfo(closed_by="window", window_s=window_s, feedback_count=len(feedback), closed_at_ts=closed)
        out.append(label_impression(impression, outcome, weights, join))
    return out


def simulated_examples(n: int, seed: int = 0, data: Path | None = None, max_candidates: int | None = 10,
                       namespace: str = "learn", with_features: bool = False) -> list[LabeledList]:
    """``n`` examples for the learners (ids under ``learn``, a 60 s window)."""
    return simulated_labeled_lists(n, seed=seed, data=data, max_candidates=max_candidates, namespace=namespace,
                                   with_features=with_features, window_s=60.0)


def feature_examples(n: int, seed: int = 0, data_root: Path | None = None, max_candidates: int | None = 20,
                     with_features: bool = False) -> list[LabeledList]:
    """``n`` examples for the feature store (ids under ``fs``, a 120 s window, 20 candidates)."""
    return simulated_labeled_lists(n, seed=seed, data=data_root, max_candidates=max_candidates, namespace="fs",
                                   with_features=with_features, window_s=120.0)


def produce_examples(settings: Settings, examples: Iterable[LabeledList | bytes], raw_keys: Sequence[bytes] | None = None,
                     producer: Any = None) -> int:
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
