"""The streaming stats agent: ``examples`` -> decayed item/query stats -> Feast push, in bounded-latency batches.

A thin Faust agent (own consumer group ``<topic prefix>feature-stats``) over raw bytes:

1. take up to ``STREAMRANK_STATS_BATCH`` records or whatever arrived within
   ``STREAMRANK_STATS_LATENCY_MS`` (``stream.take_events``), so a stat reaches the online
   store at most about that latency plus one push after its example was produced;
2. validate each record with :func:`contracts.events.decode` (the one validation path); a bad
   record goes to the ``dead-letter`` topic with its original key/value bytes and ``dl.*``
   headers (reason, field, detail, topic, partition, offset: the convention of
   ``streams/dead_letter.py``) and nothing else is lost;
3. fold the good ones into :class:`feature_store.stream_stats.StatsBook` (pure, separately
   tested), first seeding keys it has not seen from the online store so a restarted agent
   continues the stored counts;
4. push the changed rows through Feast (:class:`feature_store.stats_push.StatsPusher`) in a
   worker thread (the Feast client blocks), retrying with back-off until the store answers
   (consumption waits meanwhile); rows stay pending until a push succeeded.

Delivery is at-least-once: redeliveries seen by the running agent are skipped by example id,
but after a kill -9 the examples after the last committed offset (Faust commits every
``broker_commit_interval``, 2.8 s by default) are counted again.

Run: ``streamrank features stats-agent`` (or ``python -m feature_store.stats_agent``); it needs
an applied repo (``streamrank features apply``). One instance per deployment: the stats are
keyed by item/query, not by the request-id partitioning of ``examples``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from common.config import Settings
from contracts.events import LABELED_LIST_SCHEMA, EventError, LabeledList, decode
from feature_store.settings import FeatureStoreSettings
from feature_store.stream_stats import StatsBook

log = logging.getLogger(__name__)
MAX_DETAIL = 500


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Rejected:
    """A record that failed validation, with the dead-letter headers that say why."""

    record: RawRecord
    error: EventError

    def headers(self) -> list[tuple[str, bytes]]:
        r, e = self.record, self.error
        return [("dl.reason", e.reason.encode()), ("dl.field", e.field.encode("utf-8", "replace")),
                ("dl.detail", e.detail[:MAX_DETAIL].encode("utf-8", "replace")), ("dl.topic", r.topic.encode()),
                ("dl.partition", str(r.partition).encode()), ("dl.offset", str(r.offset).encode())]


def validate(records: Sequence[RawRecord], max_bytes: int) -> tuple[list[LabeledList], list[Rejected]]:
    """Split records into valid LabeledLists and rejected ones (pure)."""
    good: list[LabeledList] = []
    bad: list[Rejected] = []
    for record in records:
        if record.value is None:
            bad.append(Rejected(record, EventError("empty_value", "", "tombstone/empty record")))
            continue
        try:
            good.append(decode(record.value, expected=LABELED_LIST_SCHEMA, max_bytes=max_bytes))  # type: ignore[arg-type]
        except EventError as exc:
            bad.append(Rejected(record, exc))
    return good, bad


class StatsRuntime:
    """The agent's state and the blocking part of one batch (runs in a worker thread)."""

    def __init__(self, settings: Settings, fs: FeatureStoreSettings, repo_path: Path, retries: int | None = None) -> None:
        self.settings = settings
        self.fs = fs
        self.repo_path = repo_path
        self.book = StatsBook(fs.stats_half_life_s)
        self.retries = retries  # None: retry until the store answers (consumption waits meanwhile)
        self._pusher = None
        self.batches = 0

    @property
    def pusher(self):
        if self._pusher is None:
            from feast import FeatureStore  # noqa: PLC0415

            from feature_store.stats_push import StatsPusher  # noqa: PLC0415

            self._pusher = StatsPusher(FeatureStore(repo_path=str(self.repo_path)))
        return self._pusher

    def process(self, records: Sequence[RawRecord]) -> list[Rejected]:
        """Validate, fold the good examples into the stats and push the changed rows (blocking).

        A failed push backs off (0.2 s doubling to 5 s) and retries with the rows still
        pending, forever unless ``retries`` is set, so a Redis outage delays the stats instead
        of losing them. The loop is written out rather than a tenacity decorator because the
        retried unit is "whatever is still pending" (seeding and folding until they succeed once,
        then only the push), which a decorated function would have to rebuild on every attempt.
        """
        good, bad = validate(records, self.settings.max_event_bytes)
        delay, attempt = 0.2, 0
        while True:
            attempt += 1
            try:
                if good:
                    self.pusher.seed(self.book, [lab.item_id for ex in good for lab in ex.labels],
                                     [ex.impression.query for ex in good if ex.impression.query])
                    self.book.add_all(good)
                    good = []
                items, queries = self.book.pending_rows()
                if items or queries:
                    self.pusher.push(items, queries)
                self.book.mark_clean()
                break
            except Exception as exc:  # noqa: BLE001 - Redis hiccup: back off, keep the rows pending
                if self.retries is not None and attempt >= self.retries:
                    raise
                log.warning("stats push failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
                time.sleep(delay)
                delay = min(5.0, delay * 2)
        self.batches += 1
        return bad


def build_app(settings: Settings, fs: FeatureStoreSettings, repo_path: Path, web_port: int | None = None) -> Any:
    """The Faust app with the stats agent (``app.stats_runtime`` holds the state)."""
    import faust  # noqa: PLC0415

    from common.stack import free_port  # noqa: PLC0415
    from streams import fetch_backoff  # noqa: PLC0415

    fetch_backoff.install(0.05)  # the embedded broker answers empty fetches at once: don't spin on them
    app_id = f"{settings.topics.prefix}feature-stats"
    datadir = settings.home / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(app_id, broker=f"kafka://{settings.kafka_bootstrap}", store="memory://",
                    web_host=settings.bind_host, web_port=web_port or free_port(), web_enabled=bool(web_port),
                    broker_session_timeout=6, topic_partitions=settings.partitions, datadir=str(datadir),
                    consumer_auto_offset_reset="earliest")
    examples = app.topic(settings.topics.examples, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
    dead_letter = app.topic(settings.topics.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw",
                            value_serializer="raw")
    runtime = StatsRuntime(settings, fs, repo_path)
    app.stats_runtime = runtime

    @app.page("/healthz")
    async def healthz(web, request):  # noqa: ARG001 - Faust's view signature
        return web.json({"batches": runtime.batches})

    @app.agent(examples, name="feature-stats")
    async def feature_stats(stream):
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(fs.stats_batch, within=fs.stats_latency_ms / 1000.0):
            records = [RawRecord(e.message.key, e.message.value, e.message.topic, e.message.partition,
                                 e.message.offset) for e in events]
            rejected = await loop.run_in_executor(None, runtime.process, records)
            for bad in rejected:
                log.warning("dead-letter %s/%s/%s: %s", bad.record.topic, bad.record.partition, bad.record.offset,
                            bad.error)
                await dead_letter.send(key=bad.record.key, value=bad.record.value, headers=bad.headers())

    return app


def run_worker(settings: Settings, fs: FeatureStoreSettings, repo_path: Path, loglevel: str = "warning",
               web_port: int | None = None) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT."""

    if not (repo_path / "feature_store.yaml").exists():
        raise FileNotFoundError(f"no Feast repo at {repo_path}: run `streamrank features apply` first")
    from common.logs import plain_worker  # noqa: PLC0415

    app = build_app(settings, fs, repo_path, web_port=web_port)
    print(f"stats-agent: reading {settings.topics.examples} and {settings.topics.dead_letter} at "
          f"{settings.kafka_bootstrap}; pushing decayed item/query stats to the Feast repo {repo_path}"
          + (f"; /healthz on port {web_port}" if web_port else ""), file=sys.stderr, flush=True)
    plain_worker(app, loglevel).execute_from_commandline()


def main() -> None:
    from common.config import load_settings  # noqa: PLC0415
    from feature_store.feast_repo import repo_path as default_repo_path  # noqa: PLC0415
    from feature_store.settings import load_feature_store_settings  # noqa: PLC0415

    settings = load_settings()
    fs = load_feature_store_settings(settings)
    run_worker(settings, fs, default_repo_path(settings, fs))


if __name__ == "__main__":
    main()
