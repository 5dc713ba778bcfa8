"""common.allocator: freed memory stays in the process, so taking it again costs no page faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common.allocator import keep_freed_memory
from common.paths import REPO_ROOT

# Twenty 1 MB blocks alive at once, freed, taken again: glibc returns the freed heap top (and mmapped
# blocks) to the kernel, so every round faults its pages in again; the count is of rounds 3-9.
ROUNDS = """
import json, resource, sys, threading
sys.path.insert(0, {root!r})
import numpy as np
from common.allocator import keep_freed_memory
took = keep_freed_memory({megabytes})
def work(out):
    for r in range(10):
        if r == 3:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [np.ones(1 << 17) for _ in range(20)]
        del blocks
    out.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 7)
out = []
if {thread}:
    t = threading.Thread(target=work, args=(out,)); t.start(); t.join()
else:
    work(out)
print(json.dumps({{"took": took, "faults_per_round": out[0]}}))
"""

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")


def faults_per_round(megabytes: int, thread: bool) -> dict:
    code = ROUNDS.format(root=str(REPO_ROOT), megabytes=megabytes, thread=thread)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


@glibc_only
@pytest.mark.parametrize("thread", [False, True], ids=["main thread", "another thread (its own arena)"])
def test_freed_blocks_are_taken_again_without_page_faults(thread):
    default, kept = faults_per_round(0, thread), faults_per_round(256, thread)
    assert default["took"] is False and kept["took"] is True
    assert default["faults_per_round"] > 50  # glibc's defaults hand the memory back every round
    assert kept["faults_per_round"] < default["faults_per_round"] / 10


def test_zero_keeps_the_defaults_and_a_negative_size_is_refused():
    assert keep_freed_memory(0) is False
    with pytest.raises(ValueError, match="megabytes must be >= 0"):
        keep_freed_memory(-1)
