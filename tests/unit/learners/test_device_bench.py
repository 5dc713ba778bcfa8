"""The prepared GPU check (issue 16) at a tiny size on the CPU, as CI can run it.

``bench/device_bench.py`` times each learner on a device against the CPU and checks that both took
the same updates (``max_abs_param_diff``); ``bench/device_check.sh`` is what a lent GPU machine runs;
``scripts/device_prepare.sh`` puts the data it needs where the device tool carries it. No test here
needs a GPU: ``DEVICE=cpu`` runs the same steps, and asking for CUDA without one must be refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support import SHARED_DATA

ROOT = Path(__file__).resolve().parents[3]
TINY = ["--lists", "8", "--steps", "1", "--reps", "1"]


def bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_the_device_bench_times_both_sides_and_finds_the_same_models():
    run = bench("bench/device_bench.py", "--device", "cpu", "--models", "ldro,umnn", *TINY, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert doc["device"] == "cpu" and doc["lists"] == 8 and doc["steps"] == 1
    for name in ("ldro", "umnn"):
        m = doc[name]
        assert m["device_speedup"] == pytest.approx(m["cpu_s_per_batch"] / m["device_s_per_batch"])
        assert m["lists_per_s_device"] == pytest.approx(8 / m["device_s_per_batch"])
        assert m["max_abs_param_diff"] == 0.0  # same seed, same updates, same device kind: bit-equal
    assert "grpo" not in doc


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: CUDA is not refused")
def test_asking_for_cuda_without_one_is_refused_naming_the_option():
    run = bench("bench/device_bench.py", "--device", "cuda", *TINY)
    assert run.returncode == 2 and "--device" in run.stderr and "no CUDA device" in run.stderr
    run = bench("bench/ddp_bench.py", "--ranks", "2", "--device", "cuda", "--steps", "1", "--lists", "8")
    assert run.returncode == 2 and "nccl needs one GPU per rank" in run.stderr


def test_unknown_models_are_refused():
    run = bench("bench/device_bench.py", "--device", "cpu", "--models", "ldro,xgboost", *TINY)
    assert run.returncode == 2 and "xgboost" in run.stderr


def test_the_prepared_check_writes_its_results(tmp_path):
    """``bench/device_check.sh`` as written, on the CPU and tiny: the files a GPU run brings back."""
    out = tmp_path / "out"
    run = subprocess.run(["bash", "bench/device_check.sh"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "OUT": str(out), "DEVICE": "cpu", "PYTHON": sys.executable,
                              "BENCH_ARGS": " ".join(TINY), "BIG_LISTS": "16",
                              "DDP_ARGS": "--steps 1 --lists 8 --reps 1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch" in (out / "machine.txt").read_text()
    every = json.loads((out / "device_bench.json").read_text())
    assert {"ldro", "grpo", "drpo", "umnn"} <= every.keys()
    big = json.loads((out / "device_bench_big.json").read_text())
    assert big["lists"] == 16 and {"ldro", "grpo"} <= big.keys() and "umnn" not in big
    ddp = json.loads((out / "ddp_bench.json").read_text())
    assert ddp["device"] == "cpu" and ddp["backend"] == "gloo" and ddp["speedup"] > 0
    assert ddp["independent_speedup"] > 0
    # each rank's collective seconds split by kind, adding up to its total (one all-gather for the
    # step's layout, the gradient and moments all-reduces, their waits)
    for total, kinds in zip(ddp["collective_s_per_rank"], ddp["collective_s_by_kind"]):
        assert {"all_gather", "all_reduce", "grads_wait", "moments_wait"} <= kinds.keys()
        assert all(v >= 0 for v in kinds.values()) and sum(kinds.values()) == pytest.approx(total)


def test_the_prepare_script_copies_the_data_it_carries(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    script = repo / "scripts" / "device_prepare.sh"
    script.write_text((ROOT / "scripts" / "device_prepare.sh").read_text())
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, cwd=repo,
                         env={**os.environ, "STREAMRANK_DATA": str(SHARED_DATA), "DEVICE_WHEELS": "0"})
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("letor/rank.train", "kuairand/user_features_pure.csv"):
        assert (repo / ".device" / "data" / name).read_bytes() == (SHARED_DATA / name).read_bytes()
    assert (repo / ".device" / "whl").is_dir()
