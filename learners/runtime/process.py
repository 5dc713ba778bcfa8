"""Run ``streamrank learn`` as a child process and watch it through its checkpoints and status file.

Used by the worker's integration and kill -9 tests (and handy for demos): the child gets the
environment of a :class:`~common.config.Settings` (broker, topic prefix), its own
process group, and a log file; the parent reads ``<checkpoint_dir>/<model>/status.json`` and
the checkpoint store, never the child's memory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.config import Settings
from common.waiting import WaitTimeout, poll_until
from learners.runtime.checkpoint import CheckpointStore


def settings_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(STREAMRANK_KAFKA=settings.kafka_bootstrap, STREAMRANK_REDIS=settings.redis or "",
               STREAMRANK_TOPIC_PREFIX=settings.topics.prefix, STREAMRANK_HOME=str(settings.home),
               STREAMRANK_PARTITIONS=str(settings.partitions), PYTHONUNBUFFERED="1")
    return env


@dataclass
class LearnerProcess:
    settings: Settings
    model: str
    checkpoint_dir: Path
    args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def store(self) -> CheckpointStore:
        return CheckpointStore(self.checkpoint_dir, self.model)

    def start(self) -> "LearnerProcess":
        argv = [sys.executable, "-m", "streamrank.cli.main", "learn", "--model", self.model,
                "--checkpoint-dir", str(self.checkpoint_dir), *self.args]
        self.log_path = self.log_path or self.checkpoint_dir / f"{self.model}-{time.time_ns()}.log"
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=settings_environment(self.settings), start_new_session=True,
                                     cwd=Path(__file__).resolve().parents[1])
        log.close()
        return self

    def status(self) -> dict[str, Any] | None:
        path = self.checkpoint_dir / self.model / "status.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
        """Poll ``check`` until true; raise with the learner's log tail if it exits first or on timeout."""
        def exited() -> str | None:
            if self.proc is not None and self.proc.poll() is not None and not check():
                return f"learner exited ({self.proc.returncode}) before {what}:\n{self.log_tail()}"
            return None

        try:
            poll_until(check, timeout, interval=poll, what=what, abort=exited)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}:\n{self.log_tail()}") from None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"learner did not exit within {timeout:.0f}s:\n{self.log_tail()}") from None

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (no-op when already gone)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
