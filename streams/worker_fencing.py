"""Remove consumer-group members whose worker process is known to be dead (kill -9).

Why: the embedded noida broker never expires the session of a member that vanished without
a LeaveGroup (measured: a restarted worker waited the 60 s rebalance timeout, then rejoined
every 6 s forever behind the dead leader, and a surviving worker never got the dead one's
partitions). Apache Kafka expires it after ``session.timeout.ms``; here a worker does it
for the broker: every worker records its group member id and host in its status file, and
a worker that finds a peer status file whose process is gone on this host sends the
LeaveGroup request that peer could not send. On a broker that did expire the member the
request just fails with UNKNOWN_MEMBER_ID, which is ignored. Workers on other hosts are
never fenced from here (their pids mean nothing on this host).
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

from common.stack import pid_alive

log = logging.getLogger(__name__)


def dead_members(folder: Path, own_pid: int | None = None) -> list[tuple[Path, str]]:
    """(status file, member id) of workers on this host whose process is gone and not yet fenced."""
    host = socket.gethostname()
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        member = doc.get("member_id")
        pid = doc.get("pid")
        if not member or doc.get("fenced") or doc.get("host") != host or pid == own_pid:
            continue
        if isinstance(pid, int) and not pid_alive(pid):
            out.append((path, member))
    return out


async def leave_group(bootstrap: str, group: str, member_ids: list[str]) -> dict[str, str]:
    """Send LeaveGroup for each member id to the group coordinator; returns member -> outcome."""
    from aiokafka.client import AIOKafkaClient, CoordinationType  # noqa: PLC0415
    from aiokafka.protocol.group import LeaveGroupRequest  # noqa: PLC0415

    outcomes: dict[str, str] = {}
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = await client.coordinator_lookup(CoordinationType.GROUP, group)
        for member in member_ids:
            try:
                response = await client.send(node, LeaveGroupRequest(group, member))
                outcomes[member] = f"error_code={response.error_code}"
            except Exception as exc:  # noqa: BLE001 - best effort, like the client's own leave
                outcomes[member] = f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()
    return outcomes


async def fence_dead_members(bootstrap: str, group: str, folder: Path, own_pid: int | None = None) -> dict[str, str]:
    """Fence every dead same-host member found in ``folder``; marks their status files as fenced."""
    found = dead_members(folder, own_pid)
    if not found:
        return {}
    outcomes = await leave_group(bootstrap, group, [member for _, member in found])
    for path, member in found:
        try:
            doc = json.loads(path.read_text())
            doc["fenced"] = outcomes.get(member, "unknown")
            tmp = path.with_suffix(".json.fencing")
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
            tmp.replace(path)
        except (OSError, ValueError):
            continue
        log.warning("fenced dead worker %s (member %s): %s", path.stem, member, outcomes.get(member))
    return outcomes
