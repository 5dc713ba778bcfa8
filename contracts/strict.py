"""The strict pydantic base every contract model uses: no unknown fields, no NaN/inf, bounded ids.

Events (:mod:`contracts.events`) are frozen (a decoded event is a value); request bodies
(:mod:`contracts.rerank`) are also type-strict (``"1"`` is not a number), because a client that
sends the wrong type should hear so in a 422 naming the field rather than be coerced.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: A non-empty identifier of at most 256 characters (request, user, item, query ids).
Id = Annotated[str, Field(min_length=1, max_length=256)]
#: A float that is neither NaN nor infinite.
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: The largest finite float32: the models compute in float32, so a larger finite JSON number
#: (1e308) would become inf inside them.
FLOAT32_MAX = 3.4028234663852886e38
#: A finite float that also fits float32 (model inputs).
Float32 = Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


class FrozenModel(BaseModel):
    """Immutable, no extra fields, finite floats: the base of every event."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class StrictModel(BaseModel):
    """No extra fields, finite floats, no type coercion: the base of every HTTP body."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
