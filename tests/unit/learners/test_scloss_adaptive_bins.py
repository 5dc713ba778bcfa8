"""SCLoss with adaptive (running-quantile) bins: they span the actual range of p, so the loss sees a
miscalibration inside [0, 0.05] that the paper's equal-width bins (all in the first bin) cannot."""

from __future__ import annotations

import pytest
import torch

from learners.calibration.config import CalibrationConfig
from learners.calibration.learner import build_umnn
from learners.calibration.scloss import SCLossConfig, SmoothCalibrationLoss


def _low_p_batch(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """p in [0, 0.05]; labels over-predicted at the low end, under-predicted at the high end, with the same mean."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, generator=g, dtype=torch.float64) * 0.05
    rate = torch.where(p < 0.025, torch.zeros_like(p), 2 * p.mean().expand_as(p))  # same mean, wrong shape
    y = (torch.rand(n, generator=g, dtype=torch.float64) < rate).double()
    y = y * (p.sum() / y.sum())  # exactly mean-calibrated (soft labels), so one bin sees no gap at all
    return p, y


def test_quantile_bins_each_hold_a_tenth_of_concentrated_predictions():
    p, y = _low_p_batch()
    uniform = SmoothCalibrationLoss(SCLossConfig(bins=10, beta=0.0))
    quantile = SmoothCalibrationLoss(SCLossConfig(bins=10, beta=0.0, binning="quantile"))
    uniform(p, y)
    quantile(p, y)
    assert uniform.count.tolist()[1:] == [0.0] * 9  # equal width: everything in the first bin
    assert quantile.count.min() >= 0.09 * len(p) and quantile.count.max() <= 0.11 * len(p)


def test_only_quantile_bins_see_a_miscalibration_inside_the_range():
    p, y = _low_p_batch()
    fixed = float(SmoothCalibrationLoss(SCLossConfig(bins=10, beta=0.0))(p, y))
    adaptive = float(SmoothCalibrationLoss(SCLossConfig(bins=10, beta=0.0, binning="quantile"))(p, y))
    assert fixed == pytest.approx(0.0, abs=1e-12)
    assert adaptive > 1e-3


def test_the_edges_are_a_running_estimate_of_the_batch_quantiles():
    beta = 0.75
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4, beta=beta, binning="quantile"))
    first = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05], dtype=torch.float64)
    second = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0], dtype=torch.float64)
    levels = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    loss(first, torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(loss.edges, torch.quantile(first, levels))  # the first batch sets them
    loss(second, torch.zeros(5, dtype=torch.float64))
    want = beta * torch.quantile(first, levels) + (1 - beta) * torch.quantile(second, levels)
    assert torch.allclose(loss.edges, want) and float(loss.edge_batches) == 2.0


def test_state_round_trip_and_uniform_states_are_unchanged():
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4, binning="quantile"))
    loss(torch.tensor([0.1, 0.2, 0.3, 0.9]), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    state = loss.state_tensors("c.")
    assert sorted(state) == ["c.accuracy", "c.confidence", "c.count", "c.edge_batches", "c.edges"]
    fresh = SmoothCalibrationLoss(SCLossConfig(bins=4, binning="quantile"))
    fresh.load_tensors(state, "c.")
    assert torch.equal(fresh.edges, loss.edges) and torch.equal(fresh.edge_batches, loss.edge_batches)
    uniform_state = SmoothCalibrationLoss(SCLossConfig(bins=4)).state_tensors("c.")
    assert sorted(uniform_state) == ["c.accuracy", "c.confidence", "c.count"]  # as before the option existed
    with pytest.raises(ValueError, match=r"SCLoss state has no c\.edges \(quantile bins need it\)"):
        fresh.load_tensors(uniform_state, "c.")


def test_the_learners_default_to_adaptive_bins_and_the_paper_bins_stay_available():
    assert CalibrationConfig().sc_binning == "quantile"
    assert SCLossConfig().binning == "uniform"  # SCLoss on its own keeps the paper's bins
    assert build_umnn(tasks=("click",)).sc_losses["click"].config.binning == "quantile"
    assert build_umnn(tasks=("click",), sc_binning="uniform").sc_losses["click"].config.binning == "uniform"
    with pytest.raises(ValueError, match=r"SCLoss binning must be one of uniform, quantile, got 'magic'"):
        CalibrationConfig(sc_binning="magic")


@pytest.mark.parametrize("bins", [1, 2, 5])
def test_a_fresh_quantile_state_has_k_minus_1_float64_edges_and_no_batch(bins):
    state = SmoothCalibrationLoss(SCLossConfig(bins=bins, binning="quantile")).state_tensors("")
    assert state["edges"].dtype == torch.float64 and state["edges"].shape == (bins - 1,)
    assert state["edge_batches"].dtype == torch.float64 and state["edge_batches"].tolist() == [0.0]


def test_the_edges_come_back_in_the_predictions_dtype_and_are_kept_in_float64():
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4, binning="quantile"))
    p = torch.tensor([0.1, 0.2, 0.3, 0.9], dtype=torch.float32)
    assert loss.boundaries(p).dtype == torch.float32
    assert loss.edges.dtype == torch.float64


def test_two_quantile_bins_split_at_the_median_and_one_bin_has_no_edges():
    p = torch.tensor([0.1, 0.2, 0.3, 0.9], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    two = SmoothCalibrationLoss(SCLossConfig(bins=2, beta=0.0, binning="quantile"))
    two(p, y)
    assert two.edges.tolist() == [0.25] and two.edge_batches.tolist() == [1.0]
    assert two.count.tolist() == [2.0, 2.0]
    one = SmoothCalibrationLoss(SCLossConfig(bins=1, beta=0.0, binning="quantile"))
    loss = one(p, y)
    assert one.edges.shape == (0,) and one.edge_batches.tolist() == [0.0]  # nothing to estimate
    assert float(loss) == pytest.approx(4 * (0.5 - 0.375) ** 2, rel=1e-12)  # one bin: the global gap
    fresh = SmoothCalibrationLoss(SCLossConfig(bins=1, binning="quantile"))
    fresh.load_tensors(one.state_tensors("s."), "s.")  # a one-bin state loads back
    assert fresh.edges.shape == (0,)
