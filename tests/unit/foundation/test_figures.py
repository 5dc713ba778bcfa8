"""Plots land where the command says, even in a folder that does not exist yet (a fresh clone has no out/)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.figures import save_figure  # noqa: E402


def test_save_figure_creates_the_folder_and_writes_a_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    target = tmp_path / "out" / "nested" / "drift.png"
    assert save_figure(fig, target) == target
    plt.close(fig)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
