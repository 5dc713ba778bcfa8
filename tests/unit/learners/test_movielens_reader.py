"""The MovieLens-100k atomic-file reader and backbone, on tiny synthetic folders (never the real files)."""

from __future__ import annotations

import numpy as np
import pytest
from support_movielens import HEADERS, write_movielens

from learners.calibration.backbone_movielens import MovieLensBackbone, calibration_fields, positive, split_by_time
from simulator.movielens import MovieLensFormatError, age_bucket, first_genre, load_movielens, user_groups


def test_reads_joins_and_sorts_by_time(tmp_path):
    folder = write_movielens(tmp_path / "ml", ratings=300)
    data = load_movielens(folder)
    frame = data.ratings
    assert len(frame) == 300 and frame["timestamp"].is_monotonic_increasing
    assert {"user_id", "item_id", "rating", "timestamp", "age", "gender", "occupation", "year", "genres"} <= set(frame)
    assert frame["rating"].between(1, 5).all() and all(isinstance(g, list) and g for g in frame["genres"])
    assert len(load_movielens(folder, limit=50).ratings) == 50


def test_derived_fields():
    assert list(age_bucket(np.array([7, 24, 25, 34, 35, 49, 50, 73]))) == [
        "<25", "<25", "25-34", "25-34", "35-49", "35-49", "50+", "50+"]
    import pandas as pd

    frame = pd.DataFrame({"gender": ["F", "M"], "age": [30, 60], "genres": [["Drama", "War"], ["Comedy"]]})
    assert list(user_groups(frame)) == ["F25-34", "M50+"]
    assert list(first_genre(frame)) == ["Drama", "Comedy"]


def test_a_missing_folder_or_file_names_the_file(tmp_path):
    with pytest.raises(MovieLensFormatError, match=r"ml-100k\.inter: missing"):
        load_movielens(tmp_path / "nowhere")
    folder = write_movielens(tmp_path / "ml")
    (folder / "ml-100k.item").unlink()
    with pytest.raises(MovieLensFormatError, match=r"ml-100k\.item: missing"):
        load_movielens(folder)


@pytest.mark.parametrize("kind, text, message", [
    ("inter", "user_id\titem_id\trating\ttimestamp\n1\t1\t4\t5\n", r"header column 'user_id' is not name:type"),
    ("inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t1\t5\n", r"missing columns \['rating'\]"),
    ("inter", HEADERS["inter"] + "\n1\t1\tgood\t5\n", r"column 'rating' row 2 is not a number: 'good'"),
    ("inter", HEADERS["inter"] + "\n", "no ratings"),
    ("inter", HEADERS["inter"] + "\n999\t1\t4\t5\n", "rating of user 999 on item 1 names a user or item missing"),
    ("user", "user_id:token\tgender:token\n1\tM\n", r"ml-100k\.user: missing columns \['age', 'occupation'\]"),
])
def test_malformed_files_get_a_clear_error(tmp_path, kind, text, message):
    folder = write_movielens(tmp_path / "ml")
    (folder / f"ml-100k.{kind}").write_text(text)
    with pytest.raises(MovieLensFormatError, match=message):
        load_movielens(folder)


def test_the_backbone_learns_on_the_prefix_and_buckets_popularity(tmp_path):
    frame = load_movielens(write_movielens(tmp_path / "ml", ratings=2000)).ratings
    train, test = split_by_time(frame, 0.5)
    assert len(train) == 1000 and train["timestamp"].max() <= test["timestamp"].min()
    backbone = MovieLensBackbone().fit(train)
    p = backbone.predict(test)
    assert p.shape == (1000,) and ((p > 0) & (p < 1)).all()
    y = positive(test)
    assert np.corrcoef(p, y)[0, 1] > 0.1  # the synthetic ratings depend on gender and item: it learned that
    fields = calibration_fields(test, backbone)
    assert set(fields) == {"user_group", "genre", "popularity"}
    assert set(fields["popularity"]) <= {"new", "q1", "q2", "q3", "q4"}
    unseen = test.assign(item_id="no-such-item")
    assert set(backbone.popularity(unseen)) == {"new"}
    with pytest.raises(ValueError, match="train_fraction must be in"):
        split_by_time(frame, 1.0)
