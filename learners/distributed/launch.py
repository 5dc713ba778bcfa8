"""``streamrank learn --ranks N``: start N rank processes on this machine and supervise them as one learner.

Each child is the same ``streamrank learn`` command with ``--rank r`` and a shared
``--master-port`` (torch.distributed's rendezvous on 127.0.0.1), so the children are exactly
what ``torchrun --nproc-per-node N`` would start (under torchrun, ``RANK``/``WORLD_SIZE`` come
from the environment instead). The ranks step in lockstep: when one exits with an error or is
killed, the others would wait in a collective, so the launcher stops them all (SIGTERM, then
SIGKILL) and exits non-zero; restarting the command resumes every rank from rank 0's last
checkpoint. SIGTERM to the launcher is forwarded to every rank (they stop together and write a
final checkpoint).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(command: Sequence[str], world: int, grace_s: float = 15.0) -> int:
    """Run ``command + [--rank r, --master-port P]`` for r in 0..world-1; the first failure stops all."""
    port = free_port()
    children = [subprocess.Popen([sys.executable, "-m", "streamrank.cli.main", *command, "--rank", str(r),
                                  "--master-port", str(port)]) for r in range(world)]
    forwarded = {"stop": False}

    def forward(signum: int, _frame: object) -> None:
        forwarded["stop"] = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        while True:
            codes = [child.poll() for child in children]
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c == 0 for c in codes):
                break
            time.sleep(0.1)
    finally:
        _stop(children, grace_s if forwarded["stop"] else min(grace_s, 5.0))
    codes = [child.returncode for child in children]
    return next((c for c in codes if c != 0), 0)


def _stop(children: list[subprocess.Popen], grace_s: float) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
