r"""Calibration learners behind :class:`contracts.learner.Learner` and :class:`~contracts.learner.Calibrator`.

* ``umnn`` (:func:`build_umnn`): UMC per task (:mod:`learners.calibration.umnn`) over a shared
  hashed context encoder :math:`h(x)` (:mod:`learners.calibration.context`), trained online on
  :math:`\mathrm{BCE} + \lambda L_{SC}` (:mod:`learners.calibration.scloss`) with Adam
  (lr :math:`10^{-3}`, UMC's setting). ``sc_weight=0`` gives "UMNN without SCLoss";
  ``context_fields=()`` gives UMC's context-free UMNN. SCLoss bins: ``sc_binning="quantile"``
  (default: running quantile edges, so the bins span the actual range of :math:`p`; the
  paper's equal-width bins put every click prediction of a 0.4 %-CTR stream in the first bin)
  or ``"uniform"`` (the paper's ``K`` equal-width bins).
* ``platt`` (:func:`build_platt`), and ``isotonic``/``histogram``
  (:mod:`learners.calibration.binning_learner`): the baselines of :mod:`learners.calibration.baselines`.

Serving API (all three)::

    calibrate(task_scores: dict[str, Tensor[n]], context: dict) -> dict[str, Tensor[n]]
    calibrate_many([(task_scores, context), ...]) -> [calibrate(task_scores, context), ...]

``task_scores[task]`` are raw upstream probabilities; ``context`` maps field names to
per-item sequences of length n (``position``, ``item``) or request-level scalars
(``user``, ``query``, impression context keys). The output is monotone non-decreasing in
each task's raw score for a fixed context (strictly increasing for UMNN and Platt). Tasks
the learner does not calibrate pass through unchanged.

UMNN serves through :mod:`learners.calibration.batched` (all tasks and requests in one pass,
weights stacked at ``load_state_dict``; the same function as the modules to float rounding).

Online-SGD options of UMNN/Platt (all off by default, so a default learner is as before):

* ``average`` (Polyak averaging, Polyak & Juditsky 1992; the exponential form of TensorFlow's
  ``ExponentialMovingAverage``): predictions and serving use :math:`\bar\theta_t =
  d_t\bar\theta_{t-1} + (1-d_t)\theta_t` with :math:`d_t = \min(\text{average}, (1+t)/(10+t))`
  after the :math:`t`-th optimizer step (the ramp lets the first steps count fully instead of
  averaging with the initial weights; while it binds, the new iterate's weight is :math:`9/(10+t)`,
  the polynomial-decay averaging of Shamir & Zhang 2013); training keeps using :math:`\theta`.
  Why: a prequential learner predicts with whatever iterate the last noisy step left; the
  average keeps the step noise out of the predictions (the variance of the last iterate of
  constant-step SGD does not shrink, the average's does).
* ``lr_schedule="inv_sqrt"`` with ``lr_warmup`` = :math:`w`: step :math:`t` (1-based) uses
  :math:`\mathrm{lr}\cdot\min(t/w, \sqrt{w/t})` (linear warm-up to the peak at :math:`t=w`, then
  :math:`1/\sqrt t` decay: Vaswani et al. 2017's schedule normalised to peak ``lr``; the
  :math:`1/\sqrt t` rate of online convex optimisation, Zinkevich 2003). Computed from the
  step counter, so it needs no extra state.
* ``passes``: optimizer steps on each batch (``learn_many``); the schedule and the average count
  steps, ``updates`` counts batches.
* ``replay_updates`` = :math:`W`, ``replay_steps`` = :math:`S`, ``replay_rows``: warm-up replay
  (:mod:`learners.calibration.replay`): each of the first :math:`W` updates is followed by
  :math:`S` steps on rows drawn from a reservoir of the rows learned so far, then the reservoir is
  dropped. Replay steps count as optimizer steps, not as updates.

Learning (``learn_many``) is deterministic given the seed and input order; the state holds
the modules (and the averaged copy when ``average > 0``), Adam's moments, SCLoss caches, the
RNG state, counters, and the replay reservoir while the warm-up lasts.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field  # noqa: F401 - kept: see commit 80a14f6
from typing import Any, Sequence

import torch
from torch import nn

from contracts.events import LabeledList
from contracts.learner import LearnerState
from contracts.state import (
    check_format,
    generator_tensors,
    load_generators,
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_state,
    stamp,
)
from learners.calibration.baselines import PlattHead
from learners.calibration.batched import BatchedServing
from learners.calibration.config import CalibrationConfig, average_decay
from learners.calibration.context import P_CLIP, ContextEncoder, TaskRows, extract_rows, request_context
from learners.calibration.replay import WarmupReplay
from learners.calibration.scloss import SCLossConfig, SmoothCalibrationLoss
from learners.calibration.umnn import UMNNCalibrator
from learners.ingest.rows import RowArrays

class _CalibrationBase:
    name: str
    config: CalibrationConfig

    def __init__(self, name: str, config: CalibrationConfig) -> None:
        self.name = name
        self.config = config
        self.tasks = config.tasks
        self.updates = 0
        self.examples_seen = 0
        self.rows_seen = 0
        self.generator = torch.Generator().manual_seed(config.seed)
        self.device = torch.device("cpu")

    # -- shared ---------------------------------------------------------------------------------
    def learn_many(self, batch: Sequence[LabeledList]) -> dict[str, float]:
        """One update from ``batch``: its rows written into arrays (``batch_builder``), then ``learn_built``."""
        built = self.batch_builder(len(batch))
        for example in batch:
            built.add(example)
        return self.learn_built(built)

    def rows(self, batch: Sequence[LabeledList]) -> dict[str, TaskRows]:
        return extract_rows(batch, self.tasks, self.config.context_fields)

    def _meta(self) -> dict[str, Any]:
        return {"model": self.name, "family": "calibration", "config": self.config.as_json(),
                "counters": {"updates": self.updates, "examples": self.examples_seen, "rows": self.rows_seen}}

    def _load_meta(self, meta: dict[str, Any]) -> None:
        check_format(meta)
        saved = meta.get("config")
        # Compared as configs, not as JSON: a setting the checkpoint does not name (written before
        # it existed, or left out at its default by ``as_json``) reads as its default either way.
        if saved is not None and CalibrationConfig.from_kwargs(**saved) != self.config:
            raise ValueError(f"checkpoint config differs from this learner's config: {saved} != {self.config.as_json()}")
        counters = meta.get("counters", {})
        self.updates = int(counters.get("updates", 0))
        self.examples_seen = int(counters.get("examples", 0))
        self.rows_seen = int(counters.get("rows", 0))

    def _count(self, built: RowArrays, metrics: dict[str, float]) -> int:
        """Add a learned batch's examples and rows to the counters and ``metrics``; returns its rows."""
        n_rows = sum(built.rows(t) for t in self.tasks)
        self.examples_seen += built.count
        self.rows_seen += n_rows
        metrics["rows"] = float(n_rows)
        metrics["examples"] = float(built.count)
        return n_rows

    def predict_rows(self, rows: dict[str, TaskRows]) -> dict[str, torch.Tensor]:
        """Calibrated probability of every row (per task, in row order)."""
        return {task: self._predict(task, r.logits(), self._encode(r.fields, len(r)),
                                    torch.tensor(r.p_hat, dtype=torch.float32))
                for task, r in rows.items() if len(r)}

    def score(self, batch: Sequence[LabeledList]) -> dict[str, torch.Tensor]:
        return self.predict_rows(self.rows(batch))

    def calibrate(self, task_scores: dict[str, torch.Tensor], context: dict[str, Any]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        encoded: dict[int, Any] = {}  # one context per list length, shared by the tasks
        for task, scores in task_scores.items():
            scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
            if task not in self.tasks or scores.numel() == 0:
                out[task] = scores
                continue
            logit = torch.logit(scores.clamp(1e-6, 1 - 1e-6))
            n = scores.numel()
            if n not in encoded:
                encoded[n] = self._encode(request_context(context, n), n)
            out[task] = self._predict(task, logit, encoded[n], scores)
        return out

    def calibrate_many(self, items: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]]
                       ) -> list[dict[str, torch.Tensor]]:
        """``calibrate`` of several requests: element ``i`` equals ``calibrate(*items[i])`` (here a loop)."""
        return [self.calibrate(task_scores, context) for task_scores, context in items]

    def _encode(self, fields: dict[str, Sequence[Any]], n: int) -> Any:
        """The context as ``_predict`` takes it, computed once for all tasks of a call (default: the fields)."""
        return fields

    def _predict(self, task: str, logit: torch.Tensor, context: Any, p_hat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NeuralCalibrationLearner(BatchedServing, _CalibrationBase):
    """UMNN/UMC or Platt heads per task, trained by Adam on BCE + lambda * SCLoss."""

    def __init__(self, name: str, config: CalibrationConfig, head: str = "umnn") -> None:
        super().__init__(name, config)
        if head not in ("umnn", "platt"):
            raise ValueError(f"unknown head {head!r}")
        self.head_kind = head
        uses_context = head == "umnn" and bool(config.context_fields)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.encoder = ContextEncoder(config.context_fields if uses_context else (), config.buckets,
                                          config.embedding_dim)
            heads: dict[str, nn.Module] = {}
            for task in config.tasks:
                if head == "umnn":
                    heads[task] = UMNNCalibrator(self.encoder.out_dim, config.integrand_hidden, config.context_hidden,
                                                 config.steps, rescaling=True, leibniz=config.leibniz)
                else:
                    heads[task] = PlattHead()
            self.module = nn.ModuleDict({"encoder": self.encoder, "heads": nn.ModuleDict(heads)})
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=config.lr_at(1))
        self.optimizer_steps = 0  # Adam steps taken (``passes`` per update); drives the schedule and the average
        self.average_module: nn.ModuleDict | None = None
        if config.average > 0:
            self.average_module = copy.deepcopy(self.module).requires_grad_(False)
        self.sync: Any = None  # learners.distributed.sync.GradientSync on data-parallel ranks (needs sc_weight=0)
        sc = SCLossConfig(config.sc_bins, config.sc_beta, config.sc_weight, config.sc_binning)
        self.sc_losses = {task: SmoothCalibrationLoss(sc) for task in config.tasks}
        self.serving_fast = head == "umnn"  # False: serve through the modules (the reference path)
        self.replay = WarmupReplay(config.tasks, config.replay_rows) if config.replay_updates else None

    def to(self, device: torch.device | str) -> "NeuralCalibrationLearner":
        """Train on ``device`` (module and Adam state move; SCLoss's K-bin caches stay on the CPU)."""
        from learners.device import move_optimizer, resolve_device  # noqa: PLC0415

        self.device = resolve_device(device)
        self.module.to(self.device)
        if self.average_module is not None:
            self.average_module.to(self.device)
        move_optimizer(self.optimizer, self.device)
        return self

    @property
    def predictor(self) -> nn.ModuleDict:
        """The weights that predict and serve: the Polyak/EMA average when ``average > 0``, else the trained ones."""
        return self.average_module if self.average_module is not None else self.module

    def _step(self) -> None:
        """One Adam step at the scheduled lr, then the average folds in the new weights."""
        lr = self.config.lr_at(self.optimizer_steps + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer_steps += 1
        if self.average_module is not None:
            d = average_decay(self.config.average, self.optimizer_steps)
            with torch.no_grad():
                for avg, new in zip(self.average_module.parameters(), self.module.parameters()):
                    avg.mul_(d).add_(new.detach(), alpha=1.0 - d)

    def _encode(self, fields: dict[str, Sequence[Any]], n: int) -> torch.Tensor:
        """The context vectors ``h`` [n, d] (shared by every task's head)."""
        with torch.no_grad():
            encoder = self.predictor["encoder"]
            return encoder(encoder.indices(fields, n).to(self.device)).cpu()

    def forward_rows(self, task: str, logit: torch.Tensor, context_index: torch.Tensor) -> torch.Tensor:
        """Calibrated logit; ``context_index`` from ``encoder.indices`` (used by the bench too)."""
        return self.module["heads"][task](logit, self.encoder(context_index))

    def _predict(self, task, logit, context, p_hat):
        with torch.no_grad():
            z = self.predictor["heads"][task](logit.to(self.device), context.to(self.device))
        return torch.sigmoid(z).cpu()

    def update_tensors(self, task_batches: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """One Adam step on ``{task: (logit, label, context_index)}``; returns loss parts."""
        self.optimizer.zero_grad(set_to_none=True)
        total = None
        metrics: dict[str, float] = {}
        lam = self.config.sc_weight
        shares, totals = [1.0] * len(self.tasks), [1.0] * len(self.tasks)
        if self.sync is not None:  # data-parallel: each task's BCE weighted by its share of the union's rows
            rows = {t: b[0].numel() for t, b in task_batches.items()}
            shares, totals = self.sync.shares([rows.get(t, 0) for t in self.tasks])
        for task, (logit, y, index) in task_batches.items():
            share = shares[self.tasks.index(task)]
            if logit.numel() == 0 or share == 0.0:
                continue
            z = self.forward_rows(task, logit, index)
            bce = nn.functional.binary_cross_entropy_with_logits(z, y)
            loss = bce
            if lam > 0:
                sc = self.sc_losses[task](torch.sigmoid(z), y)
                loss = loss + lam * sc
                metrics[f"{task}.sc"] = float(sc.detach())
            metrics[f"{task}.bce"] = float(bce.detach())
            if self.sync is not None:
                loss = loss * share
            total = loss if total is None else total + loss
        if self.sync is not None and any(totals):
            if total is not None:
                total.backward()
            self.sync.reduce_grads(self.module)  # an idle rank adds zeros and takes the same step
            self._step()
            metrics["loss"] = float(total.detach()) if total is not None else 0.0
            return metrics
        if total is None:
            return metrics
        total.backward()
        self._step()
        metrics["loss"] = float(total.detach())
        return metrics

    def batch_builder(self, capacity: int) -> RowArrays:
        """Rows written as examples are decoded (:mod:`learners.ingest.rows`), context hashed on the way."""
        return RowArrays(self.tasks, self.encoder.fields, self.encoder.index)

    def learn_built(self, built: RowArrays) -> dict[str, float]:
        """One update from a :meth:`batch_builder` batch (what ``learn_many`` does after decoding)."""
        task_batches = {task: (built.logits(task, P_CLIP), built.label_tensor(task), built.index_tensor(task))
                        for task in self.tasks if built.rows(task)}
        on_device = {t: tuple(x.to(self.device) for x in b) for t, b in task_batches.items()}
        steps_before = self.optimizer_steps
        metrics = self.update_tensors(on_device)  # the first pass's losses: before any step on this batch
        for _ in range(self.config.passes - 1):
            self.update_tensors(on_device)
        self._replay(task_batches)
        if self.optimizer_steps > steps_before:
            self.updates += 1
        self._count(built, metrics)
        return metrics

    def _replay(self, task_batches: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        """Warm-up replay after the batch's own steps (module docstring); drops the reservoir after update W."""
        if self.replay is None or not task_batches or self.updates >= self.config.replay_updates:
            return  # (a batch without rows takes no step and does not count as an update)
        self.replay.add(task_batches, self.generator)
        sizes = {task: int(batch[0].shape[0]) for task, batch in task_batches.items()}
        for _ in range(self.config.replay_steps):
            drawn = self.replay.sample(sizes, self.generator)
            self.update_tensors({t: tuple(x.to(self.device) for x in b) for t, b in drawn.items()})
        if self.updates + 1 >= self.config.replay_updates:
            self.replay.clear()

    def state_dict(self) -> LearnerState:
        tensors = module_tensors("model", self.module)
        optim_tensors, optim_meta = optimizer_state("model", self.optimizer)
        tensors.update(optim_tensors)
        for task, sc in self.sc_losses.items():
            tensors.update(sc.state_tensors(f"sc.{task}."))
        if self.average_module is not None:
            tensors.update(module_tensors("average", self.average_module))
        tensors.update(generator_tensors({"torch": self.generator}))
        if self.replay is not None:
            tensors.update(self.replay.state_tensors("replay."))
        meta = self._meta()
        meta["counters"]["optimizer_steps"] = self.optimizer_steps
        meta["head"] = self.head_kind
        meta["optim"] = optim_meta
        return LearnerState(tensors=tensors, meta=stamp(meta))

    def load_state_dict(self, state: LearnerState) -> None:
        self._load_meta(state.meta)
        load_module("model", self.module, state.tensors)
        if self.average_module is not None:
            load_module("average", self.average_module, state.tensors)
        self.optimizer_steps = int(state.meta.get("counters", {}).get("optimizer_steps", self.updates))
        load_optimizer("model", self.optimizer, state.tensors, state.meta["optim"])
        for task, sc in self.sc_losses.items():
            sc.load_tensors(state.tensors, f"sc.{task}.")
        load_generators({"torch": self.generator}, state.tensors)
        if self.replay is not None:
            self.replay.load_tensors(state.tensors, "replay.")
        self.serving_path(rebuild=True)  # stacked here, once per snapshot, not by the first request


def build_umnn(**config: Any) -> NeuralCalibrationLearner:
    """UMC calibrator (BCE + SCLoss by default; ``sc_weight=0`` for plain BCE)."""
    name = config.pop("name", "umnn")
    return NeuralCalibrationLearner(name, CalibrationConfig.from_kwargs(**config), head="umnn")


def build_platt(**config: Any) -> NeuralCalibrationLearner:
    name = config.pop("name", "platt")
    config.setdefault("sc_weight", 0.0)
    config.setdefault("lr", 1e-2)
    config.setdefault("context_fields", ())
    return NeuralCalibrationLearner(name, CalibrationConfig.from_kwargs(**config), head="platt")
