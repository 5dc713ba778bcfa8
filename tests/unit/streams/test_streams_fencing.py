"""Which dead group members a worker may fence (same host, process gone, not fenced yet)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from streams.worker_fencing import dead_members


def _status(folder, name, **doc):
    (folder / f"{name}.json").write_text(json.dumps({"worker": name, **doc}))


def test_only_dead_same_host_unfenced_members_are_fenced(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    host = socket.gethostname()
    _status(tmp_path, "dead", pid=dead_pid, host=host, member_id="m-dead")
    _status(tmp_path, "alive", pid=subprocess.os.getpid(), host=host, member_id="m-alive")
    _status(tmp_path, "elsewhere", pid=dead_pid, host=host + "-other", member_id="m-else")
    _status(tmp_path, "done", pid=dead_pid, host=host, member_id="m-done", fenced="error_code=0")
    _status(tmp_path, "never-joined", pid=dead_pid, host=host, member_id=None)
    (tmp_path / "garbage.json").write_text("{")
    assert [(p.stem, m) for p, m in dead_members(tmp_path)] == [("dead", "m-dead")]
    assert dead_members(tmp_path, own_pid=dead_pid) == []
