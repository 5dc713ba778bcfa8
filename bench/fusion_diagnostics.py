"""Why DRPO does or does not capture ``eval fusion``'s headroom: the reward model vs the policy.

One seed of the contextual simulator (:mod:`simulator.contextual`), the same split, grid and
held-out requests as ``streamrank eval fusion`` (fewer of them). DRPO learns online as in
:func:`learners.policy.evaluation_fusion.train_fusion`; every ``--every`` interactions it reports

* ``rphi_choice``: per context (group x query type), the grid vector with the best mean
  :math:`R_\\phi` on the held-out requests, scored with the simulator's exact expected
  satisfaction, relative to the best static vector: what a policy that maximised
  :math:`R_\\phi` perfectly would get (the reward model's ceiling for the policy);
* ``rank_corr``: the mean within-request Spearman correlation between :math:`R_\\phi` and the
  exact satisfaction over the grid vectors (can :math:`R_\\phi` rank one request's vectors?);
* ``gain``: the policy mean served on the held-out requests vs the best static vector.

``--reward exact`` is a DIAGNOSTIC ONLY: the G sampled vectors of each group are valued with the
simulator's exact expected satisfaction instead of :math:`R_\\phi` (production has no such
oracle); it shows what the policy update can reach when the reward model is perfect.

Run: ``.venv/bin/python bench/fusion_diagnostics.py --reward pooled|contextual|cascade|exact
[--seed 0] [--interactions 6000] [--every 1500] [--set KEY=JSON ...] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts.events import FusionDecision  # noqa: E402
from learners.policy.batch import from_request  # noqa: E402
from learners.policy.evaluation import labeled_example, train_test, weight_grid  # noqa: E402
from learners.policy.evaluation_fusion import (FUSION_SETTINGS, context_request, keyed_choice,  # noqa: E402
                                               satisfaction_matrix)
from learners.registry import build_learner  # noqa: E402
from simulator.contextual import contextual_simulator  # noqa: E402
from simulator.kuairand import load_kuairand  # noqa: E402
from streamrank.cli.evaluate_claims import DEFAULT_LETOR  # noqa: E402


def exact_reward(learner, sim, batch_state: dict[str, Any]) -> None:
    """Value the sampled vectors with the exact expectation (the served-list loss path is untouched)."""
    model_logits: Callable = learner.satisfaction.logits

    def logits(features, task_logits, mask, ctx, orders):
        if orders.shape[1] == 1:  # the reward model's own training step on the served lists
            return model_logits(features, task_logits, mask, ctx, orders)
        out = torch.empty(orders.shape[:2])
        for b, (request, served) in enumerate(zip(batch_state["requests"], batch_state["orders"])):
            for g in range(orders.shape[1]):
                order = [served[i] for i in orders[b, g, :len(served)].tolist()]
                out[b, g] = sim.expected_satisfaction(request, order)
        return torch.logit(out.clamp(1e-4, 1 - 1e-4))

    learner.satisfaction.logits = logits


def reward_model_quality(learner, requests, keys, E: np.ndarray, grid, best: int) -> tuple[float, float]:
    """``rphi_choice`` and ``rank_corr`` (see the module doc) on ``requests``."""
    actions = torch.tensor(grid, dtype=torch.float32).unsqueeze(0)
    scores = []
    with torch.no_grad():
        for r in requests:
            lists = from_request(context_request(r), learner.config.n_features, learner.config.tasks)
            orders = learner._orders(lists.task_logits, lists.mask, actions)
            model = learner.satisfaction  # the learned R_phi even when --reward exact patched the instance
            scores.append(type(model).logits(model, lists.features, lists.task_logits, lists.mask,
                                             learner._context(lists), orders)[0].numpy())
    S = np.array(scores)
    chosen, _ = keyed_choice(S, keys, E, keys, best)
    corr = [spearmanr(s, e)[0] for s, e in zip(S, E) if np.ptp(s) > 0 and np.ptp(e) > 0]
    return float(chosen.mean() / E[:, best].mean() - 1), float(np.mean(corr)) if corr else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    train, test = train_test(DEFAULT_LETOR, None)
    kuairand, grid = load_kuairand(), weight_grid(3, 6)
    grid_sim = contextual_simulator(train, kuairand, seed=30_000 + args.seed, namespace="grid")
    eval_sim = contextual_simulator(test, kuairand, seed=10_000 + args.seed, namespace="heldout")
    grid_reqs = [grid_sim.request(i, 1.767e9 + i) for i in range(args.grid_requests)]
    eval_reqs = [eval_sim.request(i, 1.767e9 + i) for i in range(args.eval_requests)]
    G, E = satisfaction_matrix(grid_sim, grid_reqs, grid), satisfaction_matrix(eval_sim, eval_reqs, grid)
    best = int(G.mean(0).argmax())
    keys_g, keys_e = np.array([r.context_key for r in grid_reqs]), np.array([r.context_key for r in eval_reqs])
    oracle, _ = keyed_choice(G, keys_g, E, keys_e, best)
    base = float(E[:, best].mean())
    model = FUSION_SETTINGS["reward_model"] if args.reward == "exact" else args.reward
    config = {**FUSION_SETTINGS, "reward_model": model,
              **{k: json.loads(v) for k, v in (s.split("=", 1) for s in args.sets)}}
    sim = contextual_simulator(train, kuairand, seed=args.seed, namespace="train")
    learner = build_learner("drpo", n_features=sim.dataset.n_features, seed=args.seed, **config)
    state: dict[str, Any] = {"requests": [], "orders": []}
    if args.reward == "exact":
        exact_reward(learner, sim, state)
    buffer, curve = [], []
    for i in range(1, args.interactions + 1):
        request = sim.next_request()
        result = learner.rerank(context_request(request), explore=True)
        fusion = FusionDecision(weights=result.extras["fusion"], logprob=result.extras["fusion_logprob"])
        buffer.append(labeled_example(sim, request, result.order, source="drpo", fusion=fusion))
        state["requests"].append(request)
        state["orders"].append(result.order)
        if len(buffer) == args.batch_size:
            learner.learn_many(buffer)
            buffer, state["requests"], state["orders"] = [], [], []
        if i % args.every == 0:
            served = np.array([eval_sim.expected_satisfaction(r, learner.rerank(context_request(r)).order)
                               for r in eval_reqs])
            choice, corr = reward_model_quality(learner, eval_reqs, keys_e, E, grid, best)
            curve.append({"interactions": i, "rphi_choice": choice, "rank_corr": corr,
                          "gain": float(served.mean() / base - 1)})
            if not args.json:
                print(f"{i:>7} rphi_choice {choice:+.4f} rank_corr {corr:.3f} gain {curve[-1]['gain']:+.4f}",
                      flush=True)
    return {"seed": args.seed, "reward": args.reward, "config": config, "best_static": grid[best],
            "oracle_headroom": float(oracle.mean() / base - 1), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reward", choices=("pooled", "contextual", "cascade", "exact"),
                        default="cascade")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interactions", type=int, default=6000)
    parser.add_argument("--every", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-requests", type=int, default=400)
    parser.add_argument("--grid-requests", type=int, default=600)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="DRPO setting KEY=JSON")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"oracle headroom {result['oracle_headroom']:+.4f} (seed {args.seed}, {args.eval_requests} requests)")


if __name__ == "__main__":
    main()
