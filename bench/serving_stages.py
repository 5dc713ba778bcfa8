"""Where a rerank's time goes: in-process cost of each stage for N candidates, against the cold start.

Builds untrained UMNN / DRPO / LDRO learners (weights do not change the cost), then times
:func:`serving.app.rerank_once` (calibrate -> fuse -> rerank, no HTTP) for bundles with more and
more roles filled, plus request validation and the Feast-free feature path, all in one process
and interleaved round by round so that load on the shared machine hits every variant alike.
Prints median milliseconds per call and the ratio to the cold-start bundle (no model at all).

``--batch B`` (default 8) adds the micro-batcher's case: ``B`` prepared requests scored by one
:func:`serving.scoring.score_batch` call on the full bundle against the same ``B`` scored one call
each, interleaved in the same rounds (``batch_vs_one_by_one``: ms per request, and their ratio).
``--json`` prints only the JSON object.

    .venv/bin/python bench/serving_stages.py --candidates 50 --rounds 5 --calls 40
    .venv/bin/python bench/serving_stages.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts.rerank import RerankBody  # noqa: E402
from compute_floor import request_doc, served_components  # noqa: E402
from serving.scoring import prepare, rerank_once, score_batch  # noqa: E402
from serving.holder import Bundle  # noqa: E402
from serving.settings import ServeConfig  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8, help="requests in the micro-batch case (0: skip it)")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 10 calls")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.calls = 3, 10
    torch.set_num_threads(1)
    doc = request_doc(args.candidates)
    body = RerankBody.model_validate(doc)
    parts = served_components()
    cal, fus, rer = parts["calibrator"], parts["fusion"], parts["reranker"]
    variants = {"cold start (no model)": Bundle(), "ldro": Bundle(reranker=rer), "drpo+ldro": Bundle(fusion=fus, reranker=rer),
                "umnn+ldro": Bundle(calibrator=cal, reranker=rer), "umnn+drpo+ldro": Bundle(calibrator=cal, fusion=fus, reranker=rer)}
    config = ServeConfig(explore=False)
    timings: dict[str, list[float]] = {name: [] for name in [*variants, "validate body (300 features/item)"]}
    full = variants["umnn+drpo+ldro"]
    batch_bodies = [body.model_copy(update={"request_id": f"r{i}"}) for i in range(args.batch)]
    together: list[float] = []
    apart: list[float] = []
    for name, bundle in variants.items():  # warm-up
        for _ in range(3):
            rerank_once(bundle, body, config)
    for _ in range(args.rounds):
        for name, bundle in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                rerank_once(bundle, body, config)
                rerank_once(bundle, body, ServeConfig(explore=True, explore_rate=1.0))
            timings[name].append((time.perf_counter() - t0) / (2 * args.calls) * 1000)
        t0 = time.perf_counter()
        for _ in range(args.calls):
            RerankBody.model_validate(doc)
        timings["validate body (300 features/item)"].append((time.perf_counter() - t0) / args.calls * 1000)
        if args.batch:  # the same B requests: one score_batch call vs one call each (prepare included in both)
            t0 = time.perf_counter()
            for _ in range(args.calls):
                score_batch(full, [prepare(b, config) for b in batch_bodies], config)
            together.append((time.perf_counter() - t0) / (args.calls * args.batch) * 1000)
            t0 = time.perf_counter()
            for _ in range(args.calls):
                for b in batch_bodies:
                    score_batch(full, [prepare(b, config)], config)
            apart.append((time.perf_counter() - t0) / (args.calls * args.batch) * 1000)
    base = statistics.median(timings["cold start (no model)"])
    rows = {name: {"median_ms": statistics.median(v), "ratio_to_cold_start": statistics.median(v) / base}
            for name, v in timings.items()}
    doc = {"candidates": args.candidates, "rounds": args.rounds, "calls": args.calls, "stages": rows}
    if args.batch:
        doc["batch_vs_one_by_one"] = {"batch": args.batch, "batched_ms_per_request": statistics.median(together),
                                      "one_by_one_ms_per_request": statistics.median(apart),
                                      "ratio": statistics.median(together) / statistics.median(apart)}
    print(json.dumps(doc, indent=2))
    if args.json:
        return 0
    print(f"\n{'variant':36s} {'median ms':>10s} {'x cold start':>13s}")
    for name, row in rows.items():
        print(f"{name:36s} {row['median_ms']:10.2f} {row['ratio_to_cold_start']:13.1f}")
    if args.batch:
        b = doc["batch_vs_one_by_one"]
        print(f"\n{args.batch} requests in one batch: {b['batched_ms_per_request']:.2f} ms per request, one by one "
              f"{b['one_by_one_ms_per_request']:.2f} ms ({b['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
