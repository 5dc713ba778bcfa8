"""CLI of the feature store: ``streamrank features ...`` and ``streamrank snapshots ...``.

* ``features apply``        render the repo from config, generate the offline parquet from the
                            real data, run Feast's ``feast apply`` (``--materialize`` also loads Redis)
* ``features materialize``  ``--all`` (every offline row) or incremental up to now
* ``features render``       only write ``feature_store.yaml`` + definitions (then use ``feast`` there)
* ``features stats-agent``  run the streaming stats agent (Faust worker) in the foreground
* ``features read``         one user/query + items through the serving read path (debugging)
* ``snapshots list MODEL`` / ``show MODEL [--version V]`` / ``rollback MODEL VERSION`` /
  ``verify MODEL [--version V]`` (exit status 1 when the snapshot is refused)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from common.config import load_settings
from streamrank.cli.params import echo_json


def _registry():
    from feature_store.settings import load_feature_store_settings  # noqa: PLC0415
    from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415

    settings = load_settings()
    return SnapshotRegistry(settings.redis_url, settings, keep=load_feature_store_settings(settings).snapshot_keep)


@click.group()
def features() -> None:
    """Feast feature repo on Redis: apply, materialize, streaming stats agent, reads."""


@features.command("render")
def features_render() -> None:
    """Write feature_store.yaml (from the config) and the definitions into $STREAMRANK_HOME/feast/<project>."""
    from feature_store.feast_repo import render_repo  # noqa: PLC0415

    repo = render_repo(load_settings())
    click.echo(str(repo.path))


@features.command("apply")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False), default=None,
              help="real data folder (default ../shared/data)")
@click.option("--limit", type=int, default=None, help="read at most this many rows of each real file")
@click.option("--materialize/--no-materialize", "then_materialize", default=False,
              help="also load every offline row into Redis")
def features_apply(data_root: str | None, limit: int | None, then_materialize: bool) -> None:
    """Render the repo, generate its parquet from the real data and run `feast apply` on it."""
    from feature_store.feast_repo import apply, materialize_all  # noqa: PLC0415

    repo = apply(load_settings(), data_root=Path(data_root) if data_root else None, limit=limit)
    click.echo(f"applied {repo.path} (project {repo.project})")
    if then_materialize:
        materialize_all(repo)
        click.echo("materialized all offline rows")


@features.command("materialize")
@click.option("--all", "everything", is_flag=True, help="every offline row, not only new ones")
@click.option("--end", default=None, help="ISO end time (default now)")
@click.option("--view", "views", multiple=True, help="only these feature views")
def features_materialize(everything: bool, end: str | None, views: tuple[str, ...]) -> None:
    """Load offline rows into the Redis online store (incremental unless --all)."""
    from feature_store.feast_repo import EARLIEST, materialize, materialize_all, render_repo  # noqa: PLC0415

    repo = render_repo(load_settings())
    if not (repo.data / "registry.db").exists():
        raise click.ClickException(f"{repo.path} was never applied: run `streamrank features apply` first")
    end_ts = datetime.fromisoformat(end).astimezone(timezone.utc) if end else None
    if everything and not views:
        materialize_all(repo)
    else:
        try:
            materialize(repo, end=end_ts, start=EARLIEST if everything else None, views=list(views) or None)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"materialized {', '.join(views) or 'all views'}")


@features.command("stats-agent")
@click.option("--log-level", "loglevel", default="warning", show_default=True,
              help="debug | info | warning | error (the same flag on every long-running command)")
@click.option("--web-port", type=int, default=None, help="serve /healthz on STREAMRANK_BIND_HOST:PORT")
def features_stats_agent(loglevel: str, web_port: int | None) -> None:
    """Run the streaming stats agent: examples -> decayed item/query stats -> Feast push."""
    from feature_store.feast_repo import repo_path  # noqa: PLC0415
    from feature_store.settings import load_feature_store_settings  # noqa: PLC0415
    from feature_store.stats_agent import run_worker  # noqa: PLC0415

    settings = load_settings()
    fs = load_feature_store_settings(settings)
    sys.argv = [sys.argv[0]]  # the Faust worker parses argv itself
    run_worker(settings, fs, repo_path(settings, fs), loglevel=loglevel, web_port=web_port)


@features.command("read")
@click.option("--user", "user_id", default=None)
@click.option("--query", "query_id", default=None)
@click.option("--via", type=click.Choice(["direct", "feast"]), default="direct", show_default=True)
@click.argument("items", nargs=-1)
def features_read(user_id: str | None, query_id: str | None, via: str, items: tuple[str, ...]) -> None:
    """Features of one user/query and the given items, as serving reads them."""
    from feature_store.feast_repo import render_repo  # noqa: PLC0415
    from feature_store.online_read import DirectFeatureReader, FeastSdkReader  # noqa: PLC0415

    store = render_repo(load_settings()).store()
    reader = DirectFeatureReader(store) if via == "direct" else FeastSdkReader(store)
    bundle = reader.read(user_id, query_id, list(items))
    echo_json({"user": bundle.user, "query": bundle.query, "items": dict(zip(items, bundle.items))})


@click.group()
def snapshots() -> None:
    """Versioned model snapshots in Redis: list, show, rollback, verify."""


@snapshots.command("list")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True)
def snapshots_list(model: str | None, as_json: bool) -> None:
    """Kept versions of MODEL (or the models that have snapshots); unreadable versions and pointers show as BAD."""
    with _registry() as registry:
        if model is None:
            models = {m: registry.current_version(m) for m in registry.models()}
            if as_json:
                echo_json(models)
            elif not models:
                click.echo(f"no snapshots under {registry.namespace}")
            for m, v in models.items() if not as_json else ():
                problem = registry.pointer_problem(m, v)
                click.echo(f"{m}  current v{v}" + (f"  BAD POINTER: {problem}" if problem else ""))
            return
        rows = _version_rows(registry, model)
        if as_json:
            echo_json(rows)
            return
        problem = registry.pointer_problem(model)
        if problem:
            click.echo(f"BAD POINTER: {problem} (the next publish or a rollback replaces it)")
        if not rows:
            raise click.ClickException(f"no snapshots of {model!r}")
        for r in rows:
            if r["bad"]:
                click.echo(f"! v{r['version']:<5} BAD: {r['bad']}")
                continue
            flag = "*" if r["current"] else ("x" if r["rejected"] else " ")
            click.echo(f"{flag} v{r['version']:<5} parent {str(r['parent']):<5} {r['created_at']} "
                       f"{r['size_bytes']:>10} B  sha256 {r['sha256'][:12]}  {json.dumps(r['metrics'])}"
                       + (f"  REJECTED: {r['rejected']}" if r["rejected"] else ""))


def _version_rows(registry, model: str) -> list[dict]:
    """One row per kept version; a version whose manifest cannot be read has ``bad`` set (and nothing else)."""
    current = registry.current_version(model)
    rejected = registry.rejected(model)
    rows = []
    for version, m, problem in registry.inspect_versions(model):
        if m is None:
            rows.append({"version": version, "current": version == current, "bad": problem})
            continue
        rows.append({"version": m.version, "current": m.version == current, "parent": m.parent,
                     "created_at": datetime.fromtimestamp(m.created_at, timezone.utc).isoformat(timespec="seconds"),
                     "size_bytes": m.size_bytes, "sha256": m.sha256, "rejected": rejected.get(m.version),
                     "metrics": m.metrics, "bad": None})
    return rows


@snapshots.command("show")
@click.argument("model")
@click.option("--version", default=None, help="default: current")
def snapshots_show(model: str, version: str | None) -> None:
    """The manifest of one version (JSON)."""
    from feature_store.snapshots import SnapshotError  # noqa: PLC0415

    with _registry() as registry:
        try:
            manifest = registry.manifest(model, version) if version else registry.current(model)
        except SnapshotError as exc:
            raise click.ClickException(str(exc)) from None
        if manifest is None:
            raise click.ClickException(f"{model} has no current snapshot")
        echo_json(json.loads(manifest.to_json()))


@snapshots.command("rollback")
@click.argument("model")
@click.argument("version")
def snapshots_rollback(model: str, version: str) -> None:
    """Point MODEL's current snapshot at a kept VERSION (verified first; announced on model-updates).

    Running servers apply it within about a second (their watchers hear the announcement; the
    promotion gate is bypassed for an explicit rollback, the canary and shape checks are not);
    each server's ``GET /models`` shows the decision."""
    from feature_store.snapshots import SnapshotError  # noqa: PLC0415

    with _registry() as registry:
        before = registry.current_version(model)
        try:
            manifest = registry.rollback(model, version)
        except SnapshotError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"{model}: current v{before} -> v{manifest.version} (announced on model-updates; running servers "
                   f"swap to it, the promotion gate bypassed: see GET /models)")


@snapshots.command("verify")
@click.argument("model")
@click.option("--version", default=None, help="default: current")
@click.option("--all", "every", is_flag=True, help="every kept version")
def snapshots_verify(model: str, version: str | None, every: bool) -> None:
    """Check sha256, safetensors header, shapes and finiteness; exit 1 if any is refused."""
    with _registry() as registry:
        versions = registry.kept_versions(model) if every else [version]
        failed = False
        for v in versions:
            check = registry.verify(model, v)
            click.echo(f"{model} v{check.version or '-'}: " + ("ok" if check.ok else f"REFUSED: {check.reason}"))
            failed |= not check.ok
        if failed:
            sys.exit(1)


def register(cli: click.Group, eval_group: click.Group) -> None:  # noqa: ARG001 - no evaluations here
    """Add ``features`` and ``snapshots`` to the root group."""
    cli.add_command(features)
    cli.add_command(snapshots)
