"""bench/compute_floor.py: which CPU a serving bench ran on, and what the served models alone cost there."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from common.paths import REPO_ROOT

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma

processor\t: 1
model name\t: some other name
flags\t\t: fpu amx_tile
"""


@pytest.fixture(scope="module")
def floor_module():
    spec = importlib.util.spec_from_file_location("compute_floor", REPO_ROOT / "bench" / "compute_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_machine_info_names_the_first_cpu_and_the_flags_that_pick_kernels(floor_module):
    info = floor_module.machine_info(CPUINFO)
    assert info["cpu"] == "AMD EPYC 9R14 96-Core Processor"
    assert info["flags"] == ["avx2", "avx512f", "avx512_bf16"]  # the first CPU's line; amx_tile is the second's
    assert info["logical_cpus"] >= 1 and len(info["load_average"]) == 3


def test_machine_info_of_a_machine_without_cpuinfo_says_nothing_rather_than_guessing(floor_module):
    info = floor_module.machine_info("")
    assert info["cpu"] is None and info["flags"] == []


def test_model_floor_times_one_request_and_a_batch_and_restores_the_thread_count(floor_module):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not the floor's 1, so a floor that forgot to restore it shows
    try:
        out = floor_module.model_floor(candidates=5, calls=2, batch=2, rounds=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert out["candidates"] == 5 and out["batch"] == 2
    assert out["one_request_ms"] > 0 and out["batched_ms_per_request"] > 0


def test_model_floor_refuses_sizes_it_cannot_time(floor_module):
    with pytest.raises(ValueError, match="must be >= 1"):
        floor_module.model_floor(candidates=0)
