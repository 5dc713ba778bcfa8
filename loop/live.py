"""What ``streamrank demo`` shows while it runs: the simulator's curves for the dashboard, and a
progress display in the terminal.

:class:`LiveView` is a daemon thread that wakes once a second. It buckets the responses the
simulated users received since its last pass (incremental: a pass costs what arrived, not the
whole run), writes the closed buckets to ``<status folder>/simulator.json`` (the reranker's
``GET /dashboard/data`` serves them: reward and NDCG@10 of the served order against the upstream
order, which only the simulator can know), and, when stderr is a terminal, redraws a rich panel
(elapsed/remaining, requests, swaps, refusals, reward vs upstream, staleness p99, the dashboard
URL). Without a terminal (CI) it draws nothing; it never blocks the users' threads.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loop.metrics import Served

#: simulator.json keeps this many closed buckets (the dashboard's window)
KEEP_POINTS = 900
SIM_KEYS = ("reward", "reward_upstream", "ndcg10", "ndcg10_upstream", "expected_clicks", "expected_clicks_upstream")


class SimulatorCurves:
    """Incremental buckets of :class:`~loop.metrics.Served` records by response time."""

    def __init__(self, bucket_s: float, grace_s: float = 1.0) -> None:
        self.bucket_s = bucket_s
        self.grace_s = grace_s
        self._seen = 0
        self._open: dict[int, list[Served]] = {}
        self.points: list[dict[str, float]] = []

    def update(self, served: list[Served], now: float) -> list[dict[str, float]]:
        """Take the records appended to ``served`` since the last call; close buckets that ended
        more than ``grace_s`` before ``now`` (a late response still lands in its bucket). Returns the new points."""
        fresh = served[self._seen:]
        self._seen += len(fresh)
        for s in fresh:
            if s.ok:
                self._open.setdefault(int(math.floor(s.t / self.bucket_s)), []).append(s)
        closed = []
        for b in sorted(self._open):
            end = (b + 1) * self.bucket_s
            if end + self.grace_s > now:
                break
            rows = self._open.pop(b)
            closed.append({"t": round(end, 3), "requests": len(rows),
                           **{k: float(np.mean([getattr(r, k) for r in rows])) for k in SIM_KEYS}})
        self.points = (self.points + closed)[-KEEP_POINTS:]
        return closed


class LiveView(threading.Thread):
    """The demo's once-a-second pass: ``simulator.json`` for the dashboard, and the terminal panel."""

    def __init__(self, served: Callable[[], list[Served]], status_file: Path, base_url: str, duration_s: float,
                 bucket_s: float = 2.0, interval_s: float = 1.0, show: bool | None = None,
                 fetch: Callable[[str], dict[str, Any]] | None = None) -> None:
        super().__init__(name="demo-live-view", daemon=True)
        self.served = served
        self.status_file = status_file
        self.base_url = base_url
        self.url = f"{base_url}/dashboard"
        self.duration_s = duration_s
        self.interval_s = interval_s
        self.curves = SimulatorCurves(bucket_s)
        self.show = sys.stderr.isatty() if show is None else show
        self.fetch = fetch
        self.started = time.time()
        self.passes = 0
        self._halt = threading.Event()
        self.facts: dict[str, Any] = {}

    def run(self) -> None:
        live = None
        if self.show:
            from rich.console import Console  # noqa: PLC0415
            from rich.live import Live  # noqa: PLC0415

            live = Live(self.panel(), console=Console(stderr=True), refresh_per_second=2, transient=False)
            live.start()
        try:
            while not self._halt.wait(self.interval_s):
                self.one_pass()
                if live is not None:
                    live.update(self.panel())
        finally:
            if live is not None:
                live.stop()

    def one_pass(self) -> None:
        """Bucket, write ``simulator.json``, fetch the server's facts (swaps, staleness) for the panel."""
        now = time.time()
        self.curves.update(self.served(), now)
        doc = {"updated_at": now, "bucket_s": self.curves.bucket_s, "points": self.curves.points}
        tmp = self.status_file.with_name(self.status_file.name + ".tmp")
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.status_file)
        except OSError:
            pass
        if self.fetch is not None and self.show:
            try:
                self.facts = {**self.fetch(f"{self.base_url}/models?limit=0"),
                              "staleness": self.fetch(f"{self.url}/data?since={now}").get("staleness")}
            except Exception:  # noqa: BLE001 - the panel shows what it last had
                pass
        self.passes += 1

    def panel(self) -> Any:
        from rich.table import Table  # noqa: PLC0415

        elapsed = time.time() - self.started
        points = self.curves.points[-3:]

        def mean(key: str) -> float:
            return float(np.mean([p[key] for p in points])) if points else float("nan")

        facts = self.facts
        table = Table(title="streamrank demo", show_header=False, expand=False)
        table.add_row("elapsed / remaining", f"{elapsed:.0f} s / {max(0.0, self.duration_s - elapsed):.0f} s")
        table.add_row("requests", str(len(self.served())))
        table.add_row("swaps / refusals", f"{facts.get('swaps', '–')} / {facts.get('refusals', '–')}")
        table.add_row("reward: served vs upstream", f"{mean('reward'):.3f} vs {mean('reward_upstream'):.3f}")
        table.add_row("NDCG@10: served vs upstream", f"{mean('ndcg10'):.3f} vs {mean('ndcg10_upstream'):.3f}")
        p99 = (facts.get("staleness") or {}).get("p99_s")
        table.add_row("staleness p99", "–" if p99 is None else f"{p99:.1f} s")
        table.add_row("dashboard", self.url)
        return table

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
