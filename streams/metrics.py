"""Counters of the streams worker, rendered as Prometheus text and written to a status file.

The worker serves :meth:`StreamMetrics.prometheus` at ``http://127.0.0.1:<web_port>/metrics``
and rewrites ``STREAMRANK_HOME/workers/<topic prefix>/<name>.json`` every tick so ``streamrank worker
--status`` can report every worker without scraping (and after a worker died, its last
numbers stay readable).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common.config import Settings

#: Counter name -> help text (all are monotonically increasing per worker process).
COUNTERS = {
    "events_in": "Records consumed from the impressions and feedback topics",
    "impressions_in": "Valid impressions applied",
    "feedback_in": "Valid feedback events applied (including early ones)",
    "examples_out": "LabeledList examples produced to the examples topic",
    "late": "Feedback inside its window that arrived after its example was emitted (counted and dropped)",
    "outside_window": "Feedback whose event time is past its impression's window (counted and dropped)",
    "duplicates": "Re-delivered impressions or feedback (same event_id), counted once",
    "early_feedback": "Feedback that arrived before its impression (held)",
    "orphaned": "Held feedback dropped because its impression never arrived",
    "dead_lettered": "Invalid records routed to the dead-letter topic",
    "batches": "fetched batches the join applied",
}


@dataclass
class StreamMetrics:
    """In-process counters plus per-partition lag and open-window gauges."""

    worker: str
    counts: Counter = field(default_factory=Counter)
    dead_letter_reasons: Counter = field(default_factory=Counter)
    closed_by: Counter = field(default_factory=Counter)
    lag: dict[str, int] = field(default_factory=dict)
    open_windows: int = 0
    assigned: list[int] = field(default_factory=list)
    web_port: int | None = None
    member_id: str | None = None
    last_error: str | None = None
    first_input_at: float | None = None
    busy_s: float = 0.0
    last_input_at: float | None = None
    host: str = field(default_factory=socket.gethostname)
    started_at: float = field(default_factory=time.time)

    def inc(self, name: str, n: int = 1) -> None:
        if name not in COUNTERS:
            raise KeyError(f"unknown metric {name!r}")
        self.counts[name] += n

    def snapshot(self) -> dict:
        return {"worker": self.worker, "pid": os.getpid(), "updated_at": time.time(),
                "started_at": self.started_at, "counts": {k: self.counts.get(k, 0) for k in COUNTERS},
                "dead_letter_reasons": dict(self.dead_letter_reasons), "closed_by": dict(self.closed_by),
                "lag": dict(self.lag), "total_lag": sum(self.lag.values()), "open_windows": self.open_windows,
                "assigned": list(self.assigned), "web_port": self.web_port,
                "member_id": self.member_id, "host": self.host, "last_error": self.last_error,
                "first_input_at": self.first_input_at, "last_input_at": self.last_input_at,
                "busy_s": round(self.busy_s, 3)}

    def prometheus(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        label = f'worker="{_escape(self.worker)}"'
        lines = []
        for name, help_text in COUNTERS.items():
            metric = f"streamrank_streams_{name}_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter",
                      f"{metric}{{{label}}} {self.counts.get(name, 0)}"]
        lines += ["# HELP streamrank_streams_dead_letter_reason_total Dead-lettered records by reason",
                  "# TYPE streamrank_streams_dead_letter_reason_total counter"]
        lines += [f'streamrank_streams_dead_letter_reason_total{{{label},reason="{_escape(r)}"}} {n}'
                  for r, n in sorted(self.dead_letter_reasons.items())]
        lines += ["# HELP streamrank_streams_examples_closed_by_total Examples by what closed their window",
                  "# TYPE streamrank_streams_examples_closed_by_total counter"]
        lines += [f'streamrank_streams_examples_closed_by_total{{{label},closed_by="{_escape(c)}"}} {n}'
                  for c, n in sorted(self.closed_by.items())]
        lines += ["# HELP streamrank_streams_lag Records behind the high watermark per topic-partition",
                  "# TYPE streamrank_streams_lag gauge"]
        lines += [f'streamrank_streams_lag{{{label},tp="{_escape(tp)}"}} {n}' for tp, n in sorted(self.lag.items())]
        lines += ["# HELP streamrank_streams_open_windows Impressions waiting for their window to close",
                  "# TYPE streamrank_streams_open_windows gauge", f"streamrank_streams_open_windows{{{label}}} "
                  f"{self.open_windows}"]
        return "\n".join(lines) + "\n"

    def write_status(self, directory: Path) -> Path:
        """Atomically rewrite this worker's status file."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.worker}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=2, sort_keys=True))
        tmp.replace(path)
        return path


def status_dir(settings: Settings) -> Path:
    """Where the workers of ``settings``' deployment (topic prefix) write their status files."""
    return Path(settings.home) / "workers" / settings.topics.prefix.rstrip(".")


def read_statuses(directory: Path) -> list[dict]:
    """Every worker status file under ``directory`` (unreadable ones are skipped)."""
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
