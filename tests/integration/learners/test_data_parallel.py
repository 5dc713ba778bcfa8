"""Data-parallel learners on torch.distributed (gloo, 2 real processes): the union-batch promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learners.distributed.group import owned_partitions
from learners.runtime.worker import free_port

pytestmark = pytest.mark.integration
RANK = Path(__file__).with_name("ddp_rank.py")


def _run(tmp: Path, model: str, world: int, idle: bool = False) -> list[dict[str, torch.Tensor]]:
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(RANK), str(r), str(world), str(port), model, str(tmp),
                               *(["idle"] if idle else [])], stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    return [load_file(str(tmp / f"rank{r}.safetensors")) for r in range(world)]


def _weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_partitions_are_split_disjointly_and_cover_every_partition():
    parts = [owned_partitions(8, r, 3) for r in range(3)]
    assert sorted(p for ps in parts for p in ps) == list(range(8))
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5]]
    with pytest.raises(ValueError):
        owned_partitions(4, 2, 2)


@pytest.mark.parametrize("model", ["umnn", "ldro", "drpo"])
def test_two_ranks_on_a_and_b_take_the_one_rank_step_on_their_union(tmp_path, model):
    """Weights, Adam moments and (LDRO/DRPO) the sampling RNG after two steps, within float tolerance: the
    union's sums are added in another order (the all-reduce adds per-rank partial sums), and Adam divides
    near-zero gradients by their own size, so a 1e-7 difference can move a weight by ~1e-6. The tolerance
    (1e-5 absolute) is under 1 % of one Adam step at these learning rates (1e-3 to 1e-2); a wrong weighting
    or other samples move weights by whole steps.

    LDRO's student and teacher are softmaxes over a list (Plackett-Luce, pointer): invariant to adding
    a constant to every score of a list, so their biases (and weights of features constant within a
    list) get float-noise gradients that Adam turns into +-lr steps either way. For them the test
    compares what the policy computes (its log-softmax on a probe batch), and the weights of the
    reward model, which has no such direction. Attention's key bias (the middle third of
    ``in_proj_bias``) is invariant in the same way and is left out."""
    (tmp_path / "one").mkdir()
    (one,) = _run(tmp_path / "one", model, 1)
    (tmp_path / "two").mkdir()
    a, b = _run(tmp_path / "two", model, 2)
    assert set(a) == set(one)
    compared = {k: v for k, v in _weights(one).items()
                if model != "ldro" or k.startswith(("probe.", "reward_model.", "optim.reward_model."))}
    assert len(compared) > 4
    for name, value in compared.items():
        assert torch.equal(a[name], b[name]), f"replicas differ at {name}"
        if name.endswith("in_proj_bias"):
            third = value.shape[0] // 3
            keep = torch.ones_like(value, dtype=torch.bool)
            keep[third:2 * third] = False
            value, a = value[keep], {**a, name: a[name][keep]}
        assert torch.allclose(a[name], value, rtol=1e-4, atol=1e-5), f"{name}: 2 ranks != 1 rank on the union"
    learn_rng = [k for k in one if "learn" in k and not one[k].is_floating_point()]
    assert all(torch.equal(a[k], one[k]) and torch.equal(b[k], one[k]) for k in learn_rng)


def test_an_idle_rank_takes_a_zero_weight_step_and_the_ldro_replicas_stay_identical(tmp_path):
    a, b = _run(tmp_path, "ldro", 2, idle=True)
    moved = [k for k, v in _weights(a).items() if "optim" not in k]
    assert moved and all(torch.equal(a[k], b[k]) for k in moved)
