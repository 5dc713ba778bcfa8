"""Small serving costs that BENCHMARKS.md quotes, each against its alternative in the same run.

* **feature vector decode**: one serialized 300-float Feast ``Value`` into a NumPy row, by
  ``list()`` of the protobuf field plus a row copy (the old path) against
  :func:`feature_store.online_read.value_to_vector`;
* **50 item reads**: a pipeline of 50 ``HGET`` (what serving does) against one Lua call doing the
  50 ``HGET`` inside Redis (tried, left out), on a Redis at ``--redis``;
* **snapshot rebuild**: :func:`serving.components.build_component_model` per model family (what a
  hot swap costs beyond reading and checking the blob);
* **a full collection** (``gc.collect()``) with the reranker's start-up heap in the process (torch,
  Feast, FastAPI, the three models) against the same after :func:`common.heap.freeze_startup_heap`;
* **the promotion gate** scoring a new LDRO snapshot on its window of 150 logged lists (30 items,
  300 features): one list per forward pass, rebuilt from the example each time (the old path),
  against padded batches over the window's kept requests (:mod:`serving.gate`);
* **``torch.inference_mode``** around :func:`serving.scoring.rerank_once` (UMNN -> DRPO -> LDRO, 50
  candidates) against ``no_grad`` only (tried, left out).

Rounds interleave the two sides; medians are printed with the ratio.

    .venv/bin/python bench/serving_costs.py [--redis 127.0.0.1:6379]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def compare(name: str, unit: float, label: str, sides: dict, rounds: int, calls: int) -> dict:
    """Median seconds per call of each side over interleaved rounds, scaled by ``unit``."""
    for fn in sides.values():
        timed(fn, max(1, calls // 10))  # warm-up
    got: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            got[k].append(timed(fn, calls) * unit)
    medians = {k: statistics.median(v) for k, v in got.items()}
    first, second = list(medians)
    row = {"what": name, "unit": label, **medians, "ratio": medians[second] / medians[first]}
    print(f"{name:34s} " + "  ".join(f"{k}: {v:9.3f} {label}" for k, v in medians.items())
          + f"   ratio {second}/{first}: {row['ratio']:.2f}")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--redis", default=os.environ.get("STREAMRANK_REDIS", "127.0.0.1:6379"),
                    help="host:port of a Redis for the item-read comparison ('' skips it)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []

    from feast.protos.feast.types.Value_pb2 import FloatList, Value  # noqa: PLC0415

    from feature_store.online_read import value_to_vector  # noqa: PLC0415

    raw = Value(float_list_val=FloatList(val=np.random.default_rng(0).random(300).astype(np.float32))).SerializeToString()
    out = np.zeros((50, 300), dtype=np.float32)

    def as_list() -> None:
        out[3] = list(Value.FromString(raw).float_list_val.val)

    def as_numpy() -> None:
        out[3] = value_to_vector(raw)

    rows.append(compare("feature vector decode (300 floats)", 1e6, "us", {"list": as_list, "numpy": as_numpy},
                        args.rounds, 2000))

    if args.redis:
        import redis  # noqa: PLC0415

        host, _, port = args.redis.partition(":")
        client = redis.Redis(host=host, port=int(port or 6379))
        keys = [f"bench:serving_costs:{i}".encode() for i in range(50)]
        for key in keys:
            client.hset(key, b"f", raw)
        script = client.register_script(
            "local out = {} for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, ARGV[1]) or '' end return out")

        def pipeline() -> None:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, b"f")
                pipe.execute()

        try:
            rows.append(compare("50 item reads, one round trip", 1e3, "ms",
                                {"pipeline": pipeline, "lua": lambda: script(keys=keys, args=[b"f"])}, args.rounds, 300))
        finally:
            client.delete(*keys)
            client.close()

    from common.heap import freeze_startup_heap  # noqa: PLC0415
    from contracts.rerank import RerankBody  # noqa: PLC0415
    from learners.registry import build_learner  # noqa: PLC0415
    from serving.app import create_app  # noqa: F401,PLC0415
    from serving.scoring import rerank_once  # noqa: F401,PLC0415 - create_app: the server's imports
    from serving.components import Component, build_component_model  # noqa: PLC0415
    from serving.holder import Bundle  # noqa: PLC0415
    from serving.settings import ServeConfig  # noqa: PLC0415

    for family in ("umnn", "drpo", "ldro"):
        state = build_learner(family).state_dict()
        t = statistics.median(timed(lambda: build_component_model(family, state), 10) for _ in range(args.rounds))
        print(f"{'snapshot rebuild ' + family:34s} {t * 1e3:9.3f} ms")
        rows.append({"what": f"snapshot rebuild {family}", "unit": "ms", "median": t * 1e3})

    rng = np.random.default_rng(0)
    body = RerankBody.model_validate({
        "request_id": "r", "user_id": "u", "query": "q",
        "candidates": [{"item_id": f"i{k}", "scores": {"click": float(rng.uniform(0.05, 0.9)),
                                                     "long_view": float(rng.uniform(0.01, 0.5)),
                                                     "watch_time": float(rng.uniform(0.1, 0.9))},
                        "features": [round(float(x), 4) for x in rng.random(300)]} for k in range(50)]})
    bundle = Bundle(calibrator=Component("calibrator", "umnn", "1", build_learner("umnn")),
                    fusion=Component("fusion", "drpo", "1", build_learner("drpo")),
                    reranker=Component("reranker", "ldro", "1", build_learner("ldro")))
    config = ServeConfig(explore=False)

    def inference_mode() -> None:
        with torch.inference_mode():
            rerank_once(bundle, body, config)

    rows.append(compare("rerank_once, 50 candidates", 1e3, "ms",
                        {"no_grad": lambda: rerank_once(bundle, body, config), "inference_mode": inference_mode},
                        args.rounds, 40))

    # The promotion gate: a new LDRO snapshot scored on the 150 logged lists of the window (30
    # items of 300 features each), one list per forward pass against padded batches with the
    # window's requests kept between decisions (serving.gate.PromotionGate).
    from contracts.events import IMPRESSION_SCHEMA, Impression, JoinInfo, ShownItem  # noqa: PLC0415
    from serving.baseline import pl_logprob  # noqa: PLC0415
    from serving.components import candidate_scores  # noqa: PLC0415
    from serving.gate import PromotionGate, policy_logprobs, request_from_example  # noqa: PLC0415
    from streams.labeling import label_impression  # noqa: PLC0415
    from streams.rewards import ListOutcome, RewardWeights  # noqa: PLC0415

    feats = rng.random((150, 30, 300)).round(4)
    join = JoinInfo(closed_by="window", window_s=1, feedback_count=0, closed_at_ts=1.0)
    window = [label_impression(Impression(schema=IMPRESSION_SCHEMA, event_id=f"e{i}", request_id=f"r{i}", ts=1.0,
                                          user_id="u", list_logprob=-40.0, context={"explored": 1.0},
                                          items=[ShownItem(item_id=f"{i}-{k}", position=k + 1,
                                                           scores={"click": 0.3, "long_view": 0.1},
                                                           features=feats[i, k].tolist()) for k in range(30)]),
                               ListOutcome(), RewardWeights(), join) for i in range(150)]
    candidate = bundle.reranker
    gate = PromotionGate()
    gate.requests_for(window)  # what the previous decision left

    def one_at_a_time() -> None:
        for ex in window:
            request = request_from_example(ex)
            pl_logprob(candidate_scores(candidate, request), range(len(request.item_ids)))

    def batched() -> None:
        policy_logprobs(candidate, window, 0, gate.requests_for(window))

    rows.append(compare("gate: 150 logged lists, one LDRO", 1e3, "ms",
                        {"one_at_a_time": one_at_a_time, "batched": batched}, args.rounds, 3))

    objects = len(gc.get_objects())
    before = statistics.median(timed(gc.collect, 1) for _ in range(args.rounds))
    frozen = freeze_startup_heap()
    after = statistics.median(timed(gc.collect, 1) for _ in range(args.rounds))
    gc.unfreeze()
    print(f"{'full gc.collect(), start-up heap':34s} before freeze: {before * 1e3:9.3f} ms ({objects} objects)  "
          f"after freeze: {after * 1e3:9.3f} ms ({frozen} frozen)   ratio after/before: {after / before:.4f}")
    rows.append({"what": "full gc.collect()", "unit": "ms", "before_freeze": before * 1e3, "after_freeze": after * 1e3,
                 "objects": objects, "frozen": frozen})
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
