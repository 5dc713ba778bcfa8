"""Serving's feature read: one user + one query + N candidate items in a single Redis round trip.

Feast stays the writer and the schema owner; this module reads the very keys Feast's Redis
online store wrote (feast 0.67, ``feast/infra/online_stores/redis.py`` and ``helpers.py``):

* Redis key of an entity = ``serialize_entity_key(EntityKey(join_keys=[k], entity_values=[v]),
  entity_key_serialization_version=3) + project.encode()``; it is a hash holding the features of
  *every* view keyed by that entity;
* hash field of a feature = ``mmh3_32("<view>:<feature>")`` packed little-endian (4 bytes);
  field ``_ts:<view>`` holds the write time (protobuf ``Timestamp``);
* value = a serialized ``feast.types.Value`` protobuf.

:class:`DirectFeatureReader` resolves the requested ``view:feature`` references against the
Feast registry once (views, join keys, TTLs), then per request sends one HMGET per entity
(1 user + 1 query + N items) in one non-transactional pipeline: one round trip, as Feast's
own ``online_read`` does per view. ``bench/feature_bench.py`` measures it against
``FeatureStore.get_online_features`` (see BENCHMARKS.md, "feature store"); serving uses this
path because it is faster and returns the same values (an integration test checks both).

Output (both readers)::

    FeatureBundle(user={"user_profile__activity": ..., ...}, query={...},
                  items=[{"letor_document__features": [...], "item_stats__click_rate": ...}, ...])

A feature that was never written is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import redis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import FloatList as FloatListProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from common.config import Settings
from common.errors import StreamrankError
from feature_store.settings import FeatureStoreSettings, load_feature_store_settings

#: What serving reads by default: user profile, item content and streaming stats, query stats.
DEFAULT_FEATURES: tuple[str, ...] = (
    "user_profile:activity", "user_profile:activity_level", "user_profile:profile_vector",
    "letor_document:features",
    "kuairand_video:duration_ms",
    "item_stats:impressions", "item_stats:click_rate", "item_stats:long_view_rate", "item_stats:mean_watch_time_ms",
    "query_stats:requests", "query_stats:click_through_rate", "query_stats:reformulation_rate",
    "query_stats:satisfaction",
)
ENTITY_ROLES = {"user_id": "user", "item_id": "item", "query_id": "query"}


class FeatureReadError(StreamrankError, ValueError):
    """A feature reference that the Feast registry does not know (names the reference)."""


@dataclass
class FeatureBundle:
    """Features of one request: the user's, the query's and each candidate item's (in request order)."""

    user: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _ViewPlan:
    view: str
    join_key: str
    features: tuple[str, ...]
    ttl: timedelta


def value_to_python(raw: bytes | None) -> Any:
    """Decode one serialized ``feast.types.Value`` (lists become Python lists; unset -> None)."""
    if raw is None:
        return None
    value = ValueProto.FromString(raw)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    got = getattr(value, kind)
    return list(got.val) if kind.endswith("_list_val") else got


def value_to_vector(raw: bytes | None) -> np.ndarray | None:
    """Decode one serialized list-valued ``feast.types.Value`` into a float32 vector (unset or not a list -> None).

    ``np.asarray`` on the protobuf's repeated field is ~3x faster than ``list()`` followed by a
    row copy (``bench/serving_costs.py``)."""
    if raw is None:
        return None
    value = ValueProto.FromString(raw)
    kind = value.WhichOneof("val")
    if kind is None or not kind.endswith("_list_val") or kind in ("string_list_val", "bytes_list_val"):
        return None
    return np.asarray(getattr(value, kind).val, dtype=np.float32)


#: One hash field of many keys in one command (a missing key or field is ``false`` in Lua, a nil
#: reply in redis-py, so the reply keeps one entry per key). Loaded once, then called by SHA
#: (redis-py's ``Script`` reloads it after a Redis restart emptied the script cache).
#: A script blocks Redis while it runs: a learner's batch (12,800 items) is read in chunks of
#: this many keys, so a serving read waits behind at most one chunk (~0.3 ms), not the batch.
HGET_MANY_CHUNK = 512
HGET_MANY = "local out = {} for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, ARGV[1]) end return out"


@lru_cache(maxsize=64)
def float_list_header(width: int) -> bytes:
    """The bytes before the floats of a serialized ``Value`` whose ``float_list_val`` holds ``width`` floats.

    proto3 writes a repeated float field packed: the Value's field tag and length, the FloatList's
    ``val`` tag and length, then ``4 * width`` little-endian float32 bytes. A row that starts with
    exactly this header and has exactly that length *is* such a Value, so its floats can be read with
    one ``np.frombuffer`` instead of parsing the protobuf and boxing ``width`` Python floats
    (1.7 vs 16 us per 300-float row: a one-off timing, not a bench in ``bench/``). Anything else
    (a double list, an unpacked encoding, another width) takes :func:`value_to_vector`."""
    raw = ValueProto(float_list_val=FloatListProto(val=[0.0] * width)).SerializeToString()
    return raw[:len(raw) - 4 * width]


def vectors_to_matrix(raws: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Serialized list-valued Values as a float32 ``[n, d]`` matrix and a ``known`` mask (see
    :meth:`DirectFeatureReader.read_item_vectors`); packed float lists of the common width are
    copied straight from their bytes (:func:`float_list_header`), the rest parsed one by one."""
    first = next((v for v in (value_to_vector(r) for r in raws if r is not None) if v is not None), None)
    width = 0 if first is None else int(first.shape[0])
    out = np.zeros((len(raws), width), dtype=np.float32)
    known = np.zeros(len(raws), dtype=bool)
    if width == 0:
        return out, known
    header = float_list_header(width)
    size = len(header) + 4 * width
    fast = [i for i, r in enumerate(raws) if r is not None and len(r) == size and r.startswith(header)]
    if fast:
        tails = b"".join(memoryview(raws[i])[len(header):] for i in fast)
        out[fast] = np.frombuffer(tails, dtype="<f4").reshape(len(fast), width)
        known[fast] = True
    for i, raw in enumerate(raws):
        if raw is None or known[i]:
            continue
        row = value_to_vector(raw)
        if row is not None and row.shape[0] == width:
            out[i] = row
            known[i] = True
    return out, known


@lru_cache(maxsize=100_000)
def _entity_key(join_key: str, value: str, project: bytes) -> bytes:
    """Feast's Redis key of one entity (cached: the same items come back request after request)."""
    key = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=value)])
    return serialize_entity_key(key, entity_key_serialization_version=3) + project


def plan_reads(store, feature_refs: Sequence[str]) -> list[_ViewPlan]:
    """Group ``view:feature`` references by view, checked against the Feast registry."""
    by_view: dict[str, list[str]] = {}
    for ref in feature_refs:
        view, sep, feature = ref.partition(":")
        if not sep or not view or not feature:
            raise FeatureReadError(f"feature reference {ref!r} is not 'view:feature'")
        by_view.setdefault(view, []).append(feature)
    plans = []
    for view, features in by_view.items():
        try:
            fv = store.get_feature_view(view)
        except Exception as exc:  # noqa: BLE001 - Feast raises FeatureViewNotFoundException
            raise FeatureReadError(f"unknown feature view {view!r} in the Feast registry: {exc}") from None
        known = {f.name for f in fv.features}
        unknown = [f for f in features if f not in known]
        if unknown:
            raise FeatureReadError(f"feature view {view!r} has no feature(s) {unknown}; known: {sorted(known)}")
        join_keys = list(fv.join_keys)
        if len(join_keys) != 1 or join_keys[0] not in ENTITY_ROLES:
            raise FeatureReadError(f"feature view {view!r} is keyed by {join_keys}, expected one of {list(ENTITY_ROLES)}")
        plans.append(_ViewPlan(view, join_keys[0], tuple(features), fv.ttl or timedelta(0)))
    return plans


class DirectFeatureReader:
    """Pipelined HMGETs on Feast-written Redis keys: 1 user + 1 query + N items in one round trip."""

    def __init__(self, store, feature_refs: Sequence[str] = DEFAULT_FEATURES,
                 client: redis.Redis | None = None, timeout_s: float | None = 1.0) -> None:
        """``timeout_s``: connect and read timeout of the client it opens (``client=None``): a
        stalled Redis fails a read after that long instead of holding the caller (the serving
        event loop) forever."""
        config = store.config
        if config.entity_key_serialization_version != 3:
            raise ValueError("the direct reader implements entity_key_serialization_version 3 only")
        self.project = config.project.encode("utf-8")
        if client is None:
            from feature_store.feast_repo import redis_url_from_connection_string  # noqa: PLC0415

            client = redis.Redis.from_url(redis_url_from_connection_string(config.online_store.connection_string),
                                          socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.redis = client
        self._hget_many = client.register_script(HGET_MANY)
        plans = plan_reads(store, feature_refs)
        # One HMGET per entity role; remember which field answers which output name.
        self._fields: dict[str, list[bytes]] = {}
        self._names: dict[str, list[str]] = {}
        self._ttl_checks: dict[str, list[tuple[int, str, timedelta, list[str]]]] = {}
        for plan in plans:
            role = ENTITY_ROLES[plan.join_key]
            fields, names = self._fields.setdefault(role, []), self._names.setdefault(role, [])
            outputs = [f"{plan.view}__{f}" for f in plan.features]
            for feature, out in zip(plan.features, outputs):
                fields.append(_mmh3(f"{plan.view}:{feature}"))
                names.append(out)
            if plan.ttl > timedelta(0):
                fields.append(f"_ts:{plan.view}".encode())
                names.append("")
                self._ttl_checks.setdefault(role, []).append((len(fields) - 1, plan.view, plan.ttl, outputs))

    def entity_key(self, join_key: str, value: str) -> bytes:
        return _entity_key(join_key, value, self.project)

    def read_item_vectors(self, item_ids: Sequence[str], feature: str) -> tuple[np.ndarray, np.ndarray]:
        """One list-valued item feature (``view__feature``) of ``item_ids`` as a float32 ``[n, d]`` matrix.

        Serving's hot path: one command (:data:`HGET_MANY`, a server-side loop of HGET over the
        items' keys) instead of a pipeline of one HMGET per item: the client builds and parses one
        command, not N (0.49 vs 1.14 ms for 50 items, 2.3 vs 6.2 ms for 400: a one-off timing against
        a local redis-server with redis-py + hiredis), and the rows are decoded straight into NumPy
        (:func:`vectors_to_matrix`). Returns the matrix and a boolean ``known`` mask: rows of
        unknown items, and of items whose vector has another length than the first one found, are
        zeros and ``False``. ``d`` is 0 when no item is known. Redis errors propagate (serving
        degrades on them, :mod:`serving.features`).
        """
        try:
            field = self._fields["item"][self._names["item"].index(feature)]
        except (KeyError, ValueError):
            raise FeatureReadError(f"{feature!r} is not an item feature this reader was built for") from None
        if not item_ids:
            return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool)
        keys = [_entity_key("item_id", item_id, self.project) for item_id in item_ids]
        replies: list[bytes | None] = []
        for start in range(0, len(keys), HGET_MANY_CHUNK):
            replies.extend(self._hget_many(keys=keys[start:start + HGET_MANY_CHUNK], args=[field]))
        return vectors_to_matrix(replies)

    def _decode(self, role: str, raw: list[bytes | None]) -> dict[str, Any]:
        out = {name: value_to_python(value) for name, value in zip(self._names[role], raw) if name}
        for index, _view, ttl, outputs in self._ttl_checks.get(role, ()):
            stamp = raw[index]
            if stamp is None:
                continue
            ts = Timestamp.FromString(stamp).ToDatetime(tzinfo=timezone.utc)
            if ts < datetime.now(timezone.utc) - ttl:
                out.update({name: None for name in outputs})  # expired, as Feast would report it
        return out

    def read(self, user_id: str | None, query_id: str | None, item_ids: Sequence[str]) -> FeatureBundle:
        roles: list[str] = []
        with self.redis.pipeline(transaction=False) as pipe:
            for role, join_key, value in (("user", "user_id", user_id), ("query", "query_id", query_id)):
                if value is not None and role in self._fields:
                    pipe.hmget(self.entity_key(join_key, value), self._fields[role])
                    roles.append(role)
            if "item" in self._fields:
                for item_id in item_ids:
                    pipe.hmget(self.entity_key("item_id", item_id), self._fields["item"])
            replies = pipe.execute()
        bundle = FeatureBundle()
        for role, reply in zip(roles, replies):
            setattr(bundle, role, self._decode(role, reply))
        if "item" in self._fields:
            bundle.items = [self._decode("item", reply) for reply in replies[len(roles):]]
        else:
            bundle.items = [{} for _ in item_ids]
        return bundle


    def read_entities(self, role: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Features of many entities of one role (``user``, ``item`` or ``query``) in one round trip."""
        if role not in self._fields:
            raise FeatureReadError(f"no requested feature is keyed by {role!r}")
        join_key = {v: k for k, v in ENTITY_ROLES.items()}[role]
        with self.redis.pipeline(transaction=False) as pipe:
            for value in ids:
                pipe.hmget(self.entity_key(join_key, value), self._fields[role])
            replies = pipe.execute()
        return [self._decode(role, reply) for reply in replies]


class FeastSdkReader:
    """The same read through ``FeatureStore.get_online_features`` (one call; for comparison and fallback)."""

    def __init__(self, store, feature_refs: Sequence[str] = DEFAULT_FEATURES) -> None:
        self.store = store
        self.plans = plan_reads(store, feature_refs)
        self.refs = list(feature_refs)
        self.roles = {f"{p.view}__{f}": ENTITY_ROLES[p.join_key] for p in self.plans for f in p.features}

    def read(self, user_id: str | None, query_id: str | None, item_ids: Sequence[str]) -> FeatureBundle:
        rows = [{"user_id": user_id or "", "query_id": query_id or "", "item_id": item} for item in item_ids]
        if not rows:
            rows = [{"user_id": user_id or "", "query_id": query_id or "", "item_id": ""}]
        result = self.store.get_online_features(features=self.refs, entity_rows=rows,
                                                full_feature_names=True).to_dict()
        bundle = FeatureBundle()
        for name, role in self.roles.items():
            column = result[name]
            if role == "item":
                continue
            if (role == "user" and user_id is not None) or (role == "query" and query_id is not None):
                getattr(bundle, role)[name] = column[0]
        bundle.items = [{name: result[name][i] for name, role in self.roles.items() if role == "item"}
                        for i in range(len(item_ids))]
        return bundle


class FeatureStoreNotApplied(StreamrankError, RuntimeError):
    """The Feast repo a reader needs was never rendered and applied."""


def applied_reader(settings: Settings, feature_refs: Sequence[str], fs: FeatureStoreSettings | None = None,
                   timeout_s: float | None = 1.0) -> DirectFeatureReader:
    """A :class:`DirectFeatureReader` on the applied Feast repo of ``settings`` (the one serving reads).

    Serving (:mod:`serving.features`) and the learners' feature fill
    (:mod:`learners.runtime.feature_fill`) both read through this, so they read the same repo,
    project and keys. ``fs`` defaults to the feature store settings of ``settings``.
    """
    from feature_store.feast_repo import FeastRepo, repo_path  # noqa: PLC0415 - Feast's SDK is slow to import

    fs = fs or load_feature_store_settings(settings)
    path = repo_path(settings, fs)
    if not (path / "feature_store.yaml").exists():
        raise FeatureStoreNotApplied(f"no applied Feast repo at {path}: run `streamrank features apply` first")
    return DirectFeatureReader(FeastRepo(path, fs.feast_project).store(), list(feature_refs), timeout_s=timeout_s)
