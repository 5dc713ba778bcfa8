"""Shared fixtures: a real embedded stack (broker + Redis over TCP) for the whole session.

* ``embedded_stack``: started once per test session in a temporary ``STREAMRANK_HOME`` on
  free loopback ports (the broker kind from ``STREAMRANK_BROKER``, default noida); stopped
  at the end. When ``STREAMRANK_KAFKA``/``STREAMRANK_REDIS`` are set, those external
  services are used instead.
* ``settings``: per test, the stack's endpoints with a fresh topic prefix (topics created
  with the configured partitions), so tests never see each other's records.
* ``redis_client``: a client on the stack's Redis.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# prometheus_client picks where metric values live when it is first imported: in files if
# PROMETHEUS_MULTIPROC_DIR is set then, else in memory. Importing Feast sets that variable to a
# temporary folder (feast/metrics.py), and the tests build many serving apps in one process, each
# counting its own requests (serving.metrics): imported first, prometheus_client keeps them apart
# whichever test imports Feast first.
import prometheus_client  # noqa: F401, I001 - must precede any Feast import
import pytest
from support import SHARED_DATA, fresh_topics

from common import stack
from common.config import Settings, load_settings

# Kafka clients log every refused connection at ERROR; fault tests cause many on purpose and
# they bury the real failure in the report.
for _name in ("kafka", "aiokafka"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

#: ``--long`` and the ``long`` marker: CI's short forms by default (tests/long_runs.py)
pytest_plugins = ["long_runs"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("streamrank-home")
    env = dict(os.environ)
    env["STREAMRANK_HOME"] = str(home)
    base = load_settings(env)
    state = stack.up(base)
    settings = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
    yield settings
    stack.down(base)


@pytest.fixture
def settings(embedded_stack: Settings) -> Settings:
    return fresh_topics(embedded_stack)


@pytest.fixture
def redis_client(embedded_stack: Settings):
    import redis

    client = redis.Redis.from_url(embedded_stack.redis_url)
    yield client
    client.close()
