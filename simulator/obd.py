"""Open Bandit Dataset (ZOZOTOWN) → impression + click feedback events.

Each logged row is one (item, position) impression with the logging policy's true
propensity; a click becomes a ``click`` feedback event a short, seeded delay later. OBD rows
cannot be rejoined into pages (see ``shared/data/README.md``), so each row is its own request.
The hashed user features become the request context and the user id (OBD has no user id).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np

from common.errors import StreamrankError
from contracts.events import FEEDBACK_SCHEMA, IMPRESSION_SCHEMA, Feedback, Impression, ShownItem

USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


class ObdFormatError(StreamrankError, ValueError):
    """A row that is not in OBD's CSV format."""


@dataclass(frozen=True)
class ObdRow:
    row: int
    ts: float
    item_id: int
    position: int
    click: int
    propensity: float
    user_features: tuple[str, ...]
    affinity: float


def parse_timestamp(text: str) -> float:
    return datetime.fromisoformat(text.strip()).timestamp()


def read_obd(path: str | Path) -> Iterator[ObdRow]:
    """Rows of an OBD CSV in file order (which is time order)."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        needed = {"timestamp", "item_id", "position", "click", "propensity_score", *USER_FEATURES}
        missing = needed - set(reader.fieldnames or ())
        if missing:
            raise ObdFormatError(f"{path}: missing columns {sorted(missing)}")
        for n, row in enumerate(reader):
            try:
                item = int(row["item_id"])
                yield ObdRow(row=n, ts=parse_timestamp(row["timestamp"]), item_id=item, position=int(row["position"]),
                             click=int(row["click"]), propensity=float(row["propensity_score"]),
                             user_features=tuple(row[f] for f in USER_FEATURES),
                             affinity=float(row.get(f"user-item_affinity_{item}") or 0.0))
            except (KeyError, ValueError) as exc:
                raise ObdFormatError(f"{path}: row {n}: {exc}") from None


def obd_events(path: str | Path, seed: int = 0, tag: str | None = None) -> Iterator[Impression | Feedback]:
    """Impression (and click feedback) events for every row; deterministic by seed."""
    path = Path(path)
    tag = tag or hashlib.blake2b(str(path.resolve()).encode(), digest_size=4).hexdigest()
    rng = np.random.default_rng(seed)
    for r in read_obd(path):
        request_id = f"obd-{tag}-{r.row}"
        user_id = "obdu-" + hashlib.blake2b("|".join(r.user_features).encode(), digest_size=6).hexdigest()
        context: dict[str, float | str] = {f: v for f, v in zip(USER_FEATURES, r.user_features)}
        context["user_item_affinity"] = r.affinity
        yield Impression(schema=IMPRESSION_SCHEMA, event_id=f"{request_id}:imp", request_id=request_id, ts=r.ts,
                         user_id=user_id, items=[ShownItem(item_id=str(r.item_id), position=r.position,
                                                           propensity=min(1.0, r.propensity))],
                         context=context, source="obd")
        delay = float(rng.lognormal(1.0, 0.8))  # seconds from impression to click
        if r.click:
            yield Feedback(schema=FEEDBACK_SCHEMA, event_id=f"{request_id}:fb0", request_id=request_id,
                           item_id=str(r.item_id), ts=round(r.ts + delay, 6), kind="click", value=1.0)
