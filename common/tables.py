"""Plain-text tables for the CLI's human output, rendered by rich.

One renderer for every table the commands print (the evaluations' method x metric tables),
so they line up the same way; ``--json`` is the machine-readable form of each. The console
is wide and colourless on purpose: output piped to a file or a test is never wrapped,
truncated or full of escape codes.
"""

from __future__ import annotations

from io import StringIO
from typing import Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def render_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``columns`` (the first left-aligned, the rest right-aligned) over ``rows`` of preformatted cells."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    out = StringIO()
    Console(file=out, width=1000, color_system=None, force_terminal=False, soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())
