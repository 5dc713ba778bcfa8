"""Item feature vectors in the event contract: two spellings, one reading.

An impression item (:class:`contracts.events.ShownItem`) may carry its dense features as
``features``, a JSON list of numbers (old logs, other clients), or as ``features_f32``, the bytes
of little-endian float32 values, standard padded base64 in JSON (RFC 4648 section 4). Our
producers (serving's impression builder, the simulator) write ``features_f32`` (issue 16): a
50 x 300 list is about as long either way (~80 KB of JSON), but base64 decodes at memory speed
and the learners view the bytes with one ``np.frombuffer``, where the list form is 15,000
decimal numbers a list to parse into Python floats, which was the learners' ceiling
(BENCHMARKS.md, "From record bytes to the optimizer step"). This module holds the
``features_f32`` type with its rules (a whole number of float32s, at most
:data:`MAX_ITEM_FEATURES`, all finite; errors typed so :func:`contracts.events.decode` maps them
to reason codes) and the readers that treat both spellings alike.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

#: Most values in one item's feature vector (either form).
MAX_ITEM_FEATURES = 4096
#: The dtype of ``features_f32``: little-endian IEEE-754 float32.
FEATURES_F32_DTYPE = np.dtype("<f4")


def _f32_from_json(value: Any) -> Any:
    """``features_f32`` arrives in JSON as standard base64 (RFC 4648 section 4, padded); in Python as ``bytes``.

    Strict: characters outside the alphabet, missing or misplaced padding are refused
    (``binascii.a2b_base64(strict_mode=True)``), so the contract accepts exactly one spelling of a
    vector and msgspec's native ``bytes`` decoding (:mod:`contracts.fast_decode`) never accepts a
    string this refuses (the differential tests hold the two together).
    """
    if isinstance(value, str):
        try:
            return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise PydanticCustomError("bad_base64", "not standard padded base64: {error}",
                                      {"error": str(exc)}) from None
    return value  # bytes from Python callers; anything else fails the strict bytes check that follows


def _f32_check(value: bytes) -> bytes:
    """A whole number of float32s, at most :data:`MAX_ITEM_FEATURES` of them, every one finite."""
    if len(value) % 4:
        raise PydanticCustomError("bad_length", "{n} bytes is not a whole number of float32 values", {"n": len(value)})
    if len(value) > 4 * MAX_ITEM_FEATURES:
        raise PydanticCustomError("too_long", "{n} float32 values > {cap}",
                                  {"n": len(value) // 4, "cap": MAX_ITEM_FEATURES})
    if not np.isfinite(np.frombuffer(value, dtype=FEATURES_F32_DTYPE)).all():
        raise PydanticCustomError("finite_number", "a float32 value is NaN or infinite")
    return value


#: Item features as the bytes of little-endian float32 values, base64 in JSON (see ``ShownItem``).
Float32Bytes = Annotated[
    bytes,
    BeforeValidator(_f32_from_json),
    AfterValidator(_f32_check),
    PlainSerializer(lambda v: base64.b64encode(v).decode("ascii"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "contentMediaType": "application/octet-stream",
                    "maxLength": 4 * ((4 * MAX_ITEM_FEATURES + 2) // 3),
                    "description": "dense item features as little-endian float32, standard base64 "
                                   "(a whole number of 4-byte values, at most 4096, all finite); "
                                   "excludes 'features'"}),
]


def item_feature_count(item: Any) -> int | None:
    """Feature values an item (a ``ShownItem`` or its msgspec mirror) carries, ``None`` if it carries none.

    Why a function: the features come in two spellings, a JSON float list (``features``: old logs,
    other clients) and float32 bytes (``features_f32``: what our producers write, issue 16, because
    parsing 15,000 decimal numbers a list was the learners' ceiling), and every reader must treat
    them alike.
    """
    blob = getattr(item, "features_f32", None)
    if blob is not None:
        return len(blob) // 4
    return None if item.features is None else len(item.features)


def item_feature_row(item: Any) -> np.ndarray | list[float] | None:
    """The item's features: a read-only float32 view of ``features_f32`` (no copy), else ``features``."""
    blob = getattr(item, "features_f32", None)
    if blob is not None:
        return np.frombuffer(blob, dtype=FEATURES_F32_DTYPE)
    return item.features


def item_feature_matrix(items: Any) -> np.ndarray:
    """``[n, d]`` float32 rows of ``items`` that all carry ``d`` features, in either spelling."""
    return np.stack([np.asarray(item_feature_row(item), dtype=np.float32) for item in items])


def f32_bytes(values: Any) -> bytes:
    """``values`` (any float sequence or array) as ``features_f32`` bytes: little-endian float32."""
    return np.ascontiguousarray(values, dtype=FEATURES_F32_DTYPE).tobytes()
