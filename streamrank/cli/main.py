"""The ``streamrank`` command line.

Core commands live here (stack, data conversion, replay, consume). Each stage of the data
flow has its module-level click commands in ``streamrank/cli/<stage>.py`` and a
``register(cli, eval_group)`` that adds them, so this file stays small and each stage owns
its CLI.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from common.config import load_settings
from streamrank.cli.params import echo_json

STAGE_COMMAND_MODULES = ("streamrank.cli.streams", "streamrank.cli.learn", "streamrank.cli.evaluate",
                         "streamrank.cli.features", "streamrank.cli.serve")


@click.group()
def cli() -> None:
    """streamrank: streaming online learning for reranking (Kafka + Faust + PyTorch + Feast/Redis)."""


@cli.group(name="eval")
def eval_group() -> None:
    """Offline/prequential evaluations of the learners and of off-policy estimators."""


# -- embedded stack ---------------------------------------------------------------------------
@cli.command()
@click.option("--kafka-port", type=int, default=None, help="broker port (default: a free one)")
@click.option("--redis-port", type=int, default=None, help="Redis port (default: a free one)")
def up(kafka_port: int | None, redis_port: int | None) -> None:
    """Start the embedded broker and Redis on 127.0.0.1 and create the topics."""
    from common import stack  # noqa: PLC0415

    state = stack.up(load_settings(), kafka_port=kafka_port, redis_port=redis_port)
    click.echo(f"kafka {state['kafka']} ({state['broker']})  redis {state['redis']}")


@cli.command()
@click.option("--purge", is_flag=True, help="also delete the data under STREAMRANK_HOME (broker log, Redis, "
                                            "Faust tables, status files, checkpoints, logs): a fresh start")
def down(purge: bool) -> None:
    """Stop what `streamrank up` started (its data stays for the next `up` unless --purge)."""
    from common import stack  # noqa: PLC0415

    settings = load_settings()
    stopped = stack.down(settings)
    click.echo("stopped: " + (", ".join(stopped) or "nothing was running"))
    if purge:
        freed = stack.purge(settings.home)
        click.echo(f"purged {settings.home} ({freed / 1e6:.1f} MB freed)")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Broker and Redis addresses, liveness and topic names."""
    from common import stack  # noqa: PLC0415

    settings = load_settings()
    report = stack.status(settings)
    report.update(deployment_facts(settings, redis_up=report["redis_up"]))
    if as_json:
        echo_json(report)
        return
    click.echo(f"home      {report['home']}")
    click.echo(f"kafka     {report['kafka']}  [{'up' if report['kafka_up'] else 'down'}] ({report['broker']})")
    click.echo(f"redis     {report['redis']}  [{'up' if report['redis_up'] else 'down'}]")
    for logical, physical in report["topics"].items():
        n = report["topic_partitions"].get(physical)
        where = f"{n} partitions" if n else "not created" if report["kafka_up"] else "broker down"
        click.echo(f"topic     {logical:<14} {physical}  ({where})")
    for model, version in report["model_versions"].items():
        click.echo(f"model     {model:<14} v{version}  (current snapshot)")
    for c in report["consumers"]:
        click.echo(f"consumer  {c['name']:<14} {c['kind']:<8} lag {c['lag']}  dead-lettered {c['dead_lettered']}")
    storage = report["storage"]
    if storage:
        deleted = sum(storage["records_deleted"].values())
        click.echo(f"storage   broker log {storage['log_bytes'] / 1e6:.1f} MB of a {storage['max_bytes'] / 1e6:.0f} MB bound"
                   f"  ({storage['trims']} trims, {deleted} oldest records deleted; STREAMRANK_RETENTION_MB)")
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(report["dead_letter_reasons"].items())) or "none"
    click.echo(f"dead      {reasons}  (streams workers' counts by reason)")
    if not (report["kafka_up"] and report["redis_up"]):
        sys.exit(1)


def deployment_facts(settings, redis_up: bool) -> dict:
    """What the deployment of this topic prefix runs: each model's current snapshot version (the
    registry in Redis), each consumer's lag and dead letters, and the dead letters by reason
    (the status files under STREAMRANK_HOME, as the dashboard reads them)."""
    from collections import Counter  # noqa: PLC0415

    from serving.dashboard import consumers  # noqa: PLC0415
    from streams.metrics import read_statuses, status_dir  # noqa: PLC0415

    versions: dict[str, str] = {}
    if redis_up:
        try:
            from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415

            registry = SnapshotRegistry(settings.redis_url, settings, announce_kafka=False)
            try:
                versions = {m: v for m in registry.models() if (v := registry.current_version(m)) is not None}
            finally:
                registry.close()
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            versions = {"?": f"registry unreadable: {type(exc).__name__}"}
    folder = status_dir(settings)
    reasons: Counter = Counter()
    for doc in read_statuses(folder):
        reasons.update({str(k): int(v) for k, v in (doc.get("dead_letter_reasons") or {}).items()})
    return {"model_versions": versions, "consumers": consumers(folder), "dead_letter_reasons": dict(reasons),
            "status_folder": str(folder)}


# -- real data -> event logs --------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Convert real public data into event logs (JSONL, time-ordered, deterministic by seed)."""


@data.command("obd")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True)
def data_obd(input_path: str, output: str, seed: int) -> None:
    """Open Bandit Dataset CSV -> impressions (with true propensities) + click feedback."""
    from simulator.logs import write_log  # noqa: PLC0415
    from simulator.obd import obd_events  # noqa: PLC0415

    summary = write_log(obd_events(input_path, seed=seed), output, desc="obd")
    click.echo(f"{output}: {summary.impressions} impressions, {summary.feedback} feedback events")


@data.command("letor")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--query", "query_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="group file (default: INPUT.query)")
@click.option("--output", required=True, type=click.Path(dir_okay=False))
@click.option("--click-model", type=click.Choice(["pbm", "cascade"]), default="pbm", show_default=True)
@click.option("--sessions", default=2000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--kuairand", "kuairand_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="KuaiRand-Pure folder (default: ../shared/data/kuairand)")
@click.option("--max-candidates", type=int, default=None, help="show at most this many per list")
@click.option("--no-features", is_flag=True, help="leave dense item features out of impressions")
def data_letor(input_path: str, query_path: str | None, output: str, click_model: str, sessions: int, seed: int,
               kuairand_dir: str | None, max_candidates: int | None, no_features: bool) -> None:
    """LETOR lists -> simulated sessions (impressions + click/long-view/watch-time/reformulation feedback)."""
    from simulator.click_models import ClickModel  # noqa: PLC0415
    from simulator.kuairand import load_kuairand  # noqa: PLC0415
    from simulator.letor import load_letor  # noqa: PLC0415
    from simulator.logs import simulated_sessions, write_log  # noqa: PLC0415
    from simulator.session import SessionSimulator, SimulatorConfig  # noqa: PLC0415

    dataset = load_letor(input_path, query_path)
    config = SimulatorConfig(click_model=ClickModel(kind=click_model, max_grade=max(1, dataset.max_grade)),
                             max_candidates=max_candidates, with_features=not no_features)
    sim = SessionSimulator(dataset, load_kuairand(kuairand_dir), config, seed=seed, namespace="letor")
    summary = write_log(simulated_sessions(sim, sessions), output, desc="letor")
    click.echo(f"{output}: {summary.impressions} impressions, {summary.feedback} feedback events "
               f"({len(dataset)} queries, click model {click_model})")


# -- replay / consume -------------------------------------------------------------------------
@cli.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--speed", type=float, default=None, help="event-time speed-up factor (e.g. 60 = 1 min/s)")
@click.option("--max-speed", is_flag=True, help="as fast as the broker takes it (the default)")
@click.option("--limit", type=int, default=None, help="stop after this many lines")
@click.option("--json", "as_json", is_flag=True)
def replay(logs: tuple[str, ...], speed: float | None, max_speed: bool, limit: int | None, as_json: bool) -> None:
    """Produce event logs to their topics keyed by request_id, preserving order and (scaled) gaps."""
    from streams.replay import replay as run_replay  # noqa: PLC0415

    if speed is not None and max_speed:
        raise click.UsageError("--speed and --max-speed exclude each other")
    summary = run_replay(list(logs), load_settings(), speed=speed, limit=limit)
    if as_json:
        echo_json(summary.as_dict())
    else:
        click.echo(f"replayed {summary.events} events in {summary.seconds:.2f}s ({summary.rate:,.0f} ev/s): "
                   + ", ".join(f"{k}={v}" for k, v in sorted(summary.by_topic.items()))
                   + f"; {len(summary.errors)} malformed lines")
        for err in summary.errors[:20]:
            click.echo(f"  {err.path}:{err.line}: {err.reason} at {err.field or '<event>'}: {err.detail}", err=True)


@cli.command()
@click.option("--topic", "topics", multiple=True, default=("impressions", "feedback"), show_default=True)
@click.option("--idle", default=5.0, show_default=True, help="stop after this many seconds without new records")
def consume(topics: tuple[str, ...], idle: float) -> None:
    """Read topics from the beginning (no consumer group) and print counts and validity."""
    from streams.consume import summarize_topics  # noqa: PLC0415

    result = summarize_topics(load_settings(), list(topics), idle_s=idle)
    echo_json({k: v.as_dict() for k, v in result.items()})


@cli.command(name="data-demo")
@click.option("--output", type=click.Path(file_okay=False), default="out/data-demo", show_default=True)
@click.option("--sessions", default=2000, show_default=True, help="simulated LETOR sessions")
@click.option("--keep-stack", is_flag=True, help="leave the embedded stack running afterwards")
def data_demo(output: str, sessions: int, keep_stack: bool) -> None:
    """Data path end to end: stack up, real data -> logs, replay, read back, summary."""
    from loop.data_path import run_data_demo  # noqa: PLC0415

    summary = run_data_demo(load_settings(), Path(output), sessions=sessions, keep_stack=keep_stack)
    echo_json({k: summary[k] for k in ("broker", "replay", "read_back", "errors", "seconds")})
    click.echo(f"summary written to {Path(output) / 'summary.json'}")
    if summary["errors"]:
        sys.exit(1)


@cli.command()
@click.option("--server", required=True, help="base URL of a running `streamrank serve`")
@click.option("--duration", default=0.0, show_default=True, help="seconds to run (0: until stopped)")
@click.option("--rate", default=20.0, show_default=True, help="requests per second")
@click.option("--concurrency", default=4, show_default=True, help="simulated users in parallel")
@click.option("--seed", default=0, show_default=True)
@click.option("--report-every", default=60.0, show_default=True, help="seconds between progress reports")
def simulate(server: str, duration: float, rate: float, concurrency: int, seed: int, report_every: float) -> None:
    """Simulated users (LETOR relevance, KuaiRand durations) querying a server and sending feedback.

    Request ids are unique for the whole run (each report chunk continues the last), and each
    report says what the server emitted and what the join made of it in that chunk."""
    from loop.config import DemoConfig  # noqa: PLC0415
    from loop.readback import get_json, join_totals  # noqa: PLC0415
    from loop.users import Users  # noqa: PLC0415
    from streams.metrics import status_dir  # noqa: PLC0415

    settings = load_settings()
    base = server.rstrip("/")
    users = Users(settings, DemoConfig(rate=rate, concurrency=concurrency, seed=seed), base)
    workers = status_dir(settings)
    click.echo(f"simulate: {rate:g} requests/s to {base}/rerank, feedback to {settings.topics.feedback}; "
               f"the join's counts from {workers}", err=True)
    remaining = duration if duration > 0 else float("inf")
    join_before = join_totals(workers)
    acked_before = _impressions_acked(get_json(f"{base}/healthz"))
    try:
        while remaining > 0:
            chunk = min(report_every, remaining)
            users.run(chunk, rate, concurrency)
            remaining -= chunk
            served, users.served = users.served, []  # report per chunk; keep memory bounded
            ok = [s for s in served if s.ok]
            mean_reward = sum(s.reward for s in ok) / max(1, len(ok))
            join_now, acked_now = join_totals(workers), _impressions_acked(get_json(f"{base}/healthz"))
            reasons = {r: n - join_before["reasons"].get(r, 0) for r, n in join_now["reasons"].items()
                       if n > join_before["reasons"].get(r, 0)}
            click.echo(f"simulate: {len(served)} requests, {len(served) - len(ok)} failed, "
                       f"mean list reward {mean_reward:.3f}, feedback events {users.feedback_events}; "
                       f"server: {acked_now - acked_before} impressions emitted; "
                       f"join: {join_now['examples'] - join_before['examples']} examples, "
                       f"{join_now['dead_lettered'] - join_before['dead_lettered']} dead letters"
                       + (f" {reasons}" if reasons else ""), err=True)
            join_before, acked_before = join_now, acked_now
    finally:
        users.close()


def _impressions_acked(healthz: dict) -> int:
    """Impressions the server's emitter had delivered to Kafka, from its ``/healthz`` (0 when unreachable)."""
    return int(healthz.get("impressions", {}).get("acked", 0))


@cli.command()
@click.option("--url", default=None, help="healthy when this URL answers 2xx")
@click.option("--status-file", type=click.Path(dir_okay=False), default=None,
              help="healthy when this status file was updated recently")
@click.option("--max-age", default=60.0, show_default=True, help="seconds, for --status-file")
def health(url: str | None, status_file: str | None, max_age: float) -> None:
    """Exit 0 when the service answers (container health checks)."""
    from common.health import check_status_file, check_url  # noqa: PLC0415

    if bool(url) == bool(status_file):
        raise click.UsageError("give exactly one of --url and --status-file")
    ok, detail = check_url(url) if url else check_status_file(Path(status_file), max_age)
    click.echo(("healthy: " if ok else "unhealthy: ") + detail)
    sys.exit(0 if ok else 1)


def _register_stage_commands() -> None:
    for module_name in STAGE_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that stage has no commands (yet)
            raise
        module.register(cli, eval_group)


def main() -> None:
    _register_stage_commands()
    cli(prog_name="streamrank")


if __name__ == "__main__":
    main()
