"""From record bytes to the optimizer step: the learn path against plain torch on the same networks.

Workload (issue 16): batches of 256 real LETOR lists of 50 candidates x 300 features
(``bench/policy_bench.py``'s lists, served and labelled by the simulator), encoded as the
``examples`` topic carries them (UTF-8 JSON, features inline in the spelling our producers write:
``features_f32``, base64 of float32). For each of ``ldro``, ``grpo``, ``drpo`` and ``umnn``, in the
same run, interleaved rep by rep (the machine is shared):

* ``learn``: batches of record bytes through :class:`learners.runtime.runner.LearnerRuntime`
  with ``prefetch`` on and ``--decode-workers`` decode processes (default 1,
  :mod:`learners.ingest.decode_pool`, started once before the timing as a running learner has them;
  the calibrators have no worker form and decode in process): bytes in, optimizer steps out. The
  CPU it takes is reported beside it (``learn_process_cpu_s_per_batch``: this process, i.e. the
  update, the row copies and the bookkeeping; ``learn_worker_cpu_s_per_batch``: the workers).
  It runs ``--learn-steps`` batches (default 8; the calibrators ``steps``) per measurement, as a
  stream runs many: the first batch's decode has nothing to overlap with (the pipeline fills once),
  and over 2 batches that fill alone would be a quarter of the time; ``learn_inline`` likewise;
* ``learn_in_process``: the same with the decoding on this process (``decode_workers=0``, the
  update on the update stage's thread): what ``learn`` measured before the workers;
* ``plain``: ``steps`` plain torch steps of *the same networks* on the batch already in memory,
  with the same number of forward/backward/Adam steps and the same shapes as the algorithm's
  update (LDRO: reward model, teacher and student steps plus the reward model's forward over
  the ``G + 1`` lists; GRPO: the same without the teacher; DRPO: ``reward_steps`` satisfaction
  steps, the policy/reference forwards, the satisfaction forward over ``G + 1`` weight vectors and
  ``epochs`` policy steps; UMNN: one BCE step of the calibrators on the same rows);
* ``update``: the learner's own update on the in-memory batch (the RL machinery's share);
* ``decode``: decoding + writing the records into the batch arrays alone (the ingest's share), with
  the runtime's decoder (:func:`contracts.fast_decode.decode_example`); ``parse``: the decode alone
  (so ``decode - parse`` is the write into the arrays); ``parse_model``: the contract's pydantic
  decode alone (:func:`contracts.events.decode`, what the runtime called before the accept-filter),
  so ``parse_model_to_parse`` is the filter's speed-up measured in the same run;
* ``learn_named``: as ``learn_in_process``, with the records as serving logs them by default (items *name*
  their feature, ``context["item_features"]``; :class:`learners.runtime.feature_fill.FeatureFill`
  fills the rows from a warm item cache): the JSON no longer carries 15,000 floats per list.
* ``learn_inline``: as ``learn_in_process`` with ``prefetch`` off (decode and update take turns on one thread):
  ``prefetch_speedup`` = inline seconds / ``learn_in_process`` seconds, what the update stage's thread buys;
  ``update_stage_s_per_batch_prefetch`` / ``_inline``: the update stage's own seconds per batch in
  each mode (the runtime's ``timings["learn"]``), i.e. how much the decoding thread slows it;
* ``learn_json``: as ``learn_in_process``, with the features in the contract's other spelling, a JSON list of
  15,000 decimal numbers per list (old logs, other clients; what ``learn`` measured before
  ``features_f32``), so ``learn_many_to_plain_json_floats`` keeps that figure comparable.

``learn_many_to_plain`` = plain seconds / learn seconds (1.0: the learn path costs nothing over
plain torch); ``learn_many_to_plain_json_floats`` and ``learn_many_to_plain_named_features`` the
same for the other two record forms; ``decode_json_s_per_batch`` / ``parse_json_s_per_batch`` the
ingest of the JSON-float records. Run: ``.venv/bin/python bench/learn_bench.py [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from contracts.events import ITEM_FEATURES_KEY, LABELED_LIST_SCHEMA, decode, encode  # noqa: E402
from contracts.fast_decode import decode_example  # noqa: E402
from learners.fusion.context import task_statistics  # noqa: E402
from common.stack import process_cpu_s  # noqa: E402
from learners.ingest.decode_pool import DecodePool  # noqa: E402
from learners.registry import build_learner  # noqa: E402
from learners.runtime.feature_fill import FeatureFill  # noqa: E402
from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig  # noqa: E402
from policy_bench import fifty_candidate_lists  # noqa: E402

MODELS = ("ldro", "grpo", "drpo", "umnn")
FEATURE_REF = "letor_document:features"


def step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def plain_ldro(net, lists, opts, orders) -> None:
    """Reward model, teacher (LDRO only) and student steps + the reward model over the G + 1 lists."""
    x, mask = lists.inputs, lists.mask
    step(opts[1], net.reward_model.loss(x, mask, lists.item_rewards))
    if net.config.distill:
        step(opts[2], net.teacher.nll(x, mask, orders[:, 0]))
    scores = net.student(x, mask)
    with torch.no_grad():
        net.reward_model.list_value(x, mask, orders)
    target = torch.softmax(lists.item_rewards, dim=-1)
    step(opts[0], -(target * torch.log_softmax(scores, dim=-1)).sum(-1).mean())


def plain_drpo(net, lists, opts, actions) -> None:
    """Satisfaction steps, policy/reference forwards, satisfaction over G + 1 weight vectors, policy epochs."""
    cfg, mask, logits = net.config, lists.mask, lists.task_logits
    stats, ctx = task_statistics(logits, mask), net._context(lists)
    for _ in range(cfg.reward_steps):
        step(opts[1], net.satisfaction.loss(lists.features, logits, mask, ctx, lists.query_reward))
    with torch.no_grad():
        net.policy(stats, ctx)
        net.reference(stats, ctx)
        net.satisfaction.logits(lists.features, logits, mask, ctx, net._orders(logits, mask, actions))
    for _ in range(cfg.epochs):
        mean, log_std = net.policy(stats, ctx)
        nll = (0.5 * ((actions - mean.unsqueeze(1)) / log_std.exp().unsqueeze(1)) ** 2 + log_std.unsqueeze(1))
        step(opts[0], nll.sum(-1).mean())


def plain_umnn(net, rows, opt) -> None:
    """One BCE step of the calibrators on the same rows (no SCLoss)."""
    total = sum(torch.nn.functional.binary_cross_entropy_with_logits(net.forward_rows(t, z, i), y)
                for t, (z, y, i) in rows.items())
    step(opt, total)


def named(example):
    """The example as serving logs it by default: items name their feature instead of carrying it."""
    items = [it.model_copy(update={"features": None, "features_f32": None}) for it in example.impression.items]
    context = {**example.impression.context, ITEM_FEATURES_KEY: FEATURE_REF}
    return example.model_copy(update={"impression": example.impression.model_copy(update={"items": items,
                                                                                          "context": context})})


def json_floats(example):
    """The example with its features as a JSON float list, as the simulator wrote them before
    ``features_f32``: 4-decimal numbers (the float32 values are those numbers, so the rounding
    gives them back exactly and both forms fill the same rows)."""
    items = [it.model_copy(update={"features": np.round(np.asarray(it.feature_row(), dtype=np.float64), 4).tolist(),
                                   "features_f32": None}) for it in example.impression.items]
    return example.model_copy(update={"impression": example.impression.model_copy(update={"items": items})})


def batches(examples, steps: int, form: str = "f32") -> list[list[Record]]:
    """``steps`` batches of record bytes: the same lists under distinct example ids (no dedupe skips);
    ``form``: ``f32`` (features_f32, as our producers write), ``json`` (float lists) or ``named``."""
    convert = {"f32": lambda ex: ex, "json": json_floats, "named": named}[form]
    if form == "f32":
        assert all(it.features_f32 is not None for ex in examples for it in ex.impression.items)
    out = []
    for s in range(steps):
        recs = []
        for i, ex in enumerate(examples):
            copy = convert(ex).model_copy(update={"example_id": f"{ex.example_id}-{s}"})
            recs.append(Record("examples", 0, s * len(examples) + i, ex.request_id.encode(), encode(copy)))
        out.append(recs)
    return out


def measure(name: str, examples, records, named_records, json_records, reps: int, workers: int = 1,
            stream_records=None) -> dict[str, float]:
    """Median seconds of each path for ``len(records)`` batches (``learn`` and ``learn_in_process``:
    ``len(stream_records)``), interleaved per rep."""
    cfg = {} if name == "umnn" else {"n_features": 300}
    size, steps = len(examples), len(records)
    probe = build_learner(name, **cfg)
    built = probe.batch_builder(size)
    for ex in examples:
        built.add(ex)
    net = build_learner(name, **cfg)
    if name == "umnn":
        rows = {t: (built.logits(t, 1e-6), built.label_tensor(t), built.index_tensor(t)) for t in net.tasks}
        opt = torch.optim.Adam(net.module.parameters(), lr=1e-3)
        plain_once = lambda: plain_umnn(net, rows, opt)  # noqa: E731
    else:
        lists = built.take()
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for _, m, _ in net._parts()]
        G = net.config.group_size + 1
        if name == "drpo":
            actions = torch.rand(size, G, len(net.config.tasks)) + 0.5
            plain_once = lambda: plain_drpo(net, lists, opts, actions)  # noqa: E731
        else:
            n = lists.mask.shape[1]
            orders = torch.argsort(torch.rand(size, G, n), dim=-1)
            plain_once = lambda: plain_ldro(net, lists, opts, orders)  # noqa: E731

    def plain() -> None:
        for _ in range(steps):
            plain_once()

    def update() -> None:
        for _ in range(steps):
            probe.learn_built(built)

    item_rows = {it.item_id: it.feature_row() for ex in examples for it in ex.impression.items}
    fill = FeatureFill(lambda ref, ids: [item_rows.get(i) for i in ids], cache_s=float("inf"))  # a warm item cache
    flat_named = [r for batch in named_records for r in batch]
    flat_json = [r for batch in json_records for r in batch]

    stage_s: dict[bool, list[float]] = {True: [], False: []}  # the update stage's own seconds, by prefetch
    spec = getattr(probe.batch_builder(1), "spec", None)
    pool = DecodePool(spec(), workers) if spec is not None and workers else None  # started once, as a stream would
    if pool is None or stream_records is None:  # no pipeline to fill: the calibrators' update dominates (2 s a batch)
        stream_records = records
    stream = [r for batch in stream_records for r in batch]
    stream_steps = len(stream_records)
    cpu: dict[str, list[float]] = {"process": [], "workers": [], "decoded": []}

    def workers_cpu_s() -> float:
        return sum(process_cpu_s(pid) for pid in pool.pids) if pool is not None else 0.0

    def learn(recs, prepare=None, prefetch: bool = True, use_pool: bool = False) -> None:
        runtime = LearnerRuntime(name, build_learner(name, **cfg), None,
                                 RuntimeConfig(batch_size=size, checkpoint_every=10 ** 9, prefetch=prefetch),
                                 decode_pool=pool if use_pool else None)
        runtime.prepare = prepare
        process0, workers0 = time.process_time(), workers_cpu_s() if use_pool else 0.0
        runtime.offer(recs)
        assert runtime.applied == len(recs), runtime.status()
        if use_pool:
            assert pool is None or not pool.broken, pool.broken
            cpu["process"].append(time.process_time() - process0)
            cpu["workers"].append(workers_cpu_s() - workers0)
            cpu["decoded"].append(runtime.worker_decoded)
        elif recs is stream:
            stage_s[prefetch].append(sum(runtime.timings["learn"]))

    def decode_only(recs=records) -> None:
        for batch in recs:
            b = probe.batch_builder(size)
            for r in batch:
                b.add(decode_example(r.value))

    def parse_only(recs=records) -> None:
        for batch in recs:
            for r in batch:
                decode_example(r.value)

    def parse_model() -> None:
        for batch in records:
            for r in batch:
                decode(r.value, expected=LABELED_LIST_SCHEMA)

    fns = {"plain": plain, "update": update, "learn": lambda: learn(stream, use_pool=True),
           "learn_in_process": lambda: learn(stream),
           "learn_inline": lambda: learn(stream, prefetch=False),
           "decode": decode_only, "parse": parse_only,
           "parse_model": parse_model,
           "learn_named": lambda: learn(flat_named, fill), "learn_json": lambda: learn(flat_json),
           "decode_json": lambda: decode_only(json_records), "parse_json": lambda: parse_only(json_records)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    plain_once()  # warm-up (allocator, lazy init)
    learn(flat_named[:size], fill)  # warms the item cache
    for _ in range(reps):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    if pool is not None:
        pool.close()
    t = {k: statistics.median(v) for k, v in times.items()}
    for key in ("learn", "learn_in_process", "learn_inline"):  # per `steps` batches, like the others
        t[key] *= steps / stream_steps
    return {"learn_many_to_plain": t["plain"] / t["learn"], "update_to_plain": t["plain"] / t["update"],
            "decode_workers": workers if pool is not None else 0, "learn_batches": stream_steps,
            "learn_many_to_plain_in_process": t["plain"] / t["learn_in_process"],
            "learn_in_process_s_per_batch": t["learn_in_process"] / steps,
            # CPU of the learn path (this process: update, row copies, bookkeeping; the decode workers)
            "learn_process_cpu_s_per_batch": statistics.median(cpu["process"]) / stream_steps,
            "learn_worker_cpu_s_per_batch": statistics.median(cpu["workers"]) / stream_steps,
            "learn_records_decoded_by_workers": min(cpu["decoded"]),  # per measurement (all of them: lists x batches)
            "learn_many_to_plain_named_features": t["plain"] / t["learn_named"],
            "learn_many_to_plain_json_floats": t["plain"] / t["learn_json"],
            "learn_json_s_per_batch": t["learn_json"] / steps, "decode_json_s_per_batch": t["decode_json"] / steps,
            "parse_json_s_per_batch": t["parse_json"] / steps, "json_lists_per_s": size * steps / t["learn_json"],
            "learn_named_s_per_batch": t["learn_named"] / steps,
            "decode_s_per_batch": t["decode"] / steps, "parse_s_per_batch": t["parse"] / steps,
            "parse_model_s_per_batch": t["parse_model"] / steps, "parse_model_to_parse": t["parse_model"] / t["parse"], "learn_s_per_batch": t["learn"] / steps,
            "plain_s_per_batch": t["plain"] / steps, "update_s_per_batch": t["update"] / steps,
            "lists_per_s": size * steps / t["learn"], "plain_lists_per_s": size * steps / t["plain"],
            "prefetch_speedup": t["learn_inline"] / t["learn_in_process"],
            # the update stage's own time per batch beside the decoding thread vs inline: how much the
            # thread slows the update it was meant to overlap (the GIL; learners/runtime/pipeline.py)
            "update_stage_s_per_batch_prefetch": statistics.median(stage_s[True]) / stream_steps,
            "update_stage_s_per_batch_inline": statistics.median(stage_s[False]) / stream_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 steps x 2 reps (about 2-4 minutes on 2 cores)")
    parser.add_argument("--steps", type=int, default=None, help="batches per measurement (default 4, quick 2)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5, quick 2)")
    parser.add_argument("--lists", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--learn-steps", type=int, default=8,
                        help="batches per 'learn' / 'learn_in_process' measurement (a stream's steady state: the "
                             "first batch's decode, which nothing can overlap, is paid once per measurement)")
    parser.add_argument("--decode-workers", type=int, default=1,
                        help="decode worker processes of the 'learn' path (0: decode in process)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 4)
    reps = args.reps or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    _, examples = fifty_candidate_lists(args.lists, 50)
    stream_records = batches(examples, args.learn_steps)
    records, named_records = stream_records[:steps], batches(examples, steps, "named")
    json_records = batches(examples, steps, "json")
    doc: dict = {"lists": args.lists, "items": 50, "features": 300, "steps": steps, "reps": reps,
                 "threads": args.threads, "record_bytes_mean": sum(len(r.value) for r in records[0]) / args.lists,
                 "json_record_bytes_mean": sum(len(r.value) for r in json_records[0]) / args.lists,
                 "named_record_bytes_mean": sum(len(r.value) for r in named_records[0]) / args.lists,
                 "load_average": list(os.getloadavg())}
    for name in args.models.split(","):
        doc[name] = measure(name, examples, records, named_records, json_records, reps, args.decode_workers,
                            stream_records)
        if not args.json:
            m = doc[name]
            print(f"{name:<5} learn/plain {m['learn_many_to_plain']:.2f} (in process "
                  f"{m['learn_many_to_plain_in_process']:.2f}, JSON floats "
                  f"{m['learn_many_to_plain_json_floats']:.2f}, named features "
                  f"{m['learn_many_to_plain_named_features']:.2f})  update/plain {m['update_to_plain']:.2f}  "
                  f"per batch: decode {m['decode_s_per_batch']:.3f}s (parse {m['parse_s_per_batch']:.3f}s, pydantic {m['parse_model_s_per_batch']:.3f}s) learn {m['learn_s_per_batch']:.3f}s "
                  f"plain {m['plain_s_per_batch']:.3f}s update {m['update_s_per_batch']:.3f}s", flush=True)
    doc["load_average_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
