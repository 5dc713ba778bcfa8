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
    return {k: v for k, v in state.items() if not k.startswith("rng.") and v.is_floating_point()}


def test_partitions_are_split_disjointly_and_cover_every_partition():
    parts = [owned_partitions(8, r, 3) for r in range(3)]
    assert sorted(p for ps in parts for p in ps) == list(range(8))
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5]]
    with pytest.raises(ValueError):
        owned_partitions(4, 2, 2)


def test_two_ranks_on_a_and_b_take_the_one_rank_step_on_their_union(tmp_path):
    (one,) = _run(tmp_path / "one", "umnn", 1) if (tmp_path / "one").mkdir() is None else ()
    (tmp_path / "two").mkdir()
    a, b = _run(tmp_path / "two", "umnn", 2)
    assert set(a) == set(one)
    for name, value in _weights(one).items():
        assert torch.equal(a[name], b[name]), f"replicas differ at {name}"
        assert torch.allclose(a[name], value, rtol=1e-5, atol=1e-6), f"{name}: 2 ranks != 1 rank on the union"


def test_an_idle_rank_takes_a_zero_weight_step_and_the_ldro_replicas_stay_identical(tmp_path):
    a, b = _run(tmp_path, "ldro", 2, idle=True)
    moved = [k for k, v in _weights(a).items() if "optim" not in k]
    assert moved and all(torch.equal(a[k], b[k]) for k in moved)
