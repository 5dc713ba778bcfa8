"""A size bound for the embedded broker's log: the storage keeper.

Kafka bounds a topic by size with ``retention.bytes``; the embedded noida-db broker ignores it
(it honours ``retention.ms`` and ``DeleteRecords``, docs/brokers.md) and keeps its whole log in one
JSON file of about 4x the payload (20,000 records of 1 KB: an 81 MB ``kafka.json``). The README's
by-hand loop writes ~2 MB/s of impressions with inline request features, so the 24 h time bound
alone let the file reach 2.4 GB in 20 minutes (issue 23).

So the bound is kept from outside, with the protocol's own tool: ``streamrank up`` starts this
keeper beside noida (``python -m common.retention``, a process of the stack that ``down`` stops).
Every ``interval_s`` (an apscheduler job) it reads the size of the broker's data folder; when it is
above ``HIGH_WATER`` of ``max_bytes`` (the room left is for what the broker writes before the next
check and while it rewrites its file: ~75 MB per 10 s in the README's by-hand loop, and a 20-minute
run that trimmed only past the bound peaked at 603 MB of 512) it deletes the oldest records of
every deployment's data topics
(``<prefix><logical>``: a demo run's and a test's own prefixes too) with
``DeleteRecords``: as many as a fraction of every partition would be (:func:`plan_cuts`), chosen so that the log falls to
``TARGET_RATIO`` of the bound (noida rewrites its file at once: 81 MB -> 24 MB after deleting 70 %
of the records). Only the data topics are trimmed (impressions, feedback, examples, dead letters):
Faust's changelog and leader topics hold the join state (a trimmed changelog loses windows) and
``model-updates`` is tiny and read for its newest record. When those alone exceed the bound the
keeper cannot help and says so in its status.

Unlike Kafka's ``retention.bytes``, the keeper never deletes what a consumer group has not committed
yet (the rule Kafka Streams follows when it purges its repartition topics): a cut stops at the
lowest offset any group committed on that partition, so a lagging join worker or learner loses
nothing and the log may stay over the bound until they catch up (counted as ``held_back``).
Records that were read go first: partitions no group has committed on (a dead-letter topic nobody
reads, or a replayed log whose join worker has not committed yet) are cut only when the read
records of the others are not enough, and then by at most the fraction. Every trim is logged at WARNING
with the records deleted per topic, and the totals are in ``STREAMRANK_HOME/retention.json``
(``streamrank status`` prints them).
On Apache Kafka (``docker-compose.yml``) :func:`common.topics.topic_configs` sets
``retention.bytes`` per partition of the data topics instead, and the broker enforces it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

log = logging.getLogger("streamrank.retention")

#: a check trims once the log is over this share of the bound ...
HIGH_WATER = 0.8
#: ... down to this share of it
TARGET_RATIO = 0.55
#: never delete more than this share of a partition in one check (the estimate is proportional)
MAX_FRACTION = 0.95
#: seconds to wait for the broker to rewrite its log after a trim before measuring it again
REWRITE_WAIT_S = 30.0
#: the status file the keeper writes under STREAMRANK_HOME
STATUS_FILE = "retention.json"
#: logical topics the keeper may trim (common.config.TOPIC_NAMES minus model-updates): every
#: deployment's ``<prefix><logical>`` topic on the broker (a demo run or a test makes its own prefix)
TRIMMED_TOPICS = ("impressions", "feedback", "examples", "dead-letter")


def trimmable(topic: str, logical: Iterable[str] = TRIMMED_TOPICS) -> bool:
    """Whether ``topic`` is some deployment's data topic: ``<prefix>.<logical>``, prefixes end in a dot
    (``streamrank.impressions``, ``demo1796.examples``), never Faust's ``...-changelog`` topics."""
    return any(topic == name or topic.endswith("." + name) for name in logical)


#: noida writes its new log to this file and renames it over ``kafka.json``: while it rewrites,
#: the folder briefly holds both (up to twice the log); the bound is on the log, not the copy
REWRITE_SUFFIX = ".tmp"


def folder_bytes(folder: Path) -> int:
    """Bytes of the broker's log under ``folder``: its regular files but a rewrite's temporary copy
    (0 when the folder does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.rglob("*")
               if f.is_file() and not f.is_symlink() and f.suffix != REWRITE_SUFFIX)


def fraction_to_trim(size: int, max_bytes: int, target_ratio: float = TARGET_RATIO,
                     high_water: float = HIGH_WATER) -> float:
    """Share of the trimmable records to delete so that a log of ``size`` bytes falls to
    ``target_ratio * max_bytes``; 0 while ``size`` is within ``high_water * max_bytes``. Assumes the
    bytes of a partition are proportional to its records (equal-sized records on average)."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    if size <= high_water * max_bytes:
        return 0.0
    return min(MAX_FRACTION, 1.0 - target_ratio * max_bytes / size)


def trim_offsets(ranges: dict, fraction: float) -> dict:
    """For each partition ``tp -> (low, high)`` (first kept offset, next offset to write), the
    offset before which to delete so that ``fraction`` of its records go; partitions that lose
    nothing are left out. Rounds up, so a non-empty partition always loses at least one record."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    cuts = {}
    for tp, (low, high) in ranges.items():
        held = high - low
        if held <= 0 or fraction == 0.0:
            continue
        cuts[tp] = low + min(held, math.ceil(held * fraction))
    return cuts


def plan_cuts(ranges: dict, floors: dict, fraction: float) -> tuple[dict, int]:
    """Where to cut so that ``fraction`` of the records go, deleting what was read before what was not.

    ``ranges``: partition -> ``(low, high)``; ``floors``: partition -> the lowest offset a consumer group
    committed there (records before it were read by every group that reads it). The number to delete is
    that of :func:`trim_offsets` (``fraction`` of each partition, rounded up). It is taken first from the
    read records of committed partitions, in proportion to how many each holds (a partition may lose more
    than ``fraction`` of its records there, but never one a group has still to read); only when those are
    not enough, the rest comes from partitions no group has committed on, each losing at most its
    ``fraction`` (in proportion to its share). A partition whose groups lag keeps its unread records,
    counted in ``held_back``, as before. Returns ``({partition: delete-before offset}, held_back)``.

    Why the order: a topic no group has committed on yet may be one being filled for a reader that has not
    started (a replayed log before the join worker's first commit): cutting it loses records nobody read,
    while the read prefixes of other topics go unused."""
    wanted = trim_offsets(ranges, fraction)
    need = sum(cut - ranges[tp][0] for tp, cut in wanted.items())
    read = {tp: min(floors[tp], high) - low for tp, (low, high) in ranges.items()
            if tp in floors and min(floors[tp], high) > low}
    unread = {tp: cut - ranges[tp][0] for tp, cut in wanted.items() if tp not in floors}
    take: dict = {}
    left = need
    for pool in (read, unread):
        total = sum(pool.values())
        if left <= 0 or total <= 0:
            continue
        share = min(1.0, left / total)
        for tp, count in pool.items():
            take[tp] = min(count, math.ceil(count * share))
        left -= sum(take[tp] for tp in pool)
    cuts = {tp: ranges[tp][0] + n for tp, n in take.items() if n > 0}
    return cuts, max(0, left)


def committed_floors(admin, tps: Iterable) -> dict:
    """Per partition of ``tps``, the lowest offset any consumer group committed on it (none: absent)."""
    wanted, floors = set(tps), {}
    groups = [g["group_id"] if isinstance(g, dict) else g[0] for g in admin.list_groups()]
    for group in groups:
        for tp, meta in (admin.list_group_offsets({group: None}).get(group) or {}).items():
            offset = getattr(meta, "offset", meta)
            if tp in wanted and offset is not None and offset >= 0:
                floors[tp] = min(floors.get(tp, offset), offset)
    return floors


@dataclass
class KeeperStatus:
    """What the keeper has done so far (written to ``STATUS_FILE`` after every check)."""

    max_bytes: int
    checks: int = 0
    trims: int = 0
    log_bytes: int = 0
    max_log_bytes: int = 0
    records_deleted: dict[str, int] = field(default_factory=dict)
    #: records a trim would have deleted but a consumer group had not committed yet (last trim)
    held_back: int = 0
    last_trim_at: float | None = None
    last_error: str | None = None
    over_bound_untrimmable: bool = False
    updated_at: float = 0.0


class StorageKeeper:
    """Keeps the broker's data folder under ``max_bytes`` by trimming ``topics`` (see the module)."""

    def __init__(self, data_dir: Path, bootstrap: str, logical: Iterable[str], max_bytes: int,
                 status_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.bootstrap = bootstrap
        self.logical = tuple(logical)
        self.status = KeeperStatus(max_bytes=int(max_bytes))
        self.status_path = status_path
        self._trimmed_at_size: tuple[int, float] | None = None  # (log bytes when trimmed, monotonic time)

    def _ranges(self, consumer) -> dict:
        from kafka.structs import TopicPartition  # noqa: PLC0415

        topics = sorted(t for t in consumer.topics() if trimmable(t, self.logical))
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        low, high = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        return {tp: (low[tp], high[tp]) for tp in tps}

    def check_once(self) -> dict[str, int]:
        """One check: trim when over the bound. Returns the records deleted per topic (empty when none)."""
        from kafka import KafkaAdminClient, KafkaConsumer  # noqa: PLC0415

        self.status.checks += 1
        size = folder_bytes(self.data_dir)
        self.status.log_bytes = size
        self.status.max_log_bytes = max(self.status.max_log_bytes, size)
        if self._trimmed_at_size is not None:
            # noida rewrites its file after a DeleteRecords, not always before the next check: the same
            # size again means "not rewritten yet", and trimming on it would cut the same share twice
            before, when = self._trimmed_at_size
            if size == before and time.monotonic() - when < REWRITE_WAIT_S:
                self._write_status()
                return {}
            self._trimmed_at_size = None
        fraction = fraction_to_trim(size, self.status.max_bytes)
        deleted: dict[str, int] = {}
        if fraction > 0.0:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
            try:
                ranges = self._ranges(consumer)
            finally:
                consumer.close()
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
            try:
                cuts, self.status.held_back = plan_cuts(ranges, committed_floors(admin, ranges), fraction)
                if cuts:
                    admin.delete_records(cuts)
            finally:
                admin.close()
            if cuts:
                for tp, offset in cuts.items():
                    deleted[tp.topic] = deleted.get(tp.topic, 0) + offset - ranges[tp][0]
                self.status.trims += 1
                self._trimmed_at_size = (size, time.monotonic())
                self.status.last_trim_at = time.time()
                for topic, count in deleted.items():
                    self.status.records_deleted[topic] = self.status.records_deleted.get(topic, 0) + count
                log.warning("broker log %.1f MB over the %.1f MB bound: deleted the oldest %.0f%% of %s",
                            size / 1e6, self.status.max_bytes / 1e6, 100 * fraction,
                            ", ".join(f"{t} ({n} records)" for t, n in sorted(deleted.items())))
            self.status.over_bound_untrimmable = not cuts
        else:
            self.status.over_bound_untrimmable = False
        self.status.last_error = None
        self._write_status()
        return deleted

    def check_logged(self) -> None:
        """:meth:`check_once` for the scheduler: a failure (broker restarting) is logged and kept in
        the status; the next tick tries again and the keeper process stays up."""
        try:
            self.check_once()
        except Exception as exc:  # noqa: BLE001 - any client error is "try again next tick"
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("storage check failed (will retry): %s", self.status.last_error)
            self._write_status()

    def _write_status(self) -> None:
        self.status.updated_at = time.time()
        if self.status_path is not None:
            tmp = self.status_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self.status), indent=2))
            tmp.replace(self.status_path)


def read_status(home: Path) -> dict:
    """The keeper's status under ``home`` (empty when no keeper ran there)."""
    try:
        return json.loads((home / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> None:
    """``python -m common.retention``: run a :class:`StorageKeeper` until SIGTERM."""
    from apscheduler.schedulers.blocking import BlockingScheduler  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="Keep the embedded broker's log under a size bound.")
    parser.add_argument("--data-dir", type=Path, required=True, help="the broker's data folder")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--logical", default=",".join(TRIMMED_TOPICS),
                        help="comma-separated logical topics whose <prefix><logical> topics may be trimmed")
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checks")
    parser.add_argument("--status", type=Path, default=None, help="status JSON to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "apscheduler"):  # a line per connection and per tick otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    keeper = StorageKeeper(args.data_dir, args.bootstrap, [t for t in args.logical.split(",") if t],
                           args.max_bytes, args.status)
    log.info("storage keeper: %s under %.1f MB, checking every %g s, trimming %s", args.data_dir,
             args.max_bytes / 1e6, args.interval, ", ".join(f"*.{t}" for t in keeper.logical))
    scheduler = BlockingScheduler()
    scheduler.add_job(keeper.check_logged, "interval", seconds=args.interval, max_instances=1, coalesce=True)
    keeper.check_logged()
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
