"""MovieLens-100k in RecBole's atomic-file format, read in place (never copied into the repo).

The files ship inside the ``recbole==1.2.1`` wheel (``recbole/dataset_example/ml-100k/``,
installed ``--no-deps`` from ``requirements-nodeps.lock``); :func:`default_movielens_dir` finds
them through :mod:`importlib.resources`. MovieLens' terms allow research use, not redistribution:
tests build tiny synthetic files of the same format.

Atomic files (RecBole's ``dataset_example``): tab-separated, a typed header ``name:type`` per
column (``token``, ``float``, ``token_seq`` = space-separated tokens):

* ``ml-100k.inter``: ``user_id:token  item_id:token  rating:float  timestamp:float``
* ``ml-100k.user``:  ``user_id:token  age:token  gender:token  occupation:token  zip_code:token``
* ``ml-100k.item``:  ``item_id:token  movie_title:token_seq  release_year:token  class:token_seq``
  (``class``: the genres)

Derived fields: :func:`age_bucket` (``<25``, ``25-34``, ``35-49``, ``50+``), the user group
``gender`` x age bucket (e.g. ``F25-34``) and the item's first genre.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import StreamrankError

PREFIX = "ml-100k"
REQUIRED = {
    "inter": ("user_id", "item_id", "rating", "timestamp"),
    "user": ("user_id", "age", "gender", "occupation"),
    "item": ("item_id", "release_year", "class"),
}


class MovieLensFormatError(StreamrankError, ValueError):
    """The MovieLens files are missing or are not RecBole atomic files with the needed columns."""


@dataclass(frozen=True)
class MovieLens:
    """Ratings in time order joined with user and item attributes (one row per rating)."""

    ratings: pd.DataFrame  # user_id, item_id, rating, timestamp, age, gender, occupation, year, genres
    directory: Path


def default_movielens_dir() -> Path:
    """``recbole/dataset_example/ml-100k`` inside the installed wheel."""
    try:
        root = importlib.resources.files("recbole")
    except ModuleNotFoundError:
        raise MovieLensFormatError("MovieLens-100k comes with recbole==1.2.1: install it with "
                                   "`.venv/bin/pip install --no-deps -r requirements-nodeps.lock`") from None
    return Path(str(root / "dataset_example" / PREFIX))


def read_atomic(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """One atomic file with its ``name:type`` header stripped to ``name`` (all columns as text)."""
    if not path.is_file():
        raise MovieLensFormatError(f"{path}: missing (expected RecBole's {PREFIX} atomic files)")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8",
                            encoding_errors="replace")
    except (OSError, ValueError) as exc:
        raise MovieLensFormatError(f"{path}: cannot read as a tab-separated atomic file ({exc})") from None
    names = {}
    for column in frame.columns:
        name, sep, kind = str(column).partition(":")
        if not sep or not kind:
            raise MovieLensFormatError(f"{path}: header column {column!r} is not name:type")
        names[column] = name
    frame = frame.rename(columns=names)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MovieLensFormatError(f"{path}: missing columns {missing} (has {list(frame.columns)})")
    return frame


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise MovieLensFormatError(f"{path}: column {column!r} row {row + 2} is not a number: "
                                   f"{frame[column].iloc[row]!r}")
    return values.to_numpy(dtype=np.float64)


def load_movielens(directory: str | Path | None = None, limit: int | None = None) -> MovieLens:
    """Read the three files, join them and sort the ratings by time (stable); ``limit``: the first N by time."""
    directory = Path(directory) if directory else default_movielens_dir()
    paths = {kind: directory / f"{PREFIX}.{kind}" for kind in REQUIRED}
    inter = read_atomic(paths["inter"], REQUIRED["inter"])
    users = read_atomic(paths["user"], REQUIRED["user"])
    items = read_atomic(paths["item"], REQUIRED["item"])
    if inter.empty:
        raise MovieLensFormatError(f"{paths['inter']}: no ratings")
    inter["rating"] = _numeric(inter, "rating", paths["inter"])
    inter["timestamp"] = _numeric(inter, "timestamp", paths["inter"])
    users["age"] = _numeric(users, "age", paths["user"])
    items["year"] = pd.to_numeric(items["release_year"], errors="coerce")  # a few films have none
    items["genres"] = items["class"].str.split()
    frame = inter[list(REQUIRED["inter"])].merge(users[list(REQUIRED["user"])], on="user_id", how="left")
    frame = frame.merge(items[["item_id", "year", "genres"]], on="item_id", how="left")
    unknown = frame["gender"].isna() | frame["genres"].isna()
    if unknown.any():
        row = frame[unknown].iloc[0]
        raise MovieLensFormatError(f"{directory}: rating of user {row['user_id']} on item {row['item_id']} names "
                                   f"a user or item missing from {PREFIX}.user / {PREFIX}.item")
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if limit is not None:
        frame = frame.iloc[:limit].reset_index(drop=True)
    return MovieLens(ratings=frame, directory=directory)


def age_bucket(age: np.ndarray | pd.Series) -> np.ndarray:
    """``<25``, ``25-34``, ``35-49`` or ``50+``."""
    return np.select([np.asarray(age) < 25, np.asarray(age) < 35, np.asarray(age) < 50],
                     ["<25", "25-34", "35-49"], "50+")


def user_groups(frame: pd.DataFrame) -> np.ndarray:
    """Gender x age bucket, e.g. ``M<25``, ``F35-49``."""
    return (frame["gender"].astype(str).to_numpy().astype(object) + age_bucket(frame["age"]).astype(object)).astype(str)


def first_genre(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray([g[0] if len(g) else "unknown" for g in frame["genres"]], dtype=str)
