"""Health probes used by container health checks (docker-compose) and by tests.

Two kinds, because the roles differ: HTTP services answer a URL (serving's ``/healthz``, a
stream worker's ``/metrics``); learner workers write a status file on every progress tick,
so a fresh file means the learner's loop is alive.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path


def check_url(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs from config
            return 200 <= response.status < 300, f"HTTP {response.status}"
    except OSError as exc:
        return False, str(exc)


def check_status_file(path: Path, max_age_s: float) -> tuple[bool, str]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return False, f"{path}: {exc}"
    age = time.time() - float(doc.get("ts", path.stat().st_mtime))
    return age <= max_age_s, f"{path}: updated {age:.1f}s ago"
