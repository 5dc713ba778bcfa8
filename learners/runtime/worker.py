"""The learner worker (``streamrank learn --model NAME``): a Faust agent feeding the learner runtime.

One Faust app per model and topic prefix (app id = consumer group
``<prefix>learner-<model>``) reads **every** partition of ``examples`` (DESIGN.md: a learner
is one model, not one partition; run one instance per model). The agent micro-batches with
``stream.take_events(batch_size, within=...)`` and hands raw records to
:class:`learners.runtime.runner.LearnerRuntime`, which skips what the checkpoint already holds,
learns full batches, checkpoints every N batches and reports seeks and dead letters; the
agent executes those (``consumer.seek``; dead letters to the ``dead-letter`` topic with the
``dl.*`` headers of :mod:`streams.dead_letter`).

Effectively-once across kill -9: Faust commits offsets on its own schedule, possibly past
the last checkpoint. The runtime knows the next offset it must see per partition (from the
checkpoint, or the partition's earliest offset at assignment when the checkpoint has none)
and, when a partition starts past it, the agent seeks back to it; records at or below the
checkpoint's offsets and recently applied example ids are skipped.

The consumer group's commits are therefore only a hint: a worker started with another group
(``--group``; a standby taking over) resumes exactly where the checkpoint says. That is also
the restart path after a kill -9 on noida-db 0.2.3, which never evicts the killed member: a
restart in the same group was measured to loop on "(Re-)joining group" at the same
generation for minutes (Tansu rebalances normally after ``broker_rebalance_timeout``).

A partial batch is learned when the stream has been idle for ``idle_flush_s`` (a timer; then
it checkpoints) or, with ``max_wait_s``, once its oldest example waited that long (after a
take, or on the timer when no record came). The timer also logs progress (examples/s, loss,
lag, skips) every ``progress_s`` and writes ``<checkpoint_dir>/<model>/status.json`` (with
step timings: batch wait, learn, checkpoint, publish); ``stop_after`` ends the worker once
that many examples are applied in total (replays, tests). With ``publish`` every checkpoint is
also handed to an apscheduler job that publishes it to the snapshot registry
(``feature_store.snapshots``) when it changed, and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from common.config import Settings
from learners.registry import build_learner
from learners.runtime.checkpoint import CheckpointStore
from learners.runtime.feature_fill import FeatureFill, feast_row_reader
from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig, StepResult, timing_summary
from streams import fetch_backoff

log = logging.getLogger("streamrank.learner")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LearnWorkerOptions:
    model: str
    checkpoint_dir: Path
    batch_size: int = 256
    within_s: float = 0.5
    checkpoint_every: int = 10
    idle_flush_s: float = 2.0
    #: learn a partial batch once its oldest example waited this long (RuntimeConfig.max_wait_s)
    max_wait_s: float | None = None
    progress_s: float = 5.0
    stop_after: int | None = None
    web_port: int = 0
    group: str | None = None  # consumer group (Faust app id); default <prefix>learner-<model>
    publish: bool = False  # publish checkpoints as snapshots (feature_store.SnapshotRegistry, apscheduler job)
    model_config: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def learner_app_id(settings: Settings, model: str) -> str:
    return f"{settings.topics.prefix}learner-{model}"


def _atomic_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


@dataclass
class LearnerApp:
    app: faust.App
    runtime: LearnerRuntime
    options: LearnWorkerOptions
    status_path: Path
    progress: dict[str, Any]
    jobs: Any = None  # feature_store.scheduling.LearnerJobs when publishing
    finished: bool = False

    def finish(self) -> None:
        """Last checkpoint, last snapshot and final status, once (Faust's shutdown, or at exit).

        Runs while Faust stops (``on_before_shutdown``): at interpreter exit the scheduler's
        thread pool and the registry's Kafka producer are already shut down by their own exit
        hooks, so the last snapshot would miss the ``model-updates`` topic."""
        if self.finished:
            return
        self.finished = True
        runtime = self.runtime
        if runtime.batches and runtime.store is not None:
            runtime.checkpoint()
        if self.jobs is not None:
            self.jobs.shutdown(final_snapshot=True)
            _atomic_json(self.status_path, {**runtime.status(), "lag": self.progress.get("lag"), "final": True,
                                            "pid": os.getpid(), "ts": time.time()})


def snapshot_publisher(settings: Settings, runtime: LearnerRuntime) -> Any:
    """An apscheduler job publishing the newest checkpoint to the snapshot registry when it changed.

    The runtime's ``on_checkpoint`` hook hands each checkpointed state over (states are
    copies, so the scheduler thread never touches the live model); the job publishes it with
    the applied offsets as the manifest's training offsets.
    """
    import threading  # noqa: PLC0415

    from contracts.learner import RUNTIME_META_KEY, LearnerState, publishable_meta  # noqa: PLC0415
    from feature_store.scheduling import LearnerJobs  # noqa: PLC0415
    from feature_store.settings import load_feature_store_settings  # noqa: PLC0415
    from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415

    lock = threading.Lock()
    latest: dict[str, Any] = {"state": None, "metrics": None, "changed": False}

    def remember(model: str, state: LearnerState, metrics: dict) -> None:
        meta = publishable_meta(state.meta)
        meta["offsets"] = dict(meta[RUNTIME_META_KEY].get("offsets", {}))
        with lock:
            latest.update(state=LearnerState(tensors=state.tensors, meta=meta), metrics=dict(metrics), changed=True)

    def source() -> tuple[str, LearnerState, dict | None, bool]:
        with lock:
            state, metrics, changed = latest["state"], latest["metrics"], latest["changed"]
            latest["changed"] = False
        return runtime.model_name, state if state is not None else LearnerState(), metrics, changed and state is not None

    runtime.on_checkpoint.append(remember)
    registry = SnapshotRegistry(settings.redis_url, settings)
    return LearnerJobs(registry, source, load_feature_store_settings(settings))


def build_learner_app(settings: Settings, options: LearnWorkerOptions) -> LearnerApp:
    learner = build_learner(options.model, **dict(options.model_config))
    store = CheckpointStore(options.checkpoint_dir, options.model)
    runtime = LearnerRuntime(options.model, learner, store,
                             RuntimeConfig(batch_size=options.batch_size, checkpoint_every=options.checkpoint_every,
                                           max_event_bytes=settings.max_event_bytes, max_wait_s=options.max_wait_s))
    runtime.restore()
    if settings.redis:  # impressions may name item features instead of carrying them (serving's default)
        runtime.prepare = FeatureFill(feast_row_reader(settings))
    status_path = store.dir / "status.json"
    datadir = store.dir / "faust"  # Faust's own scratch space (memory store: nearly empty)
    datadir.parent.mkdir(parents=True, exist_ok=True)
    fetch_backoff.install(0.05)  # the embedded broker answers empty fetches at once: don't spin on them
    app = faust.App(
        options.group or learner_app_id(settings, options.model),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        web_enabled=False,
        web_host=LOOPBACK,
        web_bind=LOOPBACK,
        web_port=options.web_port or free_port(),
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=10,  # a kill -9'd member is waited for this long on rejoin (default 60 s)
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_disable_leader=True,
        topic_allow_declare=False,
        stream_recovery_delay=0,
        producer_max_request_size=8 * 1024 * 1024,
    )
    examples_topic = settings.topics.examples
    source = app.topic(examples_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    dead_letter = app.topic(settings.topics.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw",
                            value_serializer="raw")
    lock = asyncio.Lock()
    progress: dict[str, Any] = {"last": time.monotonic(), "stopping": False, "lag": None, "assigned": []}

    async def execute(result: StepResult) -> None:
        for letter in result.dead_letters:
            await dead_letter.send(key=letter.key, value=letter.value if letter.value is not None else b"",
                                   headers=letter.headers(), force=True)
        for tp, offset in result.seeks.items():
            topic, _, partition = tp.rpartition(":")
            await app.consumer.seek(TP(topic, int(partition)), offset)

    @app.agent(source, name=f"learn-{options.model}")
    async def learn(stream: Any) -> None:
        async for events in stream.take_events(options.batch_size, within=options.within_s):
            records = [Record(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
                       for e in events]
            async with lock:
                result = await asyncio.to_thread(runtime.offer, records)
            await execute(result)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        mine = [tp for tp in assigned if tp.topic == examples_topic]
        # Readiness for whoever started this worker (the demo waits for it before sending traffic).
        progress["assigned"] = sorted(f"{tp.topic}:{tp.partition}" for tp in mine)
        write_status()
        unknown = [tp for tp in mine if runtime.next_offset(f"{tp.topic}:{tp.partition}") is None]
        if unknown:
            try:
                earliest = await app.consumer.earliest_offsets(*unknown)
            except Exception:  # noqa: BLE001 - best effort; records are still de-duplicated by id
                log.exception("could not read earliest offsets")
                return
            for tp, offset in earliest.items():
                runtime.expect(f"{tp.topic}:{tp.partition}", int(offset or 0))

    def lag() -> int | None:
        try:
            total = 0
            for tp in app.consumer.assignment():
                if tp.topic != examples_topic:
                    continue
                high = app.consumer.highwater(tp)
                done = runtime.offsets.get(f"{tp.topic}:{tp.partition}", -1) + 1
                total += max(0, (high or 0) - done)
            return total
        except Exception:  # noqa: BLE001 - not assigned yet
            return None

    def write_status() -> dict:
        doc = runtime.status()
        if jobs is not None:  # assigned below, before the app starts
            doc["timings_s"].update(timing_summary({"publish": jobs.stats.publish_s}))
        progress["lag"] = lag()
        doc.update(lag=progress["lag"], pid=os.getpid(), ts=time.time(), assigned=progress["assigned"])
        _atomic_json(status_path, doc)
        return doc

    @app.timer(interval=0.5, name=f"learn-{options.model}-tick")
    async def tick() -> None:
        now = time.monotonic()
        async with lock:
            # idle stream, or a partial batch past max_wait_s that no new record came to learn
            if runtime.queued and (now - runtime.last_record_at >= options.idle_flush_s or runtime.wait_expired(now)):
                result = await asyncio.to_thread(runtime.flush)
                await execute(result)
                await asyncio.to_thread(runtime.checkpoint)
        if now - progress["last"] >= options.progress_s:
            progress["last"] = now
            doc = write_status()
            log.warning("%s: applied %d (%.1f ex/s) loss %s lag %s skipped %d/%d dead-lettered %d checkpoint %s",
                        options.model, doc["applied"], doc["examples_per_s"], doc["metrics"].get("loss"), doc["lag"],
                        doc["skipped_offsets"], doc["skipped_ids"], doc["dead_lettered"], doc["checkpoint_seq"])
        if (options.stop_after is not None and not progress["stopping"] and runtime.applied >= options.stop_after):
            progress["stopping"] = True
            async with lock:
                await asyncio.to_thread(runtime.checkpoint)
            write_status()
            log.warning("%s: applied %d >= stop_after %d: stopping", options.model, runtime.applied,
                        options.stop_after)
            os.kill(os.getpid(), signal.SIGTERM)

    jobs = snapshot_publisher(settings, runtime) if options.publish else None
    learner_app = LearnerApp(app=app, runtime=runtime, options=options, status_path=status_path, progress=progress,
                             jobs=jobs)

    @app.on_before_shutdown.connect
    async def finish_on_shutdown(sender: Any, **kwargs: Any) -> None:
        async with lock:  # never while a batch is being learned
            await asyncio.to_thread(learner_app.finish)

    return learner_app


def run_learner(settings: Settings, options: LearnWorkerOptions, loglevel: str = "warning") -> None:
    """Start the learner worker and block until SIGTERM/SIGINT (or ``stop_after``)."""
    learner_app = build_learner_app(settings, options)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faust").setLevel(loglevel.upper())

    atexit.register(learner_app.finish)  # when Faust's shutdown did not get to it
    if learner_app.jobs is not None:
        learner_app.jobs.start()
    worker = faust.Worker(learner_app.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
