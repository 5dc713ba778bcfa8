"""CLI of the learners stage: ``streamrank learn --model NAME`` and ``streamrank eval calibration``
(``--data sim|movielens|obd:PATH``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from common.logs import quiet_understood_noise
from common.paths import data_path
from streamrank.cli.params import parse_sets

DEFAULT_OBD = data_path("obd", "random", "all", "all.csv")


def _parse_data(spec: str) -> tuple[str, Path | None]:
    """``sim``, ``movielens`` (``movielens:DIR`` for another ml-100k folder) or ``obd:PATH``."""
    kind, sep, path = spec.partition(":")
    if kind == "sim" and not sep:
        return "sim", None
    if kind == "movielens":
        return "movielens", Path(path) if path else None
    if kind == "obd" and sep:
        resolved = Path(path)
        if not resolved.is_file():
            raise click.BadParameter(f"{path} is not a file", param_hint="--data")
        return "obd", resolved
    raise click.BadParameter(f"expected obd:PATH, sim or movielens[:DIR], got {spec!r}", param_hint="--data")


@click.command()
@click.option("--model", required=True, help="registered model name (learners/registry.py)")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="default: $STREAMRANK_HOME/checkpoints")
@click.option("--batch-size", default=256, show_default=True, help="examples per update")
@click.option("--within", "within_s", default=0.5, show_default=True, help="seconds to wait to fill a take batch")
@click.option("--checkpoint-every", default=10, show_default=True, help="checkpoint every N updates")
@click.option("--checkpoint-interval", "checkpoint_interval_s", type=float, default=None,
              help="also checkpoint after an update this many seconds after the last checkpoint (default with "
                   "--publish: STREAMRANK_SNAPSHOT_INTERVAL_S, 60 s, so snapshots come at that cadence)")
@click.option("--idle-flush", "idle_flush_s", default=2.0, show_default=True,
              help="learn a partial batch after this many idle seconds")
@click.option("--max-wait", "max_wait_s", type=float, default=None,
              help="learn a partial batch once its oldest example waited this many seconds (a latency "
                   "bound; batch boundaries then follow arrival timing). Default: full batches only")
@click.option("--progress", "progress_s", default=5.0, show_default=True, help="seconds between progress lines")
@click.option("--stop-after", type=int, default=None, help="exit once this many examples are applied in total")
@click.option("--publish", is_flag=True, help="publish checkpoints as model snapshots (Redis snapshot registry)")
@click.option("--group", default=None, help="consumer group (default: <topic prefix>learner-<model>)")
@click.option("--set", "sets", multiple=True, help="model setting KEY=VALUE (JSON values), e.g. --set lr=0.01")
@click.option("--device", default="auto", show_default=True,
              help="torch device to train on: auto (CUDA when present), cpu, cuda or cuda:N; snapshots stay CPU tensors")
@click.option("--ranks", default=1, show_default=True,
              help="data-parallel ranks training ONE model on torch.distributed (gloo on CPU, nccl on CUDA): each "
                   "owns a disjoint set of partitions, gradients are all-reduced every step, rank 0 checkpoints "
                   "and publishes; under torchrun each process is one rank")
@click.option("--decode-workers", default=0, show_default=True,
              help="processes that decode records beside the update (learners/ingest/decode_pool.py; list-wise "
                   "models, examples that carry their features); 0: decode in the learner process")
@click.option("--rank", type=int, default=None, hidden=True, help="this process's rank (set by the launcher)")
@click.option("--master-port", type=int, default=None, hidden=True, help="torch.distributed rendezvous port")
@click.option("--log-level", "loglevel", default="warning", show_default=True,
              help="debug | info | warning | error (the same flag on every long-running command)")
def learn(model: str, checkpoint_dir: str | None, batch_size: int, within_s: float, checkpoint_every: int,
          checkpoint_interval_s: float | None, idle_flush_s: float, max_wait_s: float | None, progress_s: float, stop_after: int | None, publish: bool,
          group: str | None, sets: tuple[str, ...], device: str, ranks: int, decode_workers: int, rank: int | None,
          master_port: int | None, loglevel: str) -> None:
    """Run the learner worker of MODEL on the `examples` topic (effectively-once checkpoints)."""
    from common.config import config_section, load_settings  # noqa: PLC0415
    from learners.registry import model_names  # noqa: PLC0415
    from learners.runtime.worker import LearnWorkerOptions, run_learner  # noqa: PLC0415

    if model not in model_names():
        raise click.BadParameter(f"unknown model {model!r}; known: {', '.join(model_names())}",
                                 param_hint="--model")
    from learners.device import resolve_device  # noqa: PLC0415

    try:
        resolve_device(device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    if ranks < 1:
        raise click.BadParameter("must be >= 1", param_hint="--ranks")
    if decode_workers < 0:
        raise click.BadParameter("must be >= 0", param_hint="--decode-workers")
    if decode_workers and ranks > 1:
        raise click.BadParameter("decode workers are for a single-process learner; with --ranks each rank "
                                 "decodes its own partitions", param_hint="--decode-workers")
    settings = load_settings()
    model_config = dict(config_section(settings, "learners").get(model, {}))
    model_config.update(parse_sets(sets))
    if rank is None and ranks > 1 and "RANK" in os.environ:  # started by torchrun
        rank, master_port = int(os.environ["RANK"]), int(os.environ.get("MASTER_PORT", 29500))
    if rank is not None:
        import logging  # noqa: PLC0415

        logging.basicConfig(level=loglevel.upper(), format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
        quiet_understood_noise()
        _run_rank(settings, model, checkpoint_dir, batch_size, within_s, checkpoint_every, stop_after, device,
                  publish, model_config, rank, ranks, master_port)
        return
    if ranks > 1:
        from learners.distributed.launch import launch  # noqa: PLC0415

        raise SystemExit(launch(sys.argv[1:], ranks))
    options = LearnWorkerOptions(
        model=model, checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else settings.home / "checkpoints",
        batch_size=batch_size, within_s=within_s, checkpoint_every=checkpoint_every,
        checkpoint_interval_s=checkpoint_interval_s, idle_flush_s=idle_flush_s,
        max_wait_s=max_wait_s, progress_s=progress_s, stop_after=stop_after, group=group, publish=publish,
        model_config=model_config, device=device, decode_workers=decode_workers)
    run_learner(settings, options, loglevel=loglevel)


def _run_rank(settings, model: str, checkpoint_dir: str | None, batch_size: int, within_s: float,
              checkpoint_every: int, stop_after: int | None, device: str, publish: bool, model_config: dict,
              rank: int, ranks: int, master_port: int | None) -> None:
    """One data-parallel rank (learners.distributed.rank)."""
    from learners.distributed.rank import RankOptions, run_rank  # noqa: PLC0415

    if master_port is None:
        raise click.BadParameter("a rank needs --master-port (or torchrun's MASTER_PORT)", param_hint="--rank")
    run_rank(settings, RankOptions(
        model=model, checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else settings.home / "checkpoints",
        rank=rank, world=ranks, port=master_port, batch_size=batch_size, within_s=within_s,
        checkpoint_every=checkpoint_every, stop_after=stop_after, device=device, publish=publish,
        model_config=tuple(model_config.items())))


@click.command("calibration")
@click.option("--data", "data_spec", default=f"obd:{DEFAULT_OBD}", show_default=True,
              help="sim (LETOR/KuaiRand clicks with known truth), movielens[:DIR] (MovieLens-100k, rating >= 4) "
                   "or obd:PATH of an OBD-format CSV")
@click.option("--methods", default="umnn_scloss,umnn,platt,isotonic,histogram,backbone", show_default=True)
@click.option("--batch-size", type=int, default=None,
              help="prequential batch size in impressions (default: obd 128, sim 64 lists, movielens 128)")
@click.option("--lr", default=1e-2, show_default=True, help="Adam learning rate of the UMNN calibrators")
@click.option("--train-fraction", type=float, default=None,
              help="earliest share of rows for the backbone (default: obd 0.3, movielens 0.5)")
@click.option("--limit", type=int, default=None, help="use only the first N rows (sim: about N rows)")
@click.option("--seed", default=0, show_default=True,
              help="obd: the seed of the backbone and learners; sim/movielens: the first seed")
@click.option("--seeds", default=1, show_default=True,
              help="sim/movielens: run seeds SEED..SEED+N-1 (intervals over all)")
@click.option("--umnn", "umnn_settings", multiple=True, metavar="KEY=VALUE",
              help="sim/movielens: a learner setting of the UMNN variants (e.g. average=0.99, replay_updates=60, "
                   "lr_schedule=inv_sqrt, sc_weight=0.1); repeatable; replaces the benchmark's defaults (UMNN_SETTINGS)")
@click.option("--quick", is_flag=True, help="sim/movielens: the short form (4,000 simulated requests, 200 replicates)")
@click.option("--bootstrap", "replicates", type=int, default=None,
              help="sim/movielens: bootstrap replicates (default 200 with --quick, else 1000)")
@click.option("--ablation/--no-ablation", default=True, show_default=True,
              help="sim/movielens: also run the SCLoss ablation (umnn_scloss@fixed_bins)")
@click.option("--threads", default=1, show_default=True, help="torch threads (small nets: 1 avoids contention)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="PNG: reliability diagram (sim/movielens: plus field-ECE bars with 95% intervals)")
@click.option("--json", "as_json", is_flag=True)
def eval_calibration(data_spec: str, methods: str, batch_size: int | None, lr: float, train_fraction: float | None,
                     limit: int | None, seed: int, seeds: int, umnn_settings: tuple[str, ...], quick: bool,
                     replicates: int | None, ablation: bool, threads: int, plot_path: str | None,
                     as_json: bool) -> None:
    """Prequential (predict, then learn) calibration: UMNN+SCLoss vs Platt, isotonic, histogram, backbone."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    kind, path = _parse_data(data_spec)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if kind == "obd":
        _eval_obd(path, names, batch_size or 128, lr, 0.3 if train_fraction is None else train_fraction, limit, seed,
                  plot_path, as_json)
        return
    from learners.calibration.benchmark import evaluate_benchmark, format_benchmark  # noqa: PLC0415
    from learners.calibration.plots import plot_benchmark  # noqa: PLC0415

    try:
        result = evaluate_benchmark(kind, methods=names, seeds=seeds, quick=quick, limit=limit, ablation=ablation,
                                    batch_size=batch_size or (64 if kind == "sim" else 128), lr=lr,
                                    replicates=replicates, directory=path, train_fraction=train_fraction,
                                    progress=not as_json, first_seed=seed,
                                    umnn_settings=parse_sets(umnn_settings) if umnn_settings else None)
    except ValueError as exc:  # includes MovieLensFormatError
        raise click.ClickException(str(exc)) from None
    if plot_path:
        plot_benchmark(result, plot_path)
    if as_json:
        click.echo(json.dumps(result.doc, indent=2, sort_keys=True, default=float))
        return
    click.echo(format_benchmark(result))
    if plot_path:
        click.echo(f"figure: {plot_path}")


def _eval_obd(path: Path | None, methods: list[str], batch_size: int, lr: float, train_fraction: float,
              limit: int | None, seed: int, plot_path: str | None, as_json: bool) -> None:
    """The OBD evaluation (its JSON keeps the flat per-method metrics of before)."""
    from learners.calibration.evaluation import evaluate_obd, format_table, plot_reliability  # noqa: PLC0415

    assert path is not None
    try:
        result = evaluate_obd(path, methods=methods, batch_size=batch_size, train_fraction=train_fraction, lr=lr,
                              limit=limit, seed=seed, progress=not as_json)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if plot_path:
        plot_reliability(result, plot_path)
    if as_json:
        click.echo(json.dumps(result.metrics, indent=2, sort_keys=True, default=float))
    else:
        click.echo(format_table(result))
        if plot_path:
            click.echo(f"reliability diagram: {plot_path}")


def register(cli: click.Group, eval_group: click.Group) -> None:
    """Add ``learn`` and ``eval calibration``."""
    cli.add_command(learn)
    eval_group.add_command(eval_calibration)
