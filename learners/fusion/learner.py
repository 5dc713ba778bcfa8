r"""DRPO (SaFRO, arXiv 2603.19585): a multi-task fusion policy learned online from ``examples``.

Serving ranks a request's candidates by the fused score :math:`\sum_k w_k\, g(\hat p_{ik})`
with :math:`w \sim \pi_\theta(\cdot \mid ctx)` (:mod:`learners.fusion.policy`) and logs ``w`` and
:math:`\log\pi_\theta(w \mid ctx)` as ``impression.fusion``. One :meth:`DRPOLearner.learn_many`
on a batch of :class:`~contracts.events.LabeledList` (RECONSTRUCTION of the paper's method,
DESIGN.md "DRPO"):

1. **Satisfaction reward model** step on the served lists' ``query_reward``
   (:mod:`learners.fusion.satisfaction`, or :mod:`learners.fusion.satisfaction_contextual`
   with ``reward_model="contextual"``; with ``reward_model="cascade"``,
   :mod:`learners.fusion.satisfaction_cascade`, also on the items' click and long-view labels).
2. **Group**: ``group_size`` weight vectors per request from the current policy (frozen as
   :math:`\pi_{old}`), each ranks the list and is valued by :math:`R_\phi`; the served vector
   joins the group with its *logged* satisfaction and its behaviour log-prob.
3. **Dual-relative advantage**: :math:`A = z_{group}(r) + (r - \mu_{run})/\sigma_{run}`
   (:func:`learners.policy.advantages.dual_relative`; each term switchable).
4. **Clipped-ratio update** (PPO, Schulman et al., 2017, with the dual clip of Ye et al.,
   2020 for negative advantages) against the behaviour log-prob, plus a KL penalty to the
   previous snapshot :math:`\pi_{ref}` (refreshed every ``reference_every`` updates):

   .. math:: \mathcal L = -\mathbb E\Big[\max\big(\min(\rho A,\ \mathrm{clip}(\rho, 1\pm\epsilon) A),\ c\,A\big)\Big]
             + \beta\,\mathrm{KL}(\pi_{ref}(\cdot\mid ctx) \,\|\, \pi_\theta(\cdot\mid ctx)),
             \quad \rho = \frac{\pi_\theta(w \mid ctx)}{\pi_{behaviour}(w \mid ctx)}

   (the ``max(·, cA)`` applies only where :math:`A < 0`; :mod:`learners.fusion.objective`).

Serving API: :meth:`DRPOLearner.fusion` -> ``(weights by task, log-prob)`` (and
:meth:`DRPOLearner.fusion_weights` ``(task_scores, context, explore)`` with the same result, the
fusion-role call of :mod:`serving.components`), and
:meth:`DRPOLearner.rerank` -> :class:`~contracts.learner.RerankResult` with the fused order,
fused scores, ``logprob=None`` (the order is a deterministic function of ``w``; the
randomness is in ``w``) and ``extras = {"fusion": weights, "fusion_logprob": logprob}``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch

from contracts.learner import RerankRequest, RerankResult
from contracts.state import make_generator
from learners.fusion.context import context_dims, request_context, task_statistics
from learners.fusion.objective import clipped_policy_loss
from learners.fusion.policy import TaskRelationPolicy, gaussian_kl, gaussian_logprob
from learners.fusion.satisfaction import satisfaction_model
from learners.policy import advantages as adv
from learners.policy.batch import (DEFAULT_TASKS, ListBatch, ListPolicyLearning, Rejected, from_request,
                                  from_task_scores)
from learners.policy.state import PolicyCheckpointing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DRPOConfig:
    """Hyper-parameters and ablation switches (JSON-able; stored in every checkpoint)."""

    name: str = "drpo"
    n_features: int = 300
    tasks: tuple[str, ...] = DEFAULT_TASKS
    hidden: int = 16
    heads: int = 2
    task_relation: bool = True
    group_size: int = 8
    #: The two halves of SaFRO's "relative preference comparisons within groups and across
    #: batches" (arXiv 2603.19585; :func:`learners.policy.advantages.dual_relative`):
    #: ``within_group`` the z-score among a request's G weight vectors, ``across_batches`` the
    #: z-score against the running (EMA) moments of earlier batches. ``across_batches=False``
    #: is the GRPO-style, group-relative-only ablation (``streamrank eval fusion``'s ``no_dual``).
    within_group: bool = True
    across_batches: bool = True
    #: Append the request's query-intent one-hot (``context["query_type"]``) to the policy's and
    #: the reward model's context (:mod:`learners.fusion.context`); off keeps the old shapes.
    query_context: bool = False
    #: The satisfaction reward model R_phi: ``pooled`` (:mod:`learners.fusion.satisfaction`) or
    #: ``contextual`` (:mod:`learners.fusion.satisfaction_contextual`: a context baseline plus
    #: context-weighted, list-centred task proxies) or ``cascade``
    #: (:mod:`learners.fusion.satisfaction_cascade`: a DBN-style cascade whose per-item click and
    #: satisfaction heads also learn from the item-level click and long-view labels; what
    #: ``streamrank eval fusion`` runs). The default keeps existing snapshots' shapes.
    reward_model: str = "pooled"
    use_logged_reward: bool = True
    clip: float = 0.2
    dual_clip: float = 3.0
    kl_weight: float = 0.05
    reference_every: int = 10
    epochs: int = 2
    init_mean: float = 1.0
    init_std: float = 0.3
    lr: float = 3e-3
    reward_lr: float = 3e-3
    reward_steps: int = 2
    running_decay: float = 0.99
    grad_clip: float = 1.0
    seed: int = 0

    @classmethod
    def from_kwargs(cls, **config: Any) -> "DRPOConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown DRPO settings: {unknown}; known: {sorted(known)}")
        if "tasks" in config:
            config["tasks"] = tuple(config["tasks"])
        cfg = cls(**config)
        if cfg.group_size < 1 or cfg.epochs < 1 or not cfg.tasks:
            raise ValueError("group_size and epochs must be >= 1 and tasks non-empty")
        return cfg


class DRPOLearner(ListPolicyLearning, PolicyCheckpointing):
    """Satisfies :class:`contracts.learner.Learner`; adds :meth:`fusion` and :meth:`rerank` for serving."""

    family = "drpo"
    config_class = DRPOConfig

    def __init__(self, config: DRPOConfig) -> None:
        self.config = config
        self.name = config.name
        K, C = len(config.tasks), context_dims(len(config.tasks), config.query_context)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.policy = TaskRelationPolicy(K, C, config.hidden, config.heads, config.task_relation,
                                             config.init_mean, config.init_std)
            self.satisfaction = satisfaction_model(config.reward_model, config.n_features, K, C)
        self.reference = copy.deepcopy(self.policy).requires_grad_(False)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.reward_opt = torch.optim.Adam(self.satisfaction.parameters(), lr=config.reward_lr)
        self.generator = make_generator(config.seed * 2 + 1)
        self.serve_generator = make_generator(config.seed * 2 + 2)
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
        mask, logits = lists.mask, lists.task_logits
        stats = task_statistics(logits, mask)
        ctx = self._context(lists)
        metrics: dict[str, float] = {"examples": float(lists.size)}

        s_lists = 1.0  # data-parallel: this rank's share of the union's lists (learners.distributed.sync)
        if self.sync is not None:
            (s_lists,), _ = self.sync.shares([float(lists.size)])
        for _ in range(cfg.reward_steps):
            if getattr(self.satisfaction, "uses_item_labels", False):  # the cascade model: item labels too
                loss = self.satisfaction.loss(lists.features, logits, mask, ctx, lists.query_reward,
                                              lists.clicks, lists.long_views)
            else:
                loss = self.satisfaction.loss(lists.features, logits, mask, ctx, lists.query_reward)
            self._step(self.reward_opt, self.satisfaction, loss, s_lists)
        metrics["reward_model_loss"] = float(loss.detach())

        with torch.no_grad():
            mean, log_std = self.policy(stats, ctx)
            rows = getattr(self, "noise_rows", None)  # data-parallel: this rank's rows of the union's noise
            offset, total = rows if rows is not None else (0, mean.shape[0])
            noise = torch.randn((total, cfg.group_size, mean.shape[-1]), generator=self.generator)
            noise = noise[offset:offset + mean.shape[0]].to(mean.device)  # CPU stream: same draws on any device
            actions = mean.unsqueeze(1) + noise * torch.exp(log_std).unsqueeze(1)  # [B, G, K]
            old_logp = gaussian_logprob(actions, mean, log_std)
            rewards = torch.sigmoid(self.satisfaction.logits(lists.features, logits, mask, ctx,
                                                             self._orders(logits, mask, actions)))
            group_mask = torch.ones_like(rewards, dtype=torch.bool)
            if cfg.use_logged_reward:
                has = lists.has_fusion
                actions = torch.cat([lists.fusion_weights.unsqueeze(1), actions], dim=1)
                old_logp = torch.cat([torch.nan_to_num(lists.fusion_logprob).unsqueeze(1), old_logp], dim=1)
                rewards = torch.cat([lists.query_reward.unsqueeze(1), rewards], dim=1)
                group_mask = torch.cat([has.unsqueeze(1), group_mask], dim=1)
            advantage = adv.dual_relative(rewards, self.running, group_mask, within_group=cfg.within_group,
                                          across_batches=cfg.across_batches)
            ref_mean, ref_log_std = self.reference(stats, ctx)
            s_slots = self.sync.shares([float(group_mask.sum())])[0][0] if self.sync is not None else 1.0

        for _ in range(cfg.epochs):
            mean, log_std = self.policy(stats, ctx)
            pg = clipped_policy_loss(gaussian_logprob(actions, mean, log_std), old_logp, advantage, group_mask,
                                     cfg.clip, cfg.dual_clip)
            kl = gaussian_kl(ref_mean, ref_log_std, mean, log_std).mean()
            loss = pg + cfg.kl_weight * kl
            if self.sync is not None:  # pg is a mean over real group slots, kl over lists
                loss = pg * s_slots + cfg.kl_weight * kl * s_lists
            self._step(self.policy_opt, self.policy, loss)
        metrics.update(pg_loss=float(pg.detach()), kl=float(kl.detach()), reward_mean=float(rewards.mean()),
                       weight_mean=float(mean.detach().mean()))
        self.updates += 1
        if cfg.reference_every > 0 and self.updates % cfg.reference_every == 0:
            self.reference.load_state_dict(self.policy.state_dict())
        return metrics

    def _context(self, lists: ListBatch) -> torch.Tensor:
        """The request context the policy and the reward model see (:mod:`learners.fusion.context`)."""
        return request_context(lists.task_logits, lists.mask, lists.activity,
                               lists.query_types if self.config.query_context else None)

    @staticmethod
    def _orders(task_logits: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Rank by the fused score of each weight vector: ``[B, G, n]``."""
        fused = torch.einsum("bnk,bgk->bgn", task_logits, actions)
        fused = fused.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return torch.argsort(fused, dim=-1, descending=True, stable=True)

    def _step(self, optimizer: torch.optim.Optimizer, module: torch.nn.Module, loss: torch.Tensor,
              share: float = 1.0) -> None:
        """Backward, (data-parallel: ``share``-weighted loss, gradients summed over ranks), clip, Adam."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: non-finite loss {float(loss)}")
        optimizer.zero_grad(set_to_none=True)
        if self.sync is not None and share != 1.0:
            loss = loss * share
        loss.backward()
        if self.sync is not None:
            self.sync.reduce_grads(module)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
        optimizer.step()

    # -- serving ----------------------------------------------------------------------------
    @torch.no_grad()
    def fusion_for(self, lists: ListBatch, explore: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``[B, K]`` (the policy mean, or a sample when exploring) and their log-density ``[B]``."""
        lists = lists.to(self.device)
        mean, log_std = self.policy(task_statistics(lists.task_logits, lists.mask), self._context(lists))
        weights = mean
        if explore:
            weights = mean + torch.randn(mean.shape, generator=self.serve_generator).to(mean.device) * torch.exp(log_std)
        return weights.cpu(), gaussian_logprob(weights, mean, log_std).cpu()

    def fusion(self, request: RerankRequest, explore: bool = False) -> tuple[dict[str, float], float]:
        """The fusion weights for ``request`` (by task) and their log-density under the policy."""
        weights, logprob = self.fusion_for(from_request(request, self.config.n_features, self.config.tasks), explore)
        return {t: float(w) for t, w in zip(self.config.tasks, weights[0])}, float(logprob[0])

    def fusion_weights(self, task_scores: dict[str, torch.Tensor], context: dict[str, Any] | None = None,
                       explore: bool = False) -> tuple[dict[str, float], float]:
        """Serving's fusion-role call (:mod:`serving.components`): weights from task scores + context only."""
        return self.fusion_weights_many([(task_scores, dict(context or {}))], [explore])[0]

    @torch.no_grad()
    def fusion_weights_many(self, items: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]],
                            explores: Sequence[bool]) -> list[tuple[dict[str, float], float]]:
        """:meth:`fusion_weights` of several requests in one policy pass (serving's micro-batches).

        The policy reads each list's task statistics and context only, so rows are independent;
        exploring rows add ``N(0, sigma^2)`` noise to the mean, greedy rows serve the mean."""
        if len(items) != len(explores):
            raise ValueError(f"{len(items)} requests but {len(explores)} explore flags")
        lists = from_task_scores(items, self.config.tasks).to(self.device)
        mean, log_std = self.policy(task_statistics(lists.task_logits, lists.mask), self._context(lists))
        weights = mean
        if any(explores):
            noise = torch.randn(mean.shape, generator=self.serve_generator).to(mean.device) * torch.exp(log_std)
            rows = torch.tensor([bool(e) for e in explores], device=mean.device).unsqueeze(-1)
            weights = torch.where(rows, mean + noise, mean)
        logprobs = gaussian_logprob(weights, mean, log_std).cpu().tolist()
        weights = weights.cpu().tolist()
        return [({t: float(w) for t, w in zip(self.config.tasks, row)}, float(lp)) for row, lp in zip(weights, logprobs)]

    def rerank(self, request: RerankRequest, explore: bool = False) -> RerankResult:
        """Fused ranking: score_i = sum_k w_k g(p_ik), best first; fusion weights and log-prob in ``extras``."""
        lists = from_request(request, self.config.n_features, self.config.tasks)
        weights, logprob = self.fusion_for(lists, explore)
        fused = (lists.task_logits[0].double() @ weights[0].double())
        order = torch.argsort(fused, descending=True, stable=True).tolist()
        named = {t: float(w) for t, w in zip(self.config.tasks, weights[0])}
        return RerankResult(order=order, scores=fused.tolist(), logprob=None,
                            extras={"model": self.name, "fusion": named, "fusion_logprob": float(logprob[0]),
                                    "updates": self.updates})

    # -- checkpoints (PolicyCheckpointing) ------------------------------------------------
    def _frozen(self) -> list[tuple[str, torch.nn.Module]]:
        return [("reference", self.reference)]

    def _parts(self) -> list[tuple[str, torch.nn.Module, torch.optim.Optimizer]]:
        return [("policy", self.policy, self.policy_opt), ("satisfaction", self.satisfaction, self.reward_opt)]


def build_drpo(**config: Any) -> DRPOLearner:
    """DRPO with every ingredient on (override any :class:`DRPOConfig` field by keyword)."""
    return DRPOLearner(DRPOConfig.from_kwargs(**config))
