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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from common.config import Settings
from common.faust_worker import FrozenHeapWorker
from common.logs import PROGRESS, format_metrics, plain_worker
from learners.registry import build_learner
from learners.runtime.checkpoint import CheckpointStore
from learners.runtime.feature_fill import FeatureFill, feast_row_reader
from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig, StepResult, timing_summary
from streams import fetch_backoff
from streams.metrics import status_dir

log = logging.getLogger("streamrank.learner")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LearnWorkerOptions:
    model: str
    checkpoint_dir: Path
    batch_size: int = 256
    within_s: float = 0.5
    checkpoint_every: int = 10
    #: seconds: also checkpoint after a batch this long after the last one (None: with
    #: ``publish``, the snapshot interval, so snapshots come at the configured cadence)
    checkpoint_interval_s: float | None = None
    idle_flush_s: float = 2.0
    #: learn a partial batch once its oldest example waited this long (RuntimeConfig.max_wait_s)
    max_wait_s: float | None = None
    progress_s: float = 5.0
    stop_after: int | None = None
    web_port: int = 0
    group: str | None = None  # consumer group (Faust app id); default <prefix>learner-<model>
    publish: bool = False  # publish checkpoints as snapshots (feature_store.SnapshotRegistry, apscheduler job)
    model_config: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"  # learners.device.resolve_device: auto | cpu | cuda[:N]
    decode_workers: int = 0  # RuntimeConfig.decode_workers


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
        try:
            runtime.close()  # the update thread and the decode workers
        except Exception as exc:  # noqa: BLE001 - a failed update was already reported; shut down anyway
            log.warning("%s: closing the runtime: %s", runtime.model_name, exc)
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


def _learner_runtime(settings: Settings, options: LearnWorkerOptions) -> tuple[LearnerRuntime, CheckpointStore]:
    """The model of ``options`` behind its runtime, restored from its newest checkpoint in the store."""
    learner = build_learner(options.model, device=options.device, **dict(options.model_config))
    store = CheckpointStore(options.checkpoint_dir, options.model)
    interval = options.checkpoint_interval_s
    if interval is None and options.publish:
        from feature_store.settings import load_feature_store_settings  # noqa: PLC0415

        interval = load_feature_store_settings(settings).snapshot_interval_s
    runtime = LearnerRuntime(options.model, learner, store,
                             RuntimeConfig(batch_size=options.batch_size, checkpoint_every=options.checkpoint_every,
                                           checkpoint_interval_s=interval, max_event_bytes=settings.max_event_bytes,
                                           max_wait_s=options.max_wait_s, prefetch=True,
                                           decode_workers=options.decode_workers))
    runtime.restore()
    if settings.redis:  # impressions may name item features instead of carrying them (serving's default)
        runtime.prepare = FeatureFill(feast_row_reader(settings))
    return runtime, store


def _faust_app(settings: Settings, options: LearnWorkerOptions, datadir: Path) -> faust.App:
    """The Faust app of one learner: its own consumer group, an in-memory store, short group timeouts."""
    datadir.parent.mkdir(parents=True, exist_ok=True)
    fetch_backoff.install(0.05)  # the embedded broker answers empty fetches at once: don't spin on them
    return faust.App(
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


class LearnerAgent:
    """The Faust side of one learner: the agent, the assignment hook, the timer and the shutdown hook.

    Every call into the runtime holds ``lock`` and runs in a thread (a batch's learn step
    must not block the event loop that heartbeats the consumer group); what the runtime asks
    for (seeks, dead letters) is executed here, on the loop.
    """

    def __init__(self, settings: Settings, learner_app: LearnerApp) -> None:
        self.app = app = learner_app.app
        self.options = learner_app.options
        self.runtime = learner_app.runtime
        self.status_path = learner_app.status_path
        self.progress = learner_app.progress
        self.jobs = learner_app.jobs
        self.finish = learner_app.finish
        self.examples_topic = settings.topics.examples
        #: a short copy of the status beside the streams workers' (the dashboard and `streamrank status` read it)
        self.mirror_path = status_dir(settings) / "learners" / f"{self.options.model}.json"
        self.source = app.topic(self.examples_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw")
        self.dead_letter = app.topic(settings.topics.dead_letter, key_type=bytes, value_type=bytes,
                                     key_serializer="raw", value_serializer="raw")
        self.lock = asyncio.Lock()

    def attach(self) -> None:
        """Register the agent, the assignment hook, the timer and the shutdown hook with the app."""
        self.app.agent(self.source, name=f"learn-{self.options.model}")(self.learn)
        self.app.on_partitions_assigned.connect(self.on_assigned)
        self.app.timer(interval=0.5, name=f"learn-{self.options.model}-tick")(self.tick)
        self.app.on_before_shutdown.connect(self.on_shutdown)

    async def execute(self, result: StepResult) -> None:
        """Send the step's dead letters and seek where the runtime asked to."""
        for letter in result.dead_letters:
            await self.dead_letter.send(key=letter.key, value=letter.value if letter.value is not None else b"",
                                        headers=letter.headers(), force=True)
        for tp, offset in result.seeks.items():
            topic, _, partition = tp.rpartition(":")
            await self.app.consumer.seek(TP(topic, int(partition)), offset)

    async def learn(self, stream: Any) -> None:
        """The agent: micro-batches of raw records to the runtime."""
        async for events in stream.take_events(self.options.batch_size, within=self.options.within_s):
            records = [Record(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
                       for e in events]
            async with self.lock:
                # wait=False: the update stage learns this take while the next one is decoded
                result = await asyncio.to_thread(self.runtime.offer, records, False)
            await self.execute(result)

    async def on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Record the assignment (readiness) and tell the runtime where partitions it has no offset for begin."""
        mine = [tp for tp in assigned if tp.topic == self.examples_topic]
        # Readiness for whoever started this worker (the demo waits for it before sending traffic).
        self.progress["assigned"] = sorted(f"{tp.topic}:{tp.partition}" for tp in mine)
        self.write_status()
        unknown = [tp for tp in mine if self.runtime.next_offset(f"{tp.topic}:{tp.partition}") is None]
        if unknown:
            try:
                earliest = await self.app.consumer.earliest_offsets(*unknown)
            except Exception:  # noqa: BLE001 - best effort; records are still de-duplicated by id
                log.exception("could not read earliest offsets")
                return
            for tp, offset in earliest.items():
                self.runtime.expect(f"{tp.topic}:{tp.partition}", int(offset or 0))

    def lag(self) -> int | None:
        """Examples behind the high watermark over the assigned partitions (None before assignment)."""
        try:
            total = 0
            for tp in self.app.consumer.assignment():
                if tp.topic != self.examples_topic:
                    continue
                high = self.app.consumer.highwater(tp)
                done = self.runtime.offsets.get(f"{tp.topic}:{tp.partition}", -1) + 1
                total += max(0, (high or 0) - done)
            return total
        except Exception:  # noqa: BLE001 - not assigned yet
            return None

    def write_status(self) -> dict:
        """Rewrite ``status.json`` (runtime counters, step timings, lag, assignment) and return it."""
        doc = self.runtime.status()
        if self.jobs is not None:
            doc["timings_s"].update(timing_summary({"publish": self.jobs.stats.publish_s}))
        self.progress["lag"] = self.lag()
        doc.update(lag=self.progress["lag"], pid=os.getpid(), ts=time.time(), assigned=self.progress["assigned"])
        _atomic_json(self.status_path, doc)
        try:
            self.mirror_path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_json(self.mirror_path, {k: doc.get(k) for k in ("model", "applied", "lag", "ts", "pid",
                                                                    "dead_lettered", "examples_per_s", "assigned")})
        except OSError as exc:  # the mirror is for display; the real status is written
            log.debug("status mirror %s not written: %s", self.mirror_path, exc)
        return doc

    async def tick(self) -> None:
        """Every 0.5 s: flush a partial batch that waited long enough, log progress, stop after ``stop_after``."""
        now = time.monotonic()
        runtime, options = self.runtime, self.options
        async with self.lock:
            # idle stream, or a partial batch past max_wait_s that no new record came to learn
            if runtime.queued and (now - runtime.last_record_at >= options.idle_flush_s or runtime.wait_expired(now)):
                result = await asyncio.to_thread(runtime.flush)
                await self.execute(result)
                await asyncio.to_thread(runtime.checkpoint)
        if now - self.progress["last"] >= options.progress_s:
            self.progress["last"] = now
            doc = self.write_status()
            PROGRESS.info("%s: applied %d (%.1f ex/s) lag %s | %s | skipped %d/%d dead-lettered %d checkpoint %s",
                          options.model, doc["applied"], doc["examples_per_s"], doc["lag"],
                          format_metrics(doc["metrics"]), doc["skipped_offsets"], doc["skipped_ids"],
                          doc["dead_lettered"], doc["checkpoint_seq"])
        if options.stop_after is not None and not self.progress["stopping"] and runtime.applied >= options.stop_after:
            self.progress["stopping"] = True
            async with self.lock:
                await asyncio.to_thread(runtime.checkpoint)
            self.write_status()
            PROGRESS.info("%s: applied %d >= stop_after %d: stopping", options.model, runtime.applied,
                          options.stop_after)
            os.kill(os.getpid(), signal.SIGTERM)

    async def on_shutdown(self, sender: Any, **kwargs: Any) -> None:
        """Last checkpoint and snapshot while Faust stops, never while a batch is being learned."""
        async with self.lock:
            await asyncio.to_thread(self.finish)


def build_learner_app(settings: Settings, options: LearnWorkerOptions) -> LearnerApp:
    """The learner worker of ``options.model``: runtime restored, Faust app wired, not started."""
    runtime, store = _learner_runtime(settings, options)
    status_path = store.dir / "status.json"
    app = _faust_app(settings, options, store.dir / "faust")  # Faust's scratch space (memory store)
    learner_app = LearnerApp(app=app, runtime=runtime, options=options, status_path=status_path,
                             progress={"last": time.monotonic(), "stopping": False, "lag": None, "assigned": []},
                             jobs=snapshot_publisher(settings, runtime) if options.publish else None)
    LearnerAgent(settings, learner_app).attach()
    return learner_app


def start_line(settings: Settings, options: LearnWorkerOptions, learner_app: LearnerApp) -> str:
    """What ``streamrank learn`` prints first: what it reads, where it writes, where its status is."""
    publish = "publishing snapshots to Redis" if options.publish else "not publishing (no --publish)"
    return (f"learn {options.model}: reading {settings.topics.examples} (group {learner_app.app.conf.id}) at "
            f"{settings.kafka_bootstrap}; checkpoints in {learner_app.status_path.parent}; status "
            f"{learner_app.status_path}; {publish}; progress every {options.progress_s:g} s")


def run_learner(settings: Settings, options: LearnWorkerOptions, loglevel: str = "warning") -> None:
    """Start the learner worker and block until SIGTERM/SIGINT (or ``stop_after``)."""
    learner_app = build_learner_app(settings, options)
    print(start_line(settings, options, learner_app), file=sys.stderr, flush=True)

    atexit.register(learner_app.finish)  # when Faust's shutdown did not get to it
    if learner_app.jobs is not None:
        learner_app.jobs.start()
    worker = plain_worker(learner_app.app, loglevel, worker_class=FrozenHeapWorker)
    worker.execute_from_commandline()
