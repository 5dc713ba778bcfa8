"""Publishes learner checkpoints as snapshots when the learner process does not publish them itself.

The learner worker writes atomic checkpoints (:class:`learners.runtime.checkpoint.CheckpointStore`);
the snapshot registry is what serving watches. This thread closes the gap for the demo: every
``interval_s`` it loads each model's newest checkpoint and publishes it, unless the registry's
current snapshot has already applied at least as many examples (the learner published it).
Checkpoints are safetensors + JSON (no pickle), so nothing unsafe crosses the process boundary.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from contracts.learner import LearnerState, publishable_meta
from feature_store.snapshots import SnapshotError, SnapshotRegistry

log = logging.getLogger(__name__)


def applied_count(meta: dict) -> int:
    runtime = meta.get("runtime") or {}
    return int(runtime.get("applied", meta.get("examples_seen", 0)) or 0)


class CheckpointPublisher:
    """Polls checkpoint stores of ``models`` and publishes new ones to ``registry``."""

    def __init__(self, registry: SnapshotRegistry, checkpoint_dir: Path, models: list[str], interval_s: float) -> None:
        self.registry = registry
        self.checkpoint_dir = Path(checkpoint_dir)
        self.models = models
        self.interval_s = interval_s
        self.published: dict[str, int] = {m: 0 for m in models}
        self.errors: list[str] = []
        self.learners_publish = False  # set by the demo when the learner workers publish themselves
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-publisher", daemon=True)

    def tick(self) -> None:
        from learners.runtime.checkpoint import CheckpointError, CheckpointStore  # noqa: PLC0415

        for model in self.models:
            store = CheckpointStore(self.checkpoint_dir, model)
            seq = store.latest_seq()
            if seq is None or self._seen.get(model) == seq:
                continue
            try:
                loaded = store.load_latest()
            except (CheckpointError, OSError, ValueError) as exc:
                log.warning("checkpoint %s #%s not readable yet: %s", model, seq, exc)
                continue
            if loaded is None:
                continue
            seq, state = loaded
            self._seen[model] = seq
            current = self.registry.current(model)
            if current is not None and applied_count(current.meta) >= applied_count(state.meta):
                continue  # the learner (or an earlier tick) already published this much learning
            state = LearnerState(tensors=state.tensors, meta=publishable_meta(state.meta))
            try:
                self.registry.publish(model, state, metrics={"applied": applied_count(state.meta),
                                                             "checkpoint_seq": seq})
                self.published[model] += 1
            except SnapshotError as exc:
                self.errors.append(f"{model} #{seq}: {exc}")
                log.error("snapshot of %s refused: %s", model, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - keep publishing on the next tick
                log.warning("checkpoint publisher: %s", exc)

    def start(self) -> "CheckpointPublisher":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
