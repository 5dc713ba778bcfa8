"""``--long``: CI's short forms by default, the long forms on request (tests/long_runs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]

SAMPLE = '''
import pytest
from long_runs import long_tests

SIZE = 180 if long_tests() else 75

@pytest.mark.long
def test_only_long():
    pass

def test_both_forms():
    print(f"SIZE={SIZE}")
'''


def run_sample(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> str:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "STREAMRANK_LONG_TESTS"}
    env["PYTHONPATH"] = str(TESTS)
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "long_runs", "-p", "no:cacheprovider", "-rs", "-s",
                           "-q", str(tmp_path / "test_sample.py"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_long_form_is_skipped_by_default_with_its_reason(tmp_path):
    out = run_sample(tmp_path)
    assert "1 passed, 1 skipped" in out
    assert "long form: run with --long" in out
    assert "SIZE=75" in out


def test_long_runs_both_and_picks_the_long_size(tmp_path):
    out = run_sample(tmp_path, "--long")
    assert "2 passed" in out and "skipped" not in out
    assert "SIZE=180" in out


def test_the_environment_variable_is_the_same_switch(tmp_path):
    out = run_sample(tmp_path, env_extra={"STREAMRANK_LONG_TESTS": "1"})
    assert "2 passed" in out and "SIZE=180" in out


def test_the_readme_command_passes_the_flag_to_pytest():
    """``PYTEST_ARGS=--long make test`` (README, "Tests"): make hands ``--long`` to the suite's pytest."""
    repo = TESTS.parent
    assert "PYTEST_ARGS=--long make test" in (repo / "README.md").read_text()
    done = subprocess.run(["make", "-n", "test"], cwd=repo, env={**os.environ, "PYTEST_ARGS": "--long"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert any("-m pytest" in line and line.rstrip().endswith("--long") for line in done.stdout.splitlines()), done.stdout
