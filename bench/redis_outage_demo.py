"""Redis killed -9 for a few seconds in the middle of ``streamrank demo``: what failed, what degraded, what came back.

Starts the embedded stack itself in a fresh ``STREAMRANK_HOME`` (so it owns Redis's pid), runs
``streamrank demo`` against it, and at ``--outage-at`` seconds after the dashboard answers kills
the Redis server with SIGKILL, waits ``--outage-s`` and starts it again on the same port and data
directory (the append-only file brings the rows, snapshots and pointers back). Meanwhile it reads
``/healthz`` every 0.5 s. At the end it prints the demo's own counts (requests, errors: every
non-200 answer is one) and the server's degraded counts, with the time /healthz said ``degraded``
and when it said ``ok`` again, and whether served versions ever went back.

    .venv/bin/python bench/redis_outage_demo.py --duration 60 --outage-at 25 --outage-s 5

Issue 17's baseline, before serving degraded: 128 of 2,001 requests were HTTP 500 in a 5 s outage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import stack  # noqa: E402
from common.config import load_settings  # noqa: E402


def watch_health(url: str, stop: threading.Event, timeline: list, last: dict) -> None:
    while not stop.is_set():
        try:
            doc = httpx.get(f"{url}/healthz", timeout=2).json()
            timeline.append((time.monotonic(), doc.get("status"), doc.get("degraded", [])))
            last.clear()
            last.update(doc)
        except httpx.HTTPError as exc:
            timeline.append((time.monotonic(), f"unreachable: {exc}", []))
        stop.wait(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--outage-at", type=float, default=25.0)
    parser.add_argument("--outage-s", type=float, default=5.0)
    parser.add_argument("--output", default="out/bench/redis_outage")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="redis-outage-"))
    env = {**os.environ, "STREAMRANK_HOME": str(home)}
    settings = load_settings(env)
    state = stack.up(settings)
    redis_pid, redis_port = state["pids"]["redis"], int(state["redis"].rsplit(":", 1)[1])
    demo = subprocess.Popen([str(Path(sys.executable).parent / "streamrank"), "demo", "--duration", str(args.duration),
                             "--output", args.output], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    url = None
    for line in demo.stdout:  # the dashboard URL is announced on a line of its own
        lines.append(line)
        if match := re.match(r"(http://127\.0\.0\.1:\d+)/dashboard\s*$", line.strip()):
            url = match.group(1)
            break
    threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True).start()
    stop, timeline, last = threading.Event(), [], {}
    threading.Thread(target=watch_health, args=(url, stop, timeline, last), daemon=True).start()
    time.sleep(args.outage_at)
    killed = time.monotonic()
    os.kill(redis_pid, signal.SIGKILL)
    time.sleep(args.outage_s)
    restarted = time.monotonic()
    new_redis = stack.launch(stack.redis_spec(home, redis_port), home)
    demo.wait()
    stop.set()
    try:
        stack.down(settings)
    finally:
        stack.stop_pid(new_redis)
    summary = json.loads((Path(args.output) / "summary.json").read_text())
    decisions = json.loads((Path(args.output) / "decisions.json").read_text())
    (Path(args.output) / "healthz_timeline.json").write_text(json.dumps(
        [{"t_from_kill_s": round(t - killed, 2), "status": status, "degraded": reasons}
         for t, status, reasons in timeline], indent=1))
    report(summary, decisions, timeline, killed, restarted, args)
    print("last /healthz counts: " + json.dumps({k: v for k, v in last.items() if k.startswith("features_")
                                                 or k == "impressions"}))


def report(summary: dict, decisions: list, timeline: list, killed: float, restarted: float, args) -> None:
    degraded_at = [t for t, status, _ in timeline if status == "degraded"]
    # ok again for good: no later poll says degraded (polls after the demo stopped its server fail: ignored)
    ok_after = next((t for t, status, _ in timeline if t > restarted and status == "ok"
                     and all(s != "degraded" for tt, s, _ in timeline if tt >= t)), None)
    swapped = {}
    backwards = 0
    for d in decisions:
        if d.get("action") == "swapped":
            last = swapped.get(d["model"])
            backwards += last is not None and int(d["version"]) < int(last) and not d["reason"].startswith("rollback")
            swapped[d["model"]] = d["version"]
    http_errors = [e for e in summary.get("error_details", []) if "HTTP" in e]
    print(json.dumps({k: summary.get(k) for k in ("requests", "served", "errors")}, default=str))
    print(f"outage: Redis killed -9 at {args.outage_at:.0f} s for {args.outage_s:.0f} s")
    print(f"errors in the demo: {summary.get('errors')} ({len(http_errors)} HTTP): {summary.get('error_details', [])[:5]}")
    print(f"/healthz degraded: {len(degraded_at)} polls, first {min(degraded_at) - killed:+.1f} s after the kill"
          if degraded_at else "/healthz never said degraded")
    print(f"/healthz ok for good {ok_after - restarted:.1f} s after the restart" if ok_after else "/healthz not ok again")
    reasons = sorted({re.sub(r"\d+", "N", r) for _, _, rs in timeline for r in rs})
    print(f"reasons seen: {reasons}")
    print(f"served versions went backwards without a rollback: {backwards} times; last swapped {swapped}")


if __name__ == "__main__":
    main()
