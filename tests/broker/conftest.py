"""The broker under test: a dedicated embedded broker of kind ``STREAMRANK_BROKER`` (default noida).

Run the suite against the other one with ``STREAMRANK_BROKER=tansu pytest tests/broker``.
"""

from __future__ import annotations

import os

import pytest

from common import stack
from common.config import DEFAULT_BROKER


@pytest.fixture(scope="session")
def broker_kind() -> str:
    return os.environ.get("STREAMRANK_BROKER", DEFAULT_BROKER)


def _broker(tmp_path_factory, broker_kind: str):
    if os.environ.get("STREAMRANK_KAFKA"):
        yield os.environ["STREAMRANK_KAFKA"]
        return
    home = tmp_path_factory.mktemp(f"broker-{broker_kind}")
    port = stack.free_port()
    pid = stack.launch(stack.broker_spec(broker_kind, home, port), home)
    address = f"127.0.0.1:{port}"
    try:
        stack.wait_until(lambda: stack.kafka_ready(address), 60, f"{broker_kind} broker", pid)
        yield address
    finally:
        stack.stop_pid(pid)


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory, broker_kind) -> str:
    """Bootstrap address of a broker started for this suite alone (external one if STREAMRANK_KAFKA)."""
    yield from _broker(tmp_path_factory, broker_kind)


@pytest.fixture
def fresh_bootstrap(tmp_path_factory, broker_kind) -> str:
    """A broker started for one test (see docs/brokers.md: noida's group coordinator can stall a
    rebalance after earlier group activity on the same broker)."""
    yield from _broker(tmp_path_factory, broker_kind)
