"""The OBD backbone: fitted on the earliest rows only, scores later rows, clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from learners.calibration.backbone import ObdBackbone, load_obd_table, split_by_time
from simulator.obd import ObdFormatError


@pytest.fixture(scope="module")
def table(shared_data):
    return load_obd_table(shared_data / "obd" / "random" / "all" / "all.csv", limit=3000)


def test_split_is_by_time_and_the_backbone_never_sees_the_evaluated_rows(table):
    train, test = split_by_time(table, 0.3)
    assert len(train) == 900 and len(test) == 2100
    assert train["row"].max() < test["row"].min()
    assert train["ts"].max() <= test["ts"].min()
    model = ObdBackbone().fit(train)
    p = model.predict(test)
    assert p.shape == (2100,) and np.all((p > 0) & (p < 1))
    # refitting on the training slice with the test labels flipped changes nothing: no peeking
    flipped = test.copy()
    flipped["click"] = 1 - flipped["click"]
    assert np.array_equal(ObdBackbone().fit(train).predict(flipped), p)


def test_position_is_not_a_backbone_feature(table):
    train, test = split_by_time(table, 0.3)
    model = ObdBackbone().fit(train)
    moved = test.copy()
    moved["position"] = 1
    assert np.array_equal(model.predict(moved), model.predict(test))


def test_affinity_is_the_rows_own_item_column(table):
    row = table.frame.iloc[5]
    assert row["affinity"] == float(row[f"user-item_affinity_{int(row['item_id'])}"])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_train_fraction_is_refused(table, fraction):
    with pytest.raises(ValueError, match="train_fraction"):
        split_by_time(table, fraction)


def test_a_csv_without_obd_columns_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("timestamp,item_id\n2019-11-24 00:00:00+00:00,1\n")
    with pytest.raises(ObdFormatError, match="missing columns"):
        load_obd_table(path)
