"""Tiny synthetic MovieLens-100k folders in RecBole's atomic format (made-up rows, never the real files).

MovieLens' terms forbid redistribution, so tests write their own users, films and ratings with
the real files' headers. Ratings depend on the user's gender and the film's first genre, so a
backbone has something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = ("Action", "Comedy", "Drama", "Sci-Fi")
HEADERS = {
    "inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
    "item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
}


def write_movielens(folder: Path, users: int = 40, items: int = 30, ratings: int = 1200, seed: int = 0) -> Path:
    """``folder/ml-100k.{inter,user,item}``; returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    user_rows = [f"{u}\t{int(rng.integers(15, 70))}\t{'MF'[u % 2]}\t{('student', 'writer')[u % 3 == 0]}\t{10000 + u}"
                 for u in range(1, users + 1)]
    item_rows = []
    for i in range(1, items + 1):
        genres = " ".join(rng.choice(GENRES, size=int(rng.integers(1, 3)), replace=False))
        item_rows.append(f"{i}\tFilm {i}\t{int(rng.integers(1950, 1998))}\t{genres}")
    inter_rows = []
    for t in range(ratings):
        u, i = int(rng.integers(1, users + 1)), int(rng.integers(1, items + 1))
        mean = 3.0 + 0.8 * (u % 2) - 0.6 * (i % 3 == 0)
        rating = int(np.clip(np.round(mean + rng.normal(0, 1)), 1, 5))
        inter_rows.append(f"{u}\t{i}\t{rating}\t{880000000 + 37 * t + int(rng.integers(0, 30))}")
    for kind, rows in (("inter", inter_rows), ("user", user_rows), ("item", item_rows)):
        (folder / f"ml-100k.{kind}").write_text("\n".join([HEADERS[kind], *rows]) + "\n")
    return folder
