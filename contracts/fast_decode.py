"""One-pass typed decode of consumed events: a compiled accept-filter of :mod:`contracts.events`.

Why: the streams worker decodes every record of ``impressions`` and ``feedback``. The pydantic
models decode an average event of the join benchmark's log in 7.5 us (an impression of 10 items:
15.6 us); a msgspec ``Decoder`` over the mirror structs below decodes *and* validates it in one
pass in 1.0 us (3.7 us), and ``orjson.loads`` alone, before any validation, already takes 1.3 us
(same log, same machine; BENCHMARKS.md, "Streams join"). The learners decode every record of
``examples`` (:func:`decode_example`): a LETOR list of 50 items with 300 inline features each
(78 KB, 15,000 floats) is a pydantic ``LabeledList`` in ~1 ms, 0.26 s per batch of 256, twice a
plain LDRO step; the mirror :class:`LabeledListS` validates it in one pass without a pydantic object
per item, 1.2-1.9x faster (``bench/learn_bench.py``; BENCHMARKS.md, "From record bytes to the
optimizer step": both spend most of it turning the 15,000 numbers into Python floats).

One contract, one source of errors: the pydantic models in :mod:`contracts.events` stay the
definition. The structs here mirror them field by field (names, types, bounds, lengths,
defaults, strict types) and :func:`decode_record` uses them only to *accept*: a record they
reject, and one a Python post-check (unique item ids, ``item_id`` required for item-level
kinds, the deployment's list cap) does not pass, is decoded again by
:func:`contracts.events.decode`, which either raises the :class:`~contracts.events.EventError`
with the reason and field the dead-letter headers always carried, or accepts it (then the
pydantic model is returned). So a mismatch can only ever cost speed, never change a verdict,
as long as the structs accept nothing the models reject:
``tests/unit/foundation/test_fast_decode.py`` checks that differentially over valid, edge and
hypothesis-generated hostile records, and that each struct's fields and bounds match its model.

The structs carry the models' attribute names (``request_id``, ``event_id``, ``ts``,
``items[*].item_id/position/duration_ms/features/features_f32``, the items' ``n_features`` and
``feature_row()``, ``kind``, ``value``, ``labels[*].reward``, ...),
so the join and the learners' batch builders (:mod:`learners.ingest`) treat a struct and a model
alike; :func:`replaced` copies either with some fields changed.
"""

from __future__ import annotations

import sys
from operator import attrgetter
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta, Struct

import numpy as np

from contracts.events import (
    FEATURES_F32_DTYPE,
    FEEDBACK_SCHEMA,
    IMPRESSION_SCHEMA,
    LABELED_LIST_SCHEMA,
    MAX_ITEM_FEATURES,
    MAX_LIST_SIZE,
    AnyEvent,
    EventError,
    LabeledList,
    check_event_time,
    decode,
    item_feature_count,
    item_feature_row,
)

_MAX = sys.float_info.max
#: JSON has no NaN or Infinity token and msgspec refuses numbers that overflow, so bounding a
#: float by the largest finite double is the models' ``allow_inf_nan=False``.
Finite = Annotated[float, Meta(ge=-_MAX, le=_MAX)]
NonNegative = Annotated[float, Meta(ge=0.0, le=_MAX)]
Id = Annotated[str, Meta(min_length=1, max_length=256)]
#: The item feature values: a plain ``float`` is already finite here, because msgspec's JSON
#: decoder refuses the ``NaN``/``Infinity`` tokens and any number that overflows a double
#: ("Number out of range"; ``test_fast_decode`` holds it to that). The explicit bounds of
#: :data:`Finite` cost about a quarter of a 15,000-float list's decode (ad hoc, same lists), so
#: the hot list goes without.
Features = Annotated[list[float], Meta(max_length=MAX_ITEM_FEATURES)]
#: ``features_f32``: msgspec decodes a JSON base64 string into ``bytes`` natively (standard
#: alphabet, padded; ``test_fast_decode`` holds it to the model's strict spelling). The rest of
#: the model's rules (a whole number of float32s, all finite, not beside ``features``) are the
#: post-check :func:`_f32_ok`.
Float32Bytes = Annotated[bytes, Meta(max_length=4 * MAX_ITEM_FEATURES)]


class _Frozen(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, gc=False):
    """Immutable, no unknown fields: the structs' counterpart of ``contracts.strict.FrozenModel``."""


class ShownItemS(_Frozen):
    """:class:`contracts.events.ShownItem`."""

    item_id: Id
    position: Annotated[int, Meta(ge=1)]
    scores: dict[str, Finite] = {}
    calibrated: Union[dict[str, Finite], None] = None
    propensity: Union[Annotated[float, Meta(gt=0.0, le=1.0)], None] = None
    duration_ms: Union[NonNegative, None] = None
    features: Union[Features, None] = None
    features_f32: Union[Float32Bytes, None] = None

    @property
    def n_features(self) -> int | None:
        """:attr:`contracts.events.ShownItem.n_features`."""
        return item_feature_count(self)

    def feature_row(self) -> np.ndarray | list[float] | None:
        """:meth:`contracts.events.ShownItem.feature_row`."""
        return item_feature_row(self)


class FusionDecisionS(_Frozen):
    """:class:`contracts.events.FusionDecision`."""

    weights: dict[str, Finite]
    logprob: Union[Finite, None] = None


class ImpressionS(_Frozen, kw_only=True, tag_field="schema", tag=IMPRESSION_SCHEMA):
    """:class:`contracts.events.Impression` (``schema`` is the tag, so it is required here)."""

    event_id: Id
    request_id: Id
    ts: NonNegative
    user_id: Id
    query: Union[Annotated[str, Meta(max_length=1024)], None] = None
    items: Annotated[list[ShownItemS], Meta(min_length=1, max_length=MAX_LIST_SIZE)]
    fusion: Union[FusionDecisionS, None] = None
    list_logprob: Union[Annotated[float, Meta(ge=-_MAX, le=0.0)], None] = None
    model_versions: dict[str, str] = {}
    context: dict[str, Union[Finite, str]] = {}
    source: Annotated[str, Meta(max_length=64)] = "serving"

    @property
    def schema_(self) -> str:
        return IMPRESSION_SCHEMA


FeedbackKindS = Literal["click", "long_view", "play_time_ms", "like", "follow", "share", "reformulate",
                        "session_end"]
#: query-level kinds: the only ones that may leave ``item_id`` out (Feedback._item_required)
QUERY_LEVEL_KINDS = frozenset({"reformulate", "session_end"})


class FeedbackS(_Frozen, kw_only=True, tag_field="schema", tag=FEEDBACK_SCHEMA):
    """:class:`contracts.events.Feedback`."""

    event_id: Id
    request_id: Id
    item_id: Union[Id, None] = None
    ts: NonNegative
    kind: FeedbackKindS
    value: NonNegative = 1.0

    @property
    def schema_(self) -> str:
        return FEEDBACK_SCHEMA


class ItemLabelsS(_Frozen):
    """:class:`contracts.events.ItemLabels`."""

    item_id: Id
    position: Annotated[int, Meta(ge=1)]
    click: Annotated[int, Meta(ge=0, le=1)] = 0
    long_view: Annotated[int, Meta(ge=0, le=1)] = 0
    play_time_ms: NonNegative = 0.0
    like: Annotated[int, Meta(ge=0, le=1)] = 0
    follow: Annotated[int, Meta(ge=0, le=1)] = 0
    share: Annotated[int, Meta(ge=0, le=1)] = 0
    reward: Finite = 0.0


class JoinInfoS(_Frozen, kw_only=True):
    """:class:`contracts.events.JoinInfo`."""

    closed_by: Literal["window", "session_end", "idle", "flush"]
    window_s: Finite
    feedback_count: Annotated[int, Meta(ge=0)]
    duplicate_count: Annotated[int, Meta(ge=0)] = 0
    early_feedback_count: Annotated[int, Meta(ge=0)] = 0
    closed_at_ts: NonNegative
    impression_offset: Union[str, None] = None


class LabeledListS(_Frozen, kw_only=True, tag_field="schema", tag=LABELED_LIST_SCHEMA):
    """:class:`contracts.events.LabeledList` (decoded on its own, so ``schema`` may be left out, as
    the model's default allows; the nested ``impression.schema`` likewise)."""

    example_id: Id
    request_id: Id
    impression: ImpressionS
    labels: Annotated[list[ItemLabelsS], Meta(min_length=1, max_length=MAX_LIST_SIZE)]
    list_reward: Finite
    query_reward: Finite
    reformulated: bool = False
    join: JoinInfoS

    @property
    def schema_(self) -> str:
        return LABELED_LIST_SCHEMA


_DECODER = msgspec.json.Decoder(Union[ImpressionS, FeedbackS])
_EXAMPLE_DECODER = msgspec.json.Decoder(LabeledListS)
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)


def accept(raw: bytes) -> ImpressionS | FeedbackS | None:
    """The event if the mirror structs and the models' extra rules accept ``raw``; else ``None`` (undecided)."""
    try:
        event = _DECODER.decode(raw)
    except _DECODE_ERRORS:
        return None
    if isinstance(event, FeedbackS):
        if event.item_id is None and event.kind not in QUERY_LEVEL_KINDS:
            return None
        return event
    if not _distinct(list(map(_ITEM_ID, event.items))) or not _f32_ok(event):
        return None
    return event


_ITEM_ID = attrgetter("item_id")
_F32 = attrgetter("features_f32")
_FEATURES = attrgetter("features")


def _distinct(ids: list[str]) -> bool:
    return len(set(ids)) == len(ids)


def _f32_ok(impression: ImpressionS) -> bool:
    """The model's rules on ``features_f32`` that the struct cannot state: not beside ``features``,
    a whole number of float32 values, every one finite (one ``isfinite`` over the list's bytes).
    Checked with C-level list operations over the items that carry it (every item, in our producers'
    lists)."""
    items = impression.items
    blobs = list(map(_F32, items))
    if None in blobs:  # some items spell their features as numbers, or have none: only the others
        items = [item for item, blob in zip(items, blobs) if blob is not None]
        blobs = [blob for blob in blobs if blob is not None]
    if list(map(_FEATURES, items)).count(None) != len(items) or any(n % 4 for n in set(map(len, blobs))):
        return False
    if not blobs:
        return True
    joined = blobs[0] if len(blobs) == 1 else b"".join(blobs)
    return bool(np.isfinite(np.frombuffer(joined, dtype=FEATURES_F32_DTYPE)).all())


def accept_example(raw: bytes) -> LabeledListS | None:
    """The example if :class:`LabeledListS` and the model's extra rules accept ``raw``; else ``None`` (undecided).

    The extra rules are ``Impression._unique_items``, ``ShownItem``'s ``features_f32`` rules
    (:func:`_f32_ok`) and ``LabeledList._aligned``: labels name the impression's items in the same
    order, and ``request_id`` equals ``impression.request_id``.
    """
    try:
        example = _EXAMPLE_DECODER.decode(raw)
    except _DECODE_ERRORS:
        return None
    impression = example.impression
    if example.request_id != impression.request_id:
        return None
    ids = list(map(_ITEM_ID, impression.items))
    if not _distinct(ids) or list(map(_ITEM_ID, example.labels)) != ids or not _f32_ok(impression):
        return None
    return example


def decode_example(raw: bytes, max_bytes: int = 1_000_000) -> LabeledListS | LabeledList:
    """Decode one ``examples`` record: the fast struct when accepted, else the model via
    :func:`contracts.events.decode` (``expected=LABELED_LIST_SCHEMA``), which raises the
    :class:`~contracts.events.EventError` (reason, field) the dead-letter topic carries."""
    if len(raw) <= max_bytes:
        example = accept_example(raw)
        if example is not None:
            return example
    event = decode(raw, expected=LABELED_LIST_SCHEMA, max_bytes=max_bytes)
    if not isinstance(event, LabeledList):  # decode with ``expected`` only returns that model; keep mypy honest
        raise EventError("bad_value", "schema", f"expected {LABELED_LIST_SCHEMA}")
    return event


def replaced(obj: Any, **changes: Any) -> Any:
    """A copy of a struct or a pydantic model with ``changes`` (attribute names) applied."""
    if isinstance(obj, Struct):
        return msgspec.structs.replace(obj, **changes)
    return obj.model_copy(update=changes)


def decode_record(raw: bytes, broker_ts_s: float | None = None, *, max_bytes: int = 1_000_000,
                  max_list_size: int | None = None,
                  max_skew_s: float = float("inf")) -> AnyEvent | ImpressionS | FeedbackS:
    """Decode one consumed record's value: the fast struct when accepted, else :func:`contracts.events.decode`.

    Raises :class:`~contracts.events.EventError` exactly as ``decode`` does, then
    ``future_ts`` (:func:`contracts.events.check_event_time`) for an event whose ``ts`` is more
    than ``max_skew_s`` after ``broker_ts_s``.
    """
    event: AnyEvent | ImpressionS | FeedbackS | None = None
    if len(raw) <= max_bytes:
        event = accept(raw)
        if (event is not None and max_list_size is not None and type(event) is ImpressionS
                and len(event.items) > max_list_size):
            event = None
    if event is None:
        event = decode(raw, max_bytes=max_bytes, max_list_size=max_list_size)
    ts = getattr(event, "ts", None)  # a LabeledList has none (and is the wrong topic's anyway)
    if ts is not None:
        check_event_time(ts, broker_ts_s, max_skew_s)
    return event
