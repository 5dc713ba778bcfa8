"""The calibration learner's warm-up replay (learners/calibration/replay.py).

The reservoir must be a uniform sample of every row offered (Algorithm R), the replay batches a draw
without replacement from it, the learner must take exactly ``replay_steps`` extra steps on exactly
those rows during the first ``replay_updates`` updates and none after, and a checkpoint taken
mid-warm-up must continue as if it had not been taken.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from learners.calibration.config import CalibrationConfig
from learners.calibration.context import P_CLIP
from learners.calibration.learner import build_umnn
from learners.calibration.replay import WarmupReplay
from learners.distributed.rank import check_data_parallel
from serving.components import build_component_model
from simulator.examples import simulated_examples

SMALL = {"steps": 16, "context_hidden": (32, 32), "integrand_hidden": (16, 16), "tasks": ("click",),
         "context_fields": ("position",), "lr": 0.05}


@pytest.fixture(scope="module")
def examples():
    return simulated_examples(60, seed=4)


def _rows(start: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return ids, (ids % 2), torch.arange(start, start + n).reshape(-1, 1)


def test_under_capacity_the_reservoir_keeps_every_row_in_order():
    replay = WarmupReplay(["click"], capacity=50)
    g = torch.Generator().manual_seed(0)
    replay.add({"click": _rows(0, 20)}, g)
    replay.add({"click": _rows(20, 30)}, g)
    logit, label, index = replay.rows["click"]
    assert logit.tolist() == list(range(50)) and index[:, 0].tolist() == list(range(50))
    assert torch.equal(label, logit % 2) and replay.offered["click"] == 50


def test_beyond_capacity_every_row_is_kept_with_the_same_probability():
    """Algorithm R: after N rows each row is in the reservoir with probability capacity / N."""
    capacity, batches, per = 21, 14, 15  # 210 rows, each kept with probability 0.1; the 2nd batch straddles the fill
    counts = torch.zeros(batches * per)
    draws = 400
    for seed in range(draws):
        replay = WarmupReplay(["click"], capacity=capacity)
        g = torch.Generator().manual_seed(seed)
        for b in range(batches):
            replay.add({"click": _rows(b * per, per)}, g)
        logit, _, index = replay.rows["click"]
        assert len(logit) == capacity and torch.equal(logit.long(), index[:, 0])  # a row's parts stay together
        assert len(set(logit.tolist())) == capacity
        counts[logit.long()] += 1
    rate = counts / draws
    first, last = rate[:per].mean().item(), rate[-per:].mean().item()
    assert first == pytest.approx(0.1, abs=0.02) and last == pytest.approx(0.1, abs=0.02)
    assert rate.min() > 0.03 and rate.max() < 0.2


@pytest.mark.parametrize("offered", [2, 3])
def test_algorithm_r_in_its_smallest_case(offered):
    """One slot, rows offered in one batch: each row ends up in it with probability 1 / offered."""
    draws = 3000
    counts = torch.zeros(offered)
    for seed in range(draws):
        replay = WarmupReplay(["click"], capacity=1)
        replay.add({"click": _rows(0, offered)}, torch.Generator().manual_seed(seed))
        counts[int(replay.rows["click"][0][0])] += 1
    assert (counts / draws).tolist() == pytest.approx([1 / offered] * offered, abs=0.035)


def test_the_draws_come_from_the_given_generator_only():
    kept = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        replay = WarmupReplay(["click"], capacity=5)
        g = torch.Generator().manual_seed(7)
        for b in range(6):
            replay.add({"click": _rows(b * 4, 4)}, g)
        kept.append((replay.rows["click"][0].clone(), replay.sample({"click": 3}, g)["click"][0]))
    assert torch.equal(kept[0][0], kept[1][0]) and torch.equal(kept[0][1], kept[1][1])


def test_single_rows_empty_batches_and_a_cleared_reservoir_count_right():
    replay = WarmupReplay(["like", "click"], capacity=4)
    g = torch.Generator().manual_seed(0)
    replay.add({"like": _rows(0, 0), "click": _rows(0, 1)}, g)  # an empty task first, then one row
    assert replay.size("click") == 1 and replay.size("like") == 0 and replay.offered == {"like": 0, "click": 1}
    replay.add({"click": _rows(1, 5)}, g)
    assert replay.size("click") == 4 and replay.offered["click"] == 6
    replay.clear()
    assert replay.rows == {} and replay.offered == {"like": 0, "click": 0}
    replay.add({"click": _rows(10, 3)}, g)
    assert replay.offered["click"] == 3 and replay.rows["click"][0].tolist() == [10.0, 11.0, 12.0]


def test_the_capacity_must_be_positive():
    assert WarmupReplay(["click"], capacity=1).capacity == 1
    with pytest.raises(ValueError, match="replay_rows"):
        WarmupReplay(["click"], capacity=0)


def test_a_reservoir_from_a_checkpoint_is_checked():
    tasks = ["click", "like"]

    def tensors(logit: int, label: int, index: int, task: str = "like") -> dict[str, torch.Tensor]:
        return {f"r.{task}.logit": torch.zeros(logit), f"r.{task}.label": torch.zeros(label),
                f"r.{task}.index": torch.zeros(index, 1, dtype=torch.long), f"r.{task}.offered": torch.tensor([9])}

    replay = WarmupReplay(tasks, capacity=3)
    replay.load_tensors(tensors(3, 3, 3), "r.")  # full to the capacity; only the second task has rows
    assert replay.size("like") == 3 and replay.size("click") == 0 and replay.offered["like"] == 9
    for bad in (tensors(3, 2, 2), tensors(3, 2, 3), tensors(2, 3, 3), tensors(4, 4, 4)):
        with pytest.raises(ValueError, match="reservoir of 'like'.*malformed"):
            WarmupReplay(tasks, capacity=3).load_tensors(bad, "r.")


def test_a_replay_batch_is_drawn_without_replacement_from_the_reservoir():
    replay = WarmupReplay(["click", "like"], capacity=100)
    g = torch.Generator().manual_seed(1)
    replay.add({"click": _rows(0, 30), "like": _rows(500, 5)}, g)
    assert replay.sample({"click": 0}, g) == {}
    assert len(replay.sample({"click": 1}, g)["click"][0]) == 1
    drawn = replay.sample({"long_view": 4, "click": 12, "like": 9}, g)
    assert set(drawn) == {"click", "like"}  # nothing learned of long_view yet
    click, like = drawn["click"][0], drawn["like"][0]
    assert len(click) == 12 and len(set(click.tolist())) == 12 and set(click.tolist()) <= set(range(30))
    assert sorted(like.tolist()) == list(range(500, 505))  # fewer rows than asked: all of them
    assert torch.equal(drawn["click"][1], click % 2) and torch.equal(drawn["click"][2][:, 0], click.long())


def test_the_warm_up_takes_replay_steps_then_drops_the_reservoir(examples):
    learner = build_umnn(replay_updates=3, replay_steps=2, **SMALL)
    for k, i in enumerate(range(0, 50, 10), start=1):
        learner.learn_many(examples[i:i + 10])
        assert learner.updates == k and learner.optimizer_steps == k + 2 * min(k, 3)
        assert (learner.replay.size("click") > 0) == (k < 3)


def test_replay_steps_are_steps_on_the_drawn_rows(examples):
    """A learner without replay, fed the same draws by hand, ends with the same weights."""
    replayed = build_umnn(replay_updates=2, replay_steps=2, **SMALL)
    plain = build_umnn(**SMALL)
    side = WarmupReplay(["click"], capacity=CalibrationConfig().replay_rows)
    g = torch.Generator().manual_seed(0)  # the learner's generator: CalibrationConfig.seed is 0
    for i in range(0, 40, 10):
        batch = examples[i:i + 10]
        replayed.learn_many(batch)
        built = plain.batch_builder(len(batch))
        for example in batch:
            built.add(example)
        plain.learn_built(built)
        if i < 20:
            rows = {"click": (built.logits("click", P_CLIP), built.label_tensor("click"), built.index_tensor("click"))}
            side.add(rows, g)
            for _ in range(2):
                plain.update_tensors(side.sample({"click": built.rows("click")}, g))
    for a, b in zip(replayed.module.parameters(), plain.module.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert replayed.optimizer_steps == plain.optimizer_steps == 8


def test_a_checkpoint_in_the_warm_up_carries_the_reservoir(examples):
    """Through safetensors bytes, as a checkpoint or a snapshot: the resumed learner continues exactly."""
    a = build_umnn(replay_updates=4, replay_steps=1, average=0.9, **SMALL)
    for i in range(0, 20, 10):
        a.learn_many(examples[i:i + 10])
    b = build_umnn(replay_updates=4, replay_steps=1, average=0.9, **SMALL)
    state = a.state_dict()
    state.tensors = safetensors_load(safetensors_save(state.tensors))  # as a checkpoint or snapshot carries it
    b.load_state_dict(state)
    assert torch.equal(a.replay.rows["click"][0], b.replay.rows["click"][0])
    assert b.replay.offered == a.replay.offered
    for learner in (a, b):
        for i in range(20, 50, 10):
            learner.learn_many(examples[i:i + 10])
    raw = torch.linspace(0.01, 0.9, 10)
    context = {"position": [1 + i % 5 for i in range(10)]}
    assert torch.equal(a.calibrate({"click": raw}, context)["click"], b.calibrate({"click": raw}, context)["click"])
    assert "replay.click.logit" not in a.state_dict().tensors  # after the warm-up: nothing left to carry


@pytest.mark.parametrize("kwargs, message", [
    ({"replay_updates": -1}, "replay_updates"),
    ({"replay_steps": 0}, "replay_steps"),
    ({"replay_rows": 0}, "replay_rows"),
])
def test_bad_replay_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_umnn(**kwargs)


def test_the_replay_settings_are_left_out_of_the_snapshot_at_their_defaults():
    assert not {"replay_updates", "replay_steps", "replay_rows"} & set(CalibrationConfig().as_json())
    used = CalibrationConfig(replay_updates=60, replay_steps=2).as_json()
    assert used["replay_updates"] == 60 and used["replay_steps"] == 2 and "replay_rows" not in used
    assert build_umnn().replay is None


def test_data_parallel_ranks_refuse_the_replay_and_scloss():
    check_data_parallel("umnn", build_umnn(sc_weight=0.0, **SMALL))  # what ranks can train
    with pytest.raises(ValueError, match="warm-up replay"):
        check_data_parallel("umnn", build_umnn(sc_weight=0.0, replay_updates=5, **SMALL))
    with pytest.raises(ValueError, match="without SCLoss"):
        check_data_parallel("umnn", build_umnn(**SMALL))


def test_a_snapshot_taken_in_the_warm_up_loads_in_the_server(examples):
    """The serving side rebuilds the calibrator from the snapshot's config, reservoir included."""
    learner = build_umnn(replay_updates=10, **SMALL)
    learner.learn_many(examples[:10])
    state = learner.state_dict()
    assert "replay.click.logit" in state.tensors
    state.tensors = safetensors_load(safetensors_save(state.tensors))
    served = build_component_model("umnn", state)
    raw = torch.linspace(0.01, 0.9, 10)
    context = {"position": [1 + i % 5 for i in range(10)]}
    assert torch.equal(served.calibrate({"click": raw}, context)["click"],
                       learner.calibrate({"click": raw}, context)["click"])


def test_a_batch_without_rows_does_not_end_the_warm_up(examples):
    learner = build_umnn(replay_updates=2, replay_steps=1, **SMALL)
    learner.learn_many(examples[:10])
    learner.learn_many([])  # no rows: no step, not an update, the reservoir stays
    assert learner.updates == 1 and learner.optimizer_steps == 2 and learner.replay.size("click") > 0
    learner.learn_many(examples[10:20])
    assert learner.updates == 2 and learner.optimizer_steps == 4 and learner.replay.size("click") == 0
