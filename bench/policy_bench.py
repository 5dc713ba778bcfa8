"""Throughput of the LDRO/GRPO/DRPO updates and serving-path rerank latency, as ratios to plain torch.

Workload (DESIGN/issue 5): batches of 256 lists of 50 candidates with the real LETOR feature
size (300 features, rows drawn from ../shared/data/letor so the values are real) + 3 task
scores from the simulator's request generator. Every number is a ratio against a baseline
measured in the same run, interleaved rep by rep (the machine is shared and noisy):

* ``update``: one learner update on an already-tensorised batch (:meth:`update`) vs a plain
  torch forward + backward + Adam step of *the same network* (LDRO: the set scorer with a
  ListNet softmax cross-entropy; DRPO: the task-relation policy with a Gaussian NLL), and vs
  plain supervised steps of *all the networks one update trains* (LDRO: + reward model +
  teacher; GRPO: + reward model; DRPO: + satisfaction model): the second ratio is the cost
  of the RL machinery itself (group sampling, PL log-probs, advantages, clipping, KD);
* ``learn_many``: the same, from :class:`LabeledList` objects (includes tensorisation);
* ``rerank``: one request of 50 candidates through ``rerank()`` (tensorise, score, sort,
  log-prob) vs the bare network forward on the same request.

Run: ``.venv/bin/python bench/policy_bench.py [--reps 10] [--threads 1] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.paths import shared_data  # noqa: E402
from learners.fusion.context import request_context, task_statistics  # noqa: E402
from learners.policy.batch import from_examples  # noqa: E402
from learners.policy.evaluation import labeled_example, rerank_request  # noqa: E402
from learners.registry import build_learner  # noqa: E402
from simulator.click_models import ClickModel  # noqa: E402
from simulator.kuairand import load_kuairand  # noqa: E402
from simulator.letor import LetorDataset, LetorQuery, load_letor  # noqa: E402
from simulator.session import SessionSimulator, SimulatorConfig  # noqa: E402

DATA = shared_data()


def fifty_candidate_lists(n_lists: int, n_items: int, seed: int = 0):
    """LabeledLists of ``n_items`` real LETOR documents each, served and labelled through the simulator."""
    letor = load_letor(DATA / "letor" / "rank.train")
    feats = np.concatenate([q.features for q in letor.queries])
    rel = np.concatenate([q.relevance for q in letor.queries])
    rng = np.random.default_rng(seed)
    queries = []
    for qid in range(64):
        rows = rng.choice(len(feats), size=n_items, replace=False)
        queries.append(LetorQuery(qid, tuple(f"b{qid}-d{j}" for j in range(n_items)), feats[rows], rel[rows]))
    dataset = LetorDataset(tuple(queries), letor.n_features, letor.max_grade)
    sim = SessionSimulator(dataset, load_kuairand(DATA / "kuairand"),
                           SimulatorConfig(click_model=ClickModel(max_grade=letor.max_grade)), seed=seed)
    requests = list(sim.requests(n_lists))
    examples = [labeled_example(sim, r, range(n_items), source="bench") for r in tqdm(requests, desc="lists",
                                                                                       leave=False)]
    return requests, examples


def _adam_step(opt, loss) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def plain_ldro_step(learner, lists, opts, all_networks: bool) -> None:
    """Supervised forward+backward+Adam of the student (and, with ``all_networks``, of the reward
    model and the teacher too: every network one LDRO update trains), no RL machinery."""
    x, mask = lists.inputs, lists.mask
    scores = learner.student(x, mask)
    target = torch.softmax(lists.item_rewards, dim=-1)
    _adam_step(opts[0], -(target * torch.log_softmax(scores, dim=-1)).sum(-1).mean())
    if all_networks:
        _adam_step(opts[1], learner.reward_model.loss(x, mask, lists.item_rewards))
        if learner.config.distill:
            _adam_step(opts[2], learner.teacher.nll(x, mask, torch.arange(x.shape[1]).expand(x.shape[0], -1)))


def plain_drpo_step(learner, lists, opts, all_networks: bool) -> None:
    """Supervised step of the fusion policy (and, with ``all_networks``, of the satisfaction model)."""
    stats = task_statistics(lists.task_logits, lists.mask)
    ctx = request_context(lists.task_logits, lists.mask, lists.activity)
    mean, log_std = learner.policy(stats, ctx)
    _adam_step(opts[0], (0.5 * ((lists.fusion_weights - mean) / log_std.exp()) ** 2 + log_std).sum(-1).mean())
    if all_networks:
        _adam_step(opts[1], learner.satisfaction.loss(lists.features, lists.task_logits, lists.mask, ctx,
                                                      lists.query_reward))


def interleaved(fns: dict[str, callable], reps: int, desc: str) -> dict[str, float]:
    """Median seconds of each fn, measured in turn within every rep."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in tqdm(range(reps), desc=desc, leave=False):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rerank-reps", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    requests, examples = fifty_candidate_lists(args.batch, args.items)
    lists = from_examples(examples, 300)
    results: dict[str, dict[str, float]] = {}

    for name in ("ldro", "grpo", "drpo"):
        learner = build_learner(name, n_features=300)
        plain_net = build_learner(name, n_features=300)  # the same networks, trained the plain way
        parts = [m for _, m, _ in plain_net._parts()]
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in parts]
        step = plain_drpo_step if name == "drpo" else plain_ldro_step
        t = interleaved({"plain_policy_net": lambda: step(plain_net, lists, opts, False),
                         "plain_all_nets": lambda: step(plain_net, lists, opts, True),
                         "update": lambda: learner.update(lists),
                         "learn_many": lambda: learner.learn_many(examples)}, args.reps, f"{name} updates")
        request = rerank_request(requests[0])
        one = from_examples(examples[:1], 300)
        if name == "drpo":
            bare = lambda: learner.policy(task_statistics(one.task_logits, one.mask),  # noqa: E731
                                          request_context(one.task_logits, one.mask, one.activity))
        else:
            bare = lambda: learner.student(one.inputs, one.mask)  # noqa: E731
        with torch.no_grad():
            r = interleaved({"forward": bare, "rerank": lambda: learner.rerank(request)}, args.rerank_reps,
                            f"{name} rerank")
        results[name] = {
            "plain_policy_net_per_s": 1.0 / t["plain_policy_net"], "plain_all_nets_per_s": 1.0 / t["plain_all_nets"],
            "updates_per_s": 1.0 / t["update"], "lists_per_s": args.batch / t["update"],
            "update_ratio_vs_plain_policy_net": t["plain_policy_net"] / t["update"],
            "update_ratio_vs_plain_all_nets": t["plain_all_nets"] / t["update"],
            "learn_many_per_s": 1.0 / t["learn_many"],
            "learn_many_ratio_vs_plain_all_nets": t["plain_all_nets"] / t["learn_many"],
            "rerank_ms": 1e3 * r["rerank"], "bare_forward_ms": 1e3 * r["forward"],
            "rerank_ratio_vs_forward": r["forward"] / r["rerank"],
        }
    if args.json:
        print(json.dumps({"batch": args.batch, "items": args.items, "features": 300, "threads": args.threads,
                          "results": results}, indent=2))
        return
    print(f"batch {args.batch} lists x {args.items} candidates x 300 features, {args.threads} thread(s), "
          f"median of {args.reps} interleaved reps")
    print(f"{'model':<6}{'plain net/s':>12}{'plain all/s':>12}{'update/s':>10}{'vs net':>8}{'vs all':>8}"
          f"{'learn_many/s':>14}{'vs all':>8}{'rerank ms':>11}{'fwd ms':>8}{'ratio':>7}")
    for name, m in results.items():
        print(f"{name:<6}{m['plain_policy_net_per_s']:>12.2f}{m['plain_all_nets_per_s']:>12.2f}"
              f"{m['updates_per_s']:>10.2f}{m['update_ratio_vs_plain_policy_net']:>8.2f}"
              f"{m['update_ratio_vs_plain_all_nets']:>8.2f}{m['learn_many_per_s']:>14.2f}"
              f"{m['learn_many_ratio_vs_plain_all_nets']:>8.2f}{m['rerank_ms']:>11.2f}{m['bare_forward_ms']:>8.2f}"
              f"{m['rerank_ratio_vs_forward']:>7.2f}")

if __name__ == "__main__":
    main()
