"""Run one streams worker process (what ``streamrank worker`` does).

Several workers with the same settings form one consumer group (the app id) and split the
partitions of ``impressions``/``feedback``; each needs its own ``name`` and web port.
"""

from __future__ import annotations

import asyncio
import logging
import os

import faust

from streamrank.config import Settings
from streams.app import WorkerOptions, app_id, build_app
from streams.worker_fencing import fence_dead_members


def run_worker(settings: Settings, options: WorkerOptions, loglevel: str = "warning") -> None:
    """Start the Faust worker and block until it is stopped (SIGTERM/SIGINT)."""
    streams_app = build_app(settings, options)
    # A worker killed with -9 may still hold partitions on brokers that never expire it.
    try:
        asyncio.run(asyncio.wait_for(fence_dead_members(settings.kafka_bootstrap, app_id(settings),
                                                        streams_app.joiner.status_dir, os.getpid()), timeout=20))
    except Exception as exc:  # noqa: BLE001 - best effort; the running worker retries every tick
        logging.getLogger(__name__).warning("could not fence dead workers before start: %s", exc)
    streams_app.metrics.write_status(streams_app.joiner.status_dir)
    logging.getLogger("faust").setLevel(loglevel.upper())
    worker = faust.Worker(streams_app.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
