"""Versioned model snapshots in Redis: safetensors weights + a JSON manifest, a ``current`` pointer, rollback.

Interface (serving and the learners rely on exactly this)::

    registry = SnapshotRegistry(settings.redis_url, settings)     # or an existing redis.Redis client
    manifest = registry.publish("ldro", learner.state_dict(), metrics={"loss": 0.3}, parent=None)
    manifest = registry.current("ldro")                           # Manifest | None
    manifest, state = registry.load("ldro")                       # current; or load("ldro", "7")
    registry.rollback("ldro", "6")                                # moves the pointer back to a kept version
    registry.list_versions("ldro")                                # [Manifest, ...] oldest first
    registry.verify("ldro", "7")                                  # Verification(ok, reason, manifest)

What a snapshot is (DESIGN.md, "Snapshots and hot-swap"): the bytes of
``safetensors.torch.save(state.tensors)`` plus a JSON manifest with ``name``, ``version``
(a decimal string, increasing per model: "1", "2", ...), ``parent`` (the version it continues,
by default the current one), ``created_at`` (epoch seconds), ``offsets`` (the applied Kafka
offsets, taken from ``state.meta["offsets"]``), ``metrics``, ``sha256`` (of the safetensors
bytes), ``size_bytes``, ``tensors`` (name -> dtype and shape) and ``meta`` (``state.meta``
itself, JSON). No pickle anywhere: the blob is safetensors, the rest is JSON.

Redis layout (``NS`` = ``<topic prefix>snapshots``, e.g. ``streamrank.snapshots``; each model
has its own keys so one model's publish never touches another's):

====================================  =========  ==============================================
key                                   type       content
====================================  =========  ==============================================
``NS:models``                         set        model names that have snapshots
``NS:{model}:seq``                    string     last allocated version number (INCR)
``NS:{model}:versions``               zset       kept versions, score = version number
``NS:{model}:v:{version}:blob``       string     safetensors bytes
``NS:{model}:v:{version}:manifest``   string     manifest JSON
``NS:{model}:rejected``               hash       version -> why verification refused it
``NS:{model}:current``                string     the serving version
``NS:{model}:current_event``          string     what moved it last: ``publish`` or ``rollback``
``NS:{model}:bad_pointer_heals``      string     how often a bad ``current`` was replaced (INCR)
====================================  =========  ==============================================

Publishing writes blob + manifest + the version entry in one MULTI/EXEC, reads the blob back
and verifies it (checksum, safetensors header, finite float tensors, names/shapes equal to the
manifest) and only then moves ``current`` with a Lua script that re-checks the manifest's
checksum, refuses to move it backwards on a publish (a slow concurrent publisher; a rollback
may go back), sets the pointer and what moved it (``current_event``: a server's watcher
lets an explicit rollback past its promotion gate) and PUBLISHes the manifest on the pub/sub channel
``<topic prefix>model-updates`` in one atomic step. A refused snapshot is kept (marked in
``rejected``) for inspection but never becomes ``current``. After the pointer moved, the
manifest is produced to the ``model-updates`` Kafka topic (key = model name, value = manifest
JSON, plus an ``event`` field: ``publish`` or ``rollback``) and versions beyond the newest
``keep`` are pruned (the current one is never pruned).

A bad pointer heals itself: a ``current`` that names no readable kept version (garbage, a
version without a manifest such as ``999999``, an unreadable manifest) counts as "no current"
on the next publish or rollback, which moves it (logged at WARNING, counted in
``bad_pointer_heals``) instead of failing every later publish. Version numbers come from
``seq`` but never at or below the newest kept version, so a lost ``seq`` cannot overwrite one.
The scripts are in :mod:`feature_store.snapshot_scripts`.

Durability: a crash or restart of Redis between those steps leaves the old pointer (or the
new one, once the script ran) because every step is atomic on its own; with Redis persistence
(AOF, ``appendfsync always``) the same holds across a Redis restart. Without persistence a
restart loses everything, snapshots included: run the snapshot Redis with AOF in production.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Iterable

import redis

from common.config import Settings
from contracts.learner import LearnerState
from contracts.snapshot import (
    MANIFEST_SCHEMA,
    Manifest,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotInvalid,
    SnapshotNotFound,
    Verification,
    _json_safe,
    check_finite,
    decode_blob,
    serialize_state,
    tensor_specs,
)
from feature_store.snapshot_scripts import MOVE_POINTER, NEXT_VERSION

__all__ = ["DEFAULT_KEEP", "MANIFEST_SCHEMA", "Manifest", "SnapshotCorrupt", "SnapshotError", "SnapshotInvalid",
           "SnapshotNotFound", "SnapshotRegistry", "Verification", "check_finite", "decode_blob", "serialize_state",
           "tensor_specs"]

log = logging.getLogger(__name__)

DEFAULT_KEEP = 5

#: Tries of a pointer move when another writer moved ``current`` between the read and the script.
_POINTER_TRIES = 5


class SnapshotRegistry:
    """Publish, load, verify and roll back model snapshots in Redis (layout in the module docstring)."""

    def __init__(self, redis_url_or_client: str | redis.Redis, settings: Settings, keep: int = DEFAULT_KEEP,
                 announce_kafka: bool = True) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if isinstance(redis_url_or_client, redis.Redis):
            self.redis = redis_url_or_client
        else:
            self.redis = redis.Redis.from_url(redis_url_or_client)
        self.settings = settings
        self.keep = keep
        self.namespace = f"{settings.topics.prefix}snapshots"
        self.channel = settings.topics.model_updates  # pub/sub channel = the topic's physical name
        self.topic = settings.topics.model_updates
        self._announce_kafka = announce_kafka and bool(settings.kafka)
        self._producer = None
        self._move_pointer = self.redis.register_script(MOVE_POINTER)
        self._next_version = self.redis.register_script(NEXT_VERSION)
        #: bad ``current`` pointers this registry replaced on publish/rollback (Redis keeps the total per model)
        self.bad_pointers_healed = 0

    # -- keys ---------------------------------------------------------------------------------
    def _key(self, model: str, *parts: str) -> str:
        if not model or ":" in model:
            raise ValueError(f"model name must be non-empty and free of ':', got {model!r}")
        return ":".join((self.namespace, model, *parts))

    def _blob_key(self, model: str, version: str) -> str:
        return self._key(model, "v", version, "blob")

    def _manifest_key(self, model: str, version: str) -> str:
        return self._key(model, "v", version, "manifest")

    # -- reading --------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(f"{self.namespace}:models"))

    def current_version(self, model: str) -> str | None:
        """The raw ``current`` pointer (may be bad: see :meth:`pointer_problem`)."""
        raw = self.redis.get(self._key(model, "current"))
        return _text(raw)

    def current_pointer(self, model: str) -> tuple[str | None, str | None]:
        """The serving version and what moved the pointer there (``publish``/``rollback``), read together."""
        version, event = self.redis.mget([self._key(model, "current"), self._key(model, "current_event")])
        return _text(version), _text(event)

    def pointer_problem(self, model: str, version: str | None = None) -> str | None:
        """Why the ``current`` pointer (or ``version``) names no readable kept version; None when it does.

        A missing pointer is no problem (no snapshot yet). Only the manifest is read, not the blob:
        a pointer at a version whose blob rotted is a refused snapshot, not a bad pointer.
        """
        version = self.current_version(model) if version is None else version
        if version is None:
            return None
        if not version.isdecimal():
            return f"current pointer {version!r:.40} is not a version number"
        try:
            manifest = self.manifest(model, version)
        except SnapshotError as exc:
            return f"current pointer v{version}: {exc}"
        if manifest.version != version or manifest.name != model:
            return f"current pointer v{version}: the manifest there is {manifest.name} v{manifest.version}"
        return None

    def good_current_version(self, model: str) -> str | None:
        """The ``current`` version if it names a readable kept version, else None (a bad pointer is no current)."""
        version = self.current_version(model)
        return version if version is not None and self.pointer_problem(model, version) is None else None

    def bad_pointer_heals(self, model: str) -> int:
        """How many times a publish or rollback replaced a bad ``current`` pointer of ``model`` (all writers)."""
        return int(_text(self.redis.get(self._key(model, "bad_pointer_heals"))) or 0)

    def manifest(self, model: str, version: str) -> Manifest:
        raw = self.redis.get(self._manifest_key(model, version))
        if raw is None:
            raise SnapshotNotFound(f"{model} has no version {version!r} (kept: {', '.join(self._versions(model)) or 'none'})")
        return Manifest.from_json(raw)

    def current(self, model: str) -> Manifest | None:
        version = self.current_version(model)
        return self.manifest(model, version) if version is not None else None

    def _versions(self, model: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.redis.zrange(self._key(model, "versions"), 0, -1)]

    def kept_versions(self, model: str) -> list[str]:
        """Version numbers kept for ``model``, oldest first, readable or not."""
        return self._versions(model)

    def list_versions(self, model: str) -> list[Manifest]:
        """Kept versions with a readable manifest, oldest first (see :meth:`inspect_versions` for the rest)."""
        return [manifest for _, manifest, _ in self.inspect_versions(model) if manifest is not None]

    def inspect_versions(self, model: str) -> list[tuple[str, Manifest | None, str | None]]:
        """Every kept version, oldest first, as ``(version, manifest or None, why it is unreadable or None)``."""
        out: list[tuple[str, Manifest | None, str | None]] = []
        for version in self._versions(model):
            try:
                out.append((version, self.manifest(model, version), None))
            except SnapshotNotFound:
                continue  # pruned between the two reads
            except SnapshotError as exc:
                out.append((version, None, str(exc)))
        return out

    def rejected(self, model: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self._key(model, "rejected")).items()}

    def load(self, model: str, version: str | None = None) -> tuple[Manifest, LearnerState]:
        """The verified weights of ``version`` (default: current); raises :class:`SnapshotError` otherwise."""
        if version is None:
            version = self.current_version(model)
            if version is None:
                raise SnapshotNotFound(f"{model} has no current snapshot")
        # Blob and manifest in one MULTI so a concurrent prune can't split them.
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self._manifest_key(model, version))
        pipe.get(self._blob_key(model, version))
        raw_manifest, blob = pipe.execute()
        if raw_manifest is None or blob is None:
            raise SnapshotNotFound(f"{model} has no version {version!r}")
        manifest = Manifest.from_json(raw_manifest)
        tensors = decode_blob(blob, manifest)
        return manifest, LearnerState(tensors=tensors, meta=dict(manifest.meta))

    def verify(self, model: str, version: str | None = None) -> Verification:
        """Checksum, header, names/shapes and finiteness of a stored version, without raising."""
        version = version or self.current_version(model)
        if version is None:
            return Verification(model, "", False, "no current snapshot")
        try:
            manifest, _ = self.load(model, version)
        except SnapshotError as exc:
            return Verification(model, version, False, f"{type(exc).__name__}: {exc}")
        return Verification(model, version, True, None, manifest)

    # -- writing --------------------------------------------------------------------------------
    def publish(self, model_name: str, state: LearnerState, metrics: dict | None = None,
                parent: str | None = None) -> Manifest:
        """Store ``state`` as a new version, verify it from Redis, then make it ``current`` and announce it.

        Raises :class:`SnapshotInvalid` (NaN/inf weights, non-JSON meta or metrics) or
        :class:`SnapshotCorrupt` (read-back mismatch); ``current`` is unchanged then.
        """
        meta = _json_safe(state.meta, "state.meta")
        metrics = _json_safe(metrics or {}, "metrics")
        blob = serialize_state(state)
        version = str(self._next_version(keys=[self._key(model_name, "seq"), self._key(model_name, "versions")]))
        manifest = Manifest(name=model_name, version=version,
                            parent=parent if parent is not None else self.good_current_version(model_name),
                            created_at=time.time(), sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob),
                            tensors=tensor_specs(state.tensors), offsets=meta.get("offsets"), metrics=metrics,
                            meta=meta)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._blob_key(model_name, version), blob)
        pipe.set(self._manifest_key(model_name, version), manifest.to_json())
        pipe.zadd(self._key(model_name, "versions"), {version: int(version)})
        pipe.sadd(f"{self.namespace}:models", model_name)
        pipe.execute()
        check = self.verify(model_name, version)
        if not check.ok:
            self.redis.hset(self._key(model_name, "rejected"), version, check.reason or "refused")
            self._prune(model_name)
            raise (SnapshotInvalid if "SnapshotInvalid" in (check.reason or "") else SnapshotCorrupt)(
                f"snapshot {model_name} v{version} refused, current stays {self.current_version(model_name)}: "
                f"{check.reason}")
        self._point_to(manifest, event="publish")
        self._prune(model_name)
        return manifest

    def rollback(self, model: str, version: str) -> Manifest:
        """Point ``current`` back at a kept ``version`` after verifying it; announced like a publish."""
        check = self.verify(model, version)
        if not check.ok or check.manifest is None:
            raise (SnapshotNotFound if "SnapshotNotFound" in (check.reason or "") else SnapshotCorrupt)(
                f"cannot roll {model} back to v{version}: {check.reason}")
        self._point_to(check.manifest, event="rollback")
        return check.manifest

    def _point_to(self, manifest: Manifest, event: str) -> None:
        """Move ``current`` to ``manifest`` atomically; a bad previous pointer counts as none (logged, counted)."""
        announcement = json.dumps({**manifest.as_dict(), "event": event}, sort_keys=True, allow_nan=False)
        model = manifest.name
        for attempt in range(_POINTER_TRIES):
            raw = self.redis.get(self._key(model, "current"))  # compared byte for byte by the script
            seen = _text(raw)
            problem = self.pointer_problem(model, seen)
            try:
                self._move_pointer(keys=[self._key(model, "current"), self._manifest_key(model, manifest.version),
                                         self._key(model, "current_event"), self._key(model, "bad_pointer_heals")],
                                   args=[manifest.version, manifest.sha256, self.channel, announcement, event,
                                         raw or b"", "1" if problem is None else "0"])
            except redis.ResponseError as exc:
                if str(exc).startswith("RACED") and attempt + 1 < _POINTER_TRIES:
                    continue  # another writer moved it since we read it: judge the new value
                raise SnapshotCorrupt(f"pointer for {model} not moved to v{manifest.version}: {exc}") from None
            break
        if seen is not None and problem is not None:
            self.bad_pointers_healed += 1
            log.warning("snapshot registry: %s; treated as no current and moved to v%s (%s)", problem,
                        manifest.version, event)
        self._announce(model, announcement)

    def _announce(self, model: str, announcement: str) -> None:
        if not self._announce_kafka:
            return
        try:
            if self._producer is None:
                from kafka import KafkaProducer  # noqa: PLC0415 - only needed when Kafka is configured

                self._producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                               linger_ms=0, request_timeout_ms=10_000, max_block_ms=10_000)
            self._producer.send(self.topic, key=model.encode(), value=announcement.encode()).get(timeout=10)
        except Exception as exc:  # noqa: BLE001 - the pointer moved; pub/sub carried it; say so loudly
            log.warning("snapshot %s announced on Redis pub/sub but not on Kafka topic %s: %s", model, self.topic, exc)

    def _prune(self, model: str) -> list[str]:
        """Drop versions older than the newest ``keep`` (never the current one); returns what was dropped."""
        versions = self._versions(model)
        current = self.current_version(model)
        stale = [v for v in versions[: max(0, len(versions) - self.keep)] if v != current]
        if stale:
            pipe = self.redis.pipeline(transaction=True)
            for version in stale:
                pipe.zrem(self._key(model, "versions"), version)
                pipe.delete(self._blob_key(model, version), self._manifest_key(model, version))
                pipe.hdel(self._key(model, "rejected"), version)
            pipe.execute()
        return stale

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None

    def __enter__(self) -> "SnapshotRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(raw: bytes | None) -> str | None:
    """A Redis value as text; undecodable bytes are replaced, so a garbage key reads as garbage, not a crash."""
    return raw.decode("utf-8", "replace") if raw is not None else None


def iter_announcements(pubsub_messages: Iterable[dict]) -> Iterable[Manifest]:
    """Manifests from raw ``redis`` pub/sub messages (skips subscribe confirmations)."""
    for message in pubsub_messages:
        if message.get("type") != "message":
            continue
        doc = json.loads(message["data"])
        doc.pop("event", None)
        yield Manifest(**doc)
