"""apscheduler jobs for the learner process: periodic snapshots (and one on shutdown), scheduled materialize.

Usage from a learner process (it does not depend on the learner runtime's internals)::

    def snapshot_source():
        # (model_name, LearnerState, metrics, changed): ``changed`` is True when the model was
        # updated since the caller last reported it; take the state under the learner's lock.
        return "ldro", learner.state_dict(), last_metrics, learner.updates_since_report() > 0

    jobs = LearnerJobs(registry, snapshot_source, load_feature_store_settings(settings),
                       materialize=incremental_materialize_job(settings))
    jobs.start()          # BackgroundScheduler thread: snapshot every T s when changed, materialize on schedule
    ...
    jobs.shutdown()       # stops the jobs, then publishes a last snapshot if anything changed

:class:`MaterializeRepair` is the online store's own repair job (serving runs it when it reads
item features from Feast): every ``repair_check_interval_s`` it checks the marker that
:func:`feature_store.feast_repo.materialize_all` leaves in the online Redis, and when it is gone
(Redis restarted empty: the rows went with it) materializes everything again, so lost features
come back within one check interval plus the materialization, without a person.

Intervals come from :mod:`feature_store.settings` (``STREAMRANK_SNAPSHOT_INTERVAL_S``,
``STREAMRANK_MATERIALIZE_INTERVAL_S``). A failed publish (Redis down, NaN weights) is logged
and retried at the next tick even if the source then reports no change, so a change is never
forgotten; a refused (NaN) state is not retried until the model changes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler

from common.config import Settings
from contracts.learner import LearnerState
from feature_store.settings import FeatureStoreSettings
from feature_store.snapshots import Manifest, SnapshotInvalid, SnapshotRegistry

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], tuple[str, LearnerState, dict[str, Any] | None, bool]]


@dataclass
class JobStats:
    """What the jobs did (for logs, metrics and tests)."""

    published: list[Manifest] = field(default_factory=list)
    skipped_unchanged: int = 0
    failures: list[str] = field(default_factory=list)
    materialized: int = 0
    publish_s: deque[float] = field(default_factory=lambda: deque(maxlen=500))  # seconds per successful publish


def incremental_materialize_job(settings: Settings, fs: FeatureStoreSettings | None = None) -> Callable[[], None]:
    """A ``materialize`` callable for :class:`LearnerJobs`: ``materialize-incremental`` of the rendered repo up to now.

    The Feast store is opened on first use (in the scheduler thread) and reused.
    """
    from feature_store.feast_repo import materialize, render_repo  # noqa: PLC0415

    repo = render_repo(settings, fs)
    holder: dict[str, Any] = {}

    def job() -> None:
        if "store" not in holder:
            holder["store"] = repo.store()
        materialize(repo, store=holder["store"])

    return job


class LearnerJobs:
    """A BackgroundScheduler with a snapshot job and an optional materialize job."""

    def __init__(self, registry: SnapshotRegistry, source: SnapshotSource, config: FeatureStoreSettings,
                 materialize: Callable[[], Any] | None = None) -> None:
        self.registry = registry
        self.source = source
        self.config = config
        self.materialize = materialize
        self.stats = JobStats()
        self._pending = False  # a change seen but not yet published (failed attempt)
        self._lock = threading.Lock()  # one snapshot at a time (tick vs. shutdown)
        self.scheduler = BackgroundScheduler(timezone="UTC")

    def start(self) -> None:
        self.scheduler.add_job(self.snapshot_if_changed, "interval", seconds=self.config.snapshot_interval_s,
                               id="snapshot", max_instances=1, coalesce=True)
        if self.materialize is not None:
            self.scheduler.add_job(self.run_materialize, "interval", seconds=self.config.materialize_interval_s,
                                   id="materialize", max_instances=1, coalesce=True)
        self.scheduler.start()

    def snapshot_if_changed(self) -> Manifest | None:
        """One tick: publish when the source reports a change (or a previous attempt failed)."""
        with self._lock:
            try:
                model, state, metrics, changed = self.source()
            except Exception as exc:  # noqa: BLE001 - a broken source must not kill the scheduler
                log.exception("snapshot source failed")
                self.stats.failures.append(f"source: {exc}")
                return None
            if not (changed or self._pending):
                self.stats.skipped_unchanged += 1
                return None
            started = time.monotonic()
            try:
                manifest = self.registry.publish(model, state, metrics=metrics)
            except SnapshotInvalid as exc:
                log.error("snapshot of %s refused: %s", model, exc)
                self.stats.failures.append(str(exc))
                self._pending = False  # retrying the same bad weights would be refused again
                return None
            except Exception as exc:  # noqa: BLE001 - Redis down etc.: retry next tick
                log.warning("snapshot of %s failed, retrying next tick: %s", model, exc)
                self.stats.failures.append(str(exc))
                self._pending = True
                return None
            self._pending = False
            self.stats.published.append(manifest)
            self.stats.publish_s.append(time.monotonic() - started)
            log.info("published %s v%s", manifest.name, manifest.version)
            return manifest

    def run_materialize(self) -> None:
        try:
            self.materialize()  # type: ignore[misc]
            self.stats.materialized += 1
        except Exception as exc:  # noqa: BLE001
            log.exception("scheduled materialize failed")
            self.stats.failures.append(f"materialize: {exc}")

    def shutdown(self, final_snapshot: bool = True) -> Manifest | None:
        """Stop the jobs (waiting for a running one), then publish a last snapshot if the model changed."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        return self.snapshot_if_changed() if final_snapshot else None


class MaterializeRepair:
    """An apscheduler job that re-materializes every offline row when the online store lost them.

    ``materialize_all`` does the work and leaves the marker (:func:`feature_store.feast_repo.materialize_all`);
    a check costs one Redis EXISTS. A failed check or materialization (Redis still down) is logged and
    retried at the next tick.
    """

    def __init__(self, redis_client: Any, marker_key: str, materialize_all: Callable[[], Any],
                 interval_s: float = 10.0) -> None:
        self.redis = redis_client
        self.marker_key = marker_key
        self.materialize_all = materialize_all
        self.interval_s = interval_s
        self.repairs = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.scheduler = BackgroundScheduler(timezone="UTC")

    @classmethod
    def for_repo(cls, settings: Settings, fs: FeatureStoreSettings | None = None) -> "MaterializeRepair":
        """The repair job of the applied Feast repo of ``settings`` (its Redis, its marker); not re-rendered."""
        import redis  # noqa: PLC0415

        from feature_store.feast_repo import FeastRepo, materialize_all, materialized_marker_key, repo_path  # noqa: PLC0415
        from feature_store.settings import load_feature_store_settings  # noqa: PLC0415

        fs = fs or load_feature_store_settings(settings)
        repo = FeastRepo(repo_path(settings, fs), fs.feast_project)
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        return cls(client, materialized_marker_key(repo.project), lambda: materialize_all(repo),
                   fs.repair_check_interval_s)

    def check_once(self) -> bool:
        """Re-materialize if the marker is gone; True when it did."""
        with self._lock:
            try:
                if self.redis.exists(self.marker_key):
                    return False
                log.warning("the online store lost its materialized rows (%s is gone): materializing again",
                            self.marker_key)
                started = time.monotonic()
                self.materialize_all()
            except Exception as exc:  # noqa: BLE001 - Redis still down: the next tick retries
                log.warning("feature repair failed, retrying in %.0f s: %s", self.interval_s, exc)
                self.failures.append(str(exc))
                return False
            self.repairs += 1
            log.warning("online features re-materialized in %.1f s", time.monotonic() - started)
            return True

    def start(self) -> "MaterializeRepair":
        self.scheduler.add_job(self.check_once, "interval", seconds=self.interval_s, id="feature-repair",
                               max_instances=1, coalesce=True)
        self.scheduler.start()
        return self

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.redis.close()
