"""Writing plots: every PNG the evaluations and benches write goes through :func:`save_figure`.

Why: the commands take ``--plot out/x.png``, and a fresh clone has no ``out/``; matplotlib does not
create folders, so a 10-minute evaluation died at its last step without printing its results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` (its folder created first); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
