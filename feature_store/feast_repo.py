"""The runnable Feast repo: definitions from ``feature_store/repo`` + a ``feature_store.yaml`` rendered from config.

``render_repo(settings)`` builds ``$STREAMRANK_HOME/feast/<project>/`` with

* ``feature_store.yaml`` pointing at the configured Redis (``Settings.redis``), a file
  offline store, a local registry file and ``entity_key_serialization_version: 3``;
* a copy of the definition modules of ``feature_store/repo`` (and nothing else: Feast imports
  every ``.py`` of a repo);
* ``data/``: the offline parquet (:mod:`feature_store.offline_data`) and the registry.

Feast's own CLI works in that folder (``cd $STREAMRANK_HOME/feast/streamrank && feast apply``
or ``feast -c <folder> materialize-incremental <end>``); ``streamrank features apply|materialize``
do the same from the project config. The rendered folder is derived state: re-rendering
overwrites the yaml and definitions, and keeps the data and registry.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.config import Settings
from feature_store.offline_data import PROFILE_TS, write_offline_data
from feature_store.settings import FeatureStoreSettings, load_feature_store_settings

DEFINITIONS = Path(__file__).resolve().parent / "repo"
#: Start of a full materialization: before every generated offline row.
EARLIEST = PROFILE_TS.replace(year=PROFILE_TS.year - 1)
YAML_TEMPLATE = """\
# Rendered by feature_store/feast_repo.py from the streamrank config; edits are overwritten.
project: {project}
registry: {registry}
provider: local
online_store:
  type: redis
  connection_string: "{connection_string}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def redis_connection_string(redis_url: str) -> str:
    """Feast's ``host:port,db=N[,password=...]`` form of a ``redis://[:password@]host:port/db`` URL."""
    from urllib.parse import urlparse  # noqa: PLC0415

    parsed = urlparse(redis_url if "://" in redis_url else f"redis://{redis_url}")
    if parsed.scheme not in ("redis", ""):
        raise ValueError(f"only redis:// URLs are supported for the Feast online store, got {redis_url!r}")
    db = parsed.path.strip("/") or "0"
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}", f"db={int(db)}"]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    return ",".join(parts)


@dataclass(frozen=True)
class FeastRepo:
    """A rendered repo folder and the project it declares."""

    path: Path
    project: str

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def yaml(self) -> Path:
        return self.path / "feature_store.yaml"

    def store(self):
        """A ``feast.FeatureStore`` on this repo (imports feast lazily: it takes ~1 s)."""
        from feast import FeatureStore  # noqa: PLC0415

        return FeatureStore(repo_path=str(self.path))


def repo_path(settings: Settings, fs: FeatureStoreSettings) -> Path:
    return settings.home / "feast" / fs.feast_project


def render_repo(settings: Settings, fs: FeatureStoreSettings | None = None) -> FeastRepo:
    """Write ``feature_store.yaml`` and the definitions into the repo folder (see module docstring)."""
    fs = fs or load_feature_store_settings(settings)
    path = repo_path(settings, fs)
    (path / "data").mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.py"):
        stale.unlink()
    for module in sorted(DEFINITIONS.glob("*.py")):
        shutil.copyfile(module, path / module.name)
    (path / ".feastignore").write_text("data/\n")
    path.joinpath("feature_store.yaml").write_text(YAML_TEMPLATE.format(
        project=fs.feast_project, registry=path / "data" / "registry.db",
        connection_string=redis_connection_string(settings.redis_url)))
    return FeastRepo(path, fs.feast_project)


def feast_cli(repo: FeastRepo, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run Feast's own CLI (``feast -c <repo> ARGS``) from this environment; raises on failure."""
    feast = Path(sys.executable).with_name("feast")
    argv = [str(feast) if feast.exists() else "feast", "-c", str(repo.path), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=repo.path)
    if proc.returncode != 0:
        raise RuntimeError(f"`feast {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                           f"\n{proc.stderr[-4000:]}")
    return proc


def apply(settings: Settings, fs: FeatureStoreSettings | None = None, data_root: Path | None = None,
          limit: int | None = None, progress: bool = True, use_cli: bool = True) -> FeastRepo:
    """Render the repo, generate its offline parquet from the real data, and ``feast apply`` it."""
    repo = render_repo(settings, fs)
    write_offline_data(repo.data, data_root=data_root, limit=limit, progress=progress)
    if use_cli:
        feast_cli(repo, "apply")
    else:
        import importlib.util  # noqa: PLC0415

        spec = importlib.util.spec_from_file_location("streamrank_feast_definitions", repo.path / "definitions.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        from feast import Entity, FeatureView, PushSource  # noqa: PLC0415

        objects = [v for v in vars(module).values() if isinstance(v, (Entity, FeatureView, PushSource))]
        repo.store().apply(objects)
    return repo


def materialize(repo: FeastRepo, end: datetime | None = None, start: datetime | None = None,
                views: list[str] | None = None, store=None) -> list[str]:
    """Load offline rows with timestamps in ``[start, end]`` into Redis; returns the views loaded.

    Without ``start`` it is incremental (Feast remembers what each view materialized). A view
    never materialized before is loaded from before :data:`PROFILE_TS` instead: Feast would
    start a view with ``ttl=0`` only 52 weeks back and miss the profile rows.
    """
    store = store or repo.store()
    end = end or datetime.now(timezone.utc)
    online = [fv for fv in store.list_feature_views() if fv.online and (not views or fv.name in views)]
    if views and len(online) != len(set(views)):
        raise ValueError(f"unknown or offline-only feature views: {sorted(set(views) - {fv.name for fv in online})}")
    names = [fv.name for fv in online]
    if start is not None:
        store.materialize(start_date=start, end_date=end, feature_views=names)
        return names
    fresh = [fv.name for fv in online if fv.most_recent_end_time is None]
    seen = [name for name in names if name not in fresh]
    if fresh:
        store.materialize(start_date=EARLIEST, end_date=end, feature_views=fresh)
    if seen:
        store.materialize_incremental(end_date=end, feature_views=seen)
    return names


def materialize_all(repo: FeastRepo, store=None) -> list[str]:
    """Materialize everything from before the profile timestamp until now (what ``features materialize --all`` does).

    Then writes the project's marker key (:func:`materialized_marker_key`) in the online Redis: a
    marker that is gone means the store lost its rows (Redis restarted empty), which
    :class:`feature_store.scheduling.MaterializeRepair` notices and repairs.
    """
    import redis  # noqa: PLC0415

    store = store or repo.store()
    names = materialize(repo, start=EARLIEST, store=store)
    url = redis_url_from_connection_string(store.config.online_store.connection_string)
    client = redis.Redis.from_url(url)
    try:
        client.set(materialized_marker_key(repo.project), str(time.time()))
    finally:
        client.close()
    return names


def materialized_marker_key(project: str) -> str:
    """The online-store key that says "every offline row of ``project`` was materialized here"."""
    return f"streamrank:feast:{project}:materialized_at"


def redis_url_from_connection_string(connection_string: str) -> str:
    """``redis://`` URL of a Feast Redis ``host:port,db=N[,password=...]`` connection string."""
    parts = connection_string.split(",")
    params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    auth = f":{params['password']}@" if params.get("password") else ""
    return f"redis://{auth}{parts[0]}/{int(params.get('db', 0))}"
