"""The calibration benchmarks' data: the simulator with known truth and MovieLens-100k, as streams.

Each builder returns a :class:`CalibrationTask`: the rows in time order as the
:class:`~contracts.events.LabeledList` s the learners consume on the stream (the backbone's score
as ``scores["click"]``, the label as the ``click`` label, the context fields as impression
context: the same path as production and as the OBD evaluation), plus the arrays the metrics
need (labels, backbone scores, fields, the user of each row for the cluster bootstrap, and the
truth where it is known).

* ``sim`` (:mod:`simulator.calibration`): LETOR/KuaiRand clicks with a miscalibrated backbone
  whose bias depends on position and user group. Calibrator context: ``position``,
  ``user_group``; field-level ECE by ``position``, ``item`` and ``user_group``.
* ``movielens`` (:mod:`simulator.movielens`, :mod:`learners.calibration.backbone_movielens`):
  "rating >= 4" scored by a logistic regression fitted on the time prefix; the rest is the
  stream, one rating per impression. Context and fields: ``user_group``, ``genre``,
  ``popularity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from contracts.events import IMPRESSION_SCHEMA, Impression, JoinInfo, LabeledList, ShownItem
from learners.calibration.backbone_movielens import MovieLensBackbone, calibration_fields, positive, split_by_time
from simulator.calibration import CalibrationSimConfig, load_sources, simulate_calibration_stream
from simulator.movielens import load_movielens
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights

SIM_FIELDS = ("position", "item", "user_group")
SIM_CONTEXT = ("position", "user_group")
MOVIELENS_FIELDS = ("user_group", "genre", "popularity")
#: requests of the simulator / share of MovieLens for the backbone, per mode
SIM_REQUESTS = {"quick": 4_000, "full": 15_000}
MOVIELENS_TRAIN_FRACTION = 0.5


@dataclass
class CalibrationTask:
    name: str
    examples: list[LabeledList]
    labels: np.ndarray
    p_hat: np.ndarray
    fields: dict[str, np.ndarray]
    clusters: np.ndarray
    context_fields: tuple[str, ...]
    p_true: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def rows_to_labeled_lists(frame: pd.DataFrame, tag: str, context_columns: Sequence[str],
                          source: str) -> list[LabeledList]:
    """One LabeledList per ``request`` (rows: ``request, ts, user_id, item_id, position, p_hat, click``
    and the request-level ``context_columns``), in the frame's order."""
    weights = RewardWeights()
    out = []
    starts = np.flatnonzero(np.r_[True, frame["request"].to_numpy()[1:] != frame["request"].to_numpy()[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    cols = {c: frame[c].to_numpy() for c in ("request", "ts", "user_id", "item_id", "position", "p_hat", "click",
                                              *context_columns)}
    for start, end in zip(starts, ends):
        request_id = f"{tag}-{cols['request'][start]}"
        items = [ShownItem(item_id=str(cols["item_id"][i]), position=int(cols["position"][i]),
                           scores={"click": float(cols["p_hat"][i])}) for i in range(start, end)]
        context: dict[str, float | str] = {c: str(cols[c][start]) for c in context_columns}
        imp = Impression(schema=IMPRESSION_SCHEMA, event_id=f"{request_id}:imp", request_id=request_id,
                         ts=float(cols["ts"][start]), user_id=str(cols["user_id"][start]), items=items,
                         context=context, source=source)
        outcome = ListOutcome()
        clicks = 0
        for i, item in zip(range(start, end), items):
            if int(cols["click"][i]):
                outcome.add(item.item_id, "click", 1.0)
                clicks += 1
        join = JoinInfo(closed_by="window", window_s=0.0, feedback_count=clicks, closed_at_ts=float(cols["ts"][start]))
        out.append(label_impression(imp, outcome, weights, join))
    return out


def sim_task(seed: int = 0, requests: int = SIM_REQUESTS["full"], letor_path: str | Path | None = None,
             kuairand_dir: str | Path | None = None) -> CalibrationTask:
    """The simulator's stream (:mod:`simulator.calibration`) with ``requests`` requests."""
    letor, users = load_sources(letor_path, kuairand_dir)
    config = CalibrationSimConfig(requests=requests, seed=seed)
    frame = simulate_calibration_stream(config, letor, users)
    examples = rows_to_labeled_lists(frame, f"calsim{seed}", ("user_group",), "calibration-sim")
    fields = {"position": frame["position"].to_numpy(), "item": frame["item_id"].to_numpy(),
              "user_group": frame["user_group"].to_numpy()}
    info = {"rows": len(frame), "requests": requests, "users": int(frame["user_id"].nunique()),
            "positives": int(frame["click"].sum()), "list_size": config.list_size,
            "temperature": config.temperature, "group_bias": dict(config.group_bias),
            "position_bias": config.position_bias, "noise": config.noise}
    return CalibrationTask("sim", examples, frame["click"].to_numpy(dtype=np.float64),
                           frame["p_hat"].to_numpy(dtype=np.float64), fields, frame["user_id"].to_numpy(),
                           SIM_CONTEXT, frame["p_true"].to_numpy(dtype=np.float64), info)


def movielens_task(directory: str | Path | None = None, limit: int | None = None,
                   train_fraction: float = MOVIELENS_TRAIN_FRACTION, seed: int = 0) -> CalibrationTask:
    """MovieLens-100k: the backbone on the earliest ``train_fraction``, the rest as the stream."""
    data = load_movielens(directory, limit=limit)
    train, test = split_by_time(data.ratings, train_fraction)
    backbone = MovieLensBackbone(seed=seed).fit(train)
    fields = calibration_fields(test, backbone)
    frame = pd.DataFrame({"request": np.arange(len(test)), "ts": test["timestamp"].to_numpy(),
                          "user_id": "ml-" + test["user_id"].astype(str), "item_id": test["item_id"].astype(str),
                          "position": 1, "p_hat": backbone.predict(test), "click": positive(test).astype(int),
                          **fields})
    examples = rows_to_labeled_lists(frame, "ml100k", MOVIELENS_FIELDS, "movielens")
    info = {"directory": str(data.directory), "ratings": len(data.ratings), "train_rows": len(train),
            "rows": len(test), "positives": int(frame["click"].sum()), "users": int(frame["user_id"].nunique()),
            "train_fraction": train_fraction, "target": "rating >= 4"}
    return CalibrationTask("movielens", examples, frame["click"].to_numpy(dtype=np.float64),
                           frame["p_hat"].to_numpy(dtype=np.float64), fields, frame["user_id"].to_numpy(),
                           MOVIELENS_FIELDS, None, info)
