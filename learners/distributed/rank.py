"""One rank of a data-parallel learner (``streamrank learn --model M --ranks N``, or under ``torchrun``).

Every rank reads only the partitions of ``examples`` it owns (explicit assignment with
kafka-python's ``assign``: no consumer group, so no rebalance can move a partition), decodes
them through the same :class:`learners.runtime.runner.LearnerRuntime` as the single-process
worker (dedupe by offset and example id, dead letters with their reason) and learns in
lockstep: each round, a rank gathers up to ``batch_size / N`` examples for ``within`` seconds,
the ranks all-reduce how many they hold, and if any holds one, every rank takes one step, an
empty rank with a zero-weight stand-in (:mod:`learners.distributed.sync`). Every
``checkpoint_every`` steps, and at the end, the ranks write their bookkeeping and rank 0 writes
the one checkpoint after a barrier (:mod:`learners.distributed.ledger`); with ``--publish``
rank 0 alone hands it to the snapshot publisher. ``stop_after`` and SIGTERM are all-reduced too,
so the ranks stop together. A rank that dies leaves the others blocked in a collective until the
launcher (:mod:`learners.distributed.launch`, or torchrun) stops them all; restarting all of them
resumes from the last checkpoint: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from common.config import Settings
from common.heap import freeze_startup_heap
from contracts.events import Impression, ItemLabels, JoinInfo, LabeledList, ShownItem
from contracts.learner import RUNTIME_META_KEY, LearnerState
from learners.distributed.group import init_group, leave_group, owned_partitions
from learners.distributed.ledger import merge, rank_delta, read_sidecars, write_sidecar
from learners.distributed.sync import attach
from learners.registry import build_learner
from learners.runtime.checkpoint import CheckpointStore
from learners.runtime.runner import LearnerRuntime, Record, RuntimeConfig

log = logging.getLogger("streamrank.learner.rank")
NEVER = 10 ** 12


@dataclass(frozen=True)
class RankOptions:
    model: str
    checkpoint_dir: Path
    rank: int
    world: int
    port: int
    batch_size: int = 256  # examples per step over all ranks
    within_s: float = 0.5
    checkpoint_every: int = 10
    stop_after: int | None = None
    device: str = "auto"
    publish: bool = False
    model_config: tuple[tuple[str, Any], ...] = ()


def stand_in() -> LabeledList:
    """The one-item list an empty rank learns with zero weight (it only has to run the same collectives;
    one item, so it is never longer than the other ranks' lists)."""
    items = [ShownItem(item_id="stand-in-0", position=1, scores={"click": 0.5, "long_view": 0.5})]
    impression = Impression(event_id="stand-in", request_id="stand-in", ts=0.0, user_id="stand-in", items=items)
    return LabeledList(example_id="stand-in", request_id="stand-in", impression=impression,
                       labels=[ItemLabels(item_id=it.item_id, position=it.position) for it in items],
                       list_reward=0.0, query_reward=0.0,
                       join=JoinInfo(closed_by="flush", window_s=0.0, feedback_count=0, closed_at_ts=0.0))


def check_data_parallel(model: str, learner: Any) -> None:
    """Refuse a learner whose training data-parallel ranks cannot reproduce (ValueError naming why)."""
    if not hasattr(learner, "sync") or getattr(getattr(learner, "config", None), "sc_weight", 0.0):
        raise ValueError(f"{model}: data-parallel training needs gradient learners without SCLoss "
                         "(ldro, grpo, drpo, platt, umnn with --set sc_weight=0): SCLoss's bin caches and the "
                         "histogram baselines are batch statistics that are not all-reduced")
    if getattr(getattr(learner, "config", None), "replay_updates", 0):
        raise ValueError(f"{model}: data-parallel training does not take the warm-up replay "
                         "(replay_updates > 0): each rank's reservoir holds only its own partitions' rows")


class Rank:
    """The lockstep loop of one rank: read owned partitions, step together, checkpoint together."""

    def __init__(self, settings: Settings, options: RankOptions) -> None:
        self.settings, self.options = settings, options
        self.info = init_group(_device(options.device), options.rank, options.world, "127.0.0.1", options.port)
        learner = build_learner(options.model, device=options.device, **dict(options.model_config))
        check_data_parallel(options.model, learner)
        attach(learner, getattr(learner, "device", None))
        self.learner = learner
        self.store = CheckpointStore(options.checkpoint_dir, options.model)
        self.sidecars = self.store.dir / "ranks"
        self.runtime = LearnerRuntime(options.model, learner, None,
                                      RuntimeConfig(batch_size=NEVER, checkpoint_every=NEVER,
                                                    max_event_bytes=settings.max_event_bytes))
        if settings.redis:  # impressions may name item features instead of carrying them (serving's default)
            from learners.runtime.feature_fill import FeatureFill, feast_row_reader  # noqa: PLC0415

            self.runtime.prepare = FeatureFill(feast_row_reader(settings))
        found = self.store.load_latest()
        if found is not None:
            self.runtime.load_state(found[1])
        self.base = self.runtime.runtime_meta()
        self.steps = int(self.base.get("batches", 0))
        self.local_batch = max(1, math.ceil(options.batch_size / options.world))
        self.stopping = False
        self.jobs: Any = None

    def run(self) -> None:
        """Consume, step and checkpoint until ``stop_after`` or SIGTERM (every rank stops together)."""
        from kafka import KafkaConsumer, KafkaProducer  # noqa: PLC0415

        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        topic = self.settings.topics.examples
        consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                 enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024)
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap)
        try:
            self.owned = self._assign(consumer, topic)
            self._start_publisher()
            self.sidecars.mkdir(parents=True, exist_ok=True)
            (self.sidecars / f"rank{self.options.rank}.pid").write_text(str(os.getpid()))
            # a full collection walking the start-up heap would stall every rank in the next collective
            freeze_startup_heap()
            while True:
                self._gather(consumer, producer)
                held, applied, stop = self._all_reduce([self.runtime.queued, self._applied_delta(),
                                                        float(self.stopping)])
                done = stop > 0 or (self.options.stop_after is not None
                                    and int(self.base.get("applied", 0)) + applied >= self.options.stop_after)
                self.stopping = self.stopping or done  # stop gathering; learn what is held, then stop together
                if held == 0 and done:
                    break
                if held > 0:
                    self._step()
                    if self.steps % self.options.checkpoint_every == 0:
                        self.checkpoint()
            self.checkpoint()
            log.info("rank %d/%d: stopped after %d steps", self.options.rank, self.options.world, self.steps)
        finally:
            if self.jobs is not None and self.info.is_leader:
                self.jobs.shutdown(final_snapshot=True)
            consumer.close()
            producer.close()
            leave_group()

    def _assign(self, consumer: Any, topic: str) -> set[str]:
        from kafka import TopicPartition  # noqa: PLC0415

        partitions = None
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        mine = [TopicPartition(topic, p) for p in owned_partitions(len(partitions), self.options.rank,
                                                                  self.options.world)]
        consumer.assign(mine)
        earliest = consumer.beginning_offsets(mine) if mine else {}
        for tp in mine:
            key = f"{tp.topic}:{tp.partition}"
            nxt = self.runtime.next_offset(key)
            if nxt is None:
                self.runtime.expect(key, int(earliest.get(tp) or 0))
                consumer.seek(tp, int(earliest.get(tp) or 0))
            else:
                consumer.seek(tp, nxt)
        log.info("rank %d/%d owns %s", self.options.rank, self.options.world, [tp.partition for tp in mine])
        return {f"{tp.topic}:{tp.partition}" for tp in mine}

    def _gather(self, consumer: Any, producer: Any) -> None:
        """Poll owned partitions for up to ``within`` seconds or until this rank holds its share of a batch."""
        from kafka import TopicPartition  # noqa: PLC0415

        deadline = time.monotonic() + self.options.within_s
        while not self.stopping and self.runtime.queued < self.local_batch and time.monotonic() < deadline:
            want = self.local_batch - self.runtime.queued
            polled = consumer.poll(timeout_ms=50, max_records=want) if self.owned else {}
            if not self.owned:
                time.sleep(0.05)
            records = [Record(r.topic, r.partition, r.offset, r.key, r.value)
                       for batch in polled.values() for r in batch]
            result = self.runtime.offer(sorted(records, key=lambda r: (r.partition, r.offset)))
            for letter in result.dead_letters:
                producer.send(self.settings.topics.dead_letter, key=letter.key, value=letter.value or b"",
                              headers=letter.headers())
            for tp, offset in result.seeks.items():
                topic, _, partition = tp.rpartition(":")
                consumer.seek(TopicPartition(topic, int(partition)), offset)
        producer.flush()

    def _step(self) -> None:
        """One lockstep update: this rank's examples, or a zero-weight stand-in when it has none; the
        learner's example counters then count the union's examples (all ranks hold the same)."""
        seen = {k: getattr(self.learner, k) for k in ("examples_seen", "rows_seen") if hasattr(self.learner, k)}
        if self.runtime.queued:
            self.runtime.flush()
        else:
            self.learner.sync.idle = True
            try:
                self.learner.learn_many([stand_in()])
            finally:
                self.learner.sync.idle = False
            for key, value in seen.items():
                setattr(self.learner, key, value)
        deltas = self._all_reduce([getattr(self.learner, k) - v for k, v in seen.items()])
        for (key, value), delta in zip(seen.items(), deltas):
            setattr(self.learner, key, value + int(delta))
        self.steps += 1

    def _applied_delta(self) -> float:
        return float(self.runtime.applied - int(self.base.get("applied", 0)))

    def _all_reduce(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor]

    def checkpoint(self) -> None:
        """Sidecars from every rank, a barrier, rank 0 writes the merged checkpoint, a barrier."""
        self.runtime.drain()
        write_sidecar(self.sidecars, self.options.rank, rank_delta(self.base, self.runtime.runtime_meta(), self.owned))
        dist.barrier()
        log.info("rank %d: checkpoint at step %d", self.options.rank, self.steps)
        if self.info.is_leader:
            meta = merge(self.base, read_sidecars(self.sidecars, self.options.world), self.steps,
                         self.runtime.config.recent_ids)
            state = self.learner.state_dict()
            full = LearnerState(tensors=state.tensors, meta={**state.meta, RUNTIME_META_KEY: meta})
            self.store.save(full)
            metrics = {**self.runtime.last_metrics, "applied": float(meta["applied"]), "ranks": float(self.options.world)}
            for hook in self.runtime.on_checkpoint:
                hook(self.options.model, full, metrics)
        dist.barrier()

    def _start_publisher(self) -> None:
        if self.options.publish and self.info.is_leader:
            from learners.runtime.worker import snapshot_publisher  # noqa: PLC0415

            self.jobs = snapshot_publisher(self.settings, self.runtime)
            self.jobs.start()


def _device(spec: str) -> torch.device:
    from learners.device import resolve_device  # noqa: PLC0415

    return resolve_device(spec)


def run_rank(settings: Settings, options: RankOptions) -> None:
    Rank(settings, options).run()
