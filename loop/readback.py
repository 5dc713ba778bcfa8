"""Reading a finished run back: joined examples and snapshot announcements from Kafka, the server's
``/models`` and ``/metrics``, each stage's status file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from common.config import Settings


def example_offsets(settings: Settings) -> tuple[dict[str, tuple[str, int, float]], dict[str, str], dict[str, float]]:
    """request_id -> ("topic:partition", offset, produce time in s) of its joined example;
    request_id -> how the join closed it (``session_end``, ``window``, ``idle``); and
    request_id -> the event time its window ended (impression ts + window: later feedback was
    dropped, so an example's staleness starts at its last feedback event up to there)."""
    from streams.consume import read_topic  # noqa: PLC0415

    out: dict[str, tuple[str, int, float]] = {}
    closed_by: dict[str, str] = {}
    window_end: dict[str, float] = {}

    def on_record(record) -> None:
        rid = record.key.decode() if record.key else ""
        if rid in out:
            return
        out[rid] = (f"{record.topic}:{record.partition}", record.offset, record.timestamp / 1000.0)
        try:
            doc = json.loads(record.value)
            closed_by[rid] = str(doc["join"]["closed_by"])
            window_end[rid] = float(doc["impression"]["ts"]) + float(doc["join"]["window_s"])
        except (ValueError, KeyError, TypeError):
            closed_by[rid] = "?"

    read_topic(settings.kafka_bootstrap, settings.topics.examples, on_record, idle_s=3.0, timeout_s=60)
    return out, closed_by, window_end

def announcements(settings: Settings) -> list[dict[str, Any]]:
    from streams.consume import read_topic  # noqa: PLC0415

    out: list[dict[str, Any]] = []

    def on_record(record) -> None:
        try:
            out.append(json.loads(record.value))
        except ValueError:
            pass

    read_topic(settings.kafka_bootstrap, settings.topics.model_updates, on_record, idle_s=3.0, timeout_s=60)
    return out

def get_json(url: str) -> dict:
    import httpx  # noqa: PLC0415

    try:
        return httpx.get(url, timeout=5).json()
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}

def prometheus_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0

def join_counts(status_path: Path) -> dict[str, Any]:
    """The streams worker's counters (late and outside-window feedback, closes by reason) from its status file."""
    try:
        doc = json.loads(status_path.read_text())
    except (OSError, ValueError):
        return {}
    return {"counts": doc.get("counts", {}), "closed_by": doc.get("closed_by", {})}

def join_totals(directory: Path) -> dict[str, Any]:
    """Examples out and dead letters (in all and by reason) summed over the streams workers' status files."""
    from collections import Counter  # noqa: PLC0415

    from streams.metrics import read_statuses  # noqa: PLC0415

    examples = dead = 0
    reasons: Counter = Counter()
    for doc in read_statuses(directory):
        examples += int(doc.get("counts", {}).get("examples_out", 0))
        dead += int(doc.get("counts", {}).get("dead_lettered", 0))
        reasons.update({str(k): int(v) for k, v in doc.get("dead_letter_reasons", {}).items()})
    return {"examples": examples, "dead_lettered": dead, "reasons": dict(reasons)}

def learner_timings(checkpoints: Path, models: Sequence[str]) -> dict[str, Any]:
    """Each learner's step timings (batch wait, learn, checkpoint, publish) from its final status.json."""
    out: dict[str, Any] = {}
    for model in models:
        try:
            out[model] = json.loads((checkpoints / model / "status.json").read_text()).get("timings_s", {})
        except (OSError, ValueError):
            out[model] = {}
    return out
