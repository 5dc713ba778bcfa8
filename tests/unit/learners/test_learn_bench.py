"""``bench/learn_bench.py --json`` at a tiny size: the issue's contract keys, the decode workers used.

The bench asserts inside that every path applied every record (and that the decode pool did not
break), so a learn path that drops records, or workers that fall back, fail here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_the_learn_bench_prints_the_contract_keys_with_the_decode_workers():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "learn_bench.py"), "--json", "--lists", "8",
                          "--steps", "1", "--reps", "1", "--learn-steps", "2", "--models", "ldro,umnn"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert doc["lists"] == 8 and doc["items"] == 50 and doc["features"] == 300
    ldro, umnn = doc["ldro"], doc["umnn"]
    for model in (ldro, umnn):
        assert model["learn_many_to_plain"] == pytest.approx(model["plain_s_per_batch"] / model["learn_s_per_batch"])
        assert model["learn_many_to_plain_in_process"] > 0 and model["update_to_plain"] > 0
    assert ldro["decode_workers"] == 1 and ldro["learn_batches"] == 2
    assert ldro["learn_records_decoded_by_workers"] == 8 * 2  # every record of every measurement
    assert umnn["decode_workers"] == 0 and umnn["learn_records_decoded_by_workers"] == 0  # no worker form
