"""The OBD CTR backbone: the raw click scores our calibrators see on the Open Bandit Dataset.

OBD logs no model scores, so calibration needs an upstream model. This one is deliberately
simple and honestly trained: an L2-regularised **logistic regression** (scikit-learn,
``lbfgs``, intercept not penalised) fitted on the **earliest** ``train_fraction`` of the rows by time (default
30%), then frozen; every later row is scored with it, and only those later rows are used
to evaluate calibration (prequential, in time order). Features (one-hot unless numeric):

* user: ``user_feature_0..3`` (hashed categoricals) and the row's ``user-item_affinity``;
* item: ``item_feature_0`` (numeric, standardised) and ``item_feature_1..3`` (categoricals)
  from ``item_context.csv`` next to the CSV when present.

Position is **not** a feature: like a CTR model trained on position-debiased logs, its scores
ignore the display slot, so whatever position effect the clicks carry is left for a
context-aware calibrator to fix (field-level ECE by position shows it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from simulator.obd import USER_FEATURES, ObdFormatError

ITEM_CATEGORICAL = ("item_feature_1", "item_feature_2", "item_feature_3")
ITEM_NUMERIC = ("item_feature_0",)


@dataclass
class ObdTable:
    """An OBD CSV in time order, with item context joined and the row's own affinity."""

    frame: pd.DataFrame
    path: Path

    @property
    def tag(self) -> str:
        return hashlib.blake2b(str(self.path.resolve()).encode(), digest_size=4).hexdigest()


def load_obd_table(path: str | Path, limit: int | None = None) -> ObdTable:
    path = Path(path)
    try:
        frame = pd.read_csv(path, nrows=limit)
    except (OSError, ValueError) as exc:
        raise ObdFormatError(f"{path}: cannot read as CSV ({exc})") from None
    needed = {"timestamp", "item_id", "position", "click", "propensity_score", *USER_FEATURES}
    missing = needed - set(frame.columns)
    if missing:
        raise ObdFormatError(f"{path}: missing columns {sorted(missing)}")
    frame = frame.reset_index(drop=True)
    frame["row"] = np.arange(len(frame))  # file order = time order (matches simulator.obd request ids)
    frame["ts"] = pd.to_datetime(frame["timestamp"], utc=True).astype("int64") / 1e9
    items = frame["item_id"].astype(int).to_numpy()
    affinity = np.zeros(len(frame))
    for item in np.unique(items):
        col = f"user-item_affinity_{item}"
        if col in frame.columns:
            mask = items == item
            affinity[mask] = frame.loc[mask, col].astype(float).to_numpy()
    frame["affinity"] = affinity
    context_path = path.parent / "item_context.csv"
    if context_path.is_file():
        context = pd.read_csv(context_path)
        keep = ["item_id", *[c for c in (*ITEM_NUMERIC, *ITEM_CATEGORICAL) if c in context.columns]]
        frame = frame.merge(context[keep], on="item_id", how="left")
    return ObdTable(frame=frame.sort_values("row", kind="stable").reset_index(drop=True), path=path)


class ObdBackbone:
    """Logistic-regression CTR model on user and item features (position excluded)."""

    def __init__(self, c: float = 0.1, seed: int = 0) -> None:
        self.c = c
        self.seed = seed
        self.categorical: list[str] = []
        self.numeric: list[str] = []
        self.encoder: OneHotEncoder | None = None
        self.scaler: StandardScaler | None = None
        self.model: LogisticRegression | None = None

    def _design(self, frame: pd.DataFrame, fit: bool) -> np.ndarray:
        if fit:
            self.categorical = [c for c in (*USER_FEATURES, *ITEM_CATEGORICAL) if c in frame.columns]
            self.numeric = [c for c in ("affinity", *ITEM_NUMERIC) if c in frame.columns]
            self.encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            self.scaler = StandardScaler()
            cat = self.encoder.fit_transform(frame[self.categorical].astype(str))
            num = self.scaler.fit_transform(frame[self.numeric].astype(float).fillna(0.0))
        else:
            assert self.encoder is not None and self.scaler is not None
            cat = self.encoder.transform(frame[self.categorical].astype(str))
            num = self.scaler.transform(frame[self.numeric].astype(float).fillna(0.0))
        return np.hstack([cat, num])

    def fit(self, frame: pd.DataFrame) -> "ObdBackbone":
        y = frame["click"].astype(int).to_numpy()
        if y.min() == y.max():
            raise ValueError("the backbone's training slice has a single class; use a longer slice")
        self.model = LogisticRegression(C=self.c, solver="lbfgs", random_state=self.seed, max_iter=2000)
        self.model.fit(self._design(frame, fit=True), y)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the backbone first")
        return self.model.predict_proba(self._design(frame, fit=False))[:, 1]


def split_by_time(table: ObdTable, train_fraction: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(table.frame) * train_fraction)
    return table.frame.iloc[:cut], table.frame.iloc[cut:]
