"""``streamrank eval calibration`` end to end on a slice of the real OBD data (made by code)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from streamrank.cli.main import _register_stage_commands, cli

pytestmark = pytest.mark.integration

METHODS = {"umnn_scloss", "umnn", "platt", "isotonic", "histogram", "backbone"}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    if "learn" not in cli.commands:
        _register_stage_commands()
    return CliRunner()


@pytest.fixture(scope="module")
def obd_slice(tmp_path_factory, shared_data):
    """The first 4,000 rows of OBD random/all (enough clicks for the backbone's training slice)."""
    folder = tmp_path_factory.mktemp("obd")
    rows = (shared_data / "obd" / "random" / "all" / "all.csv").read_text().splitlines()[:4001]
    (folder / "all.csv").write_text("\n".join(rows) + "\n")
    (folder / "item_context.csv").write_text((shared_data / "obd" / "random" / "all" / "item_context.csv").read_text())
    return folder / "all.csv"


def test_json_output_has_every_method_and_metric(runner, obd_slice, tmp_path):
    plot = tmp_path / "reliability.png"
    result = runner.invoke(cli, ["eval", "calibration", "--data", f"obd:{obd_slice}", "--json", "--batch-size", "256",
                                 "--plot", str(plot)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) == METHODS
    for method, metrics in doc.items():
        for name in ("ece", "pcoc", "logloss", "auc", "field_ece_position", "field_ece_item"):
            assert name in metrics, (method, name)
        assert 0 <= metrics["ece"] <= 1 and math.isfinite(metrics["logloss"])
        assert metrics["n"] == 2800  # prequential over the 70% after the backbone's training slice
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_output_and_a_method_subset(runner, obd_slice):
    result = runner.invoke(cli, ["eval", "calibration", "--data", f"obd:{obd_slice}", "--methods", "platt,backbone"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line.split("\r")[-1].strip() for line in result.output.splitlines()]  # drop progress bars
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    assert lines[header].split()[:3] == ["method", "ece", "field_ece_position"]
    assert [line.split()[0] for line in lines[header + 2:header + 4]] == ["platt", "backbone"]


@pytest.mark.parametrize("args, message", [
    (["--data", "csv:/nope.csv"], "expected obd:PATH"),
    (["--data", "obd:/does/not/exist.csv"], "is not a file"),
    (["--methods", "umnn,magic"], "unknown methods"),
])
def test_bad_arguments_get_a_clear_error(runner, obd_slice, args, message):
    if args[0] == "--methods":
        args = ["--data", f"obd:{obd_slice}", *args]
    result = runner.invoke(cli, ["eval", "calibration", *args])
    assert result.exit_code != 0 and message in result.output


def test_a_csv_that_is_not_obd_is_refused_naming_the_missing_columns(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = runner.invoke(cli, ["eval", "calibration", "--data", f"obd:{bad}"])
    assert result.exit_code != 0 and "missing columns" in result.output
