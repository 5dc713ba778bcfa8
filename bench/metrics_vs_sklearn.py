"""Our hand-written metrics against scikit-learn's, measured in the same run (same inputs, same values).

* NDCG@10 of one 50-item list (``evaluation.metrics.ndcg_at_k``, gain 2^rel - 1), the call the
  LETOR evaluations make per held-out request, against ``sklearn.metrics.ndcg_score`` given
  the same gains (it takes the gain as ``y_true``).
* AUC and log-loss of 200k predictions (``evaluation.metrics``) against ``roc_auc_score`` and
  ``log_loss``.

Each pair is checked equal (to 1e-9) before it is timed; the figures are ours / sklearn per
call (below 1: ours is faster).

    .venv/bin/python bench/metrics_vs_sklearn.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import log_loss, ndcg_score, roc_auc_score  # noqa: E402

from evaluation.metrics import auc, logloss, ndcg_at_k  # noqa: E402


def per_call_s(fn: Callable[[], float], calls: int) -> float:
    """Median over 3 rounds of the mean seconds per call."""
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - started) / calls)
    return float(np.median(rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rel = rng.integers(0, 3, 50).astype(np.float64)
    score = rng.normal(size=50)  # continuous: no ties (sklearn averages over tied scores, we order them stably)
    y = rng.integers(0, 2, 200_000).astype(np.float64)
    p = rng.uniform(size=200_000)
    pairs = {
        "ndcg10_50_items": (lambda: ndcg_at_k(rel[np.argsort(-score, kind="stable")], 10),
                            lambda: float(ndcg_score([2.0 ** rel - 1.0], [score], k=10)), 2000),
        "auc_200k": (lambda: auc(y, p), lambda: float(roc_auc_score(y, p)), 5),
        "logloss_200k": (lambda: logloss(y, p), lambda: float(log_loss(y, p)), 5),
    }
    out: dict[str, float] = {}
    for name, (ours, theirs, calls) in pairs.items():
        if abs(ours() - theirs()) > 1e-9:
            raise SystemExit(f"{name}: ours {ours()} != sklearn {theirs()}")
        calls = max(1, calls // 10) if args.quick else calls
        mine, base = per_call_s(ours, calls), per_call_s(theirs, max(1, calls // 2))
        out[f"{name}_ours_s"], out[f"{name}_sklearn_s"], out[f"{name}_ratio"] = mine, base, mine / base
        if not args.json:
            print(f"{name:<16} ours {mine * 1e6:10.1f} us  sklearn {base * 1e6:10.1f} us  ours/sklearn {mine / base:.3f}")
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
