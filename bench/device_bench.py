"""One learner update on a torch device against the same update on the CPU, same batches, same run.

Issue 16 asks for LDRO's lists/s on a GPU against the CPU. For each of ``--models`` (default
``ldro,grpo,drpo,umnn``) the bench builds ``--lists`` real LETOR lists of 50 candidates x 300
features once (``bench/policy_bench.py``'s lists), writes them into each learner's batch arrays
on the host (pinned when the device is CUDA, as a learner on that device builds them), and times
``learner.learn_built``: the host-to-device copy of the batch, the forward/backward passes and the
Adam steps, i.e. what the learner's update stage does per batch once the records are decoded.
Two learners of the same model take the same batches, one on the CPU (``--cpu-threads`` torch
threads) and one on ``--device``, interleaved rep by rep; on CUDA every measurement ends with
``torch.cuda.synchronize()``. Decoding stays on the CPU whatever the device (it is per-record
Python), so a GPU speeds up the update stage, not the ingest (``bench/learn_bench.py``).

Per model: ``cpu_s_per_batch``, ``device_s_per_batch`` (medians over ``--reps``),
``lists_per_s_cpu``, ``lists_per_s_device``, ``device_speedup`` = CPU seconds / device seconds, and
``max_abs_param_diff``: both learners start from the same seed and take the same updates (random draws
come from CPU generators on every device), so their parameters must agree: exactly on the CPU, to float
rounding on a GPU.
With ``--device cpu`` both sides run the same code on the CPU (the speed-up is ~1): CI runs that
form, so the device plumbing (pinned builders, ``ListBatch.to``, the optimizer state's move) is
exercised without a GPU. ``bench/device_check.sh`` is the prepared script for a GPU machine.

Run: ``.venv/bin/python bench/device_bench.py --device cuda [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learners.device import resolve_device  # noqa: E402
from learners.registry import build_learner  # noqa: E402
from policy_bench import fifty_candidate_lists  # noqa: E402

MODELS = ("ldro", "grpo", "drpo", "umnn")


def built_batch(learner: Any, examples: list) -> Any:
    """The examples written into ``learner``'s batch arrays (pinned host memory for a CUDA learner)."""
    built = learner.batch_builder(len(examples))
    for ex in examples:
        rejected = built.add(ex)
        if rejected is not None:
            raise SystemExit(f"bench list refused: {rejected}")
    return built


def timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """Seconds of one call of ``fn``, the device's queued work included."""
    def timed(fn: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started
    return timed


def measure(name: str, examples: list, device: torch.device, steps: int, reps: int) -> dict[str, float]:
    """Median seconds per batch of ``steps`` updates on the CPU and on ``device``, interleaved per rep."""
    config = {} if name == "umnn" else {"n_features": 300}
    sides = {"cpu": build_learner(name, device="cpu", **config), "device": build_learner(name, device=str(device),
                                                                                          **config)}
    batches = {side: built_batch(learner, examples) for side, learner in sides.items()}
    clocks = {"cpu": timer(torch.device("cpu")), "device": timer(device)}
    for side, learner in sides.items():  # warm-up: allocators, Adam's state, CUDA kernels and their caches
        clocks[side](lambda: learner.learn_built(batches[side]))
    seconds: dict[str, list[float]] = {"cpu": [], "device": []}
    for _ in range(reps):
        for side, learner in sides.items():
            def run(learner=learner, built=batches[side]) -> None:
                for _ in range(steps):
                    learner.learn_built(built)
            seconds[side].append(clocks[side](run) / steps)
    cpu_s, device_s = statistics.median(seconds["cpu"]), statistics.median(seconds["device"])
    lists = len(examples)
    return {"cpu_s_per_batch": cpu_s, "device_s_per_batch": device_s, "lists_per_s_cpu": lists / cpu_s,
            "lists_per_s_device": lists / device_s, "device_speedup": cpu_s / device_s,
            "max_abs_param_diff": max_param_diff(sides["cpu"], sides["device"])}


def parameters(learner: Any) -> dict[str, torch.Tensor]:
    """Every parameter of the learner's networks, by attribute and parameter name, on the CPU."""
    return {f"{attr}.{name}": p.detach().cpu() for attr, module in sorted(vars(learner).items())
            if isinstance(module, torch.nn.Module) for name, p in module.named_parameters()}


def max_param_diff(a: Any, b: Any) -> float:
    """Largest |difference| between two learners' parameters after the same updates: the same seeds and
    CPU random streams on every device, so 0 on the CPU and float rounding on a GPU (a device path that
    computed another update would show here)."""
    pa, pb = parameters(a), parameters(b)
    if pa.keys() != pb.keys() or not pa:
        raise SystemExit(f"learners differ in their parameters: {sorted(pa)} vs {sorted(pb)}")
    return max(float((pa[k] - pb[k]).abs().max()) for k in pa)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores here)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (the side measured against the CPU)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--lists", type=int, default=256, help="lists per batch (50 candidates x 300 features)")
    parser.add_argument("--steps", type=int, default=None, help="updates per measurement (default 4, quick 2)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5, quick 3)")
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads of the CPU side (a learner's default)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    steps = args.steps or (2 if args.quick else 4)
    reps = args.reps or (3 if args.quick else 5)
    torch.set_num_threads(args.cpu_threads)
    _, examples = fifty_candidate_lists(args.lists, 50)
    doc: dict[str, Any] = {"device": str(device), "device_name": describe(device), "torch": torch.__version__,
                           "lists": args.lists, "items": 50, "features": 300, "steps": steps, "reps": reps,
                           "cpu_threads": args.cpu_threads, "load_average": list(os.getloadavg())}
    for name in models:
        doc[name] = measure(name, examples, device, steps, reps)
        if not args.json:
            m = doc[name]
            print(f"{name:<5} {device}: {m['lists_per_s_device']:,.0f} lists/s vs cpu {m['lists_per_s_cpu']:,.0f} "
                  f"({m['device_speedup']:.2f}x; {m['device_s_per_batch'] * 1e3:.1f} vs "
                  f"{m['cpu_s_per_batch'] * 1e3:.1f} ms a batch of {args.lists}; max |param diff| "
                  f"{m['max_abs_param_diff']:.1e})", flush=True)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
