"""Where the project's files are: the repository root and the real public data folder.

The data lives beside the checkout (``../shared/data``, read-only; see its README) and is never
copied into the repo. ``STREAMRANK_DATA`` points elsewhere (a mounted volume in a container).
Every default path to OBD, LETOR or KuaiRand is built here, so one variable moves them all.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The real data folder: ``$STREAMRANK_DATA`` when set, else ``<repo>/../shared/data``."""
    override = os.environ.get("STREAMRANK_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """A path inside the data folder, e.g. ``data_path("obd", "random", "all", "all.csv")``."""
    return shared_data().joinpath(*parts)
