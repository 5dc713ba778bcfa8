"""``streamrank eval fusion`` and ``streamrank eval drift``: the papers' claims on data that can show them.

* ``eval fusion``: DRPO on the context-dependent simulator (:mod:`simulator.contextual`): the
  oracle headroom over the best static fusion vector, then DRPO, the per-group static
  vectors and the no-dual ablation against it (:mod:`learners.policy.evaluation_fusion`).
* ``eval drift``: LDRO, GRPO, LDRO without distillation and the logged order on a stream whose
  click model shifts half-way: dip and recovery time (:mod:`learners.policy.evaluation_drift`).

``--quick`` is the CI-sized run (a few minutes on 2 cores); ``--json`` prints one object
(intervals as ``{value, ci95: [lo, hi]}``); ``--plot PNG`` writes the figure.
"""

from __future__ import annotations

import json

import click

from common.figures import save_figure
from common.tables import render_table
from streamrank.cli.params import DEFAULT_DATA, parse_sets

DEFAULT_LETOR = f"letor:{DEFAULT_DATA / 'letor' / 'rank.train'}"


def _interval(doc: dict) -> str:
    lo, hi = doc["ci95"]
    return f"{doc['value']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_fusion(results: dict, path: str) -> None:
    """Bars: each method's relative gain over the best static vector (95 % interval), overall and per group."""
    plt = _pyplot()
    methods = [m for m in results["methods"] if m != "best_static"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    gains = [results["methods"][m]["vs_best_static"] for m in methods]
    err = [[g["value"] - g["ci95"][0] for g in gains], [g["ci95"][1] - g["value"] for g in gains]]
    left.bar(methods, [100 * g["value"] for g in gains], yerr=[[100 * e for e in row] for row in err], capsize=4,
             color=[f"C{i}" for i in range(len(methods))])
    left.axhline(0, color="grey", lw=0.8)
    left.set_ylabel("satisfaction vs best static vector (%)")
    left.tick_params(axis="x", rotation=30)
    groups = list(results["methods"]["best_static"]["by_group"])
    width = 0.8 / (len(methods) + 1)
    for i, m in enumerate(["best_static", *methods]):
        by = results["methods"][m]["by_group"]
        right.bar([g + i * width for g in range(len(groups))], [by.get(k, 0.0) for k in groups], width, label=m)
    right.set_xticks([g + 0.4 for g in range(len(groups))], groups)
    right.set_ylabel("expected query satisfaction")
    right.legend(fontsize=7)
    fig.suptitle(f"eval fusion: {results['seeds']} seeds, 95 % hierarchical bootstrap")
    fig.tight_layout()
    save_figure(fig, path)


def plot_drift(curves: dict[str, list], shift_at: int, path: str) -> None:
    """NDCG@10 and reward lift over lists, mean over seeds per method, the shift marked."""
    import numpy as np  # noqa: PLC0415

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label in zip(axes, ("ndcg@10", "reward", "reward_lift"),
                              ("held-out NDCG@10", "list reward (window mean)", "reward / logged order's")):
        for i, (method, runs) in enumerate(curves.items()):
            steps = [s for s, _ in runs[0][key]]
            values = np.array([[v for _, v in run[key]] for run in runs])
            ax.plot(steps, values.mean(0), label=method, color=f"C{i}")
            if len(runs) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.15)
        ax.axvline(shift_at, color="grey", linestyle="--", label="click-model shift")
        ax.set_xlabel("lists served")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("eval drift: mean over seeds (band: min-max)")
    fig.tight_layout()
    save_figure(fig, path)


@click.command("fusion")
@click.option("--data", "data_spec", default=DEFAULT_LETOR, show_default=True, help="letor:TRAIN")
@click.option("--test", "test_spec", default=None, help="letor:TEST (default: seeded split of TRAIN)")
@click.option("--quick", is_flag=True, help="3 seeds, 3000 interactions, 1000 grid/evaluation requests")
@click.option("--seeds", default=None, type=int, help="[default: 5; --quick 3]")
@click.option("--interactions", default=None, type=int, help="simulated requests DRPO learns from [6000; --quick 3000]")
@click.option("--eval-requests", default=None, type=int, help="held-out requests [2000; --quick 1000]")
@click.option("--grid-requests", default=None, type=int, help="requests the static vectors are chosen on [2000; 1000]")
@click.option("--grid-steps", default=6, show_default=True, help="simplex grid resolution 1/steps")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--set", "sets", multiple=True, help="DRPO setting for every learned method, KEY=JSON (e.g. lr=0.01)")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False), help="bar chart PNG")
@click.option("--threads", default=1, show_default=True, help="torch threads (small nets: 1 avoids contention)")
@click.option("--json", "as_json", is_flag=True)
def eval_fusion(data_spec: str, test_spec: str | None, quick: bool, seeds: int | None, interactions: int | None,
                eval_requests: int | None, grid_requests: int | None, grid_steps: int, batch_size: int,
                sets: tuple[str, ...], plot_path: str | None, threads: int, as_json: bool) -> None:
    """Fusion with headroom: oracle per-context weights, DRPO, per-group static, no-dual vs the best static."""
    import torch  # noqa: PLC0415

    from learners.policy.evaluation import train_test  # noqa: PLC0415
    from learners.policy.evaluation_fusion import evaluate_fusion  # noqa: PLC0415

    torch.set_num_threads(threads)
    train, test = train_test(data_spec, test_spec)
    n_seeds = seeds or (3 if quick else 5)
    results = evaluate_fusion(train, test, seeds=tuple(range(n_seeds)),
                              interactions=interactions or (3000 if quick else 6000), batch_size=batch_size,
                              eval_requests=eval_requests or (1000 if quick else 2000),
                              grid_requests=grid_requests or (1000 if quick else 2000), grid_steps=grid_steps,
                              learner_config=parse_sets(sets), progress=not as_json)
    if plot_path:
        plot_fusion(results, plot_path)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    rows = [[m, f"{d['satisfaction']:.4f}", _interval(d["vs_best_static"]),
             *(f"{d['by_group'].get(g, float('nan')):.4f}" for g in ("heavy", "regular", "light"))]
            for m, d in results["methods"].items()]
    click.echo(render_table(["method", "satisfaction", "vs best static [95 %]", "heavy", "regular", "light"], rows))
    click.echo(f"oracle headroom {results['oracle_headroom']:+.4f}; DRPO vs best static "
               f"{_interval(results['drpo_vs_best_static'])} ({results['ci95_method']})")


@click.command("drift")
@click.option("--data", "data_spec", default=DEFAULT_LETOR, show_default=True, help="letor:TRAIN")
@click.option("--test", "test_spec", default=None, help="letor:TEST (default: seeded split of TRAIN)")
@click.option("--quick", is_flag=True, help="2400 interactions (shift at 1200), warm-up 300, windows of 80 lists")
@click.option("--seeds", default=5, show_default=True)
@click.option("--interactions", default=None, type=int, help="requests per run, shift half-way [4000; --quick 2400]")
@click.option("--warmup", default=None, type=int, help="first requests served in the logged order [500; 300]")
@click.option("--eval-every", default=None, type=int, help="lists per curve point [100; --quick 80]")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--held-out", default=300, show_default=True, help="held-out requests for NDCG")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False), help="curves PNG")
@click.option("--threads", default=1, show_default=True, help="torch threads (small nets: 1 avoids contention)")
@click.option("--json", "as_json", is_flag=True)
def eval_drift(data_spec: str, test_spec: str | None, quick: bool, seeds: int, interactions: int | None,
               warmup: int | None, eval_every: int | None, batch_size: int, held_out: int, plot_path: str | None,
               threads: int, as_json: bool) -> None:
    """Rerankers under a mid-run click-model shift: NDCG@10 and reward dip and recovery, LDRO vs GRPO."""
    import torch  # noqa: PLC0415

    from learners.policy.evaluation import train_test  # noqa: PLC0415
    from learners.policy.evaluation_drift import evaluate_drift  # noqa: PLC0415

    torch.set_num_threads(threads)
    train, test = train_test(data_spec, test_spec)
    curves: dict[str, list] = {}
    n = interactions or (2400 if quick else 4000)
    results = evaluate_drift(train, test, seeds=tuple(range(seeds)), interactions=n, batch_size=batch_size,
                             warmup=warmup if warmup is not None else (300 if quick else 500),
                             held_out_requests=held_out, eval_every=eval_every or (80 if quick else 100),
                             progress=not as_json, curves=curves)
    if plot_path:
        plot_drift(curves, results["shift_at"], plot_path)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    rows = [[m, _interval(d["dip"]), _interval(d["recovery_lists"]), f"{d['recovered']}/{d['seeds']}",
             _interval(d["reward_lift_dip"]), _interval(d["ndcg@10_final"])] for m, d in results["methods"].items()]
    click.echo(render_table(["method", "NDCG@10 dip", "recovery (lists)", "recovered", "reward-lift dip",
                             "final NDCG@10"], rows))


def register(eval_group: click.Group) -> None:
    """Add ``eval fusion`` and ``eval drift``."""
    eval_group.add_command(eval_fusion)
    eval_group.add_command(eval_drift)
