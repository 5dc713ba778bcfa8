"""Turn an impression plus its collected feedback into a :class:`LabeledList` (pure).

The example id is a hash of the impression's event id, so any re-delivery of the same joined
example (a worker restart, a rebalance, a replay) carries the same id and learners can apply
it effectively once.

Two outputs of the same labels: :func:`label_impression` builds the pydantic model (learners,
evaluations, tests), and :func:`label_impression_json` builds its wire form directly, the
bytes ``contracts.events.encode(label_impression(...))`` gives, without constructing and
validating one ``ItemLabels`` per item and a ``LabeledList`` per example (the streams
worker's hot path; BENCHMARKS.md, "Streams join"). Byte-identity holds because the JSON is
written by the same serializer (``pydantic_core.to_json``: same float format, same string
escaping), with the models' field order, every float field coerced to ``float`` as the
models' lax validation does, and ``None`` left out as ``encode``'s ``exclude_none`` does.
Values the models would reject (a non-finite reward from extreme weights) take the model
path, so they fail exactly as before. ``tests/unit/streams/test_streams_labeling_json.py``
checks the identity on simulated data and edge cases. :func:`label_impression_raw` is the same for
an impression fast-decoded from its record (:mod:`contracts.fast_decode`): the record's bytes are
the example's impression.
"""

from __future__ import annotations

import hashlib
import math

import msgspec
from pydantic_core import to_json

from contracts.events import LABELED_LIST_SCHEMA, Impression, ItemLabels, JoinInfo, LabeledList, decode, encode
from contracts.fast_decode import ImpressionS
from streams.rewards import ItemOutcome, ListOutcome, RewardWeights, item_reward, list_reward, query_satisfaction

_NO_OUTCOME = ItemOutcome()
_CLOSED_BY = frozenset(JoinInfo.model_fields["closed_by"].annotation.__args__)


def example_id_for(impression: Impression) -> str:
    return hashlib.sha1(f"{impression.request_id}\x00{impression.event_id}".encode()).hexdigest()


def item_labels(impression: Impression, outcome: ListOutcome,
                weights: RewardWeights) -> tuple[list[dict], list[ItemOutcome]]:
    """The :class:`ItemLabels` fields of every shown item (in shown order) and its outcome."""
    labels, shown = [], []
    get = outcome.items.get
    for item in impression.items:
        got = get(item.item_id, _NO_OUTCOME)
        labels.append({"item_id": item.item_id, "position": item.position, "click": got.click,
                       "long_view": got.long_view, "play_time_ms": float(got.play_time_ms), "like": got.like,
                       "follow": got.follow, "share": got.share,
                       "reward": float(item_reward(got, item.duration_ms, weights))})
        shown.append(got)
    return labels, shown


def label_impression(impression: Impression, outcome: ListOutcome, weights: RewardWeights, join: JoinInfo) -> LabeledList:
    labels, shown = item_labels(impression, outcome, weights)
    return LabeledList(
        schema=LABELED_LIST_SCHEMA,
        example_id=example_id_for(impression),
        request_id=impression.request_id,
        impression=impression,
        labels=[ItemLabels(**label) for label in labels],
        list_reward=list_reward([lab["reward"] for lab in labels], [lab["position"] for lab in labels]),
        query_reward=query_satisfaction(shown, outcome.reformulated, weights),
        reformulated=outcome.reformulated,
        join=join,
    )


def _plain(labels: list[dict], shown: list[ItemOutcome]) -> bool:
    """Whether the models would write every label unchanged (else they coerce or reject it)."""
    for label, got in zip(labels, shown):
        if not math.isfinite(label["reward"]):
            return False
        if got is not _NO_OUTCOME and not (
                label["play_time_ms"] >= 0.0 and math.isfinite(label["play_time_ms"]) and all(
                    type(v) is int and 0 <= v <= 1  # noqa: E721 - a bool would be written as true/false
                    for v in (got.click, got.long_view, got.like, got.follow, got.share))):
            return False
    return True


def _wire_fields(impression, outcome: ListOutcome, weights: RewardWeights,
                 join: dict) -> tuple[list[dict], float, float, dict] | None:
    """Labels, list and query reward and join info as the models would write them; ``None`` if they would
    coerce or reject any of it (then the caller takes the model path)."""
    labels, shown = item_labels(impression, outcome, weights)
    list_r = float(list_reward([lab["reward"] for lab in labels], [lab["position"] for lab in labels]))
    query_r = float(query_satisfaction(shown, outcome.reformulated, weights))
    info = {"closed_by": join["closed_by"], "window_s": float(join["window_s"]),
            "feedback_count": join["feedback_count"], "duplicate_count": join.get("duplicate_count", 0),
            "early_feedback_count": join.get("early_feedback_count", 0),
            "closed_at_ts": float(join["closed_at_ts"])}
    if join.get("impression_offset") is not None:
        info["impression_offset"] = join["impression_offset"]
    counts = all(type(info[k]) is int and info[k] >= 0  # noqa: E721
                 for k in ("feedback_count", "duplicate_count", "early_feedback_count"))
    if not (_plain(labels, shown) and counts and join["closed_by"] in _CLOSED_BY
            and type(outcome.reformulated) is bool  # noqa: E721
            and math.isfinite(list_r) and math.isfinite(query_r) and math.isfinite(info["window_s"])
            and math.isfinite(info["closed_at_ts"]) and info["closed_at_ts"] >= 0.0):
        return None
    return labels, list_r, query_r, info


def label_impression_json(impression: Impression, outcome: ListOutcome, weights: RewardWeights,
                          join: dict) -> bytes:
    """``encode(label_impression(impression, outcome, weights, JoinInfo(**join)))`` without the models.

    ``join``: the :class:`JoinInfo` fields (``closed_by``, ``window_s``, ``feedback_count``,
    ``duplicate_count``, ``early_feedback_count``, ``closed_at_ts``, ``impression_offset``).
    """
    fields = _wire_fields(impression, outcome, weights, join)
    if fields is None:
        # anything the models would coerce or reject: let them (same bytes or the same error as before)
        return encode(label_impression(impression, outcome, weights, JoinInfo(**join)))
    labels, list_r, query_r, info = fields
    doc = {"schema": LABELED_LIST_SCHEMA, "example_id": example_id_for(impression),
           "request_id": impression.request_id, "impression": impression, "labels": labels,
           "list_reward": list_r, "query_reward": query_r, "reformulated": outcome.reformulated, "join": info}
    return to_json(doc, by_alias=True, exclude_none=True)


_ENCODER = msgspec.json.Encoder()


def label_impression_raw(impression: ImpressionS, raw: bytes, outcome: ListOutcome, weights: RewardWeights,
                         join: dict) -> bytes:
    """The example of a fast-decoded impression (the streams worker's batch path), as wire bytes.

    The impression inside the example is the record's own bytes (``raw``, already validated),
    not a re-encoding: nothing is built per item beyond the labels. The example decodes to
    the same :class:`LabeledList` as :func:`label_impression_json`'s (floats may be written in
    another shortest form); a re-delivery is byte-identical, since it is built from the same
    ``raw``. Values the models would coerce or reject take the model path, as there.
    """
    fields = _wire_fields(impression, outcome, weights, join)
    if fields is None:
        return label_impression_json(decode(raw), outcome, weights, join)
    labels, list_r, query_r, info = fields
    doc = {"schema": LABELED_LIST_SCHEMA, "example_id": example_id_for(impression),
           "request_id": impression.request_id, "impression": msgspec.Raw(raw), "labels": labels,
           "list_reward": list_r, "query_reward": query_r, "reformulated": outcome.reformulated, "join": info}
    return _ENCODER.encode(doc)
