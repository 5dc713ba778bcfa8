"""Tunables of the feature store: snapshot/materialize intervals, retention, stats-agent batching.

Read from environment variables (highest priority), then from the ``[feature_store]``
section of the ``STREAMRANK_CONFIG`` file when the project config offers one, then defaults:

=====================================  =====================================================  =========
variable                               meaning                                                default
=====================================  =====================================================  =========
``STREAMRANK_SNAPSHOT_INTERVAL_S``     publish a snapshot this often when the model changed   60
``STREAMRANK_SNAPSHOT_KEEP``           snapshot versions kept per model                       5
``STREAMRANK_MATERIALIZE_INTERVAL_S``  run ``feast materialize-incremental`` this often       3600
``STREAMRANK_FEAST_PROJECT``           Feast project name (also part of every Redis key)      streamrank
``STREAMRANK_STATS_BATCH``             stats agent: push after this many examples ...         200
``STREAMRANK_STATS_LATENCY_MS``        ... or after this many ms, whichever comes first       500
``STREAMRANK_STATS_HALF_LIFE_S``       half-life of the decayed item/query counts (event time) 86400
=====================================  =====================================================  =========
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from common import config as project_config
from common.config import Settings

ENV_NAMES = {
    "snapshot_interval_s": "STREAMRANK_SNAPSHOT_INTERVAL_S",
    "snapshot_keep": "STREAMRANK_SNAPSHOT_KEEP",
    "materialize_interval_s": "STREAMRANK_MATERIALIZE_INTERVAL_S",
    "repair_check_interval_s": "STREAMRANK_FEATURE_REPAIR_CHECK_S",
    "feast_project": "STREAMRANK_FEAST_PROJECT",
    "stats_batch": "STREAMRANK_STATS_BATCH",
    "stats_latency_ms": "STREAMRANK_STATS_LATENCY_MS",
    "stats_half_life_s": "STREAMRANK_STATS_HALF_LIFE_S",
}


@dataclass(frozen=True)
class FeatureStoreSettings:
    snapshot_interval_s: float = 60.0
    snapshot_keep: int = 5
    materialize_interval_s: float = 3600.0
    #: how often serving checks that the online store still has its materialized rows (one EXISTS)
    repair_check_interval_s: float = 10.0
    feast_project: str = "streamrank"
    stats_batch: int = 200
    stats_latency_ms: float = 500.0
    stats_half_life_s: float = 86_400.0

    def __post_init__(self) -> None:
        for name in ("snapshot_interval_s", "materialize_interval_s", "repair_check_interval_s", "stats_latency_ms",
                     "stats_half_life_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{ENV_NAMES[name]} must be > 0, got {getattr(self, name)}")
        for name in ("snapshot_keep", "stats_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV_NAMES[name]} must be >= 1, got {getattr(self, name)}")
        if not self.feast_project.replace("_", "").isalnum():
            raise ValueError(f"STREAMRANK_FEAST_PROJECT must be alphanumeric/underscore, got {self.feast_project!r}")


def load_feature_store_settings(settings: Settings | None = None,
                                env: Mapping[str, str] | None = None) -> FeatureStoreSettings:
    """Resolve the feature-store tunables (env > config file section > defaults)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    config_section = getattr(project_config, "config_section", None)  # offered by newer project configs
    if settings is not None and config_section is not None:
        values.update({k: v for k, v in config_section(settings, "feature_store").items() if k in ENV_NAMES})
    for name, var in ENV_NAMES.items():
        if env.get(var):
            values[name] = env[var]
    types = {f.name: f.type for f in fields(FeatureStoreSettings)}
    converted: dict[str, Any] = {}
    for name, raw in values.items():
        kind = {"float": float, "int": int, "str": str}[types[name]]
        try:
            converted[name] = kind(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{ENV_NAMES[name]}: {raw!r} is not a valid {types[name]}") from None
    return FeatureStoreSettings(**converted)
