"""The single source of endpoints, topic names, ports and intervals.

Every component (CLI, stream workers, learners, feature store, serving, tests) reads its
settings from :func:`load_settings`, so the same code runs against the embedded stack or an
external Kafka/Redis just by changing environment variables:

* ``STREAMRANK_HOME``          state directory (default ``.streamrank/`` in the cwd)
* ``STREAMRANK_KAFKA``         bootstrap servers, e.g. ``127.0.0.1:9092`` (default: the
                               address written by ``streamrank up`` in the state directory)
* ``STREAMRANK_REDIS``         ``host:port`` or ``redis://host:port/db`` (same default rule)
* ``STREAMRANK_TOPIC_PREFIX``  prefix for every topic name (default ``streamrank.``)
* ``STREAMRANK_BROKER``        embedded broker implementation: ``noida`` or ``tansu``
* ``STREAMRANK_PARTITIONS``    partitions per topic created by the stack (default 4)
* ``STREAMRANK_BIND_HOST``     address HTTP endpoints bind to (default ``127.0.0.1``; containers
                               listen on all interfaces so health checks and Prometheus reach them)
* ``STREAMRANK_MAX_EVENT_SKEW_S`` how far (seconds) an event's ``ts`` may lie after its record's
                               broker timestamp before the event is dead-lettered as ``future_ts``
                               (default 60; ``inf`` turns the bound off). A far-future ``ts`` would
                               move its partition's join watermark ahead and close every later window
                               with no feedback, so keep it well below the join window
* ``STREAMRANK_CONFIG``        optional TOML or JSON file with per-stage sections (e.g. ``[join]``,
                               ``[rewards]``); read with :func:`config_section`
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

#: Logical topic names (see DESIGN.md, "Topics"); the physical name adds the prefix.
TOPIC_NAMES: tuple[str, ...] = ("impressions", "feedback", "examples", "model-updates", "dead-letter")

DEFAULT_BROKER = "noida"
STACK_STATE_FILE = "stack.json"


@dataclass(frozen=True)
class Topics:
    """Physical topic names for one deployment (logical name + prefix)."""

    prefix: str = "streamrank."

    def name(self, logical: str) -> str:
        if logical not in TOPIC_NAMES:
            raise KeyError(f"unknown topic {logical!r}; known: {', '.join(TOPIC_NAMES)}")
        return f"{self.prefix}{logical}"

    @property
    def impressions(self) -> str:
        return self.name("impressions")

    @property
    def feedback(self) -> str:
        return self.name("feedback")

    @property
    def examples(self) -> str:
        return self.name("examples")

    @property
    def model_updates(self) -> str:
        return self.name("model-updates")

    @property
    def dead_letter(self) -> str:
        return self.name("dead-letter")

    def all(self) -> dict[str, str]:
        return {logical: self.name(logical) for logical in TOPIC_NAMES}


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build with :func:`load_settings`; override with ``dataclasses.replace``."""

    home: Path
    kafka: str | None
    redis: str | None
    topics: Topics = field(default_factory=Topics)
    broker: str = DEFAULT_BROKER
    partitions: int = 4
    max_list_size: int = 200
    max_event_bytes: int = 1_000_000
    #: seconds an event's ts may be ahead of its record's broker timestamp (contracts.events.check_event_time)
    max_event_skew_s: float = 60.0
    #: hours a topic keeps its records (``retention.ms`` on every topic; common.topics)
    retention_hours: float = 24.0
    #: size bound of the broker's data topics in MB (``retention.bytes``; the embedded noida broker:
    #: common.retention's keeper), and how often the keeper checks it
    retention_mb: float = 512.0
    retention_check_s: float = 5.0
    bind_host: str = "127.0.0.1"
    config_path: Path | None = None

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap servers; raises a clear error when neither env nor a running stack gives one."""
        if not self.kafka:
            raise RuntimeError(
                "no Kafka address: set STREAMRANK_KAFKA or run `streamrank up` "
                f"(looked for {self.home / STACK_STATE_FILE})"
            )
        return self.kafka

    @property
    def redis_url(self) -> str:
        """``redis://host:port/db`` form of the configured Redis."""
        if not self.redis:
            raise RuntimeError(
                "no Redis address: set STREAMRANK_REDIS or run `streamrank up` "
                f"(looked for {self.home / STACK_STATE_FILE})"
            )
        return self.redis if "://" in self.redis else f"redis://{self.redis}/0"

    def with_endpoints(self, kafka: str | None = None, redis: str | None = None) -> "Settings":
        return replace(self, kafka=kafka or self.kafka, redis=redis or self.redis)


def read_stack_state(home: Path) -> dict:
    """The endpoints written by ``streamrank up`` (empty when no stack was started)."""
    path = home / STACK_STATE_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Resolve settings from the environment, falling back to the embedded stack's state file."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("STREAMRANK_HOME", ".streamrank")).resolve()
    state = read_stack_state(home)
    partitions = int(env.get("STREAMRANK_PARTITIONS", state.get("partitions", 4)))
    if partitions < 1:
        raise ValueError(f"STREAMRANK_PARTITIONS must be >= 1, got {partitions}")
    retention_hours = float(env.get("STREAMRANK_RETENTION_HOURS", 24.0))
    if not retention_hours > 0:
        raise ValueError(f"STREAMRANK_RETENTION_HOURS must be > 0, got {retention_hours}")
    retention_mb = float(env.get("STREAMRANK_RETENTION_MB", 512.0))
    retention_check_s = float(env.get("STREAMRANK_RETENTION_CHECK_S", 5.0))
    if not retention_mb > 0 or not retention_check_s > 0:
        raise ValueError("STREAMRANK_RETENTION_MB and STREAMRANK_RETENTION_CHECK_S must be > 0, "
                         f"got {retention_mb} and {retention_check_s}")
    max_event_skew_s = float(env.get("STREAMRANK_MAX_EVENT_SKEW_S", 60.0))
    if not max_event_skew_s > 0:  # NaN fails too
        raise ValueError(f"STREAMRANK_MAX_EVENT_SKEW_S must be > 0 (inf: no bound), got {max_event_skew_s}")
    return Settings(
        home=home,
        max_event_skew_s=max_event_skew_s,
        retention_hours=retention_hours,
        retention_mb=retention_mb,
        retention_check_s=retention_check_s,
        kafka=env.get("STREAMRANK_KAFKA") or state.get("kafka"),
        redis=env.get("STREAMRANK_REDIS") or state.get("redis"),
        topics=Topics(prefix=env.get("STREAMRANK_TOPIC_PREFIX", state.get("topic_prefix", "streamrank."))),
        broker=env.get("STREAMRANK_BROKER", DEFAULT_BROKER),
        partitions=partitions,
        max_list_size=int(env.get("STREAMRANK_MAX_LIST_SIZE", 200)),
        config_path=Path(env["STREAMRANK_CONFIG"]).resolve() if env.get("STREAMRANK_CONFIG") else None,
        bind_host=env.get("STREAMRANK_BIND_HOST", "127.0.0.1"),
    )


def config_section(settings: Settings, name: str) -> dict:
    """Section ``name`` of the ``STREAMRANK_CONFIG`` file (TOML or JSON); empty when unset.

    Stages keep their tunables (reward weights, join window, ...) in such sections so they
    live in config, not code. A missing or unparsable file is an error, not a silent default.
    """
    path = settings.config_path
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"STREAMRANK_CONFIG {path}: {exc}") from None
    try:
        if path.suffix == ".json":
            doc = json.loads(text)
        else:
            import tomllib  # noqa: PLC0415

            doc = tomllib.loads(text)
    except ValueError as exc:
        raise ValueError(f"STREAMRANK_CONFIG {path}: {exc}") from None
    section = doc.get(name, {})
    if not isinstance(section, dict):
        raise ValueError(f"STREAMRANK_CONFIG {path}: [{name}] must be a table/object")
    return section
