"""``streamrank eval ldro`` and ``streamrank eval drpo``: online evaluations on the LETOR simulator.

Both accept any LETOR-format file pair (``--data letor:PATH`` with ``PATH.query`` beside it);
without ``--test`` a seeded split of TRAIN's queries is held out. ``--json`` prints one object
keyed by method, each a dict of metric -> value (``<metric>`` the mean over seeds,
``<metric>_std`` the standard deviation).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from common.figures import save_figure
from common.tables import render_table
from streamrank.cli.params import DEFAULT_DATA, parse_sets

DEFAULT_LETOR = f"letor:{DEFAULT_DATA / 'letor' / 'rank.train'}"


def _parse_sets(pairs: tuple[str, ...], keyed_by_method: bool) -> dict:
    """``KEY=JSON`` (DRPO) or ``METHOD.KEY=JSON`` (LDRO; METHOD as in --methods, e.g. ``ldro@nokd``)."""
    flat = parse_sets(pairs)
    if not keyed_by_method:
        return flat
    out: dict = {}
    for key, value in flat.items():
        method, dot, name = key.partition(".")
        if not dot:
            raise click.BadParameter(f"{key!r}: expected METHOD.KEY=VALUE", param_hint="--set")
        out.setdefault(method, {})[name] = value
    return out


def _print_table(results: dict[str, dict[str, float]], keys: list[str]) -> None:
    """One row per method: each metric as mean ± std over seeds (``-`` where a method has none)."""
    rows = [[method] + [f"{metrics[k]:.4f} ± {metrics.get(k + '_std', 0.0):.4f}" if k in metrics else "-"
                        for k in keys] for method, metrics in results.items()]
    click.echo(render_table(["method", *keys], rows))


def _plot(curves: dict[str, list], path: str, shift_at: int | None) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in curves.items():
        for i, run in enumerate(runs):
            if run:
                steps, values = zip(*run)
                ax.plot(steps, values, label=method if i == 0 else None, alpha=0.8,
                        color={"ldro": "C0", "grpo": "C1"}.get(method))
    if shift_at:
        ax.axvline(shift_at, color="grey", linestyle="--", label="click-model shift")
    ax.set_xlabel("interactions")
    ax.set_ylabel("held-out NDCG@10")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


@click.command("ldro")
@click.option("--data", "data_spec", default=DEFAULT_LETOR, show_default=True, help="letor:TRAIN")
@click.option("--test", "test_spec", default=None, help="letor:TEST (default: seeded split of TRAIN)")
@click.option("--seeds", default=3, show_default=True)
@click.option("--interactions", default=4000, show_default=True, help="simulated requests per run")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--warmup", default=500, show_default=True, help="first requests served in the logged order")
@click.option("--held-out", default=300, show_default=True, help="held-out requests for NDCG")
@click.option("--lgb-requests", default=1000, show_default=True, help="training requests for LightGBM")
@click.option("--click-model", type=click.Choice(["pbm", "cascade"]), default="pbm", show_default=True)
@click.option("--shift", is_flag=True, help="shift the click model half-way (reward-shift experiment)")
@click.option("--methods", default="ldro,grpo", show_default=True,
              help="registered models; NAME@TAG runs NAME again under another label (for ablations)")
@click.option("--set", "sets", multiple=True,
              help="ablation setting METHOD.KEY=JSON, e.g. --methods ldro,ldro@nokd --set ldro@nokd.distill=false")
@click.option("--curves", "curves_path", default=None, type=click.Path(dir_okay=False),
              help="write learning curves (PNG if it ends in .png, else JSON)")
@click.option("--threads", default=1, show_default=True, help="torch threads (small nets: 1 avoids contention)")
@click.option("--json", "as_json", is_flag=True)
def eval_ldro(data_spec: str, test_spec: str | None, seeds: int, interactions: int, batch_size: int, warmup: int,
              held_out: int, lgb_requests: int, click_model: str, shift: bool, methods: str,
              curves_path: str | None, sets: tuple[str, ...], threads: int, as_json: bool) -> None:
    """LDRO vs GRPO vs logged order vs LightGBM lambdarank: NDCG@{1,5,10} on held-out queries."""
    import torch  # noqa: PLC0415

    from learners.policy.evaluation import evaluate_ldro, train_test  # noqa: PLC0415

    torch.set_num_threads(threads)

    train, test = train_test(data_spec, test_spec)
    curves: dict[str, list] = {}
    results = evaluate_ldro(train, test, seeds=tuple(range(seeds)), methods=tuple(methods.split(",")),
                            interactions=interactions, batch_size=batch_size, warmup=warmup,
                            held_out_requests=held_out, lgb_requests=lgb_requests, click_model=click_model, shift=shift,
                            eval_every=max(1, interactions // 20) if curves_path else 0,
                            learner_config=_parse_sets(sets, keyed_by_method=True),
                            progress=not as_json, curves=curves)
    if curves_path:
        if curves_path.endswith(".png"):
            _plot(curves, curves_path, interactions // 2 if shift else None)
        else:
            Path(curves_path).write_text(json.dumps(curves))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    _print_table(results, ["ndcg@1", "ndcg@5", "ndcg@10"])
    if "lightgbm" in results:
        ref = results["lightgbm"]["ndcg@10"]
        for method in methods.split(","):
            click.echo(f"{method} NDCG@10 / LightGBM NDCG@10 = {results[method]['ndcg@10'] / ref:.3f}")


@click.command("drpo")
@click.option("--data", "data_spec", default=DEFAULT_LETOR, show_default=True, help="letor:TRAIN")
@click.option("--test", "test_spec", default=None, help="letor:TEST (default: seeded split of TRAIN)")
@click.option("--seeds", default=3, show_default=True)
@click.option("--interactions", default=4000, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--eval-requests", default=2000, show_default=True)
@click.option("--grid-requests", default=1000, show_default=True, help="requests to pick the static weights on")
@click.option("--grid-steps", default=6, show_default=True, help="simplex grid resolution 1/steps")
@click.option("--click-model", type=click.Choice(["pbm", "cascade"]), default="pbm", show_default=True)
@click.option("--set", "sets", multiple=True, help="DRPO setting KEY=JSON, e.g. --set task_relation=false")
@click.option("--threads", default=1, show_default=True, help="torch threads (small nets: 1 avoids contention)")
@click.option("--json", "as_json", is_flag=True)
def eval_drpo(data_spec: str, test_spec: str | None, seeds: int, interactions: int, batch_size: int,
              eval_requests: int, grid_requests: int, grid_steps: int, click_model: str, sets: tuple[str, ...],
              threads: int, as_json: bool) -> None:
    """DRPO vs the best static fusion weights (grid search) vs click-only: simulator satisfaction."""
    import torch  # noqa: PLC0415

    from learners.policy.evaluation import evaluate_drpo, train_test  # noqa: PLC0415

    torch.set_num_threads(threads)

    train, test = train_test(data_spec, test_spec)
    results = evaluate_drpo(train, test, seeds=tuple(range(seeds)), interactions=interactions,
                            batch_size=batch_size, eval_requests=eval_requests, grid_requests=grid_requests,
                            grid_steps=grid_steps, click_model=click_model,
                            learner_config=_parse_sets(sets, keyed_by_method=False), progress=not as_json)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    _print_table(results, ["satisfaction", "ndcg@10"])
    click.echo(f"drpo / static_best satisfaction = {results['drpo']['satisfaction_ratio_vs_static_best']:.4f}")


def register(cli: click.Group, eval_group: click.Group) -> None:  # noqa: ARG001 - the CLI's contract
    """Add ``eval ldro`` and ``eval drpo``, and ``eval fusion`` and ``eval drift`` (:mod:`streamrank.cli.evaluate_claims`)."""
    from streamrank.cli import evaluate_claims  # noqa: PLC0415

    eval_group.add_command(eval_ldro)
    eval_group.add_command(eval_drpo)
    evaluate_claims.register(eval_group)
