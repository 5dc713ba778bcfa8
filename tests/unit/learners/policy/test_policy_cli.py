"""``streamrank eval ldro|drpo --json``: any LETOR file pair, one object keyed by method."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from support import stage_cli

from streamrank.cli import evaluate as policy_commands


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The eval commands set torch's thread count for their process; give the test process its own back."""
    import torch  # noqa: PLC0415

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cli():
    return stage_cli(policy_commands.register)


def letor_slice(shared_data, path, first: int, count: int) -> str:
    """A LETOR-format file pair made by code: queries [first, first+count) of rank.train."""
    src = shared_data / "letor" / "rank.train"
    sizes = [int(s) for s in (src.parent / "rank.train.query").read_text().split()]
    lines = src.read_text().splitlines()
    start = sum(sizes[:first])
    chunk = sizes[first:first + count]
    path.write_text("\n".join(lines[start:start + sum(chunk)]) + "\n")
    path.with_name(path.name + ".query").write_text("\n".join(map(str, chunk)) + "\n")
    return f"letor:{path}"


def test_eval_ldro_json_on_a_train_test_file_pair(cli, shared_data, tmp_path):
    train = letor_slice(shared_data, tmp_path / "slice.train", 0, 30)
    test = letor_slice(shared_data, tmp_path / "slice.test", 150, 10)
    result = CliRunner().invoke(cli, ["eval", "ldro", "--data", train, "--test", test, "--seeds", "1",
                                      "--interactions", "64", "--warmup", "32", "--held-out", "20",
                                      "--lgb-requests", "60", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) == {"ldro", "grpo", "logged", "lightgbm", "lightgbm_features"}
    for metrics in doc.values():
        assert {"ndcg@1", "ndcg@5", "ndcg@10", "ndcg@10_std"} <= set(metrics)
        assert 0.0 < metrics["ndcg@10"] <= 1.0


def test_eval_drpo_json_reports_the_ratio_to_the_static_best(cli, shared_data, tmp_path):
    train = letor_slice(shared_data, tmp_path / "slice.train", 0, 30)
    result = CliRunner().invoke(cli, ["eval", "drpo", "--data", train, "--seeds", "1", "--interactions", "64",
                                      "--eval-requests", "40", "--grid-requests", "20", "--grid-steps", "2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) == {"drpo", "static_best", "logged", "ideal"}
    assert all("satisfaction" in m and "ndcg@10" in m for m in doc.values())
    ratio = doc["drpo"]["satisfaction_ratio_vs_static_best"]
    assert ratio == pytest.approx(doc["drpo"]["satisfaction"] / doc["static_best"]["satisfaction"])


def test_eval_ldro_runs_an_ablation_under_its_own_label(cli, shared_data, tmp_path):
    train = letor_slice(shared_data, tmp_path / "slice.train", 0, 30)
    result = CliRunner().invoke(cli, ["eval", "ldro", "--data", train, "--seeds", "1", "--interactions", "64",
                                      "--warmup", "32", "--held-out", "20", "--lgb-requests", "60",
                                      "--methods", "ldro,ldro@nokd", "--set", "ldro@nokd.distill=false", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {"ldro", "ldro@nokd"} <= set(doc)
    assert doc["ldro"]["ndcg@10"] != doc["ldro@nokd"]["ndcg@10"]  # the switch changed the learner
    bad = CliRunner().invoke(cli, ["eval", "ldro", "--data", train, "--set", "distill=false", "--json"])
    assert bad.exit_code != 0 and "METHOD.KEY=VALUE" in bad.output


def test_eval_rejects_a_data_spec_it_cannot_read(cli, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "ldro", "--data", f"letor:{tmp_path / 'missing'}", "--json"])
    assert result.exit_code != 0 and "no such LETOR file" in str(result.exception)
    result = CliRunner().invoke(cli, ["eval", "drpo", "--data", "obd:/x", "--json"])
    assert result.exit_code != 0 and "expected letor:PATH" in str(result.exception)
