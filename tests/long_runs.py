"""The suite's two lengths: CI's short forms by default, the long fault/perf forms with ``--long``.

Why: CI runs ``make test`` on 2 cores within ~20 minutes, while some checks only mean something
over minutes (a three-minute closed loop, a fault test over many kill cycles). Each such check
keeps a short form that CI runs and a long one that an engineer runs before a release:

* ``@pytest.mark.long``: a test that exists only in its long form is skipped unless
  ``--long`` is given (or ``STREAMRANK_LONG_TESTS=1`` is set).
* :func:`long_tests`: for a test with both forms, pick its size, e.g.
  ``DURATION_S = 180 if long_tests() else 75``. Module-level constants can use it because
  ``pytest_configure`` sets the environment variable before any test module is imported.

``PYTEST_ARGS=--long make test`` runs everything.
"""

from __future__ import annotations

import os

import pytest

ENV = "STREAMRANK_LONG_TESTS"


def long_tests() -> bool:
    """True when the long forms were asked for (``--long`` or ``STREAMRANK_LONG_TESTS=1``)."""
    return os.environ.get(ENV, "") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help=f"also run the long fault/perf forms (tests marked 'long'); same as {ENV}=1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: only in the long run (--long); CI runs the short forms")
    if config.getoption("--long"):
        os.environ[ENV] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if long_tests():
        return
    skip = pytest.mark.skip(reason=f"long form: run with --long (or {ENV}=1)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
