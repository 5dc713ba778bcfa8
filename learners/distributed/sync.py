r"""Example-weighted gradient all-reduce: N ranks take the step one process takes on the union batch.

Every loss a learner minimises is a mean over some count of its batch (lists, items, sampled
lists, calibration rows): :math:`L = \frac{1}{C}\sum_{i} \ell_i`. Rank :math:`r` holds the part
:math:`C_r` of the union's :math:`C = \sum_r C_r`; it scales its local mean by
:math:`s_r = C_r / C` (:meth:`GradientSync.shares`, one all-reduce of the counts) and the
gradients are summed over ranks (:meth:`GradientSync.reduce_grads`, one all-reduce per module, or
:meth:`GradientSync.start_reduce_grads` to overlap it with compute that does not need them):

.. math:: \sum_r s_r \nabla \Big(\frac{1}{C_r}\sum_{i \in r} \ell_i\Big)
          = \nabla \frac{1}{C}\sum_i \ell_i

(Li et al., 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
VLDB, for the all-reduce; the count weighting makes unequal local batches exact). A rank with
no data in a step has :math:`C_r = 0`, contributes a zero gradient and still takes the step, so
no rank waits forever and every rank applies the same Adam step: the replicas stay identical.
Statistics a learner keeps across batches (the running moments of the advantages) are updated
from all-reduced sums (:meth:`GradientSync.start_moments`), so they too equal the union's. Gradient
clipping runs after the reduction, on the union gradient.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


class GradientSync:
    """All-reduces over the default process group (``gloo``: CPU tensors; ``nccl``: CUDA tensors)."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        #: this rank has no data this step: it runs the step on a stand-in batch with zero weight
        self.idle = False
        #: (lists, items) shares of this step, from :meth:`layout` (None: not computed for this step)
        self.batch_shares: tuple[float, float] | None = None

    def shares(self, counts: Sequence[float]) -> tuple[list[float], list[float]]:
        """``(local / global, global)`` for each count (share 0 where the global count is 0)."""
        local = torch.tensor([0.0 if self.idle else float(c) for c in counts], dtype=torch.float64, device=self.device)
        total = local.clone()
        dist.all_reduce(total)
        totals = [float(b) for b in total.cpu()]
        return [float(a) / b if b > 0 else 0.0 for a, b in zip(local.cpu(), totals)], totals

    def layout(self, rows: int, longest: int, items: int = 0) -> tuple[int, int, int]:
        """``(offset, total, longest)``: where this rank's lists sit in the union batch (ranks in order), the
        union's size and its longest list. Ranks pad to that length and draw their sampling noise for the
        whole union from generators in the same state, each using its own rows: the same draws as one
        process on the union, and generators that stay equal across ranks. One all-gather, which also
        leaves this step's list and item shares in :attr:`batch_shares` (no second collective for them)."""
        rank, world = dist.get_rank(), dist.get_world_size()
        mine = torch.tensor([0.0, 0.0, 0.0] if self.idle else [rows, longest, items], dtype=torch.float64)
        every = [torch.zeros(3, dtype=torch.float64, device=self.device) for _ in range(world)]
        dist.all_gather(every, mine.to(self.device))
        table = torch.stack(every).cpu()
        sizes = [int(s) for s in table[:, 0]]
        total_rows, total_items = float(table[:, 0].sum()), float(table[:, 2].sum())
        self.batch_shares = (float(mine[0]) / total_rows if total_rows else 0.0,
                             float(mine[2]) / total_items if total_items else 0.0)
        return sum(sizes[:rank]), sum(sizes), int(table[:, 1].max())

    def reduce_grads(self, *modules: torch.nn.Module) -> None:
        """Sum every parameter's gradient over ranks (a missing gradient counts as zero), in one flat all-reduce."""
        self.start_reduce_grads(*modules).wait()

    def start_reduce_grads(self, *modules: torch.nn.Module) -> "PendingGrads":
        """:meth:`reduce_grads` started asynchronously: compute that does not read these gradients can run
        until :meth:`PendingGrads.wait` (the lockstep's wait for the slowest rank overlaps it)."""
        params = [p for module in modules for p in module.parameters() if p.requires_grad]
        if not params:
            return PendingGrads([], None, None)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        return PendingGrads(params, flat, dist.all_reduce(flat, async_op=True))

    def start_moments(self, values: torch.Tensor) -> "PendingSums":
        """``(count, sum, sum of squares)`` of ``values`` over all ranks, all-reduced asynchronously (the
        reducer of :class:`learners.policy.advantages.RunningMoments` on a rank)."""
        v = values.detach().double().flatten()
        if self.idle:
            v = v[:0]
        local = torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64), v.sum().cpu(),
                             (v * v).sum().cpu()]).to(self.device)
        return PendingSums(local, dist.all_reduce(local, async_op=True))


def attach(learner: object, device: torch.device | None = None) -> GradientSync:
    """Make ``learner`` take its steps with the other ranks: its gradients, and its running moments
    when it keeps some, all-reduced over the default process group. Returns the learner's sync."""
    sync = GradientSync(device)
    learner.sync = sync  # type: ignore[attr-defined]
    running = getattr(learner, "running", None)
    if running is not None:
        running.reducer = sync.start_moments
    return sync


class PendingSums:
    """An all-reduce of a few float64 sums in flight; :meth:`wait` returns them as floats."""

    def __init__(self, sums: torch.Tensor, work: object) -> None:
        self.sums, self.work = sums, work

    def wait(self) -> tuple[float, ...]:
        self.work.wait()  # type: ignore[attr-defined]
        return tuple(float(x) for x in self.sums.cpu())


class PendingGrads:
    """An all-reduce of flattened gradients in flight; :meth:`wait` writes the sums back to ``.grad``."""

    def __init__(self, params: list[torch.nn.Parameter], flat: torch.Tensor | None, work: object | None) -> None:
        self.params, self.flat, self.work = params, flat, work

    def wait(self) -> None:
        if self.work is None or self.flat is None:
            return
        self.work.wait()  # type: ignore[attr-defined]
        start = 0
        for p in self.params:
            n = p.numel()
            p.grad = self.flat[start:start + n].view_as(p).clone()
            start += n
        self.work = None
