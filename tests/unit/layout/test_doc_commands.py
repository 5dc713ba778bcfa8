"""Every `streamrank` command the README and docs show names commands and options the CLI has.

The command lines are taken from the Markdown's code blocks as written (continuation lines
joined, comments and shell operators cut). A synopsis (``up | status | down``,
``[--speed 60 | --max-speed]``, ``MODEL``) is checked word by word: each alternative must be a
subcommand and each ``--option`` an option of the command it follows. A concrete line (no
placeholders) must also parse exactly as click parses it, so a missing required option or a
wrong value type is caught too. docs/benchmarks-history.md is a record of past runs with the
commands of their day and is left out. The issue's long form (running each service block and
probing it) is tests/integration/test_readme_path.py for the CLI path.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from common.paths import REPO_ROOT
from streamrank.cli.main import _register_stage_commands, cli

DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md",
        *sorted(p for p in (REPO_ROOT / "docs").glob("*.md") if p.name != "benchmarks-history.md")]
COMMAND = re.compile(r"(?:^|[\s;&(])(?:\.venv/bin/)?streamrank\s+(?P<args>.*)$")
PLACEHOLDER = re.compile(r"[<>|\[\]]|^[A-Z][A-Z_]*$|\.\.\.")
#: where a documented line stops being a streamrank command: a comment, a shell operator, a pipe into a tool
CUT = re.compile(r"\s+#\s.*$|\s+&&\s.*$|\s*&\s*$|\s+\|\s+(?:head|tail|jq|grep|tee|less|python3?)\b.*$")


INLINE = re.compile(r"`((?:\.venv/bin/)?streamrank [^`]+)`")


def argv_of(text: str) -> list[str] | None:
    """The arguments after ``streamrank`` in one command line, or None when it is not one."""
    match = COMMAND.search(text)
    if not match:
        return None
    args, previous = match["args"], None
    while args != previous:  # "cmd &   # comment": the comment goes first, then the "&"
        previous, args = args, CUT.sub("", args)
    try:
        return shlex.split(args) or None
    except ValueError:
        return None


def code_block_commands(path: Path) -> list[tuple[str, int, list[str]]]:
    """(file, line, argv after `streamrank`) for each command line in ``path``'s fenced code blocks
    and inline code spans (the commands BENCHMARKS.md gives with its figures)."""
    out, in_block, pending, start = [], False, "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if raw.lstrip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            for span in INLINE.findall(raw):
                argv = argv_of(span) or []
                if len(argv) > 1 or argv[:1] in (["demo"], ["serve"], ["worker"], ["up"], ["down"]):
                    out.append((path.name, number, argv))
            continue
        line = (pending + " " + raw.strip()) if pending else raw.strip()
        if line.endswith("\\"):
            pending, start = line[:-1], start if pending else number
            continue
        pending = ""
        argv = None if line.lstrip().startswith("#") else argv_of(line)
        if argv:
            out.append((path.name, start or number, argv))
        start = 0
    return out


def all_commands() -> list[tuple[str, int, list[str]]]:
    return [c for path in DOCS for c in code_block_commands(path)]


@pytest.fixture(scope="module")
def root() -> click.Group:
    if "serve" not in cli.commands:
        _register_stage_commands()
    return cli


def check_synopsis(root: click.Group, argv: list[str]) -> list[str]:
    """Problems of one command line: unknown subcommands and options (placeholders allowed)."""
    problems: list[str] = []
    commands: list[click.Command] = [root]
    i = 0
    while i < len(argv) and all(isinstance(c, click.Group) for c in commands):
        word = argv[i]
        if word.startswith("-"):
            break
        names = [w for w in word.split("|") if w]
        found = []
        for group in commands:
            for name in names:
                sub = group.get_command(click.Context(group), name)
                if sub is None:
                    problems.append(f"no command {name!r} under {group.name!r}")
                else:
                    found.append(sub)
        if not found:
            return problems
        commands = found
        i += 1
    options = {opt for c in commands for p in c.params for opt in (*p.opts, *p.secondary_opts)}
    for token in argv[i:]:
        for part in token.split("|"):
            flag = part.strip("[]").split("=", 1)[0]
            if flag.startswith("--") and flag not in options:
                problems.append(f"{'/'.join(c.name for c in commands)} has no option {flag}")
    return problems


def test_the_docs_show_streamrank_commands_at_all():
    files = {name for name, _, _ in all_commands()}
    assert {"README.md", "BENCHMARKS.md"} <= files and len(all_commands()) > 30


@pytest.mark.parametrize("where,argv", [(f"{f}:{n}", a) for f, n, a in all_commands()],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_each_documented_command_exists_with_the_options_it_shows(root, where, argv):
    assert check_synopsis(root, argv) == [], f"{where}: streamrank {' '.join(argv)}"
    if any(PLACEHOLDER.search(token) for token in argv):
        return
    parse(root, argv)  # a concrete line parses as the CLI parses it (required options, value types)


def parse(root: click.Group, argv: list[str]) -> click.Command:
    """Parse ``argv`` down to its leaf command as click would, without running anything."""
    command: click.Command = root
    context = root.make_context("streamrank", list(argv))
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(context, [*context._protected_args, *context.args])
        context = command.make_context(name, rest, parent=context)
    return command


def test_the_checker_catches_a_wrong_option_a_wrong_command_and_a_missing_required_option(root, tmp_path):
    assert check_synopsis(root, ["learn", "--model", "ldro", "--publish"]) == []
    assert check_synopsis(root, ["learn", "--loglevel", "info"]) == ["learn has no option --loglevel"]
    assert check_synopsis(root, ["snapshots", "list|undo", "MODEL"]) == ["no command 'undo' under 'snapshots'"]
    assert parse(root, ["simulate", "--server", "http://x"]).name == "simulate"
    with pytest.raises(click.UsageError):
        parse(root, ["simulate"])  # --server is required
    doc = tmp_path / "doc.md"
    doc.write_text("see `streamrank worker`\n```bash\n.venv/bin/streamrank serve --port 1 &   # a comment\n"
                   ".venv/bin/streamrank eval ldro --data letor:x \\\n    --json | jq .\n```\n.venv/bin/streamrank no\n")
    assert code_block_commands(doc) == [("doc.md", 1, ["worker"]), ("doc.md", 3, ["serve", "--port", "1"]),
                                        ("doc.md", 4, ["eval", "ldro", "--data", "letor:x", "--json"])]
