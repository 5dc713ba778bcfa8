"""The demo's child processes and its own embedded stack: start, wait until ready, stop.

Each stage runs as ``python -m streamrank.cli.main <command>`` in its own process group (so a
stop reaches its children too), logging to ``<output>/logs/<name>.log``; a child that exits
during start-up aborts the wait naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from common import stack
from common.config import Settings
from common.waiting import WaitTimeout, poll_until


@dataclass
class Child:
    """One started stage: its process and log; ``exited_early`` is its exit code once it died."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    exited_early: int | None = None

class Children:
    """Subprocesses of the demo (own process groups), stopped in reverse start order."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, *args: str) -> Child:
        path = self.log_dir / f"{name}.log"
        fh = open(path, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([sys.executable, "-m", "streamrank.cli.main", *args], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        fh.close()
        child = Child(name, proc, path)
        self.children.append(child)
        return child

    def crashed(self) -> list[Child]:
        for child in self.children:
            if child.exited_early is None and child.proc.poll() is not None:
                child.exited_early = child.proc.returncode
        return [c for c in self.children if c.exited_early is not None]

    def exited_message(self) -> str | None:
        """Why start-up must stop (a child exited), or ``None``."""
        crashed = self.crashed()
        if crashed:
            return f"a demo process exited during start-up: {[c.name for c in crashed]} (logs under {self.log_dir})"
        return None

    def stop_all(self) -> None:
        self.crashed()
        for child in reversed(self.children):
            if child.proc.poll() is None:
                stack.stop_pid(child.proc.pid, grace=15)
            try:
                child.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

def wait_http(url: str, timeout: float, children: Children) -> None:
    """Block until ``url`` answers 200; raise if a child exits first or after ``timeout`` seconds."""
    import httpx  # noqa: PLC0415

    def answers() -> bool:
        return httpx.get(url, timeout=1.0).status_code == 200

    poll_until(answers, timeout, interval=0.25, what=f"{url} answering", abort=children.exited_message,
               tolerate=(httpx.HTTPError,))


def wait_assigned(status_files: dict[str, tuple[Child, Path]], timeout: float, children: Children) -> float:
    """Block until each child's status file (written by the child, with its pid) lists assigned
    partitions; returns the seconds waited. Raises naming the stages that are not ready."""
    started = time.monotonic()
    waiting = dict(status_files)

    def all_assigned() -> bool:
        for name, (child, path) in list(waiting.items()):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if doc.get("pid") == child.proc.pid and doc.get("assigned"):
                del waiting[name]
        return not waiting

    try:
        poll_until(all_assigned, timeout, interval=0.2, what="partitions assigned", abort=children.exited_message)
    except WaitTimeout:
        raise WaitTimeout(f"not consuming after {timeout:.0f}s (no partitions assigned): {sorted(waiting)} "
                          f"(logs under {children.log_dir})") from None
    return time.monotonic() - started


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used so far (Linux /proc; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None

#: Where a demo that starts its own embedded stack keeps it (under ``STREAMRANK_HOME``).
DEMO_STACK_DIR = "demo-stack"

def stack_settings(settings: Settings) -> tuple[Settings, bool]:
    """Endpoints of a running/external stack, or a newly started one (then ``True``: stop it at the end).

    A stack the demo starts itself lives in a fresh ``<home>/demo-stack``: noida-db rewrites its
    whole log file whenever anything changes, so a broker that still holds earlier runs' records
    spends CPU on them all run long (a second 60 s demo in the same home found a 221 MB log and
    the broker at 40% of a core; docs/brokers.md)."""
    if settings.kafka and settings.redis and (os.environ.get("STREAMRANK_KAFKA") or _alive(settings)):
        return settings, False
    run = replace(settings, home=Path(settings.home) / DEMO_STACK_DIR)
    if run.home.exists() and not _alive(run):
        shutil.rmtree(run.home)  # what a previous demo left (it is stopped): records no one will read
    state = stack.up(run)
    return run.with_endpoints(kafka=state["kafka"], redis=state["redis"]), bool(state.get("pids"))

def _alive(settings: Settings) -> bool:
    return stack.running(settings.home)
