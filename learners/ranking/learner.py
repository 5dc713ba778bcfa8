r"""LDRO (Dual-Rerank, arXiv 2604.07420): a list-wise RL reranker learned online from ``examples``.

One :meth:`LDROLearner.learn_many` call on a batch of :class:`~contracts.events.LabeledList`:

1. **Reward model** step: Poisson deviance of the logged item rewards under the
   position-factorised model (:mod:`learners.ranking.reward_model`).
2. **Teacher** step (if ``distill``): likelihood of the served order for the first
   ``teacher_pretrain_updates`` updates, of the preferred order after
   (:mod:`learners.ranking.teacher`).
3. **Policy** step. Student scores :math:`s = f_\theta(\text{list})` (:mod:`learners.ranking.network`);
   ``group_size`` lists per request from one vectorised Gumbel-Max pass
   (:func:`learners.policy.plackett_luce.gumbel_max_sample`), each valued by the reward model; the
   served list joins the group with its *logged* list reward (``use_logged_reward``).
   Advantage: ``decoupled`` (centre within the group, scale by the running std,
   :func:`learners.policy.advantages.decoupled`) or GRPO's group z-score. Loss:

   .. math:: \mathcal L = \mathcal L_{PG}(w_k = 1/\log_2(k+1)) + \lambda_{KD}\,
             \sum_t \mathrm{KL}(\pi_T(\cdot \mid y_{<t}) \,\|\, \pi_\theta(\cdot \mid y_{<t}))

   (:mod:`learners.ranking.objective`, :func:`learners.ranking.teacher.sequential_kd`).

Every ingredient is a switch on :class:`LDROConfig` (``decoupled``, ``rank_weighted``,
``distill``, ``group_size``, ``use_logged_reward``, ``set_aware``) so ablations are one flag
each. :func:`build_grpo` is the paper's GRPO comparison: same network, group-normalised
advantage, uniform step weights, no distillation.

Serving: :meth:`LDROLearner.rerank` ranks a :class:`~contracts.learner.RerankRequest` greedily
(``explore=False``: the PL mode) or by one Gumbel-Max sample (``explore=True``) and returns
the order's PL log-probability, which serving logs as ``impression.list_logprob``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import torch

from contracts.learner import RerankRequest, RerankResult
from contracts.state import make_generator
from learners.policy import advantages as adv
from learners.policy.batch import (
    DEFAULT_TASKS,
    TASK_INPUTS,
    ListBatch,
    ListPolicyLearning,
    Rejected,
    from_request,
    stack_lists,
)
from learners.policy.plackett_luce import greedy_order, gumbel_max_sample, list_logprob
from learners.policy.state import PolicyCheckpointing
from learners.ranking.network import SetScorer
from learners.ranking.objective import list_logprobs, weighted_policy_loss
from learners.ranking.reward_model import ItemRewardModel
from learners.ranking.teacher import PointerTeacher, preferred_order, sequential_kd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LDROConfig:
    """Hyper-parameters and ablation switches (all JSON-able; stored in every checkpoint)."""

    name: str = "ldro"
    n_features: int = 300
    tasks: tuple[str, ...] = DEFAULT_TASKS
    hidden: int = 32
    heads: int = 2
    set_aware: bool = True
    group_size: int = 8
    decoupled: bool = True
    rank_weighted: bool = True
    use_logged_reward: bool = True
    distill: bool = True
    kd_weight: float = 1.0
    kd_decay_updates: float = 0.0  # > 0: lambda_KD / (1 + updates / kd_decay_updates)
    kd_path: str = "target"  # "target": along the teacher's training target; "greedy": its own greedy list
    teacher_pretrain_updates: int = 20
    lr: float = 3e-3
    reward_lr: float = 1e-2
    teacher_lr: float = 3e-3
    running_decay: float = 0.99
    grad_clip: float = 1.0
    seed: int = 0
    #: Warm start from the existing ranker: the student's linear skip term starts at these weights
    #: on the task logits (e.g. ``{"click": 1.0}``), so update 0 ranks like the upstream/cold-start
    #: policy :math:`s_i = \sum_k w_k\,\mathrm{logit}(p_{ik})` instead of near-uniformly, and
    #: policy-gradient learning starts from the served system rather than from scratch.
    init_task_weights: dict[str, float] = field(default_factory=dict)
    #: Which task scores the student reads (policy_batch.from_examples): ``calibrated`` or
    #: ``upstream``. An online calibrator keeps changing, and with the upstream position in its
    #: context its calibrated click carries the position bias of the upstream order; ``upstream``
    #: keeps the reranker's inputs stationary (BENCHMARKS.md, closed loop).
    task_inputs: str = "calibrated"

    @classmethod
    def from_kwargs(cls, **config: Any) -> "LDROConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown LDRO settings: {unknown}; known: {sorted(known)}")
        if "tasks" in config:
            config["tasks"] = tuple(config["tasks"])
        cfg = cls(**config)
        if cfg.group_size < 1:
            raise ValueError("group_size must be >= 1")
        if cfg.n_features < 0:
            raise ValueError("n_features must be >= 0")
        unknown_tasks = sorted(set(cfg.init_task_weights) - set(cfg.tasks))
        if unknown_tasks:
            raise ValueError(f"init_task_weights names tasks {unknown_tasks} that are not in tasks {list(cfg.tasks)}")
        if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in cfg.init_task_weights.values()):
            raise ValueError(f"init_task_weights must be finite numbers, got {cfg.init_task_weights}")
        if cfg.task_inputs not in TASK_INPUTS:
            raise ValueError(f"task_inputs must be one of {TASK_INPUTS}, got {cfg.task_inputs!r}")
        if cfg.kd_path not in ("target", "greedy"):
            raise ValueError(f"kd_path must be 'target' or 'greedy', got {cfg.kd_path!r}")
        return cfg


class LDROLearner(ListPolicyLearning, PolicyCheckpointing):
    """Satisfies :class:`contracts.learner.Learner`; adds :meth:`rerank` and :meth:`scores` for serving."""

    family = "ldro"
    config_class = LDROConfig

    def __init__(self, config: LDROConfig) -> None:
        self.config = config
        self.name = config.name
        d_in = config.n_features + len(config.tasks)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.student = SetScorer(d_in, config.hidden, config.heads, config.set_aware)
            self.reward_model = ItemRewardModel(d_in, config.hidden)
            self.teacher = PointerTeacher(d_in, config.hidden)
            with torch.no_grad():
                for task, weight in config.init_task_weights.items():
                    self.student.skip.weight[0, config.n_features + config.tasks.index(task)] = float(weight)
        self.student_opt = torch.optim.Adam(self.student.parameters(), lr=config.lr)
        self.reward_opt = torch.optim.Adam(self.reward_model.parameters(), lr=config.reward_lr)
        self.teacher_opt = torch.optim.Adam(self.teacher.parameters(), lr=config.teacher_lr)
        self.generator = make_generator(config.seed * 2 + 1)  # learning-time sampling
        self.serve_generator = make_generator(config.seed * 2 + 2)  # exploration at serving
        self.running = adv.RunningMoments(config.running_decay)
        self.updates = 0
        self.examples_seen = 0
        self.last_rejected: list[Rejected] = []
        self.device = torch.device("cpu")
        self.sync: Any = None  # learners.distributed.sync.GradientSync on data-parallel ranks

    # -- learning ---------------------------------------------------------------------------
    def update(self, lists: ListBatch) -> dict[str, float]:
        """One update from an already-tensorised batch (what :mod:`bench.policy_bench` times)."""
        cfg = self.config
        x, mask = lists.inputs, lists.mask
        metrics: dict[str, float] = {"examples": float(lists.size)}
        # data-parallel: each loss's share of the union batch (items; sampled lists), see learners.distributed.sync
        s_items, s_lists = 1.0, 1.0
        if self.sync is not None:  # from the step's layout (one all-gather), else one all-reduce of the counts
            shares, self.sync.batch_shares = self.sync.batch_shares, None
            if shares is None:
                (s_lists, s_items), _ = self.sync.shares([float(lists.size), float(mask.sum())])
            else:
                s_lists, s_items = shares

        reward_loss = self.reward_model.loss(x, mask, lists.item_rewards)
        steps: list[tuple[torch.optim.Optimizer, torch.nn.Module, torch.Tensor, float]] = [
            (self.reward_opt, self.reward_model, reward_loss, s_items)]

        kd_weight = self._kd_weight()
        if cfg.distill:
            served = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
            target = served if self.updates < cfg.teacher_pretrain_updates else preferred_order(lists.item_rewards, mask)
            teacher_loss, teacher_steps = self.teacher.nll_and_steps(x, mask, target)
            teacher_steps = teacher_steps.detach()
            steps.append((self.teacher_opt, self.teacher, teacher_loss, s_items))
            metrics["teacher_nll"] = float(teacher_loss.detach())
        # reward model and teacher are independent: one gradient all-reduce for both, in flight while the
        # student (which reads neither) scores and samples; their Adam steps follow, before the rewards
        pending = self._backward(steps)
        metrics["reward_model_loss"] = float(reward_loss.detach())
        scores = self.student(x, mask)
        orders = gumbel_max_sample(scores, cfg.group_size, mask, self.generator,
                                   getattr(self, "noise_rows", None))  # [B, G, n]
        self._finish(steps, pending)
        with torch.no_grad():
            rewards = self.reward_model.list_value(x, mask, orders)  # [B, G]
        if cfg.use_logged_reward:
            served = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], 1, -1)
            orders = torch.cat([served, orders], dim=1)
            rewards = torch.cat([lists.list_reward.unsqueeze(1), rewards], dim=1)
        # data-parallel: the running moments' all-reduce is in flight while the log-probabilities and the
        # distillation term (neither reads the advantages) are computed
        finish_decoupled = adv.begin_decoupled(rewards, self.running) if cfg.decoupled else None
        per_list = list_logprobs(scores, orders, mask, cfg.rank_weighted)
        kd = None
        if cfg.distill and kd_weight > 0:
            if cfg.kd_path == "greedy":
                teacher_orders, teacher_logp = self.teacher.greedy(x, mask)
            else:  # "target": the teacher-forced distributions of this update's teacher step
                teacher_orders, teacher_logp = target, teacher_steps
            kd = sequential_kd(scores, mask, teacher_orders, teacher_logp)
        advantages = finish_decoupled() if finish_decoupled is not None else adv.group_normalised(rewards)
        loss = weighted_policy_loss(per_list, advantages)
        metrics["pg_loss"] = float(loss.detach())
        if self.sync is not None:
            loss = loss * s_lists
        if kd is not None:
            loss = loss + kd_weight * (kd * s_items if self.sync is not None else kd)
            metrics["kd"] = float(kd.detach())
        self._steps([(self.student_opt, self.student, loss, 1.0)])
        metrics["reward_mean"] = float(rewards.mean())
        self.updates += 1
        return metrics

    def _kd_weight(self) -> float:
        cfg = self.config
        if not cfg.distill:
            return 0.0
        if cfg.kd_decay_updates > 0:
            return cfg.kd_weight / (1.0 + self.updates / cfg.kd_decay_updates)
        return cfg.kd_weight

    def _steps(self, steps: list[tuple[torch.optim.Optimizer, torch.nn.Module, torch.Tensor, float]]) -> None:
        """Backward of each (optimizer, module, loss, share); data-parallel: ``share``-weighted losses and
        one all-reduce of all their gradients; then per module clip and Adam."""
        self._finish(steps, self._backward(steps))

    def _backward(self, steps: list[tuple[torch.optim.Optimizer, torch.nn.Module, torch.Tensor, float]]) -> Any:
        """The backward passes of :meth:`_steps`; data-parallel: returns their gradient all-reduce, started."""
        for optimizer, _, loss, share in steps:
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name}: non-finite loss {float(loss)}")
            optimizer.zero_grad(set_to_none=True)
            (loss * share if self.sync is not None and share != 1.0 else loss).backward()
        if self.sync is not None:
            return self.sync.start_reduce_grads(*(module for _, module, _, _ in steps))
        return None

    def _finish(self, steps: list[tuple[torch.optim.Optimizer, torch.nn.Module, torch.Tensor, float]],
                pending: Any) -> None:
        """Wait for the gradient sums (data-parallel), then per module clip and Adam."""
        if pending is not None:
            pending.wait()
        for optimizer, module, _, _ in steps:
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
            optimizer.step()

    # -- serving ----------------------------------------------------------------------------
    @torch.no_grad()
    def scores_for(self, lists: ListBatch) -> torch.Tensor:
        """Student scores ``[B, n]`` (the PL logits)."""
        lists = lists.to(self.device)
        return self.student(lists.inputs, lists.mask).cpu()  # no dropout/batch-norm: train mode is inference too

    def candidate_scores(self, request: RerankRequest) -> torch.Tensor:
        """Per-candidate PL scores ``[n]`` (serving's promotion gate computes log-probs from them)."""
        return self.scores_for(from_request(request, self.config.n_features, self.config.tasks,
                                            self.config.task_inputs))[0]

    def candidate_scores_many(self, requests: Sequence[RerankRequest], chunk: int = 64) -> list[torch.Tensor]:
        """:meth:`candidate_scores` of many requests, ``chunk`` lists per padded forward pass (the
        promotion gate scores its whole window for every snapshot; one pass per list was most of
        the server's background CPU)."""
        lists = [from_request(r, self.config.n_features, self.config.tasks, self.config.task_inputs) for r in requests]
        out: list[torch.Tensor] = []
        for start in range(0, len(lists), chunk):
            part = lists[start:start + chunk]
            scores = self.scores_for(stack_lists(part))
            out.extend(scores[i, : int(b.mask.shape[1])] for i, b in enumerate(part))
        return out

    def rerank(self, request: RerankRequest, explore: bool = False) -> RerankResult:
        """Rank the request's candidates: PL mode (``explore=False``) or one PL sample; with its log-prob."""
        return self.rerank_many([request], [explore])[0]

    def rerank_many(self, requests: Sequence[RerankRequest], explores: Sequence[bool]) -> list[RerankResult]:
        """:meth:`rerank` of several requests in one padded forward pass (serving's micro-batches).

        Row ``i`` is ranked as ``rerank(requests[i], explores[i])`` would rank it alone: the student
        masks the padding, so a list's scores do not depend on its batch neighbours (up to float
        summation order); greedy rows take the PL mode, exploring rows one Gumbel-Max sample."""
        if len(requests) != len(explores):
            raise ValueError(f"{len(requests)} requests but {len(explores)} explore flags")
        lists = [from_request(r, self.config.n_features, self.config.tasks, self.config.task_inputs) for r in requests]
        batch = lists[0] if len(lists) == 1 else stack_lists(lists)
        scores = self.scores_for(batch)
        orders = greedy_order(scores, batch.mask)
        sampled = [i for i, e in enumerate(explores) if e]
        if sampled:
            rows = torch.tensor(sampled)
            orders[rows] = gumbel_max_sample(scores[rows], 1, batch.mask[rows], self.serve_generator)[:, 0]
        logprobs = list_logprob(scores, orders, batch.mask).tolist()
        out = []
        for i, lst in enumerate(lists):
            n = int(lst.mask.shape[1])  # padding sorts last, so the first n places are the list's own
            out.append(RerankResult(order=orders[i, :n].tolist(), scores=scores[i, :n].tolist(),
                                    logprob=min(0.0, logprobs[i]), extras={"model": self.name, "updates": self.updates}))
        return out

    # -- checkpoints (PolicyCheckpointing) ------------------------------------------------
    def _parts(self) -> list[tuple[str, torch.nn.Module, torch.optim.Optimizer]]:
        return [("student", self.student, self.student_opt), ("reward_model", self.reward_model, self.reward_opt),
                ("teacher", self.teacher, self.teacher_opt)]



def build_ldro(**config: Any) -> LDROLearner:
    """LDRO with every ingredient on (override any :class:`LDROConfig` field by keyword)."""
    return LDROLearner(LDROConfig.from_kwargs(**config))


GRPO_DEFAULTS: dict[str, Any] = {"name": "grpo", "decoupled": False, "rank_weighted": False, "distill": False}


def build_grpo(**config: Any) -> LDROLearner:
    """The GRPO baseline: same network and sampling, group z-score advantage, no rank weights, no KD."""
    return LDROLearner(LDROConfig.from_kwargs(**{**GRPO_DEFAULTS, **config}))
