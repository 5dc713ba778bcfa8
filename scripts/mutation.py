"""Mutation testing of the core modules with mutmut (``make mutation``): killed, survived, equivalent.

Why mutmut 3 and not cosmic-ray: mutmut compiles every mutant of a file into one copy behind a
trampoline and forks a pytest process per mutant that runs only the tests that reach the
mutated function (it records which tests call which function in a first, clean run); cosmic-ray
starts the test command from scratch for each mutant, paying the interpreter, torch and
pytest start-up (~3 s here) every time. On ``streams/join.py`` mutmut ran ~11 mutants per
second on 2 cores.

What it does:

1. copies the tracked files (as they are in the working tree) to ``out/mutation/work``, where
   mutmut writes its ``mutants/`` tree (the copy is kept; mutmut 3.3.1 was measured to re-test
   every mutant on the next run anyway, so a run is never incremental: ~16 minutes on 2 cores);
2. writes ``[tool.mutmut]`` into the copy's ``pyproject.toml``: every package is copied, only
   :data:`CORE` is mutated, and the core's unit tests (:data:`TESTS`) are the tests it may run;
3. runs ``mutmut run`` in-process, with a shim for pytest 9 (mutmut 3.3.1 reads
   ``item._nodeid``, which pytest 9 renamed; newer mutmut releases need click >= 8.4.2,
   which faust-streaming 0.15.3 does not allow) and a tighter timeout (:data:`TIMEOUT_FACTOR`);
4. writes ``out/mutation/summary.json`` (``{"modules": {PATH: {killed, survived, equivalent,
   total, ...}}}``; ``killed`` includes the timeouts, ``other`` counts mutants no test reached) and ``out/mutation/report.md`` with each survivor's diff.

Equivalent mutants (a mutation that cannot change behaviour) are listed, each with its
reason, in ``tests/mutation_equivalent.toml``; they count as ``equivalent``, not ``survived``.

    .venv/bin/python scripts/mutation.py [--only PATH ...] [--tests DIR ...] [--out DIR] [--max-children N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The modules whose logic is what the project is: mutated, and held to >= 90 % killed.
CORE = (
    "streams/join.py",
    "streams/rewards.py",
    "streams/labeling.py",
    "streams/records.py",
    "streams/dead_letter.py",
    "contracts/events.py",
    "contracts/snapshot.py",
    "learners/policy/plackett_luce.py",
    "learners/policy/advantages.py",
    "learners/ranking/objective.py",
    "learners/fusion/objective.py",
    "learners/calibration/umnn.py",
    "learners/calibration/scloss.py",
    "learners/calibration/replay.py",
    "evaluation/ope.py",
    "serving/gate.py",
    "serving/components.py",
)
#: The tests mutants run against: the unit tests of the core modules (in-process, no broker;
#: ~25 s in all). The whole unit suite was tried first: a function like Plackett-Luce's step
#: log-probs is reached by every learner and evaluation test, and a mutant that slows it down
#: then waits for dozens of them (measured: 100 mutants in 400 s, most of them timeouts).
TESTS = (
    "tests/unit/streams",
    "tests/unit/foundation/test_events.py",
    "tests/unit/foundation/test_events_contract.py",
    "tests/unit/foundation/test_fast_decode.py",
    "tests/unit/feature_store/test_snapshot_blob.py",
    "tests/unit/feature_store/test_snapshot_verification.py",
    "tests/unit/learners/policy/test_advantages.py",
    "tests/unit/learners/policy/test_drpo_parts.py",
    "tests/unit/learners/policy/test_ldro_parts.py",
    "tests/unit/learners/policy/test_plackett_luce.py",
    "tests/unit/learners/policy/test_plackett_luce_properties.py",
    "tests/unit/learners/policy/test_tail_logsumexp.py",
    "tests/unit/learners/policy/test_drpo_objective_cases.py",
    "tests/unit/learners/policy/test_ranking_objective_cases.py",
    "tests/unit/learners/test_calibration_umnn.py",
    "tests/unit/learners/test_calibration_quadrature.py",
    "tests/unit/learners/test_calibration_learners.py",
    "tests/unit/learners/test_umnn_properties.py",
    "tests/unit/learners/test_scloss_properties.py",
    "tests/unit/learners/test_scloss_adaptive_bins.py",
    "tests/unit/learners/test_calibration_replay.py",
    "tests/unit/serving/test_ope.py",
    "tests/unit/serving/test_ope_estimators.py",
    "tests/unit/serving/test_gate_logic.py",
    "tests/unit/serving/test_gate_decisions.py",
    "tests/unit/serving/test_gate_batched_scoring.py",
    "tests/unit/serving/test_gate_item_features.py",
    "tests/unit/serving/test_rerank_api.py",
    "tests/unit/serving/test_components.py",
    "tests/unit/serving/test_components_batched.py",
    "tests/unit/serving/test_scoring_batch.py",
)
PACKAGES = ("common", "contracts", "streams", "simulator", "evaluation", "feature_store", "learners", "serving",
            "loop", "streamrank")
EQUIVALENT = REPO / "tests" / "mutation_equivalent.toml"


def copy_tree(work: Path) -> None:
    """The working tree's files (tracked, and untracked ones git does not ignore: a new test
    counts before it is committed) into ``work``; unchanged files keep their mtime."""
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if not name or not (REPO / name).is_file():
            continue
        src, dst = REPO / name, work / name
        if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def mutmut_config(core: tuple[str, ...], tests: tuple[str, ...]) -> str:
    """The ``[tool.mutmut]`` table: mutate ``core`` only, copy everything else as it is."""
    dirs = sorted({path.split("/")[0] for path in core})
    skip = sorted(str(p.relative_to(REPO)) for d in dirs for p in (REPO / d).rglob("*.py")
                  if str(p.relative_to(REPO)) not in core)
    also = [p for p in PACKAGES if p not in dirs] + ["bench", "scripts", "README.md", "BENCHMARKS.md", "docs"]
    return ("\n[tool.mutmut]\n"
            f"paths_to_mutate = {json.dumps([d + '/' for d in dirs])}\n"
            f"do_not_mutate = {json.dumps(skip)}\n"
            f"tests_dir = {json.dumps(list(tests))}\n"
            f"also_copy = {json.dumps(also)}\n")


#: A mutant whose tests take this many times their clean CPU time (plus this many seconds) is a
#: timeout. mutmut 3.3.1 allows 30x: on the core modules each of the ~90 timeouts (a mutated
#: loop bound, a sampler that never finishes) then cost about a minute of CPU, half the run.
TIMEOUT_FACTOR = 5


def limit_cpu_of_each_mutant() -> None:
    """Scale the CPU limit mutmut sets in each mutant's child process to :data:`TIMEOUT_FACTOR`."""
    import resource  # noqa: PLC0415

    original = resource.setrlimit

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        if which == resource.RLIMIT_CPU:
            used = time.process_time()
            soft = math.ceil(used + (limits[0] - used) * TIMEOUT_FACTOR / 30)  # mutmut: (tests + 1 s) * 30
            limits = (soft, soft + 1)
        original(which, limits)

    resource.setrlimit = setrlimit


def run_mutmut(work: Path, max_children: int) -> None:
    """``mutmut run`` in ``work``, in this process (so the pytest 9 shim applies to it and its forks)."""
    import _pytest.nodes  # noqa: PLC0415

    if not hasattr(_pytest.nodes.Node, "_nodeid"):
        _pytest.nodes.Node._nodeid = property(lambda self: self.nodeid)  # noqa: SLF001 - see the module docstring
    limit_cpu_of_each_mutant()
    from mutmut.__main__ import cli  # noqa: PLC0415

    os.chdir(work)
    sys.argv = ["mutmut", "run", "--max-children", str(max_children)]
    try:
        cli()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def read_results(work: Path, core: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Mutant name -> status per core module, from mutmut's ``.meta`` files."""
    from mutmut.__main__ import status_by_exit_code  # noqa: PLC0415

    out: dict[str, dict[str, str]] = {}
    for path in core:
        meta = work / "mutants" / (path + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        out[path] = {name: status_by_exit_code.get(code, f"exit {code}") if code is not None else "not checked"
                     for name, code in codes.items()}
    return out


def load_equivalent() -> dict[str, str]:
    """Mutant name -> why it cannot change behaviour."""
    if not EQUIVALENT.exists():
        return {}
    return {name: entry["reason"] for name, entry in tomllib.loads(EQUIVALENT.read_text()).get("mutant", {}).items()}


def summarise(results: dict[str, dict[str, str]], equivalent: dict[str, str]) -> dict:
    """The ``summary.json`` document: per module killed / survived / equivalent / total and the kill rate."""
    modules = {}
    for path, statuses in results.items():
        counts = Counter("equivalent" if s == "survived" and name in equivalent else s for name, s in statuses.items())
        # a mutant that makes its tests run past the timeout was detected too (as in Stryker and PIT)
        timeouts = counts.pop("timeout", 0)
        killed = counts.pop("killed", 0) + timeouts
        survived, eq = counts.pop("survived", 0), counts.pop("equivalent", 0)
        total = killed + survived + eq + sum(counts.values())
        scored = total - eq
        modules[path] = {"killed": killed, "survived": survived, "equivalent": eq, "total": total,
                         "timeouts": timeouts, "other": dict(counts), "kill_rate": killed / scored if scored else None}
    return {"modules": modules}


def survivor_diffs(work: Path, results: dict[str, dict[str, str]], equivalent: dict[str, str]) -> list[str]:
    """A Markdown section per module with the diff of each survivor (and each equivalent, with its reason).

    Each mutated file is parsed once (``mutmut show`` parses it again for every mutant: minutes
    for the ~500 survivors of the core)."""
    from difflib import unified_diff  # noqa: PLC0415

    import libcst as cst  # noqa: PLC0415
    from mutmut.__main__ import read_mutant_function, read_original_function  # noqa: PLC0415

    lines = []
    for path, statuses in results.items():
        left = sorted(name for name, s in statuses.items() if s == "survived")
        if not left:
            continue
        module = cst.parse_module((work / "mutants" / path).read_text())
        lines.append(f"\n## {path}\n")
        for name in left:
            before = cst.Module([read_original_function(module, name)]).code.strip().split("\n")
            after = cst.Module([read_mutant_function(module, name)]).code.strip().split("\n")
            diff = "\n".join(unified_diff(before, after, fromfile=path, tofile=path, lineterm=""))
            why = equivalent.get(name)
            lines.append(f"### {name}" + (f" (equivalent: {why})" if why else "") + "\n")
            lines.append("```diff\n" + diff.rstrip() + "\n```\n")
    return lines


def write_report(out: Path, summary: dict, diffs: list[str]) -> None:
    rows = ["| module | killed | survived | equivalent | total | kill rate |", "|---|---|---|---|---|---|"]
    for path, m in summary["modules"].items():
        rate = "-" if m["kill_rate"] is None else f"{m['kill_rate']:.1%}"
        rows.append(f"| `{path}` | {m['killed']} | {m['survived']} | {m['equivalent']} | {m['total']} | {rate} |")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text("# Mutation testing\n\n" + "\n".join(rows) + "\n" + "\n".join(diffs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="PATH", help="mutate only these core modules")
    parser.add_argument("--tests", nargs="+", metavar="DIR", default=list(TESTS),
                        help="the tests mutants run against (default: TESTS, the core modules' unit tests)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "mutation", help="summary, report and work copy")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    out = args.out.resolve()
    work = out / "work"
    core = tuple(args.only or CORE)
    unknown = [p for p in core if p not in CORE]
    if unknown:
        parser.error(f"not core modules: {', '.join(unknown)} (core: {', '.join(CORE)})")
    work.mkdir(parents=True, exist_ok=True)
    copy_tree(work)
    config = mutmut_config(core, tuple(args.tests))
    (work / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + config)
    last = work / ".mutation-config"
    if not last.exists() or last.read_text() != config:
        # mutmut keeps its map of which tests reach which function for the next run; it is only
        # valid for the same mutated set and tests (measured: with a changed set every new mutant
        # was reported "no tests"), so a new configuration starts over
        shutil.rmtree(work / "mutants", ignore_errors=True)
        last.write_text(config)
    os.environ.setdefault("STREAMRANK_DATA", str(REPO.parent / "shared" / "data"))  # the copy is not beside it
    # mutmut forks a child per mutant from a process that has run torch: a forked OpenMP pool
    # can hang (measured: ~90 "timeouts" of mutants that raise at once, e.g. a mask of None)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    run_mutmut(work, args.max_children)
    results = read_results(work, core)
    equivalent = load_equivalent()
    summary = summarise(results, equivalent)
    write_report(out, summary, survivor_diffs(work, results, equivalent))
    for path, m in summary["modules"].items():
        rate = "-" if m["kill_rate"] is None else f"{m['kill_rate']:.1%}"
        print(f"{path:<40} killed {m['killed']:>4}  survived {m['survived']:>4}  equivalent {m['equivalent']:>3}  "
              f"total {m['total']:>4}  kill rate {rate}")
    print(f"summary: {out / 'summary.json'}; survivors' diffs: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
