"""Where a closed-loop run's staleness goes, per close reason, from the ``staleness.csv`` that
``streamrank demo`` wrote (BENCHMARKS.md quotes it for runs already done).

Per example (served ones, after the warm-up): the staleness and its parts at p50 / p90 / p99,
computed by :func:`loop.metrics.staleness_breakdown` (the split the demo's summary gives
at p50 / p99): the rest of the join window after the last kept feedback, window end -> example
produced, the whole join, example -> covering snapshot created, snapshot -> first response.

    .venv/bin/python bench/staleness_split.py out/demo [out/demo-other ...] [--warmup 10]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop import metrics as dm  # noqa: E402

COLUMNS = {"feedback_done_at": "feedback_done_s", "example_at": "example_s", "snapshot_created_at": "snapshot_created_s",
           "first_served_at": "first_served_s", "window_end_at": "window_end_s"}
PARTS = ("window_rest_s", "after_window_s", "join_s", "learn_publish_s", "swap_s")


def read_rows(path: Path) -> list[dict]:
    """The CSV's rows as :func:`loop.metrics.staleness_rows` rows (seconds since the run started)."""
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            row = {key: (float(rec[col]) if rec.get(col) else None) for key, col in COLUMNS.items()}
            row.update(request_id=rec["request_id"], closed_by=rec["closed_by"])
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="demo output directories (with staleness.csv)")
    parser.add_argument("--warmup", type=float, default=10.0, help="leave out examples whose feedback ended earlier (s)")
    args = parser.parse_args()
    print(f"{'run':<24}{'close':<12}{'n':>6}  {'staleness':>17}" + "".join(f"{p:>19}" for p in PARTS))
    for run in args.runs:
        served = [r for r in read_rows(run / "staleness.csv")
                  if r["first_served_at"] is not None and r["feedback_done_at"] >= args.warmup]
        for close in ("all", "window", "session_end"):
            rows = [r for r in served if close == "all" or r["closed_by"] == close]
            if not rows:
                continue
            stale = [r["first_served_at"] - r["feedback_done_at"] for r in rows]
            parts = dm.staleness_breakdown(rows)
            cells = [stale] + [parts[p] for p in PARTS]
            fmt = ["/".join(f"{dm.percentile(v, q):.2f}" if v else "-" for q in (50, 90, 99)) for v in cells]
            print(f"{run.name:<24}{close:<12}{len(rows):>6}  {fmt[0]:>17}" + "".join(f"{c:>19}" for c in fmt[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
