"""Data-parallel LDRO on torch.distributed (gloo, one thread per rank; nccl on CUDA): N ranks vs 1 on the same examples.

Both runs learn the same ``steps`` global batches of ``lists`` LETOR lists (50 candidates x 300
features, the simulator's training queries, tensorised before the clock starts): one process
takes each whole batch; N processes (``--ranks``) take ``1/N`` of it each and all-reduce their
example-weighted gradients (:mod:`learners.distributed.sync`), so both see the same lists per
update. ``speedup`` = the 1-rank wall time over the N-rank one (the slowest rank) for the timed
steps (each run passes over the batches ``--reps`` times; medians of the passes);
``ndcg10_one_rank`` / ``ndcg10_ranks``: NDCG@10 on held-out simulator requests over the LETOR
queries after one pass over the lists (equal within sampling noise: one process takes each
batch in its own order, the ranks' union is in rank order, so a list meets other Gumbel draws; on the
same order they are equal up to float summation, tests/integration/learners/test_data_parallel.py).
Ranks are separate processes started here; results come back as JSON files.

On a shared machine the wall-clock ``speedup`` measures the scheduler: a rank that is not running
holds the others in the next all-reduce. ``cpu_speedup`` (the 1-rank process's CPU seconds over the
busiest rank's) and ``collective_s_per_rank`` (seconds spent inside all-reduce/all-gather, and in the wait
for an overlapped all-reduce, mostly waiting for the other rank) show what the ranks themselves cost;
``collective_s_by_kind`` splits each rank's into ``all_gather`` (the step's layout), ``all_reduce`` (the
calls, which only start the overlapped ones), ``grads_wait`` (waiting for the gradient sums and writing
them back) and ``moments_wait`` (waiting for the running moments' sums); per pass, like the total.

``independent_speedup`` is the machine's ceiling for the same split: the N processes learn the
same shares at the same time with no collective at all (N unrelated models; one barrier before the
clock starts, none after), so it is the 1-rank time over the slowest of N processes that only
compete for the cores, caches and memory. ``speedup_vs_independent`` = ``speedup`` /
``independent_speedup`` is what the gradient all-reduce and the lockstep cost on top of that.

With ``--device cuda`` rank ``r`` trains on ``cuda:r`` and the ranks all-reduce over nccl (one GPU per
rank: the bench refuses fewer GPUs than ranks); the clock waits for each rank's GPU at the start and
end of a pass, and ``collective_s_per_rank`` then times only the launch of the (asynchronous) nccl calls.

Run: ``.venv/bin/python bench/ddp_bench.py --ranks 2 [--device cpu|cuda] [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rank_main(rank: int, world: int, port: int, steps: int, lists: int, out: Path, independent: bool = False,
              reps: int = 1, device_kind: str = "cpu") -> None:
    """One rank: build the data, learn its share of every batch ``reps`` times (timed per pass, the
    ranks starting each pass together), write the timings (and rank 0: NDCG@10 after the first pass).

    ``independent``: join the group only to start the clock together; learn the share as a model of
    its own, with no gradient all-reduce (the machine's ceiling for N concurrent processes)."""
    torch.set_num_threads(1)
    from common.heap import freeze_startup_heap  # noqa: PLC0415
    from common.paths import shared_data  # noqa: PLC0415
    from learners.distributed.group import init_group, leave_group  # noqa: PLC0415
    from learners.distributed import sync as sync_module  # noqa: PLC0415
    from learners.policy.evaluation import HeldOut, labeled_example  # noqa: PLC0415
    from learners.registry import build_learner  # noqa: PLC0415
    from simulator.click_models import ClickModel  # noqa: PLC0415
    from simulator.kuairand import load_kuairand  # noqa: PLC0415
    from simulator.letor import load_letor  # noqa: PLC0415
    from simulator.session import SessionSimulator, SimulatorConfig  # noqa: PLC0415

    data = shared_data()
    letor, kuairand = load_letor(data / "letor" / "rank.train"), load_kuairand(data / "kuairand")
    config = SimulatorConfig(click_model=ClickModel(max_grade=letor.max_grade))
    sim = SessionSimulator(letor, kuairand, config, seed=0, namespace="train")
    requests = [r for r in sim.requests(steps * lists + lists) if len(r.candidates) >= 2]
    batches = []
    device = torch.device("cuda", rank) if device_kind == "cuda" else torch.device("cpu")  # nccl: a GPU per rank
    learner = build_learner("ldro", n_features=letor.n_features, device=str(device))
    for s in range(steps + 1):  # step 0 warms up (allocator, first Adam step), untimed
        part = requests[s * lists:(s + 1) * lists][rank::world]
        built = learner.batch_builder(len(part))
        for r in part:
            built.add(labeled_example(sim, r, range(len(r.candidates)), source="bench"))
        batches.append(built)
    # seconds inside collectives (waiting for the other ranks + the transfer), by kind of call
    by_kind: dict[str, float] = {}

    def timing(call, kind: str):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                by_kind[kind] = by_kind.get(kind, 0.0) + time.perf_counter() - t0
        return timed

    synced = world > 1 and not independent
    if synced:
        for name in ("all_reduce", "all_gather"):
            setattr(torch.distributed, name, timing(getattr(torch.distributed, name), name))
        for pending, kind in ((sync_module.PendingGrads, "grads_wait"), (sync_module.PendingSums, "moments_wait")):
            pending.wait = timing(pending.wait, kind)  # an overlapped all-reduce's wait
    if world > 1:
        init_group(device, rank, world, "127.0.0.1", port)  # gloo on the CPU, nccl on CUDA
    if synced:
        sync_module.attach(learner, device)
    learner.learn_built(batches[0])
    freeze_startup_heap()  # as a learner rank does after start-up (learners.distributed.rank)
    doc: dict = {"rank": rank, "rep_seconds": [], "rep_cpu_s": [], "collective_s": 0.0, "collective_s_by_kind": {},
                 "lists": sum(b.count for b in batches[1:])}
    for rep in range(reps):
        if world > 1:
            torch.distributed.barrier()
        by_kind.clear()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started, cpu = time.perf_counter(), time.process_time()
        for built in batches[1:]:
            learner.learn_built(built)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        doc["rep_seconds"].append(time.perf_counter() - started)
        doc["rep_cpu_s"].append(time.process_time() - cpu)
        doc["collective_s"] += sum(by_kind.values()) / reps
        for kind, seconds in by_kind.items():
            doc["collective_s_by_kind"][kind] = doc["collective_s_by_kind"].get(kind, 0.0) + seconds / reps
        if rep == 0 and rank == 0 and not independent:  # after one pass over the lists, as one process would
            test_sim = SessionSimulator(letor, kuairand, config, seed=10_000, namespace="heldout")
            held_out = HeldOut.build(test_sim, 200, letor.n_features)
            doc["ndcg10"] = held_out.ndcg(learner.scores_for(held_out.batch))["ndcg@10"]
    (out / f"rank{rank}.json").write_text(json.dumps(doc))
    if world > 1:
        leave_group()


def launch(world: int, steps: int, lists: int, reps: int, independent: bool = False,
           device: str = "cpu") -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        extra = ["--independent"] if independent else []
        common = ["--world", str(world), "--port", str(port), "--steps", str(steps), "--lists", str(lists),
                  "--out", tmp, "--reps", str(reps), "--device", device, *extra]
        procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), *common]) for r in range(world)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a rank failed: exit codes {codes}")
        return [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="6 timed steps, --reps passes (about 25 s on 2 cores)")
    parser.add_argument("--steps", type=int, default=None, help="timed global batches (default 20, quick 6)")
    parser.add_argument("--lists", type=int, default=256, help="lists per global batch")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=3, help="timed passes over the batches; figures are medians")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: gloo, one thread per rank; cuda: nccl, rank r on cuda:r (one GPU per rank)")
    parser.add_argument("--independent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (6 if args.quick else 20)
    if args.rank is not None:
        rank_main(args.rank, args.world, args.port, steps, args.lists, Path(args.out), args.independent, args.reps,
                  args.device)
        return
    if args.device == "cuda" and torch.cuda.device_count() < args.ranks:
        parser.error(f"--device cuda: nccl needs one GPU per rank; {args.ranks} ranks, "
                     f"{torch.cuda.device_count()} CUDA device(s) here")
    one = launch(1, steps, args.lists, args.reps, device=args.device)
    many = launch(args.ranks, steps, args.lists, args.reps, device=args.device)
    apart = launch(args.ranks, steps, args.lists, args.reps, independent=True, device=args.device)

    def wall(ranks: list[dict]) -> float:
        """Median over the passes of the slowest rank's seconds (the ranks start each pass together)."""
        return statistics.median(max(r["rep_seconds"][i] for r in ranks) for i in range(args.reps))

    def cpu(ranks: list[dict]) -> list[float]:
        return [statistics.median(r["rep_cpu_s"]) for r in ranks]

    lists = sum(r["lists"] for r in many)
    one_s, many_s, apart_s = wall(one), wall(many), wall(apart)
    doc = {"ranks": args.ranks, "backend": "nccl" if args.device == "cuda" else "gloo", "device": args.device, "threads_per_rank": 1, "steps": steps, "lists_per_step": args.lists,
           "reps": args.reps, "seconds_one_rank": one_s, "seconds_ranks": many_s,
           "lists_per_s_one_rank": one[0]["lists"] / one_s, "lists_per_s_ranks": lists / many_s,
           "speedup": one_s / many_s, "cpu_s_one_rank": cpu(one)[0],
           "cpu_speedup": cpu(one)[0] / max(cpu(many)), "cpu_s_per_rank": cpu(many),
           "collective_s_per_rank": [r["collective_s"] for r in many],
           "collective_s_by_kind": [r["collective_s_by_kind"] for r in many],
           "ndcg10_one_rank": one[0]["ndcg10"], "ndcg10_ranks": many[0]["ndcg10"],
           "independent_speedup": one_s / apart_s, "speedup_vs_independent": apart_s / many_s,
           "independent_cpu_s_per_rank": cpu(apart), "load_average": list(os.getloadavg())}
    ceiling = doc["independent_speedup"]
    print(json.dumps(doc, indent=2) if args.json else
          f"{args.ranks} ranks vs 1: speedup {doc['speedup']:.2f}x ({doc['lists_per_s_ranks']:.0f} vs "
          f"{doc['lists_per_s_one_rank']:.0f} lists/s); NDCG@10 {doc['ndcg10_ranks']:.4f} vs {doc['ndcg10_one_rank']:.4f}; "
          f"{args.ranks} processes with no all-reduce: {ceiling:.2f}x (the machine's ceiling)")


if __name__ == "__main__":
    main()
