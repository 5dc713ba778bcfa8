"""LDRO's pieces: the policy gradient on a toy list, the pointer teacher, distillation, the reward model."""

from __future__ import annotations

import math

import pytest
import torch

from learners.policy.advantages import RunningMoments, decoupled, group_normalised
from learners.policy.plackett_luce import greedy_order, gumbel_max_sample, list_logprob, step_distributions
from learners.ranking.objective import list_policy_loss, rank_weights
from learners.ranking.reward_model import ItemRewardModel
from learners.ranking.teacher import PointerTeacher, preferred_order, sequential_kd

RELEVANCE = torch.tensor([0.0, 3.0, 1.0, 2.0])  # the best list is [1, 3, 2, 0]
BEST = torch.tensor([1, 3, 2, 0])


def dcg(orders: torch.Tensor) -> torch.Tensor:
    gains = (2 ** RELEVANCE - 1)[orders]
    return (gains / torch.log2(torch.arange(2, orders.shape[-1] + 2).float())).sum(-1)


@pytest.mark.parametrize("decoupled_adv,rank_weighted", [(True, True), (False, False)], ids=["ldro", "grpo"])
def test_policy_gradient_moves_probability_toward_higher_reward_lists(decoupled_adv, rank_weighted):
    scores = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.Adam([scores], lr=0.05)
    gen = torch.Generator().manual_seed(0)
    running = RunningMoments(0.9)
    p_best_start = float(list_logprob(scores.detach(), BEST.view(1, 4)).exp())
    for _ in range(150):
        orders = gumbel_max_sample(scores, 16, generator=gen)  # [1, 16, 4]
        rewards = dcg(orders)
        adv = decoupled(rewards, running) if decoupled_adv else group_normalised(rewards)
        loss = list_policy_loss(scores, orders, adv, rank_weighted=rank_weighted)
        opt.zero_grad()
        loss.backward()
        opt.step()
    p_best_end = float(list_logprob(scores.detach(), BEST.view(1, 4)).exp())
    assert p_best_start == pytest.approx(1 / 24)
    assert p_best_end > 10 * p_best_start
    assert greedy_order(scores)[0].tolist() == BEST.tolist()


def test_rank_weights_are_dcg_discounts_or_ones():
    assert rank_weights(3, True).tolist() == pytest.approx([1.0, 1 / math.log2(3), 0.5])
    assert rank_weights(3, False).tolist() == [1.0, 1.0, 1.0]


def test_rank_weighted_gradient_only_differs_below_the_top():
    scores = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    orders = torch.tensor([[[2, 0, 1]]])
    adv = torch.tensor([[1.0]])
    grads = []
    for weighted in (True, False):
        scores.grad = None
        list_policy_loss(scores, orders, adv, rank_weighted=weighted).backward()
        grads.append(scores.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_teacher_pretrained_on_exposure_order_reproduces_it():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, 5, generator=gen)
    mask = torch.ones(16, 6, dtype=torch.bool)
    mask[:4, 4:] = False
    target = torch.argsort(x[..., 0].masked_fill(~mask, float("-inf")), dim=-1, descending=True)  # logged order
    torch.manual_seed(0)
    teacher = PointerTeacher(5, hidden=16)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    start = float(teacher.nll(x, mask, target).detach())
    for _ in range(200):
        loss = teacher.nll(x, mask, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(teacher.nll(x, mask, target).detach()) < 0.3 * start
    decoded, logp = teacher.greedy(x, mask)
    assert (decoded[:, :4] == target[:, :4]).float().mean() > 0.9
    assert all(sorted(row.tolist()) == list(range(6)) for row in decoded)  # permutations, padding last
    assert (decoded[:4, 4:] >= 4).all()
    assert torch.allclose(logp.exp()[mask.all(-1)].sum(-1), torch.ones(12, 6), atol=1e-5)
    # the vectorised teacher-forced pass gives the decoder's step-by-step distributions
    forced = teacher.step_log_distributions(x, mask, decoded)
    valid = mask.gather(1, decoded)
    assert torch.allclose(forced.exp()[valid], logp.exp()[valid], atol=1e-5)


def test_sequential_distillation_pulls_the_student_to_the_teacher_order():
    gen = torch.Generator().manual_seed(1)
    teacher_scores = 2.0 * torch.randn(8, 5, generator=gen)  # a teacher whose steps are PL softmaxes
    mask = torch.ones(8, 5, dtype=torch.bool)
    mask[0, 3:] = False
    teacher_orders = greedy_order(teacher_scores, mask)
    teacher_logp = step_distributions(teacher_scores, teacher_orders, mask)
    student = torch.zeros(8, 5, requires_grad=True)
    opt = torch.optim.Adam([student], lr=0.1)
    start = float(sequential_kd(student, mask, teacher_orders, teacher_logp).detach())
    for _ in range(300):
        kd = sequential_kd(student, mask, teacher_orders, teacher_logp)
        opt.zero_grad()
        kd.backward()
        opt.step()
    assert start > 0.3 and float(kd.detach()) < 0.01 * start
    assert torch.equal(greedy_order(student.detach(), mask), teacher_orders)
    assert torch.isfinite(student.grad).all()


def test_preferred_order_lifts_engaged_items_and_keeps_position_ties():
    rewards = torch.tensor([[0.0, 2.5, 0.0, 1.0, 9.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    assert preferred_order(rewards, mask)[0].tolist() == [1, 3, 0, 2, 4]


def test_reward_model_list_value_is_the_discounted_sum_and_learns_position_bias():
    torch.manual_seed(0)
    model = ItemRewardModel(3, hidden=8)
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, True, False], [True] * 4])
    orders = torch.tensor([[[2, 0, 1, 3]], [[3, 2, 1, 0]]])
    u = model.item_log_value(x)
    c = model.position_log_factor(4)
    manual = sum(torch.exp(u[0, j] + c[k]) / math.log2(k + 2) for k, j in enumerate([2, 0, 1]))
    assert model.list_value(x, mask, orders)[0, 0].item() == pytest.approx(manual.item(), rel=1e-5)
    # clicks that only depend on position: the fitted position factors must fall with rank
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(256, 6, 3, generator=gen)
    m = torch.ones(256, 6, dtype=torch.bool)
    examine = 1.0 / torch.arange(1, 7).float()
    clicks = (torch.rand(256, 6, generator=gen) < examine).float()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        loss = model.loss(xs, m, clicks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    factors = model.position_log_factor(6).detach()
    assert (factors[1:] < factors[:-1]).all()


def _warm_start_request(n: int = 20, seed: int = 3):
    from contracts.learner import RerankRequest

    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    return RerankRequest(item_ids=tuple(f"i{k}" for k in range(n)), features=torch.rand((n, 8), generator=gen),
                         task_scores={"click": probs, "long_view": torch.full((n,), 0.3, dtype=torch.float64),
                                      "watch_time": torch.full((n,), 0.2, dtype=torch.float64)},
                         context={}), probs


def test_warm_start_ranks_like_the_upstream_click_score_before_any_update():
    from learners.ranking.learner import build_ldro

    request, probs = _warm_start_request()
    upstream = torch.argsort(probs, descending=True).tolist()
    warm = build_ldro(n_features=8, init_task_weights={"click": 1.0}).rerank(request).order
    cold = build_ldro(n_features=8).rerank(request).order
    assert warm[:5] == upstream[:5]
    assert cold[:5] != upstream[:5]  # from scratch the student is near-uniform, so its order is arbitrary


def test_warm_start_weights_must_name_known_tasks_and_survive_a_checkpoint():
    from learners.ranking.learner import build_ldro
    from learners.registry import build_learner

    with pytest.raises(ValueError, match="not in tasks"):
        build_ldro(init_task_weights={"clicks": 1.0})
    learner = build_ldro(n_features=8, init_task_weights={"click": 1.0})
    state = learner.state_dict()
    rebuilt = build_learner("ldro", **state.meta["config"])
    rebuilt.load_state_dict(state)
    request, _ = _warm_start_request(seed=4)
    assert rebuilt.rerank(request).order == learner.rerank(request).order


def test_upstream_task_inputs_ignore_the_calibrator_in_learning_and_in_serving():
    """A reranker reading upstream scores ranks the same whatever the calibrator made of them."""
    from dataclasses import replace as dc_replace

    from learners.policy.batch import from_examples
    from learners.ranking.learner import build_ldro
    from simulator.examples import simulated_labeled_lists

    request, probs = _warm_start_request()
    flipped = {t: 1.0 - v for t, v in request.task_scores.items()}  # a calibrator that reverses the order
    served = dc_replace(request, task_scores=flipped, upstream_scores=request.task_scores)
    upstream = build_ldro(n_features=8, init_task_weights={"click": 1.0}, task_inputs="upstream")
    calibrated = build_ldro(n_features=8, init_task_weights={"click": 1.0})
    assert upstream.rerank(served).order == upstream.rerank(request).order
    assert calibrated.rerank(served).order != calibrated.rerank(request).order

    examples = [
        ex.model_copy(update={"impression": ex.impression.model_copy(update={"items": [
            it.model_copy(update={"calibrated": {t: 0.01 for t in it.scores}}) for it in ex.impression.items]})})
        for ex in simulated_labeled_lists(3, seed=2)]
    upstream_logits = from_examples(examples, 0, task_inputs="upstream").task_logits
    calibrated_logits = from_examples(examples, 0).task_logits
    assert torch.allclose(calibrated_logits[from_examples(examples, 0).mask][:, 0],
                          torch.logit(torch.tensor(0.01)), atol=1e-4)
    assert not torch.allclose(upstream_logits, calibrated_logits)
    with pytest.raises(ValueError, match="task_inputs"):
        build_ldro(task_inputs="raw")


def test_rank_weighted_loss_is_the_dcg_discounted_sum_of_step_log_probs():
    """-A * sum_k w_k log pi(y_k | y_<k) with w_k = 1/log2(k+1): the top rank weighs most.

    Written out by hand for one list: each step's PL probability is exp(s_y) over the
    remaining items' exp(s), so a weighting reversed or shifted by a rank gives another value.
    """
    raw = [0.3, -0.2, 0.1, 1.5]
    scores = torch.tensor([raw], dtype=torch.float64)
    order = [3, 0, 2, 1]
    steps = []
    for k, item in enumerate(order):
        remaining = order[k:]
        steps.append(raw[item] - math.log(sum(math.exp(raw[j]) for j in remaining)))
    weights = [1 / math.log2(k + 2) for k in range(4)]
    adv = torch.tensor([[0.7]], dtype=torch.float64)
    expected = -0.7 * sum(w * lp for w, lp in zip(weights, steps))
    got = list_policy_loss(scores, torch.tensor([[order]]), adv, rank_weighted=True)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    plain = list_policy_loss(scores, torch.tensor([[order]]), adv, rank_weighted=False)
    assert float(plain) == pytest.approx(-0.7 * sum(steps), rel=1e-12)
    # the last step is certain (log 1 = 0): only the first three ranks carry gradient
    assert steps[-1] == pytest.approx(0.0, abs=1e-12)


def test_padded_candidates_change_neither_the_loss_nor_the_gradient():
    scores = torch.tensor([[0.3, -0.2, 0.1, 9.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False]])
    orders = torch.tensor([[[2, 0, 1, 3]]])
    adv = torch.tensor([[1.3]], dtype=torch.float64)
    padded = list_policy_loss(scores, orders, adv, mask=mask)
    padded.backward()
    trimmed_scores = scores.detach()[:, :3].clone().requires_grad_(True)
    trimmed = list_policy_loss(trimmed_scores, orders[..., :3], adv)
    trimmed.backward()
    assert padded.item() == pytest.approx(trimmed.item(), rel=1e-12)
    assert scores.grad[0, :3].tolist() == pytest.approx(trimmed_scores.grad[0].tolist(), rel=1e-12)
    assert scores.grad[0, 3] == 0
