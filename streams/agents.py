"""The join's work per fetched batch: decode, dead-letter, join state, close windows, emit.

:class:`Joiner` holds what one worker process needs between batches (watermarks, deadline
heaps, parsed impressions) around one changelog-backed Faust table, ``join-state``:
request_id -> entry dict (:func:`streams.join.new_entry`) that also carries the impression's
original JSON (``raw``) while the window is open, so a recovered worker can still build the
example.

A batch is what one fetch brought (:mod:`streams.batch_fetch`), decoded record by record by
:func:`streams.records.validate_record`. It is applied to an in-memory working set first and
each touched entry is written at most once, at the end of the batch: a burst of feedback costs
one changelog record, and an entry whose window opens and closes within the batch is never
written open, only as the tombstone once its example is delivered.

The table uses the producer's key partitioner (``use_partitioner=True``), so a key's
changelog partition is ``murmur2(request_id) % N``, the partition the key's events live on
(the replay and any Kafka producer with the default partitioner key by request_id). That
lets a batch spanning several partitions, and timers, update the table outside any event.

Effectively-once output (at-least-once delivery + stable example ids): an example is sent
and delivered *before* its entry becomes a tombstone, and a batch's source offsets are acked
only after the batch (examples sent, open entries written). Before Faust commits
source offsets, the commit barrier (:mod:`streams.delivery`) waits until the examples and
changelog writes (tombstones included) pending at that moment are acked. A crash anywhere
therefore re-emits an example (same ``example_id``, same labels) rather than losing it or a
label; consumers dedupe by id. If an example's delivery fails, its open entry is written back
so the next tick retries it.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from common.config import Settings
from contracts.events import Impression
from contracts.fast_decode import ImpressionS, decode_record
from streams.dead_letter import DeadLetter, conflict_letter
from streams.delivery import PendingDeliveries
from streams.join import (
    ClosedBy,
    JoinConfig,
    Watermarks,
    after_close,
    apply_feedback,
    apply_impression,
    close_entry_json,
    close_reason,
    new_entry,
    orphan_expired,
    tombstone_expired,
)
from streams.join_writes import JoinWrites
from streams.membership import GroupMembership
from streams.metrics import StreamMetrics, status_dir
from streams.positions import ConsumerPositions
from streams.records import Rejected, partition_for_key, validate_record
from streams.rewards import RewardWeights

#: What an accepted impression is: the fast struct, or the model when only the models accepted it.
IMPRESSIONS = (Impression, ImpressionS)


class Joiner:
    """Per-worker join processor; the Faust agent and timer in :mod:`streams.app` call it."""

    def __init__(self, app: Any, settings: Settings, config: JoinConfig, weights: RewardWeights,
                 metrics: StreamMetrics, state: Any, examples_topic: Any, dead_letter_topic: Any,
                 full_scan_s: float = 5.0, deliveries: PendingDeliveries | None = None) -> None:
        self.app = app
        self.settings = settings
        self.config = config
        self.weights = weights
        self.metrics = metrics
        self.state = state
        self.examples_topic = examples_topic
        self.dead_letter_topic = dead_letter_topic
        self.deliveries = deliveries or PendingDeliveries()
        self.writes = JoinWrites(app, state, settings.topics.examples, self.deliveries)
        self.logical = {settings.topics.impressions: "impressions", settings.topics.feedback: "feedback"}
        self.watermarks = Watermarks(config.allowed_lateness_s)
        self.deadlines: dict[int, list[tuple[float, str]]] = {}
        self.session_ended: set[str] = set()
        self.parsed: dict[str, Impression] = {}
        self.closing: dict[str, str] = {}  # request id -> its impression's event_id, while its example is sent
        self.held_since: dict[str, float] = {}
        self.positions = ConsumerPositions(app, settings, metrics, config.idle_timeout_s)
        self.membership = GroupMembership(app, settings, metrics)
        self.status_written = 0.0
        self.full_scan_s = full_scan_s
        self.last_scan = float("-inf")
        self.scanned_assignment: set[int] | None = None
        self.scanned_idle: set[int] = set()
        # A batch's entries live in a working set until the end of the batch, and the table's
        # entries are mutated in place: the housekeeping tick must not scan the table halfway
        # through a batch (it would close an entry the batch then closes again).
        self.batch_lock = asyncio.Lock()

    # -- ingest ---------------------------------------------------------------------------------
    async def process(self, batch: Iterable[tuple[Any, list[Any]]]) -> None:
        """Apply one fetched batch, ``(topic-partition, [aiokafka ConsumerRecord, ...])`` pairs, then
        close the windows it made due (:mod:`streams.batch_fetch` calls this)."""
        async with self.batch_lock:
            await self._process(batch)

    async def _process(self, batch: Iterable[tuple[Any, list[Any]]]) -> None:
        now = time.monotonic()
        wall = time.time()
        if self.metrics.first_input_at is None:
            self.metrics.first_input_at = wall
        dirty: dict[str, dict] = {}
        touched: set[int] = set()
        dead: list[DeadLetter] = []
        n_in = 0
        for tp, records in batch:
            if not records:
                continue
            topic, partition = tp.topic, tp.partition
            n_in += len(records)
            self.positions.read(topic, partition, records[-1].offset, now)
            logical = self.logical.get(topic, "feedback")
            for record in records:
                event = self._ingest(record, topic, partition, logical, dirty, dead)
                if event is not None:
                    touched.add(partition)
        self.metrics.inc("events_in", n_in)
        for letter in dead:
            await self._dead_letter(letter)
        self.positions.update_caught_up(self.watermarks)
        # every partition with open windows: a caught-up one's watermark also moves with the
        # impressions of the other partitions (Watermarks), not only with its own events
        closing = set(await self.close_due(touched | set(self.deadlines), dirty))
        for rid, entry in dirty.items():
            # a closing entry's next write is its tombstone, once delivered (maybe already, during close_due)
            if rid not in closing and rid not in self.closing:
                self.writes.put(rid, entry)
        await self.writes.flush_in_background()
        self.metrics.last_input_at = time.time()
        self.metrics.inc("batches")
        self.metrics.busy_s += time.monotonic() - now

    def _ingest(self, record: Any, topic: str, partition: int, logical: str, dirty: dict[str, dict],
                dead: list[DeadLetter]) -> Any:
        """Apply one record to the batch's working set; returns the event if it touched the join state.

        Only an accepted event moves its partition's watermark: a dead-lettered record
        (``future_ts`` included) or a conflicting impression never does.
        """
        value, offset = record.value, record.offset
        stamp = record.timestamp
        checked = validate_record(value, record.key, logical, self.settings,
                                  stamp / 1000.0 if stamp is not None and stamp >= 0 else None)
        if isinstance(checked, Rejected):
            dead.append(DeadLetter(checked.reason, checked.field, checked.detail, topic, partition, offset,
                                   record.key, value))
            return None
        rid = checked.request_id
        if rid in self.closing:  # a different impression is a conflict here too, not a re-delivery
            if isinstance(checked, IMPRESSIONS) and checked.event_id != self.closing[rid]:
                dead.append(conflict_letter(self.closing[rid], topic, partition, record))
            else:
                self._count_after_close(checked)
            return None
        entry = dirty.get(rid)
        if entry is None:
            entry = self.state.get(rid.encode("utf-8"))
            entry = new_entry() if entry is None else entry
        if isinstance(checked, IMPRESSIONS):
            outcome = apply_impression(entry, checked)
            if outcome == "conflict":
                dead.append(conflict_letter(entry["imp"], topic, partition, record))
                return None
            self.watermarks.observe(partition, logical, checked.ts)
            if outcome == "duplicate":
                self.metrics.inc("duplicates")
                return checked
            self.metrics.inc("impressions_in")
            entry["off"] = f"{topic}/{partition}/{offset}"
            entry["raw"] = bytes(value).decode("utf-8")  # validated JSON, so valid UTF-8
            self.parsed[rid] = checked
            self.held_since.pop(rid, None)
            heapq.heappush(self.deadlines.setdefault(partition, []), (checked.ts + self.config.window_s, rid))
            if entry["end"]:
                self.session_ended.add(rid)
        else:
            self.watermarks.observe(partition, logical, checked.ts)
            outcome = apply_feedback(entry, checked, self.config)
            if outcome in ("late", "outside_window"):
                self.metrics.inc(outcome)
                return checked
            if outcome == "duplicate":  # counted in the entry, written with its next change
                self.metrics.inc("duplicates")
                return checked
            self.metrics.inc("feedback_in")
            if outcome == "early":
                self.metrics.inc("early_feedback")
                self.held_since.setdefault(rid, time.monotonic())
            elif entry["end"]:
                self.session_ended.add(rid)
        dirty[rid] = entry
        return checked

    def _count_after_close(self, event: Any) -> None:
        if isinstance(event, IMPRESSIONS):
            self.metrics.inc("duplicates")
            return
        impression = self.parsed.get(event.request_id)
        self.metrics.inc(after_close(None if impression is None else impression.ts, event, self.config))

    async def _dead_letter(self, letter: DeadLetter) -> None:
        await self.dead_letter_topic.send(key=letter.key, value=letter.value if letter.value is not None else b"",
                                          headers=letter.headers(), force=True)
        self.metrics.inc("dead_lettered")
        self.metrics.dead_letter_reasons[letter.reason] += 1

    # -- close ----------------------------------------------------------------------------------
    async def close_due(self, partitions: Iterable[int], working: dict[str, dict] | None = None) -> list[str]:
        """Close entries whose window passed the watermark of their partition, or whose session ended.

        ``working``: entries of the current batch not yet written to the table (they win over it).
        """
        due: list[tuple[str, ClosedBy, float]] = []
        for partition in partitions:
            heap = self.deadlines.get(partition)
            watermark = self.watermarks.get(partition)
            while heap and heap[0][0] <= watermark:
                _, rid = heapq.heappop(heap)
                due.append((rid, "window", watermark))
        for rid in list(self.session_ended):
            self.session_ended.discard(rid)
            due.append((rid, "session_end", self.watermarks.get(partition_for_key(rid, self.settings.partitions))))
        return await self._close(due, working)

    async def _close(self, due: list[tuple[str, ClosedBy | None, float]],
                     working: dict[str, dict] | None = None) -> list[str]:
        """Emit the examples of ``due`` (``None`` reason: re-check); tombstone each entry once delivered.

        The entry stays open (in the table, or only in ``working`` while its batch is not acked)
        until the broker acknowledged its example (the delivery callback writes the tombstone),
        so a crash in between re-emits the example with the same id instead of losing it. No
        flush per batch: Faust flushes the producer before it commits source offsets anyway.
        Returns the request ids whose examples were sent.
        """
        ready: list[tuple[str, dict, dict, bytes, str]] = []
        working = working or {}
        for rid, forced, watermark in due:
            if rid in self.closing:
                continue
            entry = working.get(rid)
            if entry is None:
                entry = self.state.get(rid.encode("utf-8"))
            if entry is None:
                continue
            reason = close_reason(entry, watermark, self.config)
            if reason is None and forced == "idle" and entry["imp"] is not None and entry["closed"] is None:
                reason = "idle"
            if reason is None:
                continue
            impression = self.parsed.get(rid) or self._impression_from_entry(entry)
            if impression is None:
                continue
            tombstone = dict(entry)  # the open entry stays as it is until the example is delivered
            # the LabeledList's wire bytes (encode(close_entry(...)), built without the pydantic models)
            example = close_entry_json(tombstone, impression, self.config, self.weights, reason, watermark,
                                       impression_offset=entry.get("off"), raw=entry["raw"].encode("utf-8"))
            tombstone.pop("raw", None)
            self.closing[rid] = impression.event_id
            ready.append((rid, entry, tombstone, example, reason))
        for rid, entry, tombstone, example, reason in ready:
            self.writes.example(rid, example, partial(self._delivered, rid, entry, tombstone, reason))
        # sent in the background (a failed send fails the examples' callbacks: their entries stay open)
        await self.writes.flush_in_background()
        return [rid for rid, *_rest in ready]

    def _not_delivered(self, rid: str, open_entry: dict, error: str) -> None:
        """Keep the entry open in the table (it may never have been written) so a tick retries it."""
        self.closing.pop(rid, None)
        self.metrics.last_error = error
        self.writes.put(rid, open_entry)
        self.writes.flush_soon()

    def _delivered(self, rid: str, open_entry: dict, tombstone: dict, closed_by: str,
                   delivery: asyncio.Future) -> None:
        """The broker has the example: now the entry may become a tombstone."""
        if delivery.cancelled() or delivery.exception() is not None:
            self._not_delivered(rid, open_entry, f"example for {rid} not delivered: {delivery!r}")
            return
        self.closing.pop(rid, None)
        self.writes.put(rid, tombstone)
        self.writes.flush_soon()
        self.parsed.pop(rid, None)
        self.metrics.inc("examples_out")
        self.metrics.closed_by[closed_by] += 1

    def _impression_from_entry(self, entry: dict) -> Impression | ImpressionS | None:
        """The impression kept in an entry (after a restart or rebalance, when it was not parsed here)."""
        raw = entry.get("raw")
        if raw is None:
            return None
        event = decode_record(raw.encode("utf-8"), max_bytes=self.settings.max_event_bytes)
        return event if isinstance(event, IMPRESSIONS) else None

    # -- periodic -------------------------------------------------------------------------------
    def assigned_partitions(self) -> set[int]:
        topic = self.settings.topics.impressions
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    def scan_due(self, assigned: set[int], idle: set[int], now: float) -> bool:
        """Whether this tick walks the whole table.

        The walk costs time proportional to the table (tombstones stay for ``retention_s`` of
        event time), so it runs when it can find something: after the assignment changed
        (recovered entries), when a partition just became idle (its open windows close now), and
        every ``full_scan_s`` (orphans, expired tombstones, recovered windows the watermark passed).
        Windows of this process close on their own from the deadline heaps.
        """
        self.scanned_idle &= idle
        return (assigned != self.scanned_assignment or bool(idle - self.scanned_idle)
                or now - self.last_scan >= self.full_scan_s)

    async def tick(self) -> None:
        """Housekeeping every interval: recovered/idle closes, purges, lag and status."""
        async with self.batch_lock:
            assigned = self.assigned_partitions()
            self.positions.update_lag()
            now = time.monotonic()
            idle = {p for p in assigned if self.positions.partition_idle(p, now)}
            if self.scan_due(assigned, idle, now):
                self.last_scan, self.scanned_assignment, self.scanned_idle = now, assigned, set(idle)
                await self._scan(assigned, idle, now)
        self.metrics.assigned = sorted(assigned)
        self.membership.track_member_id()
        if time.monotonic() - self.status_written >= 1.0:
            self.metrics.write_status(self.status_dir)
            self.status_written = time.monotonic()
        await self.membership.fence()

    async def _scan(self, assigned: set[int], idle: set[int], now: float) -> None:
        """Walk the table: close idle and recovered windows, drop orphans and expired tombstones."""
        due: list[tuple[str, ClosedBy | None, float]] = []
        drop: list[str] = []
        open_windows = 0
        for key, entry in list(self.state.items()):
            rid = key.decode("utf-8")
            partition = partition_for_key(rid, self.settings.partitions)
            if partition not in assigned:
                continue
            watermark = self.watermarks.get(partition)
            if entry["closed"] is not None:
                if tombstone_expired(entry, watermark, self.config):
                    drop.append(rid)
                continue
            if entry["imp"] is None:
                held = self.held_since.setdefault(rid, now)
                if orphan_expired(entry, watermark, self.config) or (
                        partition in idle and now - held >= self.config.orphan_timeout_s):
                    self.metrics.inc("orphaned", len(entry["fb"]))
                    self.held_since.pop(rid, None)
                    drop.append(rid)
                continue
            open_windows += 1
            if partition in idle:
                due.append((rid, "idle", watermark))
            elif close_reason(entry, watermark, self.config) is not None:
                due.append((rid, None, watermark))
        for rid in drop:
            key = rid.encode("utf-8")
            if rid not in self.closing and key in self.state:
                self.writes.delete(rid)
        closed = await self._close(due)
        self.metrics.open_windows = max(0, open_windows - len(closed))

    @property
    def status_dir(self) -> Path:
        """Status files of this deployment's workers (one folder per topic prefix)."""
        return status_dir(self.settings)

    def on_revoked(self, partitions: set[int]) -> None:
        """Forget per-process bookkeeping of partitions another worker may now own.

        Table data is left alone on purpose: Faust's recovery remembers how far it read each
        changelog and resumes from there when a partition comes back, so deleting keys here
        would lose them for good (measured: 6 of 400 examples lost in a two-worker rebalance).
        Entries of partitions this worker does not own are ignored by :meth:`tick`.
        """
        if not partitions:
            return
        for rid in [r for r in self.parsed if partition_for_key(r, self.settings.partitions) in partitions]:
            self.parsed.pop(rid, None)
        self.session_ended = {r for r in self.session_ended
                              if partition_for_key(r, self.settings.partitions) not in partitions}
        for partition in partitions:
            self.deadlines.pop(partition, None)
            self.watermarks.forget(partition)
            self.positions.forget(partition)
