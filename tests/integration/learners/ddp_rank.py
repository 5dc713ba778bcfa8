"""One rank of the data-parallel tests (run as a script by test_data_parallel.py): learn, save state.

argv: rank world port model out_dir [idle]. Rank r learns examples[r::world] of each step (one rank:
the union in rank order; ``idle``:
rank 1 has no data in step 0 and learns a zero-weight stand-in); the state goes to
``out_dir/rank<r>.safetensors`` (tensors only: no pickle crosses the process boundary).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from learners.distributed.group import init_group, leave_group  # noqa: E402
from learners.distributed.sync import attach  # noqa: E402
from learners.policy.batch import from_examples  # noqa: E402
from learners.registry import build_learner  # noqa: E402
from simulator.examples import simulated_examples  # noqa: E402

CONFIGS = {"umnn": {"sc_weight": 0.0, "steps": 8, "context_hidden": [16, 16], "integrand_hidden": [8, 8]},
           "ldro": {"n_features": 300, "hidden": 16}, "drpo": {"n_features": 300}}


def main() -> None:
    rank, world, port, model, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    idle = len(sys.argv) > 6
    torch.set_num_threads(1)
    examples = simulated_examples(32, seed=8, max_candidates=6, with_features=True)
    steps = [examples[:16], examples[16:]]
    learner = build_learner(model, **CONFIGS[model])
    if world > 1:
        init_group(torch.device("cpu"), rank, world, "127.0.0.1", port, timeout_s=60)
        attach(learner)
    for k, batch in enumerate(steps):
        # rank r's part is batch[r::world]; one process learns the union in rank order
        mine = batch[rank::world] if world > 1 else batch[0::2] + batch[1::2]
        if idle and rank == 1 and k == 0:
            learner.sync.idle = True  # no data: a zero-weight step on a stand-in batch
            learner.learn_many(batch[:1])
            learner.sync.idle = False
        else:
            learner.learn_many(mine)
    tensors = dict(learner.state_dict().tensors)
    if model == "ldro":  # what the policy computes: its PL log-softmax on a probe batch (shift-invariant)
        lists = from_examples(examples[:8], 300)
        tensors["probe.student_logp"] = torch.log_softmax(learner.scores_for(lists).masked_fill(~lists.mask, -1e9), -1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"rank{rank}.safetensors"))
    if world > 1:
        leave_group()


if __name__ == "__main__":
    main()
