"""Data-parallel LDRO on torch.distributed (gloo, one thread per rank): N ranks vs 1 on the same examples.

Both runs learn the same ``steps`` global batches of ``lists`` LETOR lists (50 candidates x 300
features, the simulator's training queries, tensorised before the clock starts): one process
takes each whole batch; N processes (``--ranks``) take ``1/N`` of it each and all-reduce their
example-weighted gradients (:mod:`learners.distributed.sync`), so both see the same lists per
update. ``speedup`` = the 1-rank wall time over the N-rank one (the slowest rank) for the timed
steps; ``ndcg10_one_rank`` / ``ndcg10_ranks``: NDCG@10 on held-out simulator requests over the
LETOR queries after the same number of lists (equal within sampling noise: one process takes each
batch in its own order, the ranks' union is in rank order, so a list meets other Gumbel draws; on the
same order they are equal up to float summation, tests/integration/learners/test_data_parallel.py).
Ranks are separate processes started here; results come back as JSON files.

On a shared machine the wall-clock ``speedup`` measures the scheduler: a rank that is not running
holds the others in the next all-reduce. ``cpu_speedup`` (the 1-rank process's CPU seconds over the
busiest rank's) and ``collective_s_per_rank`` (seconds spent inside all-reduce/all-gather, mostly
waiting for the other rank) show what the ranks themselves cost.

Run: ``.venv/bin/python bench/ddp_bench.py --ranks 2 [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import socket
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


def rank_main(rank: int, world: int, port: int, steps: int, lists: int, out: Path) -> None:
    """One rank: build the data, learn its share of every batch, write timings (and rank 0: NDCG)."""
    torch.set_num_threads(1)
    from common.paths import shared_data  # noqa: PLC0415
    from learners.distributed.group import init_group, leave_group  # noqa: PLC0415
    from learners.distributed.sync import GradientSync  # noqa: PLC0415
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
    learner = build_learner("ldro", n_features=letor.n_features)
    for s in range(steps + 1):  # step 0 warms up (allocator, first Adam step), untimed
        part = requests[s * lists:(s + 1) * lists][rank::world]
        built = learner.batch_builder(len(part))
        for r in part:
            built.add(labeled_example(sim, r, range(len(r.candidates)), source="bench"))
        batches.append(built)
    waited = [0.0]  # seconds inside collectives (waiting for the other ranks + the transfer)
    if world > 1:
        for name in ("all_reduce", "all_gather"):
            def timed(*a, _f=getattr(torch.distributed, name), **k):
                t0 = time.perf_counter()
                try:
                    return _f(*a, **k)
                finally:
                    waited[0] += time.perf_counter() - t0
            setattr(torch.distributed, name, timed)
        init_group(torch.device("cpu"), rank, world, "127.0.0.1", port)
        learner.sync = GradientSync()
        learner.running.reducer = learner.sync.moments
    learner.learn_built(batches[0])
    if world > 1:
        torch.distributed.barrier()
    waited[0] = 0.0
    started, cpu = time.perf_counter(), time.process_time()
    for built in batches[1:]:
        learner.learn_built(built)
    elapsed = time.perf_counter() - started
    doc = {"rank": rank, "seconds": elapsed, "lists": sum(b.count for b in batches[1:]), "collective_s": waited[0],
           "cpu_s": time.process_time() - cpu}
    if rank == 0:
        test_sim = SessionSimulator(letor, kuairand, config, seed=10_000, namespace="heldout")
        held_out = HeldOut.build(test_sim, 200, letor.n_features)
        doc["ndcg10"] = held_out.ndcg(learner.scores_for(held_out.batch))["ndcg@10"]
    (out / f"rank{rank}.json").write_text(json.dumps(doc))
    if world > 1:
        leave_group()


def launch(world: int, steps: int, lists: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), "--world", str(world), "--port",
                                   str(port), "--steps", str(steps), "--lists", str(lists), "--out", tmp])
                 for r in range(world)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a rank failed: exit codes {codes}")
        return [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="6 timed steps (about 1-2 minutes on 2 cores)")
    parser.add_argument("--steps", type=int, default=None, help="timed global batches (default 20, quick 6)")
    parser.add_argument("--lists", type=int, default=256, help="lists per global batch")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (6 if args.quick else 20)
    if args.rank is not None:
        rank_main(args.rank, args.world, args.port, steps, args.lists, Path(args.out))
        return
    one = launch(1, steps, args.lists)
    many = launch(args.ranks, steps, args.lists)
    slowest = max(r["seconds"] for r in many)
    doc = {"ranks": args.ranks, "backend": "gloo", "threads_per_rank": 1, "steps": steps, "lists_per_step": args.lists,
           "seconds_one_rank": one[0]["seconds"], "seconds_ranks": slowest,
           "lists_per_s_one_rank": one[0]["lists"] / one[0]["seconds"],
           "lists_per_s_ranks": sum(r["lists"] for r in many) / slowest,
           "speedup": one[0]["seconds"] / slowest, "cpu_s_one_rank": one[0]["cpu_s"],
           "cpu_speedup": one[0]["cpu_s"] / max(r["cpu_s"] for r in many),
           "cpu_s_per_rank": [r["cpu_s"] for r in many], "collective_s_per_rank": [r["collective_s"] for r in many], "ndcg10_one_rank": one[0]["ndcg10"], "ndcg10_ranks": many[0]["ndcg10"]}
    print(json.dumps(doc, indent=2) if args.json else
          f"{args.ranks} ranks vs 1: speedup {doc['speedup']:.2f}x ({doc['lists_per_s_ranks']:.0f} vs "
          f"{doc['lists_per_s_one_rank']:.0f} lists/s); NDCG@10 {doc['ndcg10_ranks']:.4f} vs {doc['ndcg10_one_rank']:.4f}")


if __name__ == "__main__":
    main()
