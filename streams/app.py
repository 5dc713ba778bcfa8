"""The faust-streaming app of the streams stage: the batch join task, one housekeeping timer, /metrics.

Built by :func:`build_app` from :class:`~common.config.Settings` so tests and workers
get isolated apps per topic prefix (app id ``<prefix>streams``; its changelog topics are
``<prefix>streams-join-state-changelog``, created by Faust with the configured partition
count).

Faust pitfalls handled here (INFRA.md): raw bytes in (``value_serializer="raw"``) and our own
validation, so a bad payload is dead-lettered instead of killing the agent; the web server
on 127.0.0.1 with a distinct port per worker; ``broker_session_timeout=6`` so a group join
does not stall. The join is not a per-event Faust agent: Faust's consumer fetches, and each
fetched batch of the source topics goes to the join at once (:mod:`streams.batch_fetch` says
which part of Faust does what, and why).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from common.config import Settings, config_section
from common.topics import changelog_configs
from streams import batch_fetch, fetch_backoff, recovery_order
from streams.agents import Joiner
from streams.delivery import PendingDeliveries, TrackedTable, install_commit_barrier
from streams.join import JoinConfig
from streams.metrics import StreamMetrics
from streams.rewards import RewardWeights

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class WorkerOptions:
    """Per-process knobs (not part of the shared config file)."""

    name: str = field(default_factory=lambda: f"worker-{os.getpid()}")
    web_port: int = 0
    #: most records one fetch (one join batch) brings (Faust's ``broker_max_poll_records``)
    batch_size: int = 1000
    #: most seconds one fetch waits for records
    batch_within_s: float = 0.25
    tick_s: float = 0.5
    #: how often the housekeeping tick walks the whole join table without a reason to (Joiner.scan_due)
    full_scan_s: float = 5.0
    commit_interval_s: float = 1.0
    #: pause after a fetch that brought no records (streams.fetch_backoff: the embedded broker
    #: answers empty fetches at once instead of holding them, and the spinning starves the agent)
    empty_fetch_backoff_s: float = 0.05
    #: how long the producer waits to fill a batch. 0: the join hands it whole record batches already
    #: (streams.batch_produce), and aiokafka makes the next batch of a partition wait until the last one
    #: left, so a linger would stall every join batch by up to the linger (measured: ~60 ms each at 50)
    producer_linger_ms: int = 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def load_stage_config(settings: Settings) -> tuple[JoinConfig, RewardWeights]:
    """``[join]`` and ``[rewards]`` sections of ``STREAMRANK_CONFIG`` (defaults when absent)."""
    return (JoinConfig.from_mapping(config_section(settings, "join")),
            RewardWeights.from_mapping(config_section(settings, "rewards")))


@dataclass
class StreamsApp:
    """The Faust app and the objects tests and the CLI need to reach."""

    app: faust.App
    joiner: Joiner
    metrics: StreamMetrics
    options: WorkerOptions

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.options.web_port}/metrics"


def app_id(settings: Settings) -> str:
    return f"{settings.topics.prefix}streams"


def build_app(settings: Settings, options: WorkerOptions | None = None, join_config: JoinConfig | None = None,
              weights: RewardWeights | None = None) -> StreamsApp:
    """A Faust app wired to ``settings`` (topics, broker) with the join agent registered."""
    options = options or WorkerOptions()
    if options.web_port == 0:
        options = WorkerOptions(**{**options.__dict__, "web_port": free_port()})
    file_join, file_weights = load_stage_config(settings)
    join_config = join_config or file_join
    weights = weights or file_weights
    fetch_backoff.install(options.empty_fetch_backoff_s)
    recovery_order.install()  # no records lost around the seek when partitions resume after a rebalance
    batch_fetch.install()  # the join's records a fetched batch at a time (other apps keep Faust's loop)
    datadir = Path(settings.home) / "faust" / options.name
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(settings),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        web_enabled=True,
        web_host=settings.bind_host,  # 127.0.0.1 unless STREAMRANK_BIND_HOST says otherwise (deploy/ containers)
        web_port=options.web_port,
        web_bind=settings.bind_host,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=options.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        stream_recovery_delay=0,
        producer_max_request_size=8 * 1024 * 1024,
        producer_linger_ms=options.producer_linger_ms,
        producer_max_batch_size=1024 * 1024,
        # one fetch = one join batch (streams.batch_fetch)
        broker_max_poll_records=options.batch_size,
        consumer_max_fetch_size=8 * 1024 * 1024,
    )
    source = app.topic(settings.topics.impressions, settings.topics.feedback, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    examples = app.topic(settings.topics.examples, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
    dead_letter = app.topic(settings.topics.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw",
                            value_serializer="raw")
    # bytes keys -> "raw" key serializer: the changelog key is the UTF-8 request_id, hashed like the source
    deliveries = PendingDeliveries()
    state = app.tables.add(TrackedTable(app, name="join-state", key_type=bytes, value_type=None,
                                        partitions=settings.partitions, use_partitioner=True, default=None,
                                        beacon=app.tables.beacon, extra_topic_configs=changelog_configs(settings)))
    state.deliveries = deliveries
    install_commit_barrier(app, deliveries)
    metrics = StreamMetrics(worker=options.name, web_port=options.web_port)
    joiner = Joiner(app, settings, join_config, weights, metrics, state, examples, dead_letter,
                    full_scan_s=options.full_scan_s, deliveries=deliveries)

    # subscribed through Faust (group, co-partitioned table), delivered in batches instead of to an agent
    batch_fetch.attach(app, source, joiner.process, fetch_timeout_s=options.batch_within_s)

    @app.timer(interval=options.tick_s, name="join-housekeeping")
    async def housekeeping() -> None:
        await joiner.tick()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.text(metrics.prometheus(), content_type="text/plain")

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        joiner.on_revoked({tp.partition for tp in revoked if tp.topic == settings.topics.impressions})

    return StreamsApp(app=app, joiner=joiner, metrics=metrics, options=options)
