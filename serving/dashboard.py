"""What the live dashboard (``GET /dashboard``) shows, gathered where it happens.

The reranker already sees most of the loop: every request (rate, latency), every snapshot the
watcher swapped in or refused (with the promotion gate's estimate and lower bound), and, through
the ``examples`` topic it tails for the gate, every joined example (its list reward, and when a
served version first covered it). :class:`DashboardRecorder` turns those into time buckets;
:func:`dashboard_data` adds the facts other processes leave in the deployment's status folder
(each streams worker's lag and dead letters, each learner's lag, and the simulator's curves when
a demo runs) and is what ``GET /dashboard/data`` answers.

Staleness here is the live view of the demo's summary figure: from the moment an example reached
the ``examples`` topic (its record timestamp) to the first swap of a snapshot whose applied offsets
cover it (the manifest's ``offsets``); the summary's figure starts earlier, at the example's last
feedback, so it adds the join window.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: The simulator's live curve, written by ``streamrank demo`` (loop.live) into the status folder.
SIMULATOR_STATUS = "simulator.json"
#: Where learners mirror their status (a sub-folder: ``read_statuses`` of the streams workers skips it).
LEARNER_STATUS_DIR = "learners"


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class _Bucket:
    start: float
    latencies_ms: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    staleness_s: list[float] = field(default_factory=list)


class DashboardRecorder:
    """Time buckets (``bucket_s`` each, the last ``keep`` of them) of what the server observes.

    Thread-safe and cheap on the request path: ``observe_request`` appends one float. A bucket is
    summarised (percentiles) once, when time moves past it.
    """

    def __init__(self, bucket_s: float = 2.0, keep: int = 900, clock: Callable[[], float] = time.time,
                 max_pending: int = 50_000) -> None:
        if bucket_s <= 0 or keep <= 0:
            raise ValueError("bucket_s and keep must be > 0")
        self.bucket_s = bucket_s
        self.clock = clock
        self.started_at = clock()
        self._lock = threading.Lock()
        self._current = _Bucket(self._align(self.started_at))
        self._points: deque[dict[str, Any]] = deque(maxlen=keep)
        #: examples not yet covered by a served snapshot: "topic:partition" -> deque of (offset, joined at)
        self._pending: dict[str, deque[tuple[int, float]]] = {}
        self._max_pending = max_pending
        self._recent_staleness: deque[float] = deque(maxlen=2000)
        self.dead_letters: Counter[str] = Counter()
        self.examples_seen = 0

    def _align(self, t: float) -> float:
        return t - (t % self.bucket_s)

    def _roll(self, now: float) -> None:
        """Close every bucket that ended before ``now`` (empty ones too: a stalled server shows as zero)."""
        while now >= self._current.start + self.bucket_s:
            b = self._current
            self._points.append({
                "t": round(b.start + self.bucket_s, 3), "requests": len(b.latencies_ms),
                "requests_per_s": len(b.latencies_ms) / self.bucket_s,
                "latency_p50_ms": _percentile(b.latencies_ms, 50), "latency_p99_ms": _percentile(b.latencies_ms, 99),
                "examples": len(b.rewards), "reward": float(np.mean(b.rewards)) if b.rewards else None,
                "staleness_p50_s": _percentile(b.staleness_s, 50), "staleness_p99_s": _percentile(b.staleness_s, 99)})
            self._current = _Bucket(b.start + self.bucket_s)
            if now - self._current.start > self.bucket_s * self._points.maxlen:  # idle for longer than kept
                self._current = _Bucket(self._align(now))

    def observe_request(self, latency_s: float) -> None:
        """One answered ``POST /rerank`` (handler latency)."""
        now = self.clock()
        with self._lock:
            self._roll(now)
            self._current.latencies_ms.append(latency_s * 1000.0)

    def observe_example(self, list_reward: float, topic: str, partition: int, offset: int,
                        joined_at: float | None = None) -> None:
        """One example read from ``examples`` (its reward; waiting for a snapshot that covers it)."""
        now = self.clock()
        with self._lock:
            self._roll(now)
            self.examples_seen += 1
            if list_reward == list_reward:  # not NaN
                self._current.rewards.append(float(list_reward))
            pending = self._pending.setdefault(f"{topic}:{partition}", deque())
            if len(pending) < self._max_pending:
                pending.append((int(offset), now if joined_at is None else joined_at))

    def observe_swap(self, at: float, offsets: dict[str, int] | None) -> None:
        """A snapshot swapped in at ``at``: every waiting example at or below its applied offsets is now served."""
        if not offsets:
            return
        with self._lock:
            self._roll(self.clock())
            for tp, applied in offsets.items():
                pending = self._pending.get(str(tp))
                while pending and pending[0][0] <= int(applied):
                    _, joined_at = pending.popleft()
                    stale = max(0.0, at - joined_at)
                    self._current.staleness_s.append(stale)
                    self._recent_staleness.append(stale)

    def observe_dead_letter(self, reason: str) -> None:
        with self._lock:
            self.dead_letters[reason or "?"] += 1

    def points(self, since: float | None = None) -> list[dict[str, Any]]:
        """Closed buckets (oldest first) whose end is after ``since``."""
        with self._lock:
            self._roll(self.clock())
            return [p for p in self._points if since is None or p["t"] > since]

    def staleness(self) -> dict[str, Any]:
        """p50/p99 of the last 2,000 examples a swap covered."""
        with self._lock:
            values = list(self._recent_staleness)
        return {"examples": len(values), "p50_s": _percentile(values, 50), "p99_s": _percentile(values, 99)}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def consumers(folder: Path) -> list[dict[str, Any]]:
    """Each streams worker's and learner's lag (records behind the high watermark) from their status files."""
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name == SIMULATOR_STATUS or (doc := read_json(path)) is None:
            continue
        out.append({"name": str(doc.get("worker", path.stem)), "kind": "streams", "lag": doc.get("total_lag"),
                    "updated_at": doc.get("updated_at"), "dead_lettered": (doc.get("counts") or {}).get("dead_lettered")})
    for path in sorted((folder / LEARNER_STATUS_DIR).glob("*.json")):
        if (doc := read_json(path)) is None:
            continue
        out.append({"name": f"learner-{doc.get('model', path.stem)}", "kind": "learner", "lag": doc.get("lag"),
                    "updated_at": doc.get("ts"), "dead_lettered": doc.get("dead_lettered"),
                    "applied": doc.get("applied")})
    return out


def gate_rows(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The promotion gate's verdicts (newest last): estimate, current value, lower bound, reason."""
    rows = []
    for d in decisions:
        gate = (d.get("details") or {}).get("gate") or {}
        if not gate:
            continue
        rows.append({"at": d.get("at"), "model": d.get("model"), "version": d.get("version"), "action": d.get("action"),
                     "accepted": gate.get("accepted"), "estimate": gate.get("candidate_value"),
                     "current": gate.get("current_value"), "lower_bound": gate.get("lower_bound"),
                     "n": gate.get("n"), "reason": gate.get("reason") or d.get("reason")})
    return rows


def dashboard_data(recorder: DashboardRecorder, serving: dict[str, Any], decisions: list[dict[str, Any]],
                   status_folder: Path | None, since: float | None = None,
                   simulator_since: float | None = None) -> dict[str, Any]:
    """The document ``GET /dashboard/data`` answers (:class:`serving.dashboard_routes.DashboardData`).

    ``since`` filters the server's points and swaps, ``simulator_since`` the simulator's points:
    two cursors, because the simulator closes a bucket a second or two after the server does."""
    now = time.time()
    points = recorder.points(since)
    simulator = read_json(status_folder / SIMULATOR_STATUS) if status_folder is not None else None
    sim_points = [p for p in (simulator or {}).get("points", [])
                  if simulator_since is None or p.get("t", 0) > simulator_since]
    swaps = [{"at": d["at"], "model": d["model"], "role": d.get("role"), "version": d["version"]}
             for d in decisions if d.get("action") == "swapped" and (since is None or d["at"] > since)]
    refusals = Counter(d.get("action") for d in decisions if d.get("action") != "swapped")
    return {
        "now": now, "started_at": recorder.started_at, "bucket_s": recorder.bucket_s,
        "serving": serving, "swaps": swaps, "refusals": dict(refusals), "gate": gate_rows(decisions)[-50:],
        "points": points, "simulator": {"points": sim_points, "updated_at": (simulator or {}).get("updated_at"),
                                        "config": (simulator or {}).get("config")},
        "staleness": recorder.staleness(),
        "consumers": consumers(status_folder) if status_folder is not None else [],
        "dead_letters": dict(recorder.dead_letters), "examples_seen": recorder.examples_seen,
        "point_counts": {"serving": len(points), "simulator": len(sim_points), "swaps": len(swaps)},
    }


class DashboardFeeds:
    """Connects a :class:`DashboardRecorder` to what the server runs: the examples reader's records, the
    watcher's swaps, and a tail of the dead-letter topic (counts by ``dl.reason`` header, from every stage)."""

    def __init__(self, recorder: DashboardRecorder, bootstrap: str | None, dead_letter_topic: str) -> None:
        self.recorder = recorder
        self._tail = None
        if bootstrap:
            from serving.topic_tail import TopicTail  # noqa: PLC0415

            self._tail = TopicTail(bootstrap, dead_letter_topic, self._dead_letters, name="dashboard-dead-letters",
                                   idle_s=1.0)

    def example(self, event: Any, record: Any) -> None:
        """``RecentExamples.observe``: a joined example and its ``examples`` record."""
        ts = getattr(record, "timestamp", None)
        self.recorder.observe_example(float(event.list_reward), record.topic, record.partition, record.offset,
                                      joined_at=ts / 1000.0 if isinstance(ts, (int, float)) and ts > 0 else None)

    def swap(self, _component: Any, decision: Any) -> None:
        """``SnapshotWatcher.on_swap``: examples the snapshot's applied offsets cover are now served."""
        self.recorder.observe_swap(decision.at, (decision.details or {}).get("offsets"))

    def _dead_letters(self, records: Any) -> None:
        from streams.dead_letter import letter_fields  # noqa: PLC0415

        for record in records:
            try:
                reason = letter_fields(record)["reason"]
            except ValueError:
                reason = "unlabelled"
            self.recorder.observe_dead_letter(reason)

    def start(self) -> None:
        if self._tail is not None:
            self._tail.start()

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
