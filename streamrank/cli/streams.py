"""``streamrank worker``: run the join/reward worker, or report the status of running ones."""

from __future__ import annotations

import json
import socket
import time

import click

from common.config import load_settings


def register(cli: click.Group, eval_group: click.Group) -> None:  # noqa: ARG001 - no eval commands here
    cli.add_command(worker)


@click.command()
@click.option("--name", default=None, help="worker name (status file, Faust data dir); default worker-<pid>")
@click.option("--web-port", type=int, default=0, show_default=True,
              help="port of /metrics on 127.0.0.1 (0: a free one)")
@click.option("--batch-size", type=int, default=1000, show_default=True,
              help="most records one fetch brings; the join applies each fetch as one batch")
@click.option("--within", "batch_within_s", type=float, default=0.25, show_default=True,
              help="most seconds one fetch waits for records (an example's join latency includes it)")
@click.option("--log-level", "loglevel", default="warning", show_default=True,
              help="debug | info | warning | error (the same flag on every long-running command)")
@click.option("--status", "show_status", is_flag=True, help="print the counters of this deployment's workers and exit")
@click.option("--json", "as_json", is_flag=True, help="with --status: JSON output")
def worker(name: str | None, web_port: int, batch_size: int, batch_within_s: float, loglevel: str, show_status: bool,
           as_json: bool) -> None:
    """Join impressions with feedback into rewarded examples (faust-streaming worker).

    Reads `impressions` and `feedback`, writes `examples` and `dead-letter` (topics and
    endpoints from the environment, join window and reward weights from STREAMRANK_CONFIG).
    """
    settings = load_settings()
    if show_status:
        _print_status(settings, as_json)
        return
    from streams.app import WorkerOptions  # noqa: PLC0415 - faust is slow to import
    from streams.worker import run_worker  # noqa: PLC0415

    if batch_within_s <= 0:
        raise click.BadParameter(f"must be > 0, got {batch_within_s}", param_hint="--within")
    options = WorkerOptions(name=name or WorkerOptions().name, web_port=web_port, batch_size=batch_size,
                            batch_within_s=batch_within_s)
    run_worker(settings, options, loglevel=loglevel)


def _print_status(settings, as_json: bool) -> None:
    from streams.metrics import status_dir  # noqa: PLC0415
    from streams.metrics import read_statuses  # noqa: PLC0415

    from common.stack import pid_alive  # noqa: PLC0415

    folder = status_dir(settings)
    statuses = read_statuses(folder)
    for doc in statuses:  # a status file outlives its worker: say whether it is still running
        pid = int(doc.get("pid") or 0)
        doc["running"] = doc.get("host") in (None, socket.gethostname()) and pid > 0 and pid_alive(pid)
    if as_json:
        click.echo(json.dumps(statuses, indent=2))
        return
    if not statuses:
        click.echo(f"no worker status under {folder}")
        return
    for doc in statuses:
        age = time.time() - doc.get("updated_at", 0)
        counts = ", ".join(f"{k}={v}" for k, v in doc["counts"].items())
        state = "running" if doc["running"] else "STOPPED (last counters)"
        click.echo(f"{doc['worker']} (pid {doc['pid']}, {state}, updated {age:.0f}s ago): {counts}; "
                   f"open={doc['open_windows']} lag={doc['total_lag']}")
