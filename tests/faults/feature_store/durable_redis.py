"""A redis-server on loopback with an append-only file (``appendfsync always``) that survives kill -9."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from common import stack


class DurableRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = stack.free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is required (apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--aof-load-truncated", "yes", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.wait_until(lambda: stack.redis_ready(self.url), 30, "durable redis", self.proc.pid)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
