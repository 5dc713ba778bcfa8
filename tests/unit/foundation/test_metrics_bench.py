"""``bench/metrics_vs_sklearn.py --quick --json``: the figures the metric modules' docstrings quote.

The bench refuses to time a pair whose values differ, so a wrong NDCG, AUC or log-loss fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_metrics_bench_checks_our_metrics_against_sklearn_and_prints_ratios():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "metrics_vs_sklearn.py"), "--quick", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    for name in ("ndcg10_50_items", "auc_200k", "logloss_200k"):
        assert doc[f"{name}_ratio"] == doc[f"{name}_ours_s"] / doc[f"{name}_sklearn_s"]
        assert doc[f"{name}_ours_s"] > 0 and doc[f"{name}_sklearn_s"] > 0
