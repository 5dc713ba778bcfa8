"""What a ``streamrank demo`` run is made of: :class:`DemoConfig`, ``--set`` checking, the stages' config.

Every knob of the closed loop is a field here; ``streamrank demo`` has options for the common
ones (:data:`DEMO_OPTION_FIELDS`) and ``--set KEY=VALUE`` for the rest (:func:`demo_overrides`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoConfig:
    """One closed-loop run: its length and load, the stages' batching and windows, the models, the gate."""

    duration_s: float = 120.0
    output: Path = Path("out/demo")
    rate: float = 20.0  # requests per second
    concurrency: int = 4
    snapshot_interval_s: float = 1.0
    seed: int = 0
    learners: tuple[str, ...] = ("ldro", "umnn")
    reranker: str = "ldro"
    calibrator: str = "umnn"
    fusion: str = ""  # e.g. "drpo" (add it to learners too)
    max_candidates: int = 30
    bucket_s: float = 10.0
    drain_s: float = 8.0
    #: Wall seconds per simulated second of a user's session: 0.05 plays a 30 s session (clicks,
    #: watching, likes, a reformulation, the session end) out in 1.5 s. Each feedback event is
    #: produced when its (scaled) event time comes, as a client would send it.
    session_time_scale: float = 0.05
    #: The join's event-time window (wall seconds, so in scaled session time: 1.5 s = 30 s of a
    #: session) and allowed lateness; sessions without a ``session_end`` close by the window, so
    #: their staleness includes the rest of the window after their last event (the summary splits
    #: staleness by close reason). Users produce feedback in event-time order on loopback, so
    #: 0.1 s of lateness lost no in-window event in the runs of BENCHMARKS.md (the join's ``late``
    #: counter, in ``summary["join"]``); a deployment sets it to its transport's disorder.
    join_window_s: float = 1.5
    join_lateness_s: float = 0.1
    #: The learners' micro-batch: a take of up to ``learner_batch`` examples waits at most
    #: ``learner_within_s``, and a partial batch is learned once its oldest example waited
    #: ``learner_max_wait_s`` (``None``: only full batches, so at 20 examples/s an example waited
    #: up to 0.8 s for 15 more). Both waits are part of the staleness; shorter ones cost more
    #: learner steps (``summary["learner_timings_s"]``, ``summary["cpu_s"]``).
    learner_within_s: float = 0.1
    learner_max_wait_s: float | None = 0.05
    #: How long the join worker's take() batch waits to fill (part of every example's join time).
    join_within_s: float = 0.05
    #: LDRO starts from the cold-start policy (its skip term on the task logits), see LDROConfig.
    warm_start_ldro: bool = True
    #: The task scores LDRO reads: ``upstream`` (stationary) or ``calibrated`` (the online UMNN's
    #: output, which moves with every calibrator swap and carries the upstream position's bias).
    ldro_task_inputs: str = "upstream"
    learner_batch: int = 16
    #: Share of requests served by a Gumbel-Max sample (logged with its PL log-prob, used by the
    #: gate); the others get the current model's greedy order (ServeConfig.explore_rate).
    explore_rate: float = 0.2
    #: staleness is also summarised without the examples whose feedback ended in the first
    #: ``warmup_s`` seconds (``summary["staleness_after_warmup"]``)
    warmup_s: float = 10.0
    gate_window: int = 150
    feast: bool = True
    startup_timeout_s: float = 120.0
    #: Cold start (no reranker snapshot yet, or none passed the gate) ranks by these fusion weights
    #: over the task logits; the default is the upstream ranker's own order (its click score), the
    #: baseline a learned reranker has to beat.
    cold_start_weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0})

#: DemoConfig fields with their own ``streamrank demo`` option (``--set`` takes the others)
DEMO_OPTION_FIELDS = frozenset({"duration_s", "output", "rate", "concurrency", "snapshot_interval_s", "seed",
                                "learners", "reranker", "calibrator", "fusion", "feast"})

def demo_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Check ``--set`` values against the :class:`DemoConfig` fields they name (ValueError names the key)."""
    fields = {f.name: f for f in dataclasses.fields(DemoConfig)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields or key in DEMO_OPTION_FIELDS:
            known = ", ".join(sorted(set(fields) - DEMO_OPTION_FIELDS))
            hint = " (use its own option)" if key in DEMO_OPTION_FIELDS else f"; known: {known}"
            raise ValueError(f"{key!r} is not a DemoConfig field --set can change{hint}")
        kind = str(fields[key].type)
        if value is None:
            if "None" not in kind:
                raise ValueError(f"{key}: null is not allowed (type {kind})")
        elif kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError(f"{key}: expected true or false, got {value!r}")
        elif kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key}: expected an integer, got {value!r}")
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key}: expected a number, got {value!r}")
            value = float(value)
        elif kind.startswith("str"):
            if not isinstance(value, str):
                raise ValueError(f"{key}: expected a string, got {value!r}")
        elif kind.startswith("dict") and not isinstance(value, dict):
            raise ValueError(f"{key}: expected a JSON object, got {value!r}")
        out[key] = value
    return out

def stage_config(config: DemoConfig) -> dict[str, Any]:
    """The demo's ``STREAMRANK_CONFIG``: join window in scaled session time, LDRO's warm start."""
    doc: dict[str, Any] = {"join": {"window_s": config.join_window_s, "allowed_lateness_s": config.join_lateness_s,
                                    "idle_timeout_s": 5.0}}
    ldro: dict[str, Any] = {"task_inputs": config.ldro_task_inputs}
    if config.warm_start_ldro:
        ldro["init_task_weights"] = dict(config.cold_start_weights)
    doc["learners"] = {"ldro": ldro}
    return doc
