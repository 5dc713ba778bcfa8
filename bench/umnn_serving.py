"""UMNN at serving time: the options for the calibrator's request path, each against the full model.

For 50-row requests with 3 tasks (click, long_view, like) on held-out contexts (item and user
ids no training example had, positions up to 500, and the extreme scores 0, 1, 1e-9, 1e-6
among uniform ones), a UMNN calibrator trained from its default (identity) start on
simulated rows (the simulator has no ``like`` scores, so that head keeps its start) is served
by the options below; each option's max |Δp| is measured after each of ``--checkpoints``
learning steps (an option must hold at every one: the quadrature error of fewer nodes grows as
the integrand sharpens with training), its timing on the last model:

* ``full``: the module path (one head per task, autograd off): the baseline and the reference;
* ``batched``: :mod:`learners.calibration.batched`, all tasks in one pass, the model's 50 nodes
  (what ``calibrate`` ships);
* ``nodes_S``: the same with S Clenshaw–Curtis nodes instead of 50;
* ``table_G``: a per-context table of the calibrated logit on G logits over the clamp range,
  linearly interpolated; the table of a row's context (its hashed field buckets) is cached, so
  a held-out request builds one per row (``table_G`` = all misses) and a repeated one reads them
  (``table_G_hit``);
* ``compiled``: ``torch.compile`` of the batched function (skip with ``--no-compile``).

Each option's median ms per request is interleaved round by round with the others (load on the
shared machine hits them alike) and reported with its ratio to ``full`` in the same run, and its
max |Δp| against ``full`` over all held-out requests. Also: ``calibrate_many`` of 8 requests
against 8 ``calibrate`` calls, and what a hot swap pays (``load_state_dict`` with and without the
stacking). Prints one JSON object.

    .venv/bin/python bench/umnn_serving.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import learners.calibration.batched as batched  # noqa: E402
from learners.calibration.batched import StackedUMNN  # noqa: E402
from learners.calibration.context import P_CLIP, request_context  # noqa: E402
from learners.calibration.learner import NeuralCalibrationLearner, build_umnn  # noqa: E402
from simulator.examples import simulated_examples  # noqa: E402

TASKS = ("click", "long_view", "like")
LOGIT_LIMIT = float(torch.logit(torch.tensor(P_CLIP, dtype=torch.float64)).abs())  # 13.8155: calibrate's clamp
Request = tuple[dict[str, torch.Tensor], dict[str, Any]]


def held_out_requests(count: int, rows: int, seed: int) -> list[Request]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    extremes = torch.tensor([0.0, 1.0, 1e-9, 1 - 1e-9, 1e-6, 1 - 1e-6], dtype=torch.float64)
    for r in range(count):
        scores = {}
        for task in TASKS:
            raw = torch.rand(rows, generator=gen, dtype=torch.float64)
            raw[torch.randperm(rows, generator=gen)[:len(extremes)]] = extremes[:rows]
            scores[task] = raw
        scores["watch_time"] = torch.rand(rows, generator=gen, dtype=torch.float64)
        context = {"item": [f"held-out-{seed}-{r}-{k}" for k in range(rows)], "user": f"held-out-user-{seed}-{r}",
                   "position": torch.randint(1, 500, (rows,), generator=gen).tolist()}
        out.append((scores, context))
    return out


def train(learner: NeuralCalibrationLearner, examples: list, done: int, until: int) -> None:
    """Learning steps ``done..until`` of 20 lists each (Adam at the default lr 1e-3)."""
    for k in range(done, until):
        start = (k * 20) % len(examples)
        learner.learn_many(examples[start:start + 20])


class ContextTable:
    """Calibrated logits of every task on ``points`` logits per row context, cached by the context's buckets."""

    def __init__(self, learner: NeuralCalibrationLearner, points: int) -> None:
        self.learner = learner
        self.stacked = StackedUMNN([learner.module["heads"][t] for t in TASKS])
        self.grid = torch.linspace(-LOGIT_LIMIT, LOGIT_LIMIT, points)
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, task_scores: dict[str, torch.Tensor], context: dict[str, Any]) -> dict[str, torch.Tensor]:
        n = next(iter(task_scores.values())).numel()
        idx = self.learner.encoder.indices(request_context(context, n), n)
        keys = [tuple(row) for row in idx.tolist()]
        missing = sorted({k for k in keys if k not in self.cache})
        g = self.grid.numel()
        chunk = max(1, 2048 // g)  # contexts per pass: bounded memory of the node evaluations
        for first in range(0, len(missing), chunk):
            part = missing[first:first + chunk]
            with torch.no_grad():
                h = self.learner.encoder(torch.tensor(part)).float()
            z = self.stacked(self.grid.repeat(len(TASKS), len(part)), h.repeat_interleave(g, dim=0))
            for j, key in enumerate(part):
                self.cache[key] = z[:, j * g:(j + 1) * g]
        table = torch.stack([self.cache[k] for k in keys], dim=1)  # [T, n, G]
        out: dict[str, torch.Tensor] = {"watch_time": task_scores["watch_time"].float()}
        step = float(self.grid[1] - self.grid[0])
        for i, task in enumerate(TASKS):
            logit = torch.logit(task_scores[task].float().clamp(P_CLIP, 1 - P_CLIP))
            pos = ((logit + LOGIT_LIMIT) / step).clamp(0, self.grid.numel() - 1 - 1e-6)
            lo = pos.floor().long()
            frac = pos - lo
            row = table[i]
            z = torch.lerp(row.gather(1, lo[:, None])[:, 0], row.gather(1, (lo + 1)[:, None])[:, 0], frac)
            out[task] = torch.sigmoid(z)
        return out


def calibrate_with(learner: NeuralCalibrationLearner, fast: bool, steps: int | None = None) -> Callable:
    def call(task_scores, context):
        learner.serving_fast, learner.serving_steps = fast, steps
        return learner.calibrate(task_scores, context)
    return call


def compiled_option(learner: NeuralCalibrationLearner) -> tuple[Callable, float]:
    from learners.calibration.batched import calibrate_batch  # noqa: PLC0415

    stacked = StackedUMNN([learner.module["heads"][t] for t in TASKS])
    fn = torch.compile(stacked.__call__, dynamic=True)

    class Compiled:
        def __call__(self, logits, h, steps=None):
            return fn(logits, h)

    shim = Compiled()

    def call(task_scores, context):
        return calibrate_batch(shim, learner.encoder, TASKS, [(task_scores, context)])[0]  # type: ignore[arg-type]
    started = time.perf_counter()
    call(*held_out_requests(1, 50, seed=99)[0])
    call(*held_out_requests(1, 7, seed=98)[0])  # a second shape: dynamic, no recompile per length
    return call, time.perf_counter() - started


def max_dp(option: Callable, reference: list[dict[str, torch.Tensor]], requests: list[Request]) -> float:
    worst = 0.0
    for (scores, context), ref in zip(requests, reference):
        got = option(scores, context)
        worst = max(worst, *(float((got[t].float() - ref[t].float()).abs().max()) for t in TASKS))
    return worst


def median_ms(fn: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def swap_cost(learner: NeuralCalibrationLearner, repeats: int) -> dict[str, float]:
    """ms of ``load_state_dict`` of a snapshot (as the watcher does per swap), and of the stacking alone."""
    state = learner.state_dict()
    fresh = build_umnn(tasks=TASKS, seed=learner.config.seed)
    load, stack = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        fresh.load_state_dict(state)
        load.append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        fresh.serving_path(rebuild=True)
        stack.append((time.perf_counter() - started) * 1e3)
    return {"load_state_dict_ms": round(statistics.median(load), 3), "stacking_ms": round(statistics.median(stack), 3)}


def accuracy(learner: NeuralCalibrationLearner, requests: list[Request], args: argparse.Namespace,
             extra: dict[str, Callable] | None = None) -> dict[str, float]:
    """max |Δp| of each option against the full model on ``requests`` (tables: the first few)."""
    full = calibrate_with(learner, False)
    reference = [full(s, c) for s, c in requests]
    options: dict[str, Callable] = {"batched": calibrate_with(learner, True)}
    options.update({f"nodes_{s}": calibrate_with(learner, True, s) for s in args.nodes})
    options.update({f"table_{g}": ContextTable(learner, g) for g in args.table_points})
    options.update(extra or {})
    out = {}
    for name, fn in options.items():
        few = args.table_requests if name.startswith("table_") else len(requests)
        out[name] = max_dp(fn, reference[:few], requests[:few])
    learner.serving_fast, learner.serving_steps = True, None
    return out


def timings(learner: NeuralCalibrationLearner, requests: list[Request], args: argparse.Namespace,
            compiled: Callable | None) -> dict[str, float]:
    """Median ms per request of each option, interleaved round by round."""
    options: dict[str, Callable] = {"full": calibrate_with(learner, False), "batched": calibrate_with(learner, True)}
    options.update({f"nodes_{s}": calibrate_with(learner, True, s) for s in args.nodes})
    pools = dict.fromkeys(options, requests)
    for g in args.table_points:
        options[f"table_{g}"] = options[f"table_{g}_hit"] = ContextTable(learner, g)
        # a miss per row each call: fresh contexts every call; a hit: one request, its table cached
        pools[f"table_{g}"] = held_out_requests(args.rounds + 2, 50, seed=5000 + g)
        pools[f"table_{g}_hit"] = requests[:1]
    if compiled is not None:
        options["compiled"], pools["compiled"] = compiled, requests
    cursor = dict.fromkeys(options, 0)

    def one(name: str) -> Any:
        cursor[name] = (cursor[name] + 1) % len(pools[name])
        return options[name](*pools[name][cursor[name]])
    for name in options:  # warm-up
        one(name)
    times: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(args.rounds):
        for name in options:  # a table miss builds 50 tables: one call per round
            misses = name.startswith("table_") and not name.endswith("_hit")
            times[name].append(median_ms(lambda: one(name), 1 if misses else args.calls))
    learner.serving_fast, learner.serving_steps = True, None
    return {name: statistics.median(t) for name, t in times.items()}


def many_vs_single(learner: NeuralCalibrationLearner, batch: list[Request], args: argparse.Namespace) -> dict:
    """8 requests in one ``calibrate_many`` vs 8 ``calibrate`` calls; also with the integrand in one block."""
    def one_block() -> Any:
        saved, batched.CHUNK_ROWS = batched.CHUNK_ROWS, 1 << 30
        try:
            return learner.calibrate_many(batch)
        finally:
            batched.CHUNK_ROWS = saved
    many = {"8 calibrate calls": lambda: [learner.calibrate(s, c) for s, c in batch],
            "calibrate_many(8)": lambda: learner.calibrate_many(batch),
            "calibrate_many(8), one block of 400 rows": one_block}
    times: dict[str, list[float]] = {k: [] for k in many}
    for _ in range(args.rounds):
        for k, fn in many.items():
            times[k].append(median_ms(fn, max(3, args.calls // 2)))
    equal = all(torch.allclose(a[t], b[t], atol=1e-6, rtol=0)
                for a, b in zip(many["calibrate_many(8)"](), many["8 calibrate calls"]()) for t in a)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: round(v, 4) for k, v in med.items()} | {
        "ratio": round(med["calibrate_many(8)"] / med["8 calibrate calls"], 3), "equal_to_single_calls": equal}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests, rounds and training steps")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--checkpoints", type=int, nargs="*", default=None,
                    help="learning steps (of 20 lists) after which max |dp| is measured "
                    "(default 50 400 1600; quick 50 400)")
    ap.add_argument("--requests", type=int, default=None, help="held-out requests for max |dp| (default 200; quick 40)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--calls", type=int, default=None)
    ap.add_argument("--nodes", type=int, nargs="*", default=[8, 16, 24, 32])
    ap.add_argument("--table-points", type=int, nargs="*", default=[65, 257])
    ap.add_argument("--table-requests", type=int, default=8, help="held-out requests for a table's max |dp| "
                    "(each costs a quadrature per grid point and row)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    checkpoints = sorted(args.checkpoints or ([50, 400] if args.quick else [50, 400, 1600]))
    n_requests = args.requests or (40 if args.quick else 200)
    args.rounds, args.calls = args.rounds or (3 if args.quick else 5), args.calls or (10 if args.quick else 20)
    torch.set_num_threads(1)
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))

    learner = build_umnn(tasks=TASKS, seed=args.seed)
    examples = simulated_examples(400, seed=args.seed)
    requests = held_out_requests(n_requests, 50, seed=1000 + args.seed)
    errors: dict[str, dict[int, float]] = {}
    done = 0
    for until in checkpoints:
        started = time.perf_counter()
        train(learner, examples, done, until)
        done = until
        for name, err in accuracy(learner, requests, args).items():
            errors.setdefault(name, {})[until] = err
        log(f"{until} steps: {time.perf_counter() - started:.1f} s")
    compiled, compile_s = None, None
    if not args.no_compile:
        try:
            compiled, compile_s = compiled_option(learner)
            errors["compiled"] = {done: accuracy(learner, requests, args, {"compiled": compiled})["compiled"]}
        except Exception as exc:  # noqa: BLE001 - no compiler here is a result too
            compile_s = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    ms = timings(learner, requests, args, compiled)
    out: dict[str, Any] = {
        "requests": n_requests, "rows": 50, "tasks": list(TASKS), "checkpoints": checkpoints, "torch_threads": 1,
        "options": {name: {"ms_per_request": round(t, 4), "ratio_to_full": round(t / ms["full"], 3),
                           **({"max_abs_dp": errors[name]} if name in errors else {})} for name, t in ms.items()},
        "compile_s": round(compile_s, 1) if isinstance(compile_s, float) else compile_s,
        "calibrate_many_8": many_vs_single(learner, requests[:8], args),
        "swap": swap_cost(learner, 5),
        "bound": 1e-4,
    }
    within = [n for n, e in errors.items() if max(e.values()) <= 1e-4]  # at every checkpoint
    out["fastest_within_bound"] = min(within, key=lambda n: ms[n]) if within else None
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
