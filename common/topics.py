"""The project's Kafka topics on a broker: create them, bound their storage, read their partitions.

Storage is bounded by time on every topic (``retention.ms``, from
``Settings.retention_hours``, ``STREAMRANK_RETENTION_HOURS``, default 24 h): the embedded
noida broker honours ``retention.ms`` (it drops whole records older than that and rewrites its
data file; measured: a topic with ``retention.ms`` 3000 had its first 1,000 records gone 8 s
later) but not ``retention.bytes``, so its size bound (``STREAMRANK_RETENTION_MB``, default 512) is
kept by :mod:`common.retention`'s keeper, while Apache Kafka gets ``retention.bytes`` per partition
of the data topics (the bound split evenly over them). ``model-updates`` is also
compacted (``cleanup.policy=compact,delete``: the newest announcement per model is what a
watcher needs; both Apache Kafka and noida compact, see "Segments" below).
The configs are applied when a topic is created and re-applied to existing topics on every
``streamrank up``, so a log written before a bound was set is trimmed too.

Segments: Kafka deletes and compacts whole closed segments only, and its default segment is
1 GB, far above a 32 MB ``retention.bytes`` per partition (which would then never delete
anything) and above what a changelog writes in hours. The data topics and Faust's changelogs get
``segment.bytes`` of at most a quarter of a partition's share of the bound and ``segment.ms`` of a
minute. ``model-updates`` keeps the broker's default segment: compacted every minute it would keep
only each model's newest announcement, and the demo's staleness measure reads their history (a run
with rolling segments there counted every example as learned by the first announcement that survived). noida-db follows the
same rule: it compacts a ``cleanup.policy=compact`` topic when a segment rolls (measured: 6,000
keyed 1 KB records over 50 keys, 30 MB of log with the default segment, 0.66 MB with
``segment.bytes`` 100,000). That is what bounds Faust's join-state changelog
(:func:`changelog_configs`), which rewrites a request's whole entry on every feedback event: in
the README's by-hand loop it was 460 of 590 MB after 75 s without it.
"""

from __future__ import annotations

from common.config import Settings
from common.retention import TRIMMED_TOPICS

HOUR_MS = 3_600_000
#: a segment rolls after this long at the latest (then it can be compacted or deleted)
SEGMENT_MS = 60_000
#: the largest segment, whatever the bound
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
#: Kafka refuses a segment.bytes below 14 bytes of header; keep segments at least this big
MIN_SEGMENT_BYTES = 1024 * 1024


def partition_share(settings: Settings) -> int:
    """Bytes of the size bound per partition of the data topics (``retention.bytes``)."""
    return int(settings.retention_mb * 1e6 / (len(TRIMMED_TOPICS) * settings.partitions))


def segment_configs(settings: Settings) -> dict[str, str]:
    """``segment.bytes`` (a quarter of a partition's share of the bound, within [1, 64] MiB) and
    ``segment.ms``: segments that roll often enough for retention and compaction to act."""
    size = min(MAX_SEGMENT_BYTES, max(MIN_SEGMENT_BYTES, partition_share(settings) // 4))
    return {"segment.bytes": str(size), "segment.ms": str(SEGMENT_MS)}


def changelog_configs(settings: Settings) -> dict[str, str]:
    """Extra configs of Faust's changelog topics (``Table(extra_topic_configs=...)``): compacted, as
    Faust makes them, with segments that roll so the compaction happens (see the module doc)."""
    return {"cleanup.policy": "compact", **segment_configs(settings)}


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Physical topic name -> the topic configs the project sets on it."""
    retention = {"retention.ms": str(int(settings.retention_hours * HOUR_MS))}
    configs = {name: dict(retention) for name in settings.topics.all().values()}
    for logical in TRIMMED_TOPICS:
        configs[settings.topics.name(logical)].update(segment_configs(settings),
                                                      **{"retention.bytes": str(partition_share(settings))})
    configs[settings.topics.model_updates]["cleanup.policy"] = "compact,delete"
    return configs


def ensure_topics(bootstrap: str, topics: list[str], partitions: int,
                  configs: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Create the missing ``topics`` with ``partitions`` partitions and ``configs``; apply ``configs``
    to the ones that exist. Returns the topics created."""
    from kafka import KafkaAdminClient  # noqa: PLC0415
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic  # noqa: PLC0415
    from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    configs = configs or {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1,
                                              topic_configs=configs.get(t, {})) for t in missing])
            except TopicAlreadyExistsError:
                pass
        present = [t for t in topics if t in existing and configs.get(t)]
        if present:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs=configs[t]) for t in present])
        return missing
    finally:
        admin.close()


def ensure_project_topics(settings: Settings, bootstrap: str | None = None, partitions: int | None = None) -> list[str]:
    """:func:`ensure_topics` for every topic of ``settings``' deployment, with :func:`topic_configs`."""
    return ensure_topics(bootstrap or settings.kafka_bootstrap, list(settings.topics.all().values()),
                         partitions or settings.partitions, topic_configs(settings))


def broker_partitions(bootstrap: str, topics: list[str]) -> dict[str, int | None]:
    """Partition count of each of ``topics`` on the broker (None: the topic does not exist)."""
    from kafka import KafkaConsumer  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    except KafkaError:  # the port is open but nothing there answers Kafka: nothing known
        return {}
    try:
        existing = consumer.topics()
        return {t: (len(consumer.partitions_for_topic(t) or ()) or None) if t in existing else None for t in topics}
    finally:
        consumer.close()
