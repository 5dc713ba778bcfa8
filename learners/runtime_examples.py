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

from simulator.examples import SHARED_DATA, simulated_labeled_lists
from streamrank.config import Settings
from streams.events import LabeledList, encode


def simulated_examples(n: int, seed: int = 0, data: Path = SHARED_DATA, max_candidates: int | None = 10,
                       namespace: str = "learn", with_features: bool = False) -> list[LabeledList]:
    """``n`` LabeledLists from simulated LETOR sessions (upstream click/long_view scores included)."""
    return simulated_labeled_lists(n, seed=seed, data=data, max_candidates=max_candidates, namespace=namespace,
                                   with_features=with_features, window_s=60.0)


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
