"""Prometheus metrics of the reranker service: what ``GET /metrics`` (serving.read_routes) exposes.

Two modes, chosen by the environment when :class:`Metrics` is built:

* **One process** (no ``STREAMRANK_SERVE_METRICS_DIR``): every app has its own
  :class:`~prometheus_client.CollectorRegistry`, so tests can build many apps in one process and
  each app's ``/metrics`` counts only its own requests.
* **Several worker processes** (``streamrank serve --workers N``, serving.workers): prometheus_client's
  multiprocess mode. Each worker writes its values to memory-mapped files
  ``<PROMETHEUS_MULTIPROC_DIR>/<type>[_<mode>]_<pid>.db``; ``/metrics``, answered by whichever worker
  the kernel hands the connection to, reads *all* workers' files through a
  :class:`~prometheus_client.multiprocess.MultiProcessCollector`, so counters and histograms are
  the sum over workers. ``PROMETHEUS_MULTIPROC_DIR`` must be set before ``prometheus_client`` is
  imported (its value class is chosen at import): serving.workers sets it in the parent, with
  ``STREAMRANK_SERVE_METRICS_DIR`` naming the same folder, and uvicorn's spawned workers inherit both.

The mode follows ``STREAMRANK_SERVE_METRICS_DIR``, not ``PROMETHEUS_MULTIPROC_DIR`` alone: importing
Feast sets ``PROMETHEUS_MULTIPROC_DIR`` to a temporary folder of its own when it is unset
(``feast/metrics.py``), so a server that reads features from Feast, or that a Feast-importing
process started, would otherwise take itself for one of several workers.

A gauge has no single meaning across processes, so each says how to combine (``multiprocess_mode``):

* ``streamrank_model_swaps``, ``streamrank_model_refusals``: ``liveall``. Each worker swaps on its
  own: a sum counts one snapshot N times and a max hides the worker that lags, so one series per
  live worker (``pid`` label).
* ``streamrank_impressions_acked/_dropped/_failed``, ``streamrank_features_unavailable/_from_cache``:
  ``sum``. Counts of distinct impressions and reads; a dead worker's still happened, so its file
  keeps counting.
* ``streamrank_impressions_queued``: ``livesum``. What waits now; a dead worker's buffer is gone.
* ``streamrank_healthy``: ``livemin``. The server is healthy only if every live worker is.
* ``streamrank_serving_workers``: ``livesum`` of 1 per worker: how many workers serve.

Gauges mirror runtime state (the holder's swap count, the emitter's stats), so they are copied in
at scrape time (:meth:`Metrics.refresh`); with several workers only the scraped one would be
fresh, so :meth:`Metrics.keep_fresh` also copies them every second on each worker and marks
workers that died (``mark_process_dead``: their ``live*`` gauge files are removed; counters keep
their files, a dead worker's answered requests were answered).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

log = logging.getLogger(__name__)

#: prometheus_client's own variable: the folder of the workers' metric files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Set (with MULTIPROC_ENV, to the same folder) by serving.workers: the workers' metrics folder.
SERVE_METRICS_ENV = "STREAMRANK_SERVE_METRICS_DIR"
#: How often each worker copies its gauges into its files (multiprocess mode only).
REFRESH_INTERVAL_S = 1.0


def multiprocess_dir(env: dict[str, str] | None = None) -> Path | None:
    """The workers' metrics folder named by the environment (``STREAMRANK_SERVE_METRICS_DIR``), or
    ``None`` (one process, whatever ``PROMETHEUS_MULTIPROC_DIR`` says: see the module docstring)."""
    raw = (os.environ if env is None else env).get(SERVE_METRICS_ENV, "")
    return Path(raw) if raw else None


def _values_are_shared() -> bool:
    """Whether prometheus_client stores values in the multiprocess files (decided at its import)."""
    return getattr(values.ValueClass, "__name__", "") == "MmapedValue"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def live_gauge_pids(folder: Path) -> set[int]:
    """Pids that have ``live*`` gauge files in ``folder`` (``gauge_livesum_1234.db`` -> 1234)."""
    pids = set()
    for path in folder.glob("gauge_live*_*.db"):
        try:
            pids.add(int(path.stem.rsplit("_", 1)[1]))
        except ValueError:
            continue
    return pids


def mark_dead_workers(folder: Path) -> list[int]:
    """``mark_process_dead`` for every pid with live gauge files whose process is gone; returns them."""
    dead = sorted(pid for pid in live_gauge_pids(folder) if not _pid_alive(pid))
    for pid in dead:
        mark_process_dead(pid, str(folder))
    return dead


class Metrics:
    """Prometheus metrics of one app instance: own registry with one process, shared files with several."""

    def __init__(self) -> None:
        folder = multiprocess_dir()
        if folder is not None and os.environ.get(MULTIPROC_ENV) != str(folder):
            raise RuntimeError(f"{SERVE_METRICS_ENV}={folder} needs {MULTIPROC_ENV} set to the same folder (where "
                               f"prometheus_client writes the workers' files; streamrank serve --workers N sets both)")
        if folder is not None and not _values_are_shared():
            raise RuntimeError(f"{MULTIPROC_ENV}={folder} was set after prometheus_client was imported, so this "
                               f"process keeps its metrics in memory and /metrics could not add up the workers: set "
                               f"it before the server starts (streamrank serve --workers N does)")
        if folder is not None and not folder.is_dir():
            raise RuntimeError(f"{MULTIPROC_ENV}={folder} is not a directory")
        self.multiproc_dir = folder
        self.registry = CollectorRegistry()
        self.requests = Counter("streamrank_rerank_requests", "rerank requests answered", ["status"],
                                registry=self.registry)
        self.latency = Histogram("streamrank_rerank_seconds", "rerank handler latency", registry=self.registry,
                                 buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.batch_size = Histogram("streamrank_rerank_batch_size", "size of the micro-batch each request was scored "
                                    "in (serving.microbatch)", registry=self.registry,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
        self.swaps = Gauge("streamrank_model_swaps", "snapshots swapped in", registry=self.registry,
                           multiprocess_mode="liveall")
        self.refusals = Gauge("streamrank_model_refusals", "snapshots refused or blocked", registry=self.registry,
                              multiprocess_mode="liveall")
        self.emitted = Gauge("streamrank_impressions_acked", "impressions acknowledged by Kafka", registry=self.registry,
                             multiprocess_mode="sum")
        self.dropped = Gauge("streamrank_impressions_dropped", "impressions dropped (buffer full)",
                             registry=self.registry, multiprocess_mode="sum")
        self.failed = Gauge("streamrank_impressions_failed", "impressions the broker never acknowledged",
                            registry=self.registry, multiprocess_mode="sum")
        self.queued = Gauge("streamrank_impressions_queued", "impressions waiting in the buffer", registry=self.registry,
                            multiprocess_mode="livesum")
        self.features_unavailable = Gauge("streamrank_features_unavailable", "requests whose feature read failed "
                                          "(store unreachable)", registry=self.registry, multiprocess_mode="sum")
        self.features_from_cache = Gauge("streamrank_features_from_cache", "requests served item features from the "
                                         "local cache", registry=self.registry, multiprocess_mode="sum")
        self.healthy = Gauge("streamrank_healthy", "1: /healthz says ok, 0: degraded", registry=self.registry,
                             multiprocess_mode="livemin")
        self.degraded = Counter("streamrank_rerank_degraded", "requests answered degraded, by what", ["reason"],
                                registry=self.registry)
        self.workers = Gauge("streamrank_serving_workers", "server worker processes serving", registry=self.registry,
                             multiprocess_mode="livesum")
        self.workers.set(1)

    @property
    def multiprocess(self) -> bool:
        return self.multiproc_dir is not None

    def refresh(self, runtime: Any) -> None:
        """Copy the runtime's state (swaps, refusals, impressions, feature reads, health) into the gauges."""
        from serving.read_routes import degraded_reasons  # noqa: PLC0415 - read_routes receives a Metrics

        stats = runtime.emitter.stats
        self.swaps.set(runtime.holder.swaps)
        self.refusals.set(runtime.holder.refusals)
        self.emitted.set(stats.acked)
        self.dropped.set(stats.dropped)
        self.failed.set(stats.failed)
        self.queued.set(runtime.emitter.queued)
        features = runtime.features
        self.features_unavailable.set(getattr(features, "unavailable", 0))
        self.features_from_cache.set(getattr(features, "from_cache", 0))
        self.healthy.set(0 if degraded_reasons(runtime) else 1)

    def exposition(self) -> bytes:
        """The Prometheus text of this app (one process) or of every worker's files (several)."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiproc_dir))
        return generate_latest(merged)

    def keep_fresh(self, runtime: Any, interval_s: float = REFRESH_INTERVAL_S) -> Callable[[], None]:
        """With several workers: a daemon thread that refreshes this worker's gauges and marks dead
        workers every ``interval_s``. Returns the stop function (it also marks this worker dead, so
        its live gauges leave ``/metrics`` with it). One process: nothing to do, a no-op stop."""
        folder = self.multiproc_dir
        if folder is None:
            return lambda: None
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                try:
                    self.refresh(runtime)
                    mark_dead_workers(folder)
                except Exception:  # noqa: BLE001 - a metrics hiccup must not end the thread
                    log.exception("refreshing the serving metrics failed")

        mark_dead_workers(folder)  # a worker that replaces a crashed one clears the crashed one's gauges
        self.refresh(runtime)
        thread = threading.Thread(target=loop, name="metrics-refresh", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=2 * interval_s)
            mark_process_dead(os.getpid(), str(folder))

        return close


def answered_by_worker(folder: Path) -> dict[int, float]:
    """Requests each worker answered (HTTP 200), from its own counter file (``counter_<pid>.db``):
    which worker served how much, which the summed ``/metrics`` cannot say (benches and tests)."""
    out = {}
    for path in folder.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "streamrank_rerank_requests_total" and sample.labels.get("status") == "200":
                    out[int(path.stem.rsplit("_", 1)[1])] = sample.value
    return out


def prepare_multiproc_dir(folder: Path) -> Path:
    """Create ``folder`` and remove the metric files a previous server left in it (at start, before
    any worker exists: otherwise the last run's counters would be added to this one's)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    return folder
