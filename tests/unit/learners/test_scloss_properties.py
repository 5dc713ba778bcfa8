"""SCLoss (UMC, Bai et al. 2025) on small batches computed by hand and by a plain per-bin loop.

Checked: the value of L_SC = sum_k (a~_k - c~_k)^2 n~_k over the bins present in the batch, the EMA
caches (only present bins move, stored detached), the bin edges (equal width, a value on an
edge belongs to the lower bin, as ``torch.bucketize`` in UMC's loop), the gradient (through this
batch's confidence only), the configuration bounds and the checkpoint tensors.
"""

from __future__ import annotations

import pytest
import torch

from learners.calibration.scloss import SCLossConfig, SmoothCalibrationLoss


def _bin(p: float, bins: int) -> int:
    """Equal-width bin of p in [0, 1]; p on an edge k/bins goes to bin k - 1 (bins are (a, b], the first [0, b])."""
    for k in range(bins):
        if p <= (k + 1) / bins:
            return k
    return bins - 1


def _loop_reference(p: list[float], y: list[float], caches: list[list[float]], bins: int, beta: float) -> float:
    """L_SC of one batch from the module docstring, one bin at a time; updates ``caches`` in place."""
    acc_c, con_c, num_c = caches
    loss = 0.0
    for k in range(bins):
        members = [i for i in range(len(p)) if _bin(p[i], bins) == k]
        if not members:
            continue
        a = sum(y[i] for i in members) / len(members)
        c = sum(p[i] for i in members) / len(members)
        acc_c[k] = beta * acc_c[k] + (1 - beta) * a
        con_c[k] = beta * con_c[k] + (1 - beta) * c
        num_c[k] = beta * num_c[k] + (1 - beta) * len(members)
        loss += (acc_c[k] - con_c[k]) ** 2 * num_c[k]
    return loss


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_the_first_batch_gives_the_hand_computed_loss_and_caches() -> None:
    # 4 bins of width 0.25, beta = 0.75: bin 0 holds p = 0.1, 0.2 (y = 0, 1); bin 2 holds 0.6 (y = 1);
    # bin 3 holds 0.9 (y = 1); bin 1 is empty.
    # bin 0: a~ = .25 * .5 = .125, c~ = .25 * .15 = .0375, n~ = .25 * 2 = .5 -> .0875^2 * .5 = .003828125
    # bin 2: a~ = .25, c~ = .15, n~ = .25 -> .01 * .25 = .0025;  bin 3: .25, .225, .25 -> .00015625
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4, beta=0.75))
    got = loss(_t([0.1, 0.2, 0.6, 0.9]), torch.tensor([0.0, 1.0, 1.0, 1.0]))  # float32 labels are cast
    assert got.dim() == 0 and got.dtype == torch.float64
    assert float(got) == pytest.approx(0.003828125 + 0.0025 + 0.00015625, rel=1e-12)
    assert loss.accuracy.tolist() == pytest.approx([0.125, 0.0, 0.25, 0.25], abs=1e-12)
    assert loss.confidence.tolist() == pytest.approx([0.0375, 0.0, 0.15, 0.225], abs=1e-12)
    assert loss.count.tolist() == pytest.approx([0.5, 0.0, 0.25, 0.25], abs=1e-12)


def test_a_sequence_of_batches_matches_the_per_bin_loop_and_empty_bins_keep_their_cache() -> None:
    bins, beta = 5, 0.6
    loss = SmoothCalibrationLoss(SCLossConfig(bins=bins, beta=beta))
    caches = [[0.0] * bins, [0.0] * bins, [0.0] * bins]
    batches = [
        ([0.05, 0.13, 0.31, 0.33, 0.95], [0, 0, 1, 0, 1]),
        ([0.51, 0.55, 0.58], [1, 1, 0]),  # only bin 2: the other bins' caches must not move
        ([0.07, 0.71, 0.83, 0.99, 0.97, 0.45], [1, 1, 0, 1, 1, 0]),
        ([0.5], [1]),  # a batch of one
    ]
    for p, y in batches:
        before = [loss.accuracy.clone(), loss.confidence.clone(), loss.count.clone()]
        got = loss(_t(p), _t([float(v) for v in y]))
        want = _loop_reference(p, [float(v) for v in y], caches, bins, beta)
        assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-15)
        present = {_bin(v, bins) for v in p}
        for cache, ref, old in zip((loss.accuracy, loss.confidence, loss.count), caches, before):
            assert cache.tolist() == pytest.approx(ref, abs=1e-12)
            for k in set(range(bins)) - present:
                assert float(cache[k]) == float(old[k])
        assert not loss.accuracy.requires_grad and not loss.confidence.requires_grad


def test_a_value_on_a_bin_edge_belongs_to_the_lower_bin_and_the_ends_to_the_outer_bins() -> None:
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4, beta=0.0))
    loss(_t([0.0, 0.25, 0.5, 1.0]), _t([1.0, 1.0, 1.0, 1.0]))
    # beta = 0: the cache is this batch's per-bin count, confidence and accuracy
    assert loss.count.tolist() == [2.0, 1.0, 0.0, 1.0]
    assert loss.confidence.tolist() == pytest.approx([0.125, 0.5, 0.0, 1.0])
    assert loss.accuracy.tolist() == [1.0, 1.0, 0.0, 1.0]


def test_a_value_just_above_an_edge_belongs_to_the_upper_bin_at_the_inputs_precision() -> None:
    loss = SmoothCalibrationLoss(SCLossConfig(bins=5, beta=0.0))
    loss(_t([0.2, 0.2 + 1e-9, 0.4 + 1e-9]), _t([0.0, 1.0, 1.0]))  # float32 edges would be 0.2000000030, ...
    assert loss.count.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_without_memory_the_loss_is_the_count_weighted_squared_calibration_gap() -> None:
    p, y = [0.12, 0.18, 0.64, 0.66, 0.68], [1.0, 1.0, 0.0, 1.0, 0.0]
    got = SmoothCalibrationLoss(SCLossConfig(bins=2, beta=0.0))(_t(p), _t(y))
    expected = (1.0 - 0.15) ** 2 * 2 + (1 / 3 - 0.66) ** 2 * 3
    assert float(got) == pytest.approx(expected, rel=1e-12)
    one_bin = SmoothCalibrationLoss(SCLossConfig(bins=1, beta=0.0))(_t(p), _t(y))
    assert float(one_bin) == pytest.approx((0.6 - sum(p) / 5) ** 2 * 5, rel=1e-12)


def test_the_gradient_flows_through_this_batchs_confidence_only() -> None:
    beta = 0.75
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4, beta=beta))
    loss(_t([0.1, 0.6]), _t([1.0, 0.0]))
    # caches now: bin 0 a~ = .25, c~ = .025, n~ = .25; bin 2 a~ = 0, c~ = .15, n~ = .25
    p = _t([0.05, 0.2, 0.7]).requires_grad_(True)
    loss(p, _t([0.0, 1.0, 1.0])).backward()
    # L_k = (a~ - c~)^2 n~ with c~ = beta c_cache + (1 - beta) mean_k(p): dL/dp_i = -2 (a~ - c~) n~ (1 - beta) / n_k
    a0, c0, n0 = beta * 0.25 + (1 - beta) * 0.5, beta * 0.025 + (1 - beta) * 0.125, beta * 0.25 + (1 - beta) * 2
    a2, c2, n2 = (1 - beta) * 1.0, beta * 0.15 + (1 - beta) * 0.7, beta * 0.25 + (1 - beta) * 1
    g0 = -2 * (a0 - c0) * n0 * (1 - beta) / 2
    g2 = -2 * (a2 - c2) * n2 * (1 - beta) / 1
    assert p.grad.tolist() == pytest.approx([g0, g0, g2], rel=1e-9)


def test_an_empty_batch_gives_a_zero_of_the_input_dtype() -> None:
    loss = SmoothCalibrationLoss(SCLossConfig(bins=3))
    got = loss(torch.zeros(0, dtype=torch.float64), torch.zeros(0))
    assert got.shape == () and got.dtype == torch.float64 and float(got) == 0.0
    assert loss.count.tolist() == [0.0, 0.0, 0.0]


def test_the_given_configuration_sets_the_cache_size_and_the_defaults_are_the_papers() -> None:
    assert SmoothCalibrationLoss(SCLossConfig(bins=3)).count.shape == (3,)
    default = SmoothCalibrationLoss()
    assert default.config == SCLossConfig(bins=10, beta=0.95, weight=1e-2)
    assert default.accuracy.tolist() == [0.0] * 10 and default.confidence.tolist() == [0.0] * 10


@pytest.mark.parametrize("kwargs", [{"bins": 1}, {"beta": 0.0}, {"beta": 0.999}, {"weight": 0.0}])
def test_the_boundary_settings_are_accepted(kwargs: dict) -> None:
    SCLossConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"bins": 0}, r"bins must be >= 1, got 0"),
    ({"beta": 1.0}, r"beta must be in \[0, 1\), got 1.0"),
    ({"beta": -0.5}, r"beta must be in \[0, 1\), got -0.5"),
    ({"weight": -0.1}, r"weight \(lambda\) must be >= 0, got -0.1"),
])
def test_bad_settings_are_refused_with_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SCLossConfig(**kwargs)


def test_the_caches_round_trip_through_prefixed_state_tensors_as_copies() -> None:
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4, beta=0.5))
    loss(_t([0.1, 0.6, 0.9]), _t([1.0, 0.0, 1.0]))
    state = loss.state_tensors("click.")
    assert sorted(state) == ["click.accuracy", "click.confidence", "click.count"]
    assert torch.equal(state["click.count"], loss.count) and torch.equal(state["click.accuracy"], loss.accuracy)
    assert torch.equal(state["click.confidence"], loss.confidence)
    state["click.count"].add_(100.0)  # a copy: the live cache is untouched
    assert float(loss.count.max()) < 100.0

    fresh = SmoothCalibrationLoss(SCLossConfig(bins=4, beta=0.5))
    fresh.load_tensors(loss.state_tensors("click."), "click.")
    for name in ("accuracy", "confidence", "count"):
        assert torch.equal(getattr(fresh, name), getattr(loss, name))
    source = loss.state_tensors("x/")
    fresh.load_tensors(source, "x/")
    source["x/accuracy"].add_(5.0)  # loading copies too
    assert torch.equal(fresh.accuracy, loss.accuracy)


def test_loading_a_cache_of_another_bin_count_is_refused_naming_it() -> None:
    loss = SmoothCalibrationLoss(SCLossConfig(bins=4))
    state = SmoothCalibrationLoss(SCLossConfig(bins=3)).state_tensors("p.")
    with pytest.raises(ValueError, match=r"SCLoss cache p\.accuracy has shape \(3,\), expected \(4,\)"):
        loss.load_tensors(state, "p.")
    good = SmoothCalibrationLoss(SCLossConfig(bins=4)).state_tensors("p.")
    good["p.count"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"p\.count has shape \(5,\), expected \(4,\)"):
        loss.load_tensors(good, "p.")
