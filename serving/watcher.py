"""Snapshot watcher: hears about new snapshots, loads and verifies them off the request path, swaps.

Three ways to hear that a model's ``current`` pointer moved (publish or rollback), all of
which only *wake up* that model's worker thread (so duplicates and bursts cost one check each,
and one model's slow check never delays another's swap):

* Redis pub/sub on the ``model-updates`` channel (published atomically with the pointer move),
* the ``model-updates`` Kafka topic (key = model name),
* polling ``registry.current_version`` every ``poll_interval_s`` (fallback if both are down).

The worker then reads the registry's current version and, if it is not the one serving and
was not refused before, runs the checks in order, stopping at the first failure:

1. ``registry.load`` (sha256 of the blob against the manifest, safetensors header, tensor
   names/shapes equal to the manifest, finite values) -- :mod:`feature_store.snapshots`;
2. the tensor names and shapes equal the serving component's (an architecture change is
   not hot-swapped);
3. the model is rebuilt and ``load_state_dict`` succeeds;
4. a canary request (the last real request seen, or a synthetic one) gives a permutation
   with finite scores and log-prob;
5. for the reranker, the promotion gate (:mod:`serving.gate`), except for the snapshot that is
   current when the server starts (restored as is: no recent logs exist yet to judge it) and
   for an explicit rollback (``streamrank snapshots rollback``: the registry's
   ``current_event`` says so): an operator's choice is applied, even of a version the gate
   blocked before; the other checks still apply. A version older than the one serving is
   refused unless it is such a rollback (a registry that restarted empty numbers from 1 again).

Only then is the one reference in :class:`serving.holder.ModelHolder` replaced. Every
outcome becomes a :class:`serving.holder.Decision` (``GET /models``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Callable

from contracts.learner import RerankRequest
from feature_store.snapshots import SnapshotError, SnapshotRegistry
from serving.components import (
    Component,
    ComponentError,
    build_component_model,
    canary_request,
    check_component,
    warm_up,
)
from serving.gate import PromotionGate
from serving.holder import Decision, ModelHolder
from serving.recent_examples import RecentExamples
from serving.topic_tail import TopicTail

log = logging.getLogger(__name__)


def _older(version: str, than: str) -> bool:
    """Whether decimal registry version ``version`` precedes ``than`` (non-decimal: not comparable, False)."""
    try:
        return int(version) < int(than)
    except ValueError:
        return False


class SnapshotWatcher:
    """Keeps ``holder`` on the registry's current snapshot of each role's model."""

    def __init__(self, registry: SnapshotRegistry, holder: ModelHolder, roles: dict[str, str],
                 gate: PromotionGate | None = None, examples: RecentExamples | None = None,
                 poll_interval_s: float = 1.0, use_pubsub: bool = True, use_kafka: bool = True,
                 tasks: tuple[str, ...] = ("click", "long_view", "watch_time"),
                 on_swap: Callable[[Component, Decision], None] | None = None) -> None:
        self.registry = registry
        self.holder = holder
        self.roles = {role: name for role, name in roles.items() if name}
        self.model_roles = {name: role for role, name in self.roles.items()}
        self.gate = gate or PromotionGate()
        self.examples = examples
        self.poll_interval_s = poll_interval_s
        self.use_pubsub = use_pubsub
        self.use_kafka = use_kafka and bool(registry.settings.kafka)
        self.tasks = tasks
        self.on_swap = on_swap
        self.canary: RerankRequest | None = None  # the app stores the last real request here
        self.refused: dict[tuple[str, str], str] = {}
        #: refused by the gate or for being older, not for being broken: an explicit rollback may still apply them
        self.rollback_may_apply: set[tuple[str, str]] = set()
        self.warm_up_s: dict[str, float] = {}  # seconds each model family took to build once at start
        # One queue and worker thread per model: a slow check of one model (e.g. the reranker's
        # promotion gate) never delays the swap of another.
        self.wakeups: dict[str, queue.Queue[str]] = {model: queue.Queue() for model in self.model_roles}
        self.load_seconds: list[float] = []
        self._specs: dict[tuple[str, str], dict] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._kafka_tail: TopicTail | None = None

    # -- checks -----------------------------------------------------------------------------------
    def served_version(self, model: str) -> str | None:
        comp = self.holder.bundle.component(self.model_roles[model])
        return comp.version if comp is not None and comp.name == model else None

    def _decide(self, model: str, version: str, action: str, reason: str, source: str, **details) -> Decision:
        decision = Decision(at=time.time(), model=model, version=version, role=self.model_roles[model], action=action,
                            reason=reason, source=source, details=details)
        self.holder.record(decision)
        level = logging.INFO if action == "swapped" else logging.WARNING
        log.log(level, "snapshot %s v%s %s (%s) via %s", model, version, action, reason, source)
        return decision

    def check(self, model: str, source: str = "poll") -> Decision | None:
        """Bring ``model`` to the registry's current version if it passes every check."""
        version, event = self.registry.current_pointer(model)
        rollback = event == "rollback"
        if version is None or version == self.served_version(model):
            return None
        if (model, version) in self.refused and not (rollback and (model, version) in self.rollback_may_apply):
            return None
        served = self.served_version(model)
        if not rollback and served is not None and _older(version, served):
            # a registry that lost its data (Redis restarted empty) numbers from 1 again; only
            # an operator's rollback may take serving back to an older version
            self.rollback_may_apply.add((model, version))
            return self._refuse(model, version, f"older than the serving v{served} and not an explicit rollback",
                                source)
        started = time.monotonic()
        role = self.model_roles[model]
        try:
            manifest, state = self.registry.load(model, version)
        except SnapshotError as exc:
            return self._refuse(model, version, f"{type(exc).__name__}: {exc}", source)
        current = self.holder.bundle.component(role)
        if current is not None and current.name == model:
            served_specs = self._specs.get((model, current.version))
            if served_specs is not None and served_specs != manifest.tensors:
                return self._refuse(model, version, "tensor names/shapes differ from the serving snapshot", source)
        try:
            built = build_component_model(model, state)
        except ComponentError as exc:
            return self._refuse(model, version, str(exc), source)
        except Exception as exc:  # noqa: BLE001 - unknown model family, bad config...
            return self._refuse(model, version, f"cannot build {model}: {type(exc).__name__}: {exc}", source)
        component = Component(role=role, name=model, version=version, model=built, sha256=manifest.sha256,
                              loaded_at=time.time())
        try:
            check_component(component, self._canary_for(built))
        except ComponentError as exc:
            return self._refuse(model, version, str(exc), source)
        gate_details = {}
        if role == "reranker" and source == "startup":
            # Restoring what the registry says is serving (e.g. after a restart): there are no
            # recent logs to judge it by yet, and falling back to the cold start would be worse.
            gate_details = {"accepted": True, "reason": "startup: restoring the registry's current snapshot"}
        elif role == "reranker" and rollback:
            gate_details = {"accepted": True, "reason": "explicit rollback: the gate is bypassed"}
        elif role == "reranker":
            examples = self.examples.snapshot() if self.examples is not None else []
            verdict = self.gate.decide(current, component, examples)
            gate_details = verdict.as_dict()
            if not verdict.accepted:
                self.refused[(model, version)] = verdict.reason
                self.rollback_may_apply.add((model, version))
                return self._decide(model, version, "blocked-by-gate", verdict.reason, source, gate=gate_details)
        self._specs[(model, version)] = manifest.tensors
        self.holder.swap(component)
        self.refused.pop((model, version), None)
        self.rollback_may_apply.discard((model, version))
        self.load_seconds.append(time.monotonic() - started)
        reason = ("rollback: " if rollback else "") + "passed checksum, finite, shape and canary checks"
        decision = self._decide(model, version, "swapped", reason, source,
                                gate=gate_details, created_at=manifest.created_at, offsets=manifest.offsets,
                                metrics=manifest.metrics, load_s=round(time.monotonic() - started, 4))
        if self.on_swap is not None:
            self.on_swap(component, decision)
        return decision

    def _refuse(self, model: str, version: str, reason: str, source: str) -> Decision:
        self.refused[(model, version)] = reason
        return self._decide(model, version, "refused", reason, source)

    def _canary_for(self, built) -> RerankRequest:
        if self.canary is not None:
            return self.canary
        n_features = int(getattr(built, "n_features", 0) or getattr(getattr(built, "config", None), "n_features", 0) or 0)
        return canary_request(n_features, self.tasks)

    # -- threads ------------------------------------------------------------------------------------
    def start(self) -> "SnapshotWatcher":
        self.warm_up_s = warm_up(list(self.model_roles))  # one-off costs now, not in the first swap
        for model in self.model_roles:
            try:
                self.check(model, source="startup")
            except Exception as exc:  # noqa: BLE001 - Redis down at start: keep the cold-start policy
                log.warning("initial snapshot check of %s failed: %s", model, exc)
        for model in self.model_roles:
            self._spawn(lambda model=model: self._worker(model), f"snapshot-worker-{model}")
        if self.use_pubsub:
            self._spawn(self._listen_pubsub, "snapshot-pubsub")
        if self.use_kafka:  # broker down: polling and pub/sub still work
            self._kafka_tail = TopicTail(self.registry.settings.kafka_bootstrap, self.registry.topic,
                                         self._on_model_updates, name="snapshot-kafka").start()
        return self

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wake(self, model: str, source: str) -> None:
        if model in self.wakeups:
            self.wakeups[model].put(source)

    def _worker(self, model: str) -> None:
        wakeups = self.wakeups[model]
        next_poll = time.monotonic() + self.poll_interval_s
        while not self._stop.is_set():
            timeout = max(0.0, next_poll - time.monotonic())
            try:
                source = wakeups.get(timeout=timeout)
                while not wakeups.empty():  # a burst of announcements costs one check
                    wakeups.get_nowait()
            except queue.Empty:
                source = "poll"
                next_poll = time.monotonic() + self.poll_interval_s
            try:
                self.check(model, source)
            except Exception as exc:  # noqa: BLE001 - Redis hiccup: the next wake-up or poll retries
                log.warning("snapshot check of %s failed: %s", model, exc)

    def _listen_pubsub(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.registry.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.registry.channel)
                message = pubsub.get_message(timeout=0.5)
                if message and message.get("type") == "message":
                    try:
                        self.wake(json.loads(message["data"])["name"], "redis-pubsub")
                    except (ValueError, KeyError, TypeError):
                        log.warning("unreadable model-updates message on %s", self.registry.channel)
            except Exception as exc:  # noqa: BLE001 - Redis restart: resubscribe
                log.warning("model-updates pub/sub: %s", exc)
                pubsub = None
                self._stop.wait(1.0)
        if pubsub is not None:
            pubsub.close()

    def _on_model_updates(self, records) -> None:
        for record in records:
            if record.key:
                self.wake(record.key.decode("utf-8", "replace"), "kafka")

    def close(self) -> None:
        self._stop.set()
        if self._kafka_tail is not None:
            self._kafka_tail.close()
        for thread in self._threads:
            thread.join(5)
