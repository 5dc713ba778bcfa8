r"""The MovieLens-100k backbone: the raw "rating >= 4" scores the calibrators see.

Like the OBD backbone (:mod:`learners.calibration.backbone`), deliberately simple and honestly
trained: an L2-regularised **logistic regression** (scikit-learn ``lbfgs``, ``C = 0.1``) fitted
on the **earliest** ``train_fraction`` of the ratings by time (default 50 %), then frozen; every
later rating is scored with it and only those are used to evaluate calibration (prequential,
in time order). Target: :math:`y = [\text{rating} \ge 4]` (55 % of the ratings).

Features: one-hot age bucket, gender, occupation and release decade; multi-hot genres;
numeric :math:`\log(1 + n_i)`, :math:`\log(1 + n_u)` (the item's and the user's number of ratings
in the training prefix) and the smoothed positive rates
:math:`\tilde r_i = (\sum_{j \in i} y_j + m\,\bar y)/(n_i + m)` and :math:`\tilde r_u` likewise
(:math:`m = 20`, :math:`\bar y` the prefix's rate). On the training rows the rates leave the row
itself out (else the model learns to trust a rate that contains its own label); on later rows
they are the prefix's. Users and items first seen after the prefix get :math:`n = 0` and the
prior :math:`\bar y`: the time split, not a planted bias, is what leaves the backbone
miscalibrated (ML-100k's users arrive over seven months).

Fields for calibration (context and field-level ECE): ``user_group`` (gender x age bucket),
``genre`` (first genre) and ``popularity`` (the item's prefix count: ``new`` for 0, else the
quartile ``q1``..``q4`` of the prefix's ratings).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from simulator.movielens import age_bucket, first_genre, user_groups

SMOOTHING = 20.0
CATEGORICAL = ("age_bucket", "gender", "occupation", "decade")
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def positive(frame: pd.DataFrame) -> np.ndarray:
    return (frame["rating"].to_numpy(dtype=np.float64) >= 4.0).astype(np.float64)


def split_by_time(frame: pd.DataFrame, train_fraction: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` is in time order (:func:`simulator.movielens.load_movielens`)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(frame) * train_fraction)
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


class MovieLensBackbone:
    """Logistic regression on user and item attributes plus prefix counts and rates."""

    def __init__(self, c: float = 0.1, seed: int = 0) -> None:
        self.c = c
        self.seed = seed
        self.prior = 0.5
        self.item_stats: pd.DataFrame | None = None
        self.user_stats: pd.DataFrame | None = None
        self.quartiles = np.zeros(3)
        self.encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        self.scaler = StandardScaler()
        self.model: LogisticRegression | None = None

    def _stats(self, frame: pd.DataFrame, key: str) -> pd.DataFrame:
        y = positive(frame)
        return pd.DataFrame({key: frame[key], "y": y}).groupby(key)["y"].agg(["sum", "count"])

    def _counts_rates(self, frame: pd.DataFrame, key: str, stats: pd.DataFrame,
                      leave_out: bool) -> tuple[np.ndarray, np.ndarray]:
        joined = stats.reindex(frame[key].to_numpy())
        total = joined["sum"].fillna(0.0).to_numpy()
        count = joined["count"].fillna(0.0).to_numpy()
        if leave_out:
            total, count = total - positive(frame), count - 1.0
        rate = (total + SMOOTHING * self.prior) / (count + SMOOTHING)
        return np.log1p(count), rate

    def _design(self, frame: pd.DataFrame, fit: bool) -> np.ndarray:
        assert self.item_stats is not None and self.user_stats is not None
        cat = pd.DataFrame({"age_bucket": age_bucket(frame["age"]), "gender": frame["gender"].astype(str),
                            "occupation": frame["occupation"].astype(str),
                            "decade": (frame["year"] // 10 * 10).fillna(0).astype(int).astype(str)})
        one_hot = self.encoder.fit_transform(cat) if fit else self.encoder.transform(cat)
        genres = np.array([[g in set(row) for g in GENRES] for row in frame["genres"]], dtype=np.float64)
        n_i, r_i = self._counts_rates(frame, "item_id", self.item_stats, leave_out=fit)
        n_u, r_u = self._counts_rates(frame, "user_id", self.user_stats, leave_out=fit)
        numeric = np.column_stack([n_i, r_i, n_u, r_u])
        numeric = self.scaler.fit_transform(numeric) if fit else self.scaler.transform(numeric)
        return np.hstack([one_hot, genres, numeric])

    def fit(self, train: pd.DataFrame) -> "MovieLensBackbone":
        y = positive(train)
        if y.min() == y.max():
            raise ValueError("the backbone's training slice has a single class; use a longer slice")
        self.prior = float(y.mean())
        self.item_stats = self._stats(train, "item_id")
        self.user_stats = self._stats(train, "user_id")
        per_row = self.item_stats["count"].reindex(train["item_id"].to_numpy()).to_numpy()
        self.quartiles = np.quantile(per_row, [0.25, 0.5, 0.75])
        self.model = LogisticRegression(C=self.c, solver="lbfgs", random_state=self.seed, max_iter=2000)
        self.model.fit(self._design(train, fit=True), y)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the backbone first")
        return self.model.predict_proba(self._design(frame, fit=False))[:, 1]

    def popularity(self, frame: pd.DataFrame) -> np.ndarray:
        """``new`` (not in the prefix) or the prefix quartile ``q1``..``q4`` of the item's count."""
        assert self.item_stats is not None
        count = self.item_stats["count"].reindex(frame["item_id"].to_numpy()).fillna(0.0).to_numpy()
        bucket = np.searchsorted(self.quartiles, count, side="right") + 1
        return np.where(count == 0, "new", np.char.add("q", np.minimum(bucket, 4).astype(str)))


def calibration_fields(frame: pd.DataFrame, backbone: MovieLensBackbone) -> dict[str, np.ndarray]:
    """``user_group``, ``genre`` and ``popularity`` of each rating."""
    return {"user_group": user_groups(frame), "genre": first_genre(frame), "popularity": backbone.popularity(frame)}
