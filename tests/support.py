"""Helpers shared by tests (importable as ``support`` because pytest puts tests/ on the path)."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

from common.topics import ensure_project_topics
from common.config import Settings, Topics
from common.paths import shared_data

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data()  # ../shared/data, or $STREAMRANK_DATA


def fresh_topics(settings: Settings, partitions: int | None = None) -> Settings:
    """``settings`` with a unique topic prefix whose topics exist with ``partitions`` partitions."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    fresh = replace(settings, topics=Topics(prefix=prefix), partitions=partitions or settings.partitions)
    ensure_project_topics(fresh)
    return fresh


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that points a subprocess (``streamrank ...``) at ``settings``."""
    env = dict(os.environ)
    env.update(STREAMRANK_KAFKA=settings.kafka_bootstrap, STREAMRANK_REDIS=settings.redis or "",
               STREAMRANK_TOPIC_PREFIX=settings.topics.prefix, STREAMRANK_HOME=str(settings.home),
               STREAMRANK_PARTITIONS=str(settings.partitions), PYTHONUNBUFFERED="1")
    return env


def stage_cli(register):
    """A root CLI group with an ``eval`` subgroup and one stage's commands registered (as streamrank.cli.main does)."""
    import click  # noqa: PLC0415

    @click.group()
    def root() -> None:
        pass

    @root.group(name="eval")
    def eval_group() -> None:
        pass

    register(root, eval_group)
    return root


def _counting_scorer() -> type:
    from serving.baseline import LinearListScorer  # noqa: PLC0415

    class CountingScorer(LinearListScorer):
        """A real linear PL scorer that counts how often serving called it."""

        def __init__(self, **kw) -> None:
            super().__init__(**kw)
            self.calls = 0

        def rerank(self, request, explore=False):
            self.calls += 1
            return super().rerank(request, explore)

    return CountingScorer


def __getattr__(name: str) -> type:
    """``CountingScorer`` (serving's tests) is built on first import: it subclasses a torch model, and
    conftest imports this module in every test session, torch-free ones too (PEP 562)."""
    if name == "CountingScorer":
        globals()[name] = scorer = _counting_scorer()
        return scorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
