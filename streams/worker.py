"""Run one streams worker process (what ``streamrank worker`` does).

Several workers with the same settings form one consumer group (the app id) and split the
partitions of ``impressions``/``feedback``; each needs its own ``name`` and web port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from common.config import Settings
from common.logs import plain_worker
from common.faust_worker import FrozenHeapWorker
from streams.app import WorkerOptions, app_id, build_app
from streams.worker_fencing import fence_dead_members

#: Collection thresholds once the worker runs (CPython's default is 700/10/10). The agent allocates
#: and frees many short-lived objects per event (records, events, dicts, futures); a young
#: collection every 700 allocations then runs several times per batch. Almost none of them are
#: in cycles, so collecting less often costs little memory.
GC_THRESHOLDS = (50_000, 20, 100)


class StreamsWorker(FrozenHeapWorker):
    """``faust.Worker`` without the terminal spinner, and with a frozen heap after start-up
    (:class:`common.faust_worker.FrozenHeapWorker`) and ``GC_THRESHOLDS`` from then on.

    * Faust's spinner sets the root logger to DEBUG so that every log record (aiokafka and
      Faust debug records included) can turn it, even with ``--log-level warning`` and with no
      terminal; each ``log.debug`` on the per-record path then builds a record and runs the
      handlers. Without it the root logger stays at ``loglevel``.
    * ``gc.freeze()`` once Faust finished start-up and table recovery: the modules, the app and
      the recovered state move to the permanent generation, so full collections stop walking
      them again and again (``GC_THRESHOLDS`` above). Objects created later are collected as
      before.
    """

    gc_thresholds = GC_THRESHOLDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None


def run_worker(settings: Settings, options: WorkerOptions, loglevel: str = "warning") -> None:
    """Start the Faust worker and block until it is stopped (SIGTERM/SIGINT)."""
    streams_app = build_app(settings, options)
    # A worker killed with -9 may still hold partitions on brokers that never expire it.
    try:
        asyncio.run(asyncio.wait_for(fence_dead_members(settings.kafka_bootstrap, app_id(settings),
                                                        streams_app.joiner.status_dir, os.getpid()), timeout=20))
    except Exception as exc:  # noqa: BLE001 - best effort; the running worker retries every tick
        logging.getLogger(__name__).warning("could not fence dead workers before start: %s", exc)
    status = streams_app.metrics.write_status(streams_app.joiner.status_dir)
    topics = settings.topics
    print(f"worker {options.name}: joining {topics.impressions} + {topics.feedback} at {settings.kafka_bootstrap} "
          f"into {topics.examples} (bad records to {topics.dead_letter}); status {status} (`streamrank worker "
          f"--status`)", file=sys.stderr, flush=True)
    worker = plain_worker(streams_app.app, loglevel, StreamsWorker)
    worker.execute_from_commandline()
