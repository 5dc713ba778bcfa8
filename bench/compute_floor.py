"""What this machine is, and what the served models alone cost on it: the floor under a serving bench's latencies.

Why. The serving goals of issue 19 are absolute milliseconds "on this 2-core machine", but the
machine is a VM whose type changes from one session to the next: the same code gave one client
a p50 of 4.1 ms on an AMD EPYC with AVX-512 and 10.9-12.5 ms on AVX2-only ones (BENCHMARKS.md,
"Serving"). A figure is only readable beside what the machine can do at all, measured in the
same run. :func:`machine_info` says which CPU it is; :func:`model_floor` times the three
served models (UMNN -> DRPO -> LDRO) in this process, one torch thread, no HTTP, no feature read,
no impression: for one request (what one client's request cannot go below) and per request of a
batch of ``batch`` (what the micro-batcher pays under load). The weights are fresh ones: the cost
does not depend on their values.

    from compute_floor import machine_info, model_floor
    model_floor(candidates=50, calls=20)  # {"one_request_ms": ..., "batched_ms_per_request": ..., ...}
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: CPU flags worth naming: the matmul kernels torch picks depend on them
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def machine_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model, logical CPUs, the :data:`FLAGS` it has and the load average (Linux ``/proc/cpuinfo``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": model, "logical_cpus": os.cpu_count(), "flags": [f for f in FLAGS if f in flags],
            "load_average": [round(x, 2) for x in load]}


def request_doc(candidates: int, index: int = 0, seed: int = 0) -> dict[str, Any]:
    """A ``POST /rerank`` body with ``candidates`` candidates, three task scores and 300 inline features each."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed + index)
    return {"request_id": f"r{index}", "user_id": f"u{index}", "query": "q",
            "candidates": [{"item_id": f"i{k}", "scores": {"click": float(rng.uniform(0.05, 0.9)),
                                                          "long_view": float(rng.uniform(0.01, 0.5)),
                                                          "watch_time": float(rng.uniform(0.1, 0.9))},
                            "features": [float(x) for x in rng.random(300).astype("float32")]}
                           for k in range(candidates)]}


def served_components() -> dict[str, Any]:
    """Fresh UMNN / DRPO / LDRO components by role (``Bundle(**served_components())`` is the full pipeline)."""
    from learners.registry import build_learner  # noqa: PLC0415
    from serving.components import Component  # noqa: PLC0415

    return {"calibrator": Component("calibrator", "umnn", "1", build_learner("umnn")),
            "fusion": Component("fusion", "drpo", "1", build_learner("drpo")),
            "reranker": Component("reranker", "ldro", "1", build_learner("ldro"))}


def model_floor(candidates: int = 50, calls: int = 20, batch: int = 8, rounds: int = 3) -> dict[str, Any]:
    """Median ms of the full pipeline for one request and per request of a ``batch`` (``rounds`` x ``calls``).

    Features are inline, so no store is read; exploration is off (the greedy pass, as a lone
    request without exploration takes). Runs with one torch thread, the server's setting, and
    restores the caller's thread count.
    """
    import torch  # noqa: PLC0415

    from contracts.rerank import RerankBody  # noqa: PLC0415
    from serving.holder import Bundle  # noqa: PLC0415
    from serving.scoring import prepare, score_batch  # noqa: PLC0415
    from serving.settings import ServeConfig  # noqa: PLC0415

    if min(candidates, calls, batch, rounds) < 1:
        raise ValueError("candidates, calls, batch and rounds must be >= 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bundle = Bundle(**served_components())
        config = ServeConfig(explore=False)
        bodies = [RerankBody.model_validate(request_doc(candidates, i)) for i in range(batch)]
        score_batch(bundle, [prepare(bodies[0], config)], config)  # warm-up: first-call allocations
        score_batch(bundle, [prepare(b, config) for b in bodies], config)
        one, batched = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(calls):
                score_batch(bundle, [prepare(bodies[i % batch], config)], config)
            one.append((time.perf_counter() - t0) / calls * 1000.0)
            t0 = time.perf_counter()
            for _ in range(max(1, calls // batch)):
                score_batch(bundle, [prepare(b, config) for b in bodies], config)
            batched.append((time.perf_counter() - t0) / (max(1, calls // batch) * batch) * 1000.0)
    finally:
        torch.set_num_threads(threads)
    return {"candidates": candidates, "batch": batch, "one_request_ms": statistics.median(one),
            "batched_ms_per_request": statistics.median(batched), "rounds": rounds, "calls": calls,
            "what": "UMNN -> DRPO -> LDRO in the bench's process, one torch thread, inline features, no HTTP, "
                    "no feature read, no impression: the floor under the served latencies on this machine"}
