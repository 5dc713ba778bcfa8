"""``scripts/mutation.py`` (``make mutation``) on one small core module: it mutates, runs, and reports.

The short form of the mutation run (one module, its own tests), so CI checks that the machinery
works and that the summary keeps its contract; the full run is ``make mutation`` (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)


def test_a_mutation_run_of_the_rewards_module_kills_its_mutants_and_writes_the_summary(tmp_path):
    run = subprocess.run([sys.executable, "scripts/mutation.py", "--only", "streams/rewards.py",
                          "--tests", "tests/unit/streams", "--out", str(tmp_path), "--max-children", "2"],
                         cwd=REPO, capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    module = summary["modules"]["streams/rewards.py"]
    assert set(summary["modules"]) == {"streams/rewards.py"}
    assert module["total"] > 20 and module["total"] == (module["killed"] + module["survived"] + module["equivalent"]
                                                        + sum(module["other"].values()))
    assert module["kill_rate"] >= 0.9, module
    report = (tmp_path / "report.md").read_text()
    assert "`streams/rewards.py`" in report and "kill rate" in report
    assert "streams/rewards.py" in run.stdout
