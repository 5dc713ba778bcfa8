"""Calibrator update throughput and memory vs a plain torch forward+backward of the same network.

Run: ``.venv/bin/python bench/calibration_bench.py [--batch 1024] [--rounds 15] [--steps 50]``

Three timed variants, interleaved round by round (the machine is shared and noisy, so each
round times all variants back to back and the reported ratios are medians of per-round
ratios):

* ``plain``: the same UMC network (context encoder + UMNNCalibrator, 50-step Clenshaw–Curtis)
  differentiated by plain autograd through the quadrature, BCE, ``Adam.step``: the baseline.
* ``calibrator``: our learner's update on the same tensors (Leibniz memory-light backward,
  BCE + λ·SCLoss with EMA bins, Adam): ``NeuralCalibrationLearner.update_tensors``.
* ``calibrator-autograd``: the same learner update with ``leibniz=False`` (SCLoss and all,
  but plain autograd through the quadrature): separates the cost of the memory-light
  backward (it recomputes the node evaluations) from the rest of the learner.
* ``calibrator+decode``: ``learn_many`` on LabeledLists holding the same number of rows
  (row extraction from the event contract and context hashing included).

Memory: bytes autograd keeps from the forward pass until the backward
(``saved_tensors_hooks`` around the forward and loss), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learners.calibration.learner import build_umnn  # noqa: E402
from simulator.examples import simulated_examples  # noqa: E402


def saved_bytes(learner, tensors) -> int:
    """Bytes autograd holds between the forward (with loss) and the backward of one update."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    logit, y, index = tensors["click"]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z = learner.forward_rows("click", logit, index)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        if learner.config.sc_weight > 0:
            loss = loss + learner.config.sc_weight * learner.sc_losses["click"](torch.sigmoid(z), y)
    loss.backward()
    learner.optimizer.zero_grad(set_to_none=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)

    config = dict(tasks=("click",), steps=args.steps, context_fields=("position", "item", "user"))
    ours = build_umnn(**config)
    plain = build_umnn(leibniz=False, sc_weight=0.0, **config)  # same network, plain autograd, BCE only
    ours_autograd = build_umnn(leibniz=False, **config)

    # Real rows: simulated LETOR lists (click scores from the simulator's upstream model).
    lists, rows = [], 0
    pool = simulated_examples(max(200, args.batch // 5), seed=1)
    for ex in pool:
        lists.append(ex)
        rows += sum(1 for it in ex.impression.items if "click" in it.scores)
        if rows >= args.batch:
            break
    task_rows = ours.rows(lists)["click"]
    n = len(task_rows)
    tensors = {"click": (task_rows.logits(), task_rows.label_tensor(), ours.encoder.indices(task_rows.fields, n))}

    def plain_step():
        plain.optimizer.zero_grad(set_to_none=True)
        logit, y, index = tensors["click"]
        z = plain.forward_rows("click", logit, index)
        torch.nn.functional.binary_cross_entropy_with_logits(z, y).backward()
        plain.optimizer.step()

    def ours_step():
        ours.update_tensors(tensors)

    def ours_autograd_step():
        ours_autograd.update_tensors(tensors)

    def ours_decode_step():
        ours.learn_many(lists)

    variants = {"plain": plain_step, "calibrator": ours_step, "calibrator-autograd": ours_autograd_step,
                "calibrator+decode": ours_decode_step}
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in tqdm(range(args.rounds), desc="rounds", disable=args.json):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ratio = {name: statistics.median(p / t for p, t in zip(times["plain"], times[name])) for name in variants}
    memory = {"plain": saved_bytes(plain, tensors), "calibrator": saved_bytes(ours, tensors),
              "calibrator-autograd": saved_bytes(ours_autograd, tensors)}
    result = {
        "batch_rows": n, "lists": len(lists), "steps": args.steps, "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "updates_per_s": {k: round(1.0 / statistics.median(v), 2) for k, v in times.items()},
        "ratio_vs_plain": {k: round(v, 3) for k, v in ratio.items()},
        "saved_for_backward_mb": {k: round(v / 2**20, 3) for k, v in memory.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"batch {n} rows ({len(lists)} lists), {args.steps} quadrature steps, {args.rounds} rounds, "
          f"{result['threads']} threads")
    print(f"{'variant':<20}{'updates/s':>12}{'x plain':>10}{'saved MB':>10}")
    for name in variants:
        saved = result["saved_for_backward_mb"].get(name)
        print(f"{name:<20}{result['updates_per_s'][name]:>12.2f}{result['ratio_vs_plain'][name]:>10.3f}"
              f"{saved if saved is not None else '-':>10}")
    print(f"peak RSS {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
