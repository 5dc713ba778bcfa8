"""How long ``GET /dashboard/data`` takes while the demo loads the server, against ``GET /healthz``
(the cheapest route) measured in the same run, as a ratio (the machine is shared and noisy).

Runs a short ``streamrank demo`` on the embedded stack (its default load, 20 requests/s), and
once the dashboard is announced polls both routes alternately, every ``--interval`` seconds,
as a browser tab does (the page asks every 2 s; here faster, for more samples). Issue 21's bar:
the data endpoint answers within 50 ms under the demo's load.

    .venv/bin/python bench/dashboard_latency.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import load_settings  # noqa: E402
from loop.config import DemoConfig  # noqa: E402
from loop.demo import run_demo  # noqa: E402


def _time(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 40 s demo instead of 120 s")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between polls")
    parser.add_argument("--output", default="out/bench-dashboard")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    duration = 40.0 if args.quick else 120.0
    config = DemoConfig(duration_s=duration, output=Path(args.output), feast=False, drain_s=2.0)
    urls: queue.Queue[str] = queue.Queue()
    summary: dict = {}
    demo = threading.Thread(target=lambda: summary.update(run_demo(config, load_settings(), announce=urls.put,
                                                                   show_progress=False)), daemon=True)
    demo.start()
    dashboard = urls.get(timeout=180)
    base = dashboard.rsplit("/dashboard", 1)[0]
    data_ms, health_ms, sizes = [], [], []
    deadline = time.time() + duration - 2.0
    with httpx.Client(timeout=5) as client:
        time.sleep(5.0)  # let traffic start
        while time.time() < deadline and demo.is_alive():
            health_ms.append(_time(client, f"{base}/healthz"))
            started = time.perf_counter()
            response = client.get(f"{dashboard}/data")
            data_ms.append((time.perf_counter() - started) * 1000.0)
            sizes.append(len(response.content))
            time.sleep(args.interval)
    demo.join(timeout=240)
    result = {
        "samples": len(data_ms),
        "dashboard_data": {"p50_ms": float(np.percentile(data_ms, 50)), "p99_ms": float(np.percentile(data_ms, 99))},
        "healthz": {"p50_ms": float(np.percentile(health_ms, 50)), "p99_ms": float(np.percentile(health_ms, 99))},
        "data_to_healthz_p50": float(np.percentile(data_ms, 50) / np.percentile(health_ms, 50)),
        "response_bytes_p50": float(np.percentile(sizes, 50)),
        "demo_requests": summary.get("requests"), "demo_errors": summary.get("errors"),
        "demo_latency_p99_ms": summary.get("latency_p99_ms"),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:24s} {value}")


if __name__ == "__main__":
    main()
