"""The layout's rules, checked on the source: no import cycle between top-level packages, the
bottom layers import no stage, nothing imports the CLI, and no module or function grows past
its size limit without a reason.

An AST walk over every ``import`` (module-level and inside functions alike: a lazy import is
still a dependency).
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("common", "contracts", "streams", "simulator", "evaluation", "feature_store", "learners", "serving",
            "loop", "streamrank")
#: What each bottom layer may import (besides itself).
ALLOWED = {"common": set(), "contracts": {"common"}}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
#: A longer function says why in its docstring with this phrase.
LONG_REASON = "Long because"


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages that ``path`` imports (absolute imports; relative ones stay inside)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        out.update(n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES)
    return out


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in _modules(package):
            graph[package].update(imported_packages(path) - {package})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of nodes (first == last), or None; depth-first search with colours."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if colour.get(node) is None and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one_and_only_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_imported_packages_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom serving.app import x\n\ndef f():\n    import learners.registry\n"
                      "    from . import sibling\n")
    assert imported_packages(module) == {"serving", "learners"}


def test_no_import_cycle_between_top_level_packages():
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_bottom_layers_import_no_stage(package):
    bad = {str(p.relative_to(REPO)): sorted(imported_packages(p) - ALLOWED[package] - {package})
           for p in _modules(package)}
    assert not {k: v for k, v in bad.items() if v}


def test_no_package_imports_the_cli():
    users = [str(p.relative_to(REPO)) for package in PACKAGES if package != "streamrank"
             for p in _modules(package) if "streamrank" in imported_packages(p)]
    assert users == []


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(REPO)): n for package in PACKAGES for p in _modules(package)
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_long_functions_say_why():
    unexplained = {}
    for package in PACKAGES:
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
                        unexplained[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = length
    assert unexplained == {}


def test_every_package_says_its_job():
    missing = [str(init.relative_to(REPO)) for package in PACKAGES for init in (REPO / package).rglob("__init__.py")
               if "repo" not in init.parts and not ast.get_docstring(ast.parse(init.read_text()))]
    assert missing == []


def readme_layout() -> list[str]:
    """The folders the README's "Layout" block names, in its order."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return [line.split()[0].rstrip("/") for line in block.splitlines() if line.strip()]


def test_the_readme_layout_names_every_tracked_top_level_folder_once():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    folders = {line.split("/", 1)[0] for line in tracked.splitlines() if "/" in line and not line.startswith(".")}
    named = readme_layout()
    assert len(named) == len(set(named))
    assert set(named) == folders


def test_every_package_docstring_names_only_modules_that_exist():
    """``:mod:`pkg.module``` references in the package docstrings point at real modules."""
    missing = []
    for package in PACKAGES:
        for init in (REPO / package).rglob("__init__.py"):
            for ref in re.findall(r":mod:`~?([\w.]+)`", ast.get_docstring(ast.parse(init.read_text())) or ""):
                path = REPO.joinpath(*ref.split("."))
                if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
                    missing.append(f"{init.relative_to(REPO)}: {ref}")
    assert missing == []
