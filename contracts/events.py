"""The event contract: Impression, Feedback and LabeledList as UTF-8 JSON.

These pydantic models are the one source of truth; ``contracts/schemas/*.schema.json`` are
generated from them (``python -m contracts.events --write-schemas``, checked by a test) so any
Kafka client (kcat, Java, Go) can produce and validate events without Python.

Every event carries a ``schema`` field naming its type and version. All topics are keyed by
``request_id`` (DESIGN.md, "Topics") so an impression and its feedback meet in one partition.

:func:`decode` is the single validation path: it takes raw bytes and either returns a model
or raises :class:`EventError` whose ``field`` names the offending field (dotted path, e.g.
``items.3.position``) and whose ``reason`` is a short machine-readable code. Decoding is
type-strict (pydantic strict mode): ``"1.5"`` or ``true`` is not a number and ``1.0`` is not an
integer, so a producer with the wrong types hears so instead of being coerced.
:mod:`contracts.fast_decode` is a compiled accept-filter of these same rules for consumed
records (the streams worker's batch path, and the learners' ``examples``); whatever it does not
accept is decided here.
:func:`check_event_time` bounds event time by the record's broker timestamp.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from common.errors import StreamrankError
from contracts.features import (  # noqa: F401 - re-exported: the contract's names for its feature spellings
    FEATURES_F32_DTYPE,
    MAX_ITEM_FEATURES,
    Float32Bytes,
    f32_bytes,
    item_feature_count,
    item_feature_matrix,
    item_feature_row,
)
from contracts.strict import Finite, FrozenModel, Id

IMPRESSION_SCHEMA = "streamrank.impression.v1"
FEEDBACK_SCHEMA = "streamrank.feedback.v1"
LABELED_LIST_SCHEMA = "streamrank.labeled_list.v1"

#: Hard cap on list length in the contract; deployments may set a lower one in config.
MAX_LIST_SIZE = 500
#: Impression context key naming the feature-store feature (``view:feature``) the items were
#: served with when their rows are not copied into the event; learners read them back by item id.
ITEM_FEATURES_KEY = "item_features"

FeedbackKind = Literal[
    "click",  # value 1
    "long_view",  # value 1: watched past the long-view threshold
    "play_time_ms",  # value: milliseconds watched (>= 0)
    "like",
    "follow",
    "share",
    "reformulate",  # query-level: the user reformulated the query (item_id may be null)
    "session_end",  # query-level: the client closed the session; closes the join early
]
FEEDBACK_KINDS: tuple[str, ...] = FeedbackKind.__args__  # type: ignore[attr-defined]

_Event = FrozenModel

class ShownItem(_Event):
    """One candidate as shown: where it was, what the upstream models predicted for it.

    Dense features, when the event carries them, come in one of two spellings, never both:
    ``features`` (a list of numbers) or ``features_f32`` (little-endian float32 bytes, base64).
    """

    # Why two spellings (issue 16): our producers write ``features_f32``. A 50 x 300 list is about
    # as long either way (~80 KB), but the learners decode base64 at memory speed and view it with
    # one ``np.frombuffer``, where the list form is 15,000 decimal numbers to parse into Python
    # floats (BENCHMARKS.md, "From record bytes to the optimizer step"). The list form stays for
    # old logs and other clients. Readers use :attr:`n_features` / :meth:`feature_row`.

    item_id: Id
    position: int = Field(ge=1, description="1-based display position")
    scores: dict[str, Finite] = Field(default_factory=dict,
                                      description="upstream multi-task predictions, task -> p_hat")
    calibrated: dict[str, Finite] | None = Field(default=None, description="calibrated predictions, task -> p")
    propensity: float | None = Field(default=None, gt=0.0, le=1.0,
                                     description="logging policy's probability of this item at this position")
    duration_ms: float | None = Field(default=None, ge=0.0, description="video duration, for watch-time rewards")
    features: list[Finite] | None = Field(default=None, max_length=MAX_ITEM_FEATURES,
                                          description="dense item features as served (optional)")
    features_f32: Float32Bytes | None = Field(default=None, max_length=4 * MAX_ITEM_FEATURES)

    @field_validator("features_f32")
    @classmethod
    def _one_feature_form(cls, value: bytes | None, info: ValidationInfo) -> bytes | None:
        """Not beside ``features`` (checked here, not on the model, so the error names ``features_f32``)."""
        if value is not None and info.data.get("features") is not None:
            raise PydanticCustomError("features_conflict", "'features' and 'features_f32' are mutually exclusive")
        return value

    @property
    def n_features(self) -> int | None:
        """How many feature values the item carries in either form (``None``: none carried)."""
        return item_feature_count(self)

    def feature_row(self) -> np.ndarray | list[float] | None:
        """The item's features: a read-only float32 view of ``features_f32``, else ``features``."""
        return item_feature_row(self)


class FusionDecision(_Event):
    """The fusion weights the serving policy used for this request, and their log-probability."""

    weights: dict[str, Finite]
    logprob: Finite | None = None


class Impression(_Event):
    """A ranked list as served (or as logged, for replayed data)."""

    schema_: Literal["streamrank.impression.v1"] = Field(IMPRESSION_SCHEMA, alias="schema")
    event_id: Id
    request_id: Id
    ts: Finite = Field(ge=0.0, description="event time, seconds since the epoch")
    user_id: Id
    query: str | None = Field(default=None, max_length=1024)
    items: list[ShownItem] = Field(min_length=1, max_length=MAX_LIST_SIZE)
    fusion: FusionDecision | None = None
    list_logprob: Finite | None = Field(default=None, le=0.0, description="log-prob of the whole shown order")
    model_versions: dict[str, str] = Field(default_factory=dict)
    context: dict[str, Finite | str] = Field(default_factory=dict, description="request-level features")
    source: str = Field("serving", max_length=64)

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, populate_by_name=True)

    @field_validator("items")
    @classmethod
    def _unique_items(cls, items: list[ShownItem]) -> list[ShownItem]:
        seen: set[str] = set()
        for item in items:
            if item.item_id in seen:
                raise ValueError(f"duplicate item_id {item.item_id!r} in one list")
            seen.add(item.item_id)
        return items


class Feedback(_Event):
    """One user reaction to a shown item (or to the whole query, for query-level kinds)."""

    schema_: Literal["streamrank.feedback.v1"] = Field(FEEDBACK_SCHEMA, alias="schema")
    event_id: Id
    request_id: Id
    item_id: str | None = Field(default=None, min_length=1, max_length=256)
    ts: Finite = Field(ge=0.0)
    kind: FeedbackKind
    value: Finite = Field(1.0, ge=0.0, description="1 for binary kinds, milliseconds for play_time_ms")

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _item_required(self) -> "Feedback":
        if self.item_id is None and self.kind not in ("reformulate", "session_end"):
            raise ValueError(f"item_id is required for feedback kind {self.kind!r}")
        return self


class ItemLabels(_Event):
    """Per-item labels and reward after the join window closed."""

    item_id: Id
    position: int = Field(ge=1)
    click: int = Field(0, ge=0, le=1)
    long_view: int = Field(0, ge=0, le=1)
    play_time_ms: Finite = Field(0.0, ge=0.0)
    like: int = Field(0, ge=0, le=1)
    follow: int = Field(0, ge=0, le=1)
    share: int = Field(0, ge=0, le=1)
    reward: Finite = 0.0


class JoinInfo(_Event):
    """How the example was closed; lets consumers audit the join."""

    closed_by: Literal["window", "session_end", "idle", "flush"]
    window_s: Finite
    feedback_count: int = Field(ge=0)
    duplicate_count: int = Field(0, ge=0)
    early_feedback_count: int = Field(0, ge=0, description="feedback that arrived before its impression")
    closed_at_ts: Finite = Field(ge=0.0, description="event time (watermark) at which the window closed")
    impression_offset: str | None = Field(default=None, description="topic/partition/offset of the impression")


class LabeledList(_Event):
    """One impression joined with its feedback: the training example the learners consume."""

    schema_: Literal["streamrank.labeled_list.v1"] = Field(LABELED_LIST_SCHEMA, alias="schema")
    example_id: Id = Field(description="stable id: equal for re-deliveries of the same example")
    request_id: Id
    impression: Impression
    labels: list[ItemLabels] = Field(min_length=1, max_length=MAX_LIST_SIZE)
    list_reward: Finite
    query_reward: Finite
    reformulated: bool = False
    join: JoinInfo

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _aligned(self) -> "LabeledList":
        if [lab.item_id for lab in self.labels] != [it.item_id for it in self.impression.items]:
            raise ValueError("labels must list the impression's items in the same order")
        if self.request_id != self.impression.request_id:
            raise ValueError("request_id differs from impression.request_id")
        return self


AnyEvent = Union[Impression, Feedback, LabeledList]
MODELS: dict[str, type[_Event]] = {
    IMPRESSION_SCHEMA: Impression,
    FEEDBACK_SCHEMA: Feedback,
    LABELED_LIST_SCHEMA: LabeledList,
}
#: Which event type each logical topic carries.
TOPIC_SCHEMAS: dict[str, str] = {
    "impressions": IMPRESSION_SCHEMA,
    "feedback": FEEDBACK_SCHEMA,
    "examples": LABELED_LIST_SCHEMA,
}


class EventError(StreamrankError, ValueError):
    """An event that does not satisfy the contract; ``field`` names where, ``reason`` says what."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(f"{reason} at {field or '<event>'}: {detail}")
        self.reason = reason
        self.field = field
        self.detail = detail

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "field": self.field, "detail": self.detail}


_REASONS = {
    "finite_number": "not_finite",
    "literal_error": "bad_value",
    "too_long": "too_long",
    "string_too_long": "too_long",
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "greater_than_equal": "out_of_range",
    "greater_than": "out_of_range",
    "less_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "bytes_too_long": "too_long",
    "bad_base64": "bad_value",
    "bad_length": "bad_value",
}


def _from_validation_error(exc: ValidationError) -> EventError:
    first = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in first["loc"])  # locations use aliases: ``schema``, not ``schema_``
    kind = first["type"]
    reason = _REASONS.get(kind, "schema_violation")
    if kind == "literal_error" and path.endswith("kind"):
        reason = "unknown_kind"
    elif kind == "too_long" and path in ("items", "labels"):
        reason = "oversized_list"
    elif kind == "json_invalid":
        reason = "bad_json"
    return EventError(reason, path, first["msg"])


def decode(raw: bytes | str, expected: str | None = None, max_bytes: int = 1_000_000,
           max_list_size: int | None = None) -> AnyEvent:
    """Validate raw JSON into an event model.

    ``expected`` is a schema id (e.g. :data:`IMPRESSION_SCHEMA`); without it the ``schema``
    field picks the model. Raises :class:`EventError` on anything that breaks the contract.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > max_bytes:
        raise EventError("too_large", "", f"{len(raw)} bytes > {max_bytes}")
    schema = expected
    if schema is None:
        # Fast path: the first "schema" key (top-level in canonical encoding) picks the model; if
        # that guess fails to validate, fall through to a full parse to find the real schema.
        match = _SCHEMA_KEY.search(raw, 0, 200)
        if match and match.group(1).decode() in MODELS:
            try:
                event = MODELS[match.group(1).decode()].model_validate_json(raw, strict=True)
            except ValidationError:
                pass
            else:
                if "schema_" in event.model_fields_set:  # a nested "schema" key must not stand in for the event's
                    return _check_list_size(event, max_list_size)
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise EventError("bad_json", "", str(exc)[:200]) from None
        if not isinstance(doc, dict):
            raise EventError("bad_json", "", "an event is a JSON object")
        schema = doc.get("schema")
        if not isinstance(schema, str) or schema not in MODELS:  # a list or object is unhashable
            raise EventError("unknown_schema", "schema", f"{schema!r} is not one of {sorted(MODELS)}")
    model = MODELS[schema]
    try:
        event = model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _from_validation_error(exc) from None
    return _check_list_size(event, max_list_size)


def check_event_time(ts: float, broker_ts_s: float | None, max_skew_s: float) -> None:
    """Reject an event whose ``ts`` lies more than ``max_skew_s`` after its record's broker timestamp.

    Why: the join's watermark is the newest event time seen on a partition, so one far-future
    but otherwise valid ``ts`` would close every later window of that partition at once, with
    no feedback (issue 17). Event time *before* the broker time is fine: replays carry
    historical timestamps, and late data is the join's lateness policy. ``broker_ts_s`` is
    ``None`` (or negative: no timestamp on the record) when there is nothing to compare with.
    """
    if broker_ts_s is None or broker_ts_s < 0 or ts <= broker_ts_s + max_skew_s:
        return
    raise EventError("future_ts", "ts", f"ts {ts!r} is {ts - broker_ts_s:.3f} s after the record's broker "
                                        f"timestamp {broker_ts_s!r} (max skew {max_skew_s!r} s)")


_SCHEMA_KEY = re.compile(rb'"schema"\s*:\s*"([a-z_.0-9]{1,64})"')


def _check_list_size(event: AnyEvent, max_list_size: int | None) -> AnyEvent:
    if max_list_size is not None and isinstance(event, Impression) and len(event.items) > max_list_size:
        raise EventError("oversized_list", "items", f"{len(event.items)} items > {max_list_size}")
    return event


def features_to_fill(example: Any) -> str | None:
    """The feature (``view:feature``) that ``example``'s impression names under :data:`ITEM_FEATURES_KEY`
    when some of its items carry no features of their own (the learners fill those rows by item id);
    ``None`` when there is nothing to fill. A model or a decoded struct alike."""
    ref = example.impression.context.get(ITEM_FEATURES_KEY)
    if isinstance(ref, str) and any(item_feature_count(item) is None for item in example.impression.items):
        return ref
    return None


def encode(event: AnyEvent) -> bytes:
    """Canonical UTF-8 JSON of an event (aliases, no nulls): stable across runs."""
    return event.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")


def json_schemas() -> dict[str, dict]:
    """JSON Schema (draft 2020-12) of each event type, keyed by file stem."""
    out = {}
    for schema_id, model in MODELS.items():
        doc = model.model_json_schema(by_alias=True, mode="validation")
        doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        doc["$id"] = f"https://streamrank.dev/schemas/{schema_id}.json"
        out[schema_id.split(".")[1]] = doc
    return out


SCHEMA_DIR = Path(__file__).parent / "schemas"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, doc in json_schemas().items():
        path = directory / f"{stem}.schema.json"
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    if "--write-schemas" in sys.argv:
        for written in write_schemas():
            print(written)
