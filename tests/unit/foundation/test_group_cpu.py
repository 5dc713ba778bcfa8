"""group_cpu_s counts the CPU of every process of a group: a launcher's busy child too (the noida
broker runs under a wrapper script, so the leader's own /proc/PID/stat reads ~0)."""

from __future__ import annotations

import subprocess
import sys

from common.stack import group_cpu_s, group_minor_faults, process_cpu_s, stop_pid

BURN = "import time; t = time.process_time(); print('go', flush=True)\nwhile time.process_time() - t < 0.6: pass\nprint('done', flush=True); time.sleep(60)"


def test_the_cpu_of_a_group_includes_the_busy_child_of_an_idle_leader():
    launcher = subprocess.Popen(["bash", "-c", f'{sys.executable} -c "{BURN}" & wait'],
                                stdout=subprocess.PIPE, start_new_session=True, text=True)
    try:
        assert launcher.stdout.readline().strip() == "go"
        assert launcher.stdout.readline().strip() == "done"
        assert group_cpu_s(launcher.pid) >= 0.5  # the child's 0.6 s of CPU, at the clock tick's grain
        assert process_cpu_s(launcher.pid) < 0.3  # what reading the leader alone would say
    finally:
        stop_pid(launcher.pid, grace=1.0)
        launcher.wait(5)
    assert group_cpu_s(launcher.pid) == 0.0  # a gone group


TOUCH = ("import mmap; m = mmap.mmap(-1, 2000 * 4096)\nfor i in range(0, 2000 * 4096, 4096): m[i] = 1\n"
         "print('touched', flush=True); import time; time.sleep(60)")


def test_the_minor_faults_of_a_group_include_the_pages_its_child_touched():
    launcher = subprocess.Popen(["bash", "-c", f'{sys.executable} -c "{TOUCH}" & wait'],
                                stdout=subprocess.PIPE, start_new_session=True, text=True)
    try:
        assert launcher.stdout.readline().strip() == "touched"
        assert group_minor_faults(launcher.pid) >= 2000  # one fault per page the child touched first
    finally:
        stop_pid(launcher.pid, grace=1.0)
        launcher.wait(5)
    assert group_minor_faults(launcher.pid) == 0  # a gone group
