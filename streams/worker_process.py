"""Start, watch and stop ``streamrank worker`` subprocesses (used by tests, benchmarks and demos).

A worker is ready when its status file shows partitions assigned, i.e. it joined the
consumer group and finished table recovery.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from common.config import Settings
from common.waiting import WaitTimeout, poll_until
from streams.metrics import status_dir


class WorkerProcess:
    """One ``streamrank worker`` child process in its own session (so kill -9 hits only it)."""

    def __init__(self, settings: Settings, env: dict[str, str], name: str, log_dir: Path,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.env = env
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    @property
    def status_path(self) -> Path:
        return status_dir(self.settings) / f"{self.name}.json"

    def start(self) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.status_path.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamrank.cli.main", "worker", "--name", self.name, *self.extra_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    def status(self) -> dict | None:
        try:
            doc = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None
        return doc if self.proc is not None and doc.get("pid") == self.proc.pid else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """Block until the worker reports assigned partitions; raise with its log tail otherwise."""
        def exited() -> str | None:
            return None if self.alive() else f"worker {self.name} exited ({self.proc.returncode}):\n{self.log_tail()}"

        def assigned() -> dict | None:
            doc = self.status()
            return doc if doc and doc.get("assigned") else None

        try:
            return poll_until(assigned, timeout, interval=0.2, what=f"worker {self.name} ready", abort=exited)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def kill9(self) -> None:
        """SIGKILL, no cleanup: the crash the fault tests simulate."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (Faust shuts down cleanly, committing offsets), SIGKILL after ``grace``."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill9()
