"""This worker's place in the consumer group: its member id, and fencing of dead members.

A worker that dies without a LeaveGroup (kill -9) keeps its partitions assigned until the
session times out; noida's coordinator also keeps waiting for member ids this process gave up
after an IllegalGeneration error. :class:`GroupMembership` records the current member id in
the status file (so peers can fence it if it dies) and, every tick, sends LeaveGroup for dead
same-host peers and for this process's own abandoned ids (:mod:`streams.worker_fencing`).
Fencing is best effort: a failure is recorded as ``last_error`` and the next tick retries.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from common.config import Settings
from streams.metrics import StreamMetrics, status_dir
from streams.worker_fencing import dead_members, fence_dead_members, leave_group

log = logging.getLogger(__name__)


class GroupMembership:
    """Member-id tracking and LeaveGroup fencing for one worker process."""

    def __init__(self, app: Any, settings: Settings, metrics: StreamMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.ghost_member_ids: set[str] = set()
        self.fencing = False

    def member_id(self) -> str | None:
        """This worker's consumer-group member id, or None before it joined."""
        try:
            member = self.app.consumer._thread._ensure_consumer()._coordinator.member_id  # noqa: SLF001
        except Exception:  # noqa: BLE001 - not joined yet
            return None
        return member or None

    def track_member_id(self) -> None:
        """Remember member ids this process gave up: after an IllegalGeneration error the client
        rejoins under a new id, and noida keeps waiting for the old one (see worker_fencing)."""
        member = self.member_id()
        previous = self.metrics.member_id
        if previous and member != previous:
            self.ghost_member_ids.add(previous)
        if member:
            self.ghost_member_ids.discard(member)
            self.metrics.member_id = member
        elif previous:
            self.metrics.member_id = None

    async def fence(self) -> None:
        """LeaveGroup for dead same-host peers, then for this process's abandoned member ids."""
        await self.fence_dead_peers()
        await self.fence_own_ghosts()

    async def fence_own_ghosts(self) -> None:
        """LeaveGroup for the member ids :meth:`track_member_id` saw this process give up."""
        if not self.ghost_member_ids or self.fencing:
            return
        ghosts = sorted(self.ghost_member_ids)
        self.fencing = True
        try:
            outcomes = await asyncio.wait_for(
                leave_group(self.settings.kafka_bootstrap, self.app.conf.id, ghosts), timeout=15)
            self.ghost_member_ids.difference_update(ghosts)
            log.warning("left the group for this worker's abandoned member ids: %s", outcomes)
        except Exception as exc:  # noqa: BLE001 - best effort; the next tick retries
            self.metrics.last_error = f"ghost fencing: {type(exc).__name__}: {exc}"
        finally:
            self.fencing = False

    async def fence_dead_peers(self) -> None:
        """LeaveGroup on behalf of same-host workers that died (see :mod:`streams.worker_fencing`)."""
        folder = status_dir(self.settings)
        if self.fencing or not dead_members(folder, os.getpid()):
            return
        self.fencing = True
        try:
            await asyncio.wait_for(fence_dead_members(self.settings.kafka_bootstrap, self.app.conf.id,
                                                      folder, os.getpid()), timeout=15)
        except Exception as exc:  # noqa: BLE001 - fencing is best effort; the next tick retries
            self.metrics.last_error = f"fencing: {type(exc).__name__}: {exc}"
        finally:
            self.fencing = False
