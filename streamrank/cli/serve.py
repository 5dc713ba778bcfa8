"""CLI of the serving stage: ``streamrank serve``, ``streamrank eval ope``, ``streamrank demo``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from common.config import load_settings
from common.logs import quiet_understood_noise
from streamrank.cli.params import parse_sets


@click.command()
@click.option("--port", type=int, default=None, help="port on 127.0.0.1 (default 8080 or STREAMRANK_SERVE_PORT)")
@click.option("--calibrator", default=None, help="model name filling the calibrator role (default umnn)")
@click.option("--fusion", default=None, help="model name filling the fusion role (default drpo)")
@click.option("--reranker", default=None, help="model name filling the reranker role (default ldro)")
@click.option("--explore/--no-explore", default=None,
              help="Gumbel exploration for requests that do not say (default on, 20% of them: "
                   "STREAMRANK_SERVE_EXPLORE_RATE); the gate scores snapshots on explored rounds only")
@click.option("--max-candidates", type=int, default=None)
@click.option("--gate/--no-gate", "gate_enabled", default=None, help="promotion gate on reranker snapshots")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="server processes on the port (default 1 or STREAMRANK_SERVE_WORKERS); each loads and hot-swaps "
                   "the models on its own, /metrics adds them up, /healthz /models /dashboard show one worker's view")
@click.option("--log-level", default="warning", show_default=True,
              help="debug | info | warning | error (the same flag on every long-running command)")
def serve(port: int | None, calibrator: str | None, fusion: str | None, reranker: str | None, explore: bool | None,
          max_candidates: int | None, gate_enabled: bool | None, workers: int | None, log_level: str) -> None:
    """Run the reranker service (FastAPI on uvicorn, 127.0.0.1; OpenAPI docs at /docs)."""
    import dataclasses  # noqa: PLC0415
    import logging  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from serving.app import build_runtime, create_app  # noqa: PLC0415
    from serving.settings import load_serve_config  # noqa: PLC0415

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_understood_noise()
    settings = load_settings()
    config = load_serve_config(settings, port=port, calibrator=calibrator, fusion=fusion, reranker=reranker,
                               explore=explore, max_candidates=max_candidates, workers=workers)
    if gate_enabled is not None:
        config = dataclasses.replace(config, gate=dataclasses.replace(config.gate, enabled=gate_enabled))
    app = create_app(build_runtime(settings, config)) if config.workers == 1 else None  # N > 1: each worker its own
    for line in start_lines(config):
        click.echo(line, err=True)
    if app is None:
        from serving import workers as serving_workers  # noqa: PLC0415

        serving_workers.run(settings, config, log_level)
        return
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False)


def start_lines(config) -> list[str]:
    """What ``serve`` prints at start-up: where it listens, its roles, exploration and gate, and a
    warning when the gate is on but nothing is explored (every reranker snapshot would be blocked)."""
    explore = f"exploring {config.explore_rate:.0%} of requests" if config.explore else "not exploring"
    gate = f"gate on: needs {config.gate.min_samples} explored examples" if config.gate.enabled else "gate off"
    processes = f"; {config.workers} worker processes" if config.workers > 1 else ""
    lines = [f"serving on http://{config.host}:{config.port} (roles {config.roles()}; {explore}; {gate}{processes})"]
    if config.gate.enabled and (not config.explore or config.explore_rate == 0.0):
        lines.append(f"WARNING: the promotion gate is on but requests are not explored, so reranker snapshots stay "
                     f"blocked-by-gate (insufficient data: 0 < {config.gate.min_samples} explored examples) unless "
                     f"requests send \"explore\": true. Serve with --explore, or with --no-gate to promote unchecked.")
    return lines


@click.command("ope")
@click.option("--data", "data_spec", required=True, help="obd:PATH (an Open Bandit Dataset CSV)")
@click.option("--policy", "policies", multiple=True, default=("uniform",), show_default=True,
              help="uniform | affinity-softmax[:T] | item-ctr-softmax[:T] (repeatable)")
@click.option("--alpha", default=0.05, show_default=True, help="1 - confidence level of the intervals")
@click.option("--bootstrap", "n_bootstrap", default=2000, show_default=True, help="bootstrap resamples")
@click.option("--clip", default=float("inf"), show_default=True, help="importance-weight clipping (lambda)")
@click.option("--seed", default=12345, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_ope(data_spec: str, policies: tuple[str, ...], alpha: float, n_bootstrap: int, clip: float, seed: int,
             as_json: bool) -> None:
    """IPS, SNIPS and DR estimates (with bootstrap CIs) of evaluation policies on logged bandit data."""
    from evaluation.ope import OpeInputError  # noqa: PLC0415
    from evaluation.ope_obd import evaluate_obd  # noqa: PLC0415

    kind, _, path = data_spec.partition(":")
    if kind != "obd" or not path:
        raise click.BadParameter("expected obd:PATH", param_hint="--data")
    reports = []
    try:
        for policy in policies:
            reports.append(evaluate_obd(Path(path), policy, alpha=alpha, n_bootstrap_samples=n_bootstrap,
                                        random_state=seed, clip=clip).as_dict())
    except OpeInputError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    for rep in reports:
        click.echo(f"{rep['policy']}  (n={rep['n_rounds']}, logged policy value {rep['logged_policy_value']:.5f})")
        for name, est in rep["estimates"].items():
            click.echo(f"  {name:6s} {est['value']:.5f}  {100 * (1 - alpha):.0f}% CI [{est['ci_lower']:.5f}, "
                       f"{est['ci_upper']:.5f}]")


@click.command()
@click.option("--duration", default=120.0, show_default=True, help="seconds of simulated traffic")
@click.option("--output", default="out/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--rate", default=20.0, show_default=True, help="simulated requests per second")
@click.option("--concurrency", default=4, show_default=True, help="simulated users in parallel")
@click.option("--snapshot-interval", default=1.0, show_default=True, help="learner snapshot interval (s)")
@click.option("--learners", default="ldro,umnn", show_default=True, help="learner workers to run (comma-separated)")
@click.option("--reranker", default="ldro", show_default=True)
@click.option("--calibrator", default="umnn", show_default=True, help="'' for none")
@click.option("--fusion", default="", show_default=True, help="e.g. drpo (add it to --learners)")
@click.option("--feast/--no-feast", default=True, show_default=True, help="apply the Feast repo first")
@click.option("--seed", default=0, show_default=True)
@click.option("--set", "sets", multiple=True,
              help="any other DemoConfig field (loop/config.py) as KEY=VALUE (JSON values), "
                   "e.g. --set learner_max_wait_s=null --set join_within_s=0.25")
def demo(duration: float, output: str, rate: float, concurrency: int, snapshot_interval: float, learners: str,
         reranker: str, calibrator: str, fusion: str, feast: bool, seed: int, sets: tuple[str, ...]) -> None:
    """The closed loop: stack up, workers + learners + server, the simulator as users; summary + plots."""
    from loop.config import DemoConfig, demo_overrides  # noqa: PLC0415
    from loop.demo import run_demo  # noqa: PLC0415
    from loop.summary import headline  # noqa: PLC0415

    try:
        overrides = demo_overrides(parse_sets(sets))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc
    config = DemoConfig(duration_s=duration, output=Path(output), rate=rate, concurrency=concurrency,
                        snapshot_interval_s=snapshot_interval, seed=seed,
                        learners=tuple(m for m in learners.split(",") if m), reranker=reranker,
                        calibrator=calibrator, fusion=fusion, feast=feast, **overrides)
    summary = run_demo(config, load_settings(), announce=_announce_dashboard)
    click.echo(headline(summary))
    click.echo(f"summary and plots in {output}/ (one page: {summary.get('report', Path(output) / 'report.html')})")
    if summary.get("errors"):
        sys.exit(1)


def _announce_dashboard(url: str) -> None:
    """The dashboard's URL on a line of its own (scripts grep for it; a terminal makes it a link)."""
    click.echo("dashboard, live while the demo runs:")
    click.echo(url)


def register(cli: click.Group, eval_group: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(demo)
    eval_group.add_command(eval_ope)
