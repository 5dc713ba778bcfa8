"""stop_pid stops the whole process group, even when its leader exits before the rest."""

from __future__ import annotations

import subprocess
import sys
import time

from common.stack import group_alive, pid_alive, stop_pid

IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"


def test_a_server_that_outlives_its_launcher_gets_the_sigkill():
    # The leader (like the noida-db wrapper script) dies on SIGTERM at once; the server it
    # started ignores SIGTERM. Waiting only for the leader would leave the server running.
    launcher = subprocess.Popen(
        ["bash", "-c", f'{sys.executable} -c "{IGNORES_TERM}" & exec sleep 120'],
        stdout=subprocess.PIPE, start_new_session=True, text=True)
    assert launcher.stdout.readline().strip() == "ready"
    assert group_alive(launcher.pid)
    started = time.monotonic()
    stop_pid(launcher.pid, grace=1.0)
    launcher.wait(5)
    assert not group_alive(launcher.pid)
    assert time.monotonic() - started < 8.0  # SIGTERM grace 1 s, then SIGKILL


def test_stopping_a_gone_group_is_a_no_op():
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait(5)
    stop_pid(done.pid, grace=0.1)
    assert not pid_alive(done.pid) and not group_alive(done.pid)
