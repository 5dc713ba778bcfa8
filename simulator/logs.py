"""Event logs: JSONL files with impressions and feedback interleaved in event-time order.

Writers merge events that arrive out of order (feedback comes seconds to minutes after its
impression) with a heap keyed by ``(ts, sequence)``, so the file is sorted by event time and
ties keep generation order: the same input and seed always give the same bytes.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from contracts.events import Feedback, Impression, encode
from simulator.session import SessionSimulator


@dataclass
class LogSummary:
    impressions: int = 0
    feedback: int = 0

    @property
    def events(self) -> int:
        return self.impressions + self.feedback


def time_ordered(events: Iterable[Impression | Feedback], horizon_s: float = 3600.0) -> Iterator[Impression | Feedback]:
    """Re-order a stream whose events are at most ``horizon_s`` late relative to the newest one seen."""
    heap: list[tuple[float, int, Impression | Feedback]] = []
    newest = float("-inf")
    for seq, event in enumerate(events):
        heapq.heappush(heap, (event.ts, seq, event))
        newest = max(newest, event.ts)
        while heap and heap[0][0] < newest - horizon_s:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def write_log(events: Iterable[Impression | Feedback], output: str | Path, progress_total: int | None = None,
              desc: str = "writing") -> LogSummary:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    summary = LogSummary()
    tmp = output.with_suffix(output.suffix + ".tmp")
    with tmp.open("wb") as fh:
        for event in tqdm(time_ordered(events), total=progress_total, desc=desc, unit="ev", leave=False,
                          disable=None):
            fh.write(encode(event) + b"\n")
            if isinstance(event, Impression):
                summary.impressions += 1
            else:
                summary.feedback += 1
    tmp.replace(output)
    return summary


def simulated_sessions(simulator: SessionSimulator, sessions: int) -> Iterator[Impression | Feedback]:
    """The logged policy (upstream order) shown for ``sessions`` requests, with the feedback it got."""
    for request in simulator.requests(sessions):
        yield simulator.impression(request)
        yield from simulator.respond(request)


def write_simulated_log(output: str | Path, data_root: str | Path, sessions: int, seed: int = 0,
                        namespace: str = "letor", click_model: str = "pbm", max_candidates: int | None = None,
                        with_features: bool = True) -> LogSummary:
    """A LETOR/KuaiRand simulator log of ``sessions`` logged-policy sessions (the ``data letor`` recipe)."""
    from simulator.click_models import ClickModel  # noqa: PLC0415
    from simulator.kuairand import load_kuairand  # noqa: PLC0415
    from simulator.letor import load_letor  # noqa: PLC0415
    from simulator.session import SimulatorConfig  # noqa: PLC0415

    data_root = Path(data_root)
    dataset = load_letor(data_root / "letor" / "rank.train")
    config = SimulatorConfig(click_model=ClickModel(click_model, max_grade=max(1, dataset.max_grade)),
                             max_candidates=max_candidates, with_features=with_features)
    sim = SessionSimulator(dataset, load_kuairand(data_root / "kuairand"), config, seed=seed, namespace=namespace)
    return write_log(simulated_sessions(sim, sessions), output)
