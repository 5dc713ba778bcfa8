"""What a failed crash test prints about the requests it got wrong: where each of their events sits
in the source topics, every join-state changelog record of their keys, and the join group's
committed offsets.

Why: a kill -9 failure is rare (once in ~90 runs) and its worker processes are gone by the time
the check fails. These three facts say which side lost the state: a changelog without the
missing feedback while the group committed past it means the killed worker committed ahead of
its writes; a changelog that holds it means the restarted worker's recovery or reads missed it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from streams_expect import assert_copies_agree, expected_from_log, log_events

from common.retention import committed_floors
from contracts.events import IMPRESSION_SCHEMA, LabeledList
from streams.app import app_id
from streams.consume import read_topic
from streams.records import partition_for_key


def suspect_request_ids(log: Path, examples: list[LabeledList], limit: int = 3) -> list[str]:
    """Request ids with no example, or whose copies fail the kill -9 test's per-example check."""
    expected = expected_from_log(log_events(log))
    by_id: dict[str, list[LabeledList]] = {}
    for example in examples:
        by_id.setdefault(example.example_id, []).append(example)
    suspects = set(expected) - {e.request_id for e in examples}
    for example_id, copies in by_id.items():
        try:
            assert_copies_agree(example_id, copies, expected)
        except (AssertionError, KeyError):  # KeyError: a request the log has no impression for
            suspects.update(c.request_id for c in copies)
    return sorted(suspects)[:limit]


def event_positions(log: Path, partitions: int, request_ids: set[str]) -> list[str]:
    """``topic/partition@offset`` of each event of ``request_ids``, from the log's order (the replay
    sends each partition's records in log order, and the test checks it lost and resent none)."""
    next_offset: Counter = Counter()
    lines = []
    for doc in log_events(log):
        topic = "impressions" if doc["schema"] == IMPRESSION_SCHEMA else "feedback"
        place = (topic, partition_for_key(doc["request_id"], partitions))
        if doc["request_id"] in request_ids:
            what = "impression" if topic == "impressions" else doc["kind"]
            lines.append(f"{doc['request_id']} {topic}/{place[1]}@{next_offset[place]}: {what} ts {doc['ts']:.3f}")
        next_offset[place] += 1
    return lines


def changelog_records(settings, request_ids: set[str]) -> list[str]:
    """Every record of ``request_ids`` in the join table's changelog, in offset order per partition."""
    lines: list[tuple[int, int, str]] = []

    def keep(record) -> None:
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if key not in request_ids:
            return
        if record.value is None:
            lines.append((record.partition, record.offset, f"{key}: deleted"))
            return
        entry = json.loads(record.value)
        feedback = sorted((v[3], v[1]) for v in (entry.get("fb") or {}).values())
        lines.append((record.partition, record.offset,
                      f"{key}: impression {'yes' if entry.get('imp') else 'no'}, closed {entry.get('closed')}, "
                      f"early {entry.get('early')}, feedback {[(round(ts, 3), kind) for ts, kind in feedback]}"))

    read_topic(settings.kafka_bootstrap, f"{app_id(settings)}-join-state-changelog", keep, idle_s=1.0,
               timeout_s=20.0)
    return [f"changelog/{p}@{o} {text}" for p, o, text in sorted(lines)]


def committed_offsets(settings) -> str:
    """The source offsets committed on the test's topics (only its join group reads them), read as
    the storage keeper reads them (:func:`common.retention.committed_floors`)."""
    from kafka import KafkaAdminClient  # noqa: PLC0415
    from kafka.structs import TopicPartition  # noqa: PLC0415

    tps = [TopicPartition(settings.topics.name(logical), p) for logical in ("impressions", "feedback")
           for p in range(settings.partitions)]
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        floors = committed_floors(admin, tps)
    finally:
        admin.close()
    return ", ".join(f"{tp.topic}/{tp.partition}={floors.get(tp)}" for tp in tps)


def crash_evidence(settings, log: Path, examples: list[LabeledList]) -> str:
    """The evidence above for the first few suspect requests (never raises: it decorates a failure)."""
    try:
        suspects = suspect_request_ids(log, examples)
        wanted = set(suspects)
        return "\n".join([f"suspect requests: {suspects}", *event_positions(log, settings.partitions, wanted),
                          *changelog_records(settings, wanted), f"committed: {committed_offsets(settings)}"])
    except Exception as exc:  # noqa: BLE001 - the original failure matters more than this report
        return f"(no crash evidence: {exc!r})"
