"""The calibration benchmark's held-out block: final models, frozen, scored on a fresh simulated stream."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import learners.calibration.benchmark_data as benchmark_data
from learners.calibration.benchmark import frozen_predictions, held_out_metrics
from learners.calibration.evaluation import method_factories, prequential


@pytest.fixture(scope="module")
def tasks(sources):
    """Two streams of the simulator (seeds 0 and 1000) on the small synthetic sources (conftest)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(benchmark_data, "load_sources", lambda *_: sources)
        return benchmark_data.sim_task(seed=0, requests=300), benchmark_data.sim_task(seed=1000, requests=300)


@pytest.mark.parametrize("method", ["umnn_scloss", "isotonic"])
def test_frozen_predictions_score_without_learning(tasks, method):
    train, fresh = tasks
    learner = method_factories(1e-2, train.context_fields, 0, {"average": 0.99})[method]()
    prequential(learner, train.examples, 16, method, progress=False)
    untouched = copy.deepcopy(learner)
    first = frozen_predictions(learner, fresh, 7)
    assert first.shape == fresh.labels.shape and np.all((first >= 0) & (first <= 1))
    # batching changes only float32 rounding
    assert np.allclose(first, frozen_predictions(learner, fresh, 64), rtol=0, atol=1e-6)
    # the learner is as it was: the next prequential pass predicts what an unscored copy predicts
    assert np.array_equal(prequential(learner, fresh.examples[:40], 16, method, progress=False),
                          prequential(untouched, fresh.examples[:40], 16, method, progress=False))
    assert frozen_predictions(None, fresh, 16) is fresh.p_hat  # the backbone is its own scores


def test_held_out_metrics_against_the_truth_by_hand(tasks):
    _, fresh = tasks
    truth = held_out_metrics(fresh.p_true, fresh, seed=0)
    assert truth["ece_true"] == 0 and truth["mae_true"] == 0
    assert all(truth[f"field_ece_true.{name}"] == 0 for name in fresh.fields)
    assert truth["ece"] > 0 and truth["label_noise_floor"] > 0  # labels are draws: only their noise is left
    half = held_out_metrics(0.5 * fresh.p_true, fresh, seed=0)
    # every prediction is below its truth, so each bin's gap and each field value's gap is one-signed
    assert half["mae_true"] == pytest.approx(0.5 * fresh.p_true.mean(), rel=1e-12)
    assert half["ece_true"] == pytest.approx(0.5 * fresh.p_true.mean(), rel=1e-12)
    assert half["field_ece_true.user_group"] == pytest.approx(0.5 * fresh.p_true.mean(), rel=1e-12)


def test_the_table_lists_the_held_out_figures_per_method_in_the_methods_order(tasks):
    from evaluation.bootstrap import Interval  # noqa: PLC0415
    from learners.calibration.benchmark import BenchmarkResult, format_benchmark  # noqa: PLC0415

    _, fresh = tasks
    summaries = {m: {"ece": Interval(v, v - 0.001, v + 0.001)} for m, v in (("isotonic", 0.0028), ("umnn_scloss", 0.0035))}
    held = {"seeds": [1000], "umnn_scloss": {"ece": 0.0043, "label_noise_floor": 0.0031, "ece_true": 0.0018,
                                             "mae_true": 0.01},
            "isotonic": {"ece": 0.0034, "label_noise_floor": 0.0021, "ece_true": 0.0021, "mae_true": 0.0206}}
    text = format_benchmark(BenchmarkResult("sim", summaries, {"goals": {"ece <= isotonic": False}, "held_out": held},
                                            fresh))
    lines = text.splitlines()
    assert "| isotonic | 0.0028 [0.0018, 0.0038] |" in lines
    start = lines.index("| method | ece | label_noise_floor | ece_true | mae_true |")
    assert lines[start + 2:start + 4] == ["| isotonic | 0.0034 | 0.0021 | 0.0021 | 0.0206 |",
                                          "| umnn_scloss | 0.0043 | 0.0031 | 0.0018 | 0.0100 |"]
    assert "seeds [1000]" in text and lines[-1] == "- ece <= isotonic: no"
    no_held = format_benchmark(BenchmarkResult("movielens", summaries, {"goals": {}}, fresh))
    assert "Held out" not in no_held
