"""The calibration benchmark's figure (``--plot PATH.png``): one PNG, three panels.

1. Reliability diagram of every method: mean prediction against observed rate over 15
   equal-mass bins of that method's predictions (equal-width bins would put almost every
   click prediction in the first one), on the last seed's stream.
2. Field-level ECE per field and method, bars with the bootstrap 95 % intervals as error bars
   (:mod:`evaluation.bootstrap`; against the truth for the simulator, else against the labels).
3. Per user group: mean prediction minus mean truth (simulator) or mean label, per method: the
   signed bias that a context-free calibrator cannot remove.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.figures import save_figure
from learners.calibration.benchmark import BenchmarkResult

GROUP_FIELD = "user_group"


def equal_mass_curve(y: np.ndarray, p: np.ndarray, bins: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Mean prediction and mean label per bin of about ``len(p) / bins`` rows (sorted by ``p``)."""
    order = np.argsort(p, kind="stable")
    chunks = [c for c in np.array_split(order, bins) if c.size]
    return np.array([p[c].mean() for c in chunks]), np.array([y[c].mean() for c in chunks])


def plot_benchmark(result: BenchmarkResult, path: str | Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    task = result.task
    truth = task.p_true is not None
    target = task.p_true if truth else task.labels
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    ax = axes[0]
    top = 0.0
    for method, p in result.predictions.items():
        mean_p, mean_y = equal_mass_curve(task.labels, p)
        ax.plot(mean_p, mean_y, marker="o", markersize=3, label=f"{method} (ECE {result.summaries[method]['ece'].value:.4f})")
        top = max(top, float(mean_p.max()), float(mean_y.max()))
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="perfect")
    ax.set(xlabel="mean prediction", ylabel="observed rate", title=f"Reliability ({result.data}, equal-mass bins)")
    ax.legend(fontsize=7)

    ax = axes[1]
    prefix = "field_ece_true" if truth else "field_ece"
    fields = list(task.fields)
    methods = list(result.summaries)
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        intervals = [result.summaries[method][f"{prefix}.{f}"] for f in fields]
        values = np.array([i.value for i in intervals])
        err = np.array([[i.value - i.lo for i in intervals], [i.hi - i.value for i in intervals]]).clip(0)
        ax.bar(np.arange(len(fields)) + j * width, values, width, yerr=err, capsize=2, label=method)
    ax.set_xticks(np.arange(len(fields)) + 0.4 - width / 2, fields)
    ax.set(ylabel=prefix.replace("_", " ") + " (95% CI)", title="Field-level ECE per field")
    ax.legend(fontsize=7)

    ax = axes[2]
    if GROUP_FIELD in task.fields:
        groups = np.unique(task.fields[GROUP_FIELD])
        for j, method in enumerate(methods):
            p = result.predictions[method]
            gaps = [float(p[task.fields[GROUP_FIELD] == g].mean() - target[task.fields[GROUP_FIELD] == g].mean())
                    for g in groups]
            ax.bar(np.arange(len(groups)) + j * width, gaps, width, label=method)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=30)
        ax.axhline(0.0, color="k", linewidth=0.8)
        ax.set(ylabel="mean prediction - mean " + ("truth" if truth else "label"),
               title="Signed bias per user group")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
