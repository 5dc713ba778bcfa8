"""The embedded broker's log against its size bound while the README path runs.

    flock /tmp/streamrank-bench.lock .venv/bin/python bench/storage_bound.py [--duration 1200] [--quick] [--json]

What: starts its own embedded stack (noida broker, Redis and the storage keeper of
:mod:`common.retention`, bound ``STREAMRANK_RETENTION_MB``, checked every
``STREAMRANK_RETENTION_CHECK_S``) in a temporary ``STREAMRANK_HOME``, runs the README's by-hand
path on it (:mod:`loop.readme_path`: serve + worker + learn ldro --publish + simulate) for
``--duration`` seconds of simulated users, and samples the broker's data folder every second
meanwhile. Prints the p50 and the largest sample as a ratio of the bound, twice: the log itself
(:func:`common.retention.folder_bytes`, what the keeper bounds) and the whole folder with noida's
``kafka.tmp`` copy while it rewrites its log (what the disk must hold). ``--quick``: 120 s of users.

Why: the bound is the baseline the figures are measured against in the same run; the 20-minute
figures in BENCHMARKS.md were first read with a shell ``stat`` loop beside the integration test,
this script makes them one command. With the default 512 MB bound a 120 s run does not reach the
keeper's high-water mark (~2 MB/s of log on this path); ``STREAMRANK_RETENTION_MB=64`` makes a
quick run trim.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import stack  # noqa: E402
from common.config import Settings, Topics, load_settings  # noqa: E402
from common.retention import folder_bytes  # noqa: E402
from common.retention import read_status as keeper_status  # noqa: E402
from common.topics import ensure_project_topics  # noqa: E402
from loop.readme_path import simulate_reports, start_simulate, start_stages  # noqa: E402

QUICK_S = 120.0
#: seconds simulate may run past its duration before the bench gives up on it
SIMULATE_GRACE_S = 180.0


class FolderSampler:
    """Samples a folder's size every ``interval_s`` on a daemon thread: the log alone and with rewrite copies."""

    def __init__(self, folder: Path, interval_s: float = 1.0) -> None:
        self.folder = folder
        self.interval_s = interval_s
        self.log_bytes: list[int] = []
        self.with_copy_bytes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="folder-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.log_bytes.append(folder_bytes(self.folder))
            try:  # every file, the rewrite's kafka.tmp too (it may vanish between listing and stat)
                self.with_copy_bytes.append(sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file()))
            except FileNotFoundError:
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "FolderSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def ratios(samples: list[int], bound: int) -> dict[str, float]:
    """p50 and max of ``samples`` in MB and as a ratio of ``bound`` bytes."""
    if not samples:
        raise RuntimeError("no samples of the broker's folder were taken")
    p50, top = statistics.median(samples), max(samples)
    return {"p50_mb": round(p50 / 1e6, 1), "max_mb": round(top / 1e6, 1),
            "p50_ratio": round(p50 / bound, 3), "max_ratio": round(top / bound, 3)}


def run(base: Settings, duration_s: float, work: Path) -> dict:
    """The README path on a fresh embedded stack in ``base.home`` for ``duration_s``; the report."""
    state = stack.up(base)
    try:
        settings = replace(base.with_endpoints(kafka=state["kafka"], redis=state["redis"]),
                           topics=Topics(prefix=f"sb{uuid.uuid4().hex[:6]}."))
        ensure_project_topics(settings)
        children, server, base_url = start_stages(settings, work, work / "checkpoints", duration_s)
        try:
            with FolderSampler(Path(base.home) / "noida") as sampler:
                started = time.monotonic()
                simulate = start_simulate(children, base_url, duration_s)
                simulate.proc.wait(timeout=duration_s + SIMULATE_GRACE_S)
                ran_s = time.monotonic() - started
            if simulate.proc.returncode != 0:
                raise RuntimeError(f"simulate failed: {simulate.log_path.read_text()[-2000:]}")
            server_alive = server.proc.poll() is None
        finally:
            children.stop_all()
        keeper = keeper_status(Path(base.home))
    finally:
        stack.down(base)
    _reports, served = simulate_reports(simulate.log_path.read_text())
    bound = int(base.retention_mb * 1e6)
    return {"duration_s": duration_s, "ran_s": round(ran_s, 1), "served": served, "server_alive": server_alive,
            "bound_mb": base.retention_mb, "check_s": base.retention_check_s, "samples": len(sampler.log_bytes),
            "log": ratios(sampler.log_bytes, bound), "with_rewrite_copy": ratios(sampler.with_copy_bytes, bound),
            "keeper": {k: keeper.get(k) for k in ("checks", "trims", "max_log_bytes", "records_deleted", "held_back",
                                                  "over_bound_untrimmable", "last_error")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1200.0, help="seconds of simulated users (default 1200)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_S:.0f} s of simulated users")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args(argv)
    duration_s = QUICK_S if args.quick else args.duration
    if not duration_s > 0:
        parser.error(f"--duration must be > 0, got {duration_s}")
    if os.environ.get("STREAMRANK_KAFKA"):
        parser.error("STREAMRANK_KAFKA is set: this bench samples the embedded noida broker's folder, unset it")
    home = Path(tempfile.mkdtemp(prefix="storage-bound-"))
    try:
        base = load_settings({**os.environ, "STREAMRANK_HOME": str(home / "home")})
        if base.broker != "noida":
            parser.error(f"STREAMRANK_BROKER={base.broker}: only noida's log has a keeper-kept bound")
        (home / "logs").mkdir()
        report = run(base, duration_s, home / "logs")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if not args.json:
        log, copy = report["log"], report["with_rewrite_copy"]
        print(f"README path {report['ran_s']:.0f} s, {report['served']} requests served, bound "
              f"{report['bound_mb']:.0f} MB: log p50 {log['p50_mb']} MB ({log['p50_ratio']}x), max {log['max_mb']} MB "
              f"({log['max_ratio']}x); with rewrite copy max {copy['max_mb']} MB ({copy['max_ratio']}x); "
              f"keeper trims {report['keeper']['trims']}")
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
