r"""Inference-only UMNN for serving: every task's head, and the rows of several requests, in one batched pass.

What and why. :class:`~learners.calibration.umnn.UMNNCalibrator` evaluates one task per call:
for a 50-row request and 3 tasks that is three passes of the integrand over ``n (S+1)`` node
rows (the ``[2550, 50] x [50, 50]`` matmul of each is most of the ~2 ms a request spent in UMNN).
:class:`StackedUMNN` copies the weights of all heads once (per snapshot, or after the weights
changed), stacks them along a task axis and computes, for logits ``l`` [T, N] and contexts
``h`` [N, d],

.. math::
    a_1 = \mathrm{ReLU}(b_t + W_h h + t\,w_t),\quad f = \mathrm{ELU}(W_L \cdots \mathrm{ReLU}(W_2 a_1 + b_2)) + 1,
    \quad I = \tfrac{l}{2}\sum_j c_j f(\tfrac{l}{2}(s_j+1), h)

(the same function as :mod:`learners.calibration.umnn`, the same Clenshaw–Curtis rule of
:mod:`learners.calibration.quadrature`), then :math:`z = e^{u_0(h)} (I + b_0) + u_1(h)` with the
context net ``u`` stacked the same way: one ``bmm`` per layer for all tasks, a matrix-vector
product per task for the 1-wide last layer (``bmm`` with one output column was 5x slower here),
no autograd graph.

Why the full node count. The quadrature is the cost (linear in the node count), so fewer
nodes were measured first (``bench/umnn_serving.py``; figures in BENCHMARKS.md's Serving
section). The integrand is a ReLU network, with kinks in :math:`t`, so Clenshaw–Curtis converges
slowly on it and how many nodes suffice depends on the weights, which keep changing: from the
identity start, 32 nodes were within 1.8e-5 of the 50-node model on held-out contexts after 50
learning steps and 1.4e-4 after 400 (16 nodes: 7.9e-5, then 7.2e-4), and a load-time check on a
probe of 384 random contexts underestimated such errors 6-fold in an exploratory run, so no
node count below the model's can be promised for every snapshot. A per-context table with
interpolation pays a quadrature per grid point for every context not seen before (held-out
contexts are all misses: 32-131x slower) and missed the bound too, and ``torch.compile`` of
this pass was slower than eager (0.95x the module path vs 0.76x). So this path keeps the model's
own nodes and is the same function up to float rounding (max :math:`|\Delta p|` ~1e-6);
``steps=`` exists for the measurement.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from learners.calibration.context import P_CLIP, ContextEncoder, request_context
from learners.calibration.quadrature import _grid
from learners.calibration.umnn import UMNNCalibrator


#: Rows per integrand pass: the node tensors stay [T, 64 x 51, 50] floats (1.9 MB for 3 tasks) however many
#: requests ``calibrate_many`` joins (8 of 50 rows in one block: 12 MB each); the bench times both.
CHUNK_ROWS = 64


def weights_key(params: Sequence[torch.Tensor]) -> tuple[tuple[int, int], ...]:
    """Changes whenever one of ``params`` is written in place (optimizer steps, ``load_state_dict``)."""
    return tuple((p.data_ptr(), p._version) for p in params)


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach().to("cpu", torch.float32) for t in tensors]).contiguous()


class StackedUMNN:
    """The heads of several tasks as one inference-only function ``(l [T, N], h [N, d]) -> z [T, N]``."""

    def __init__(self, heads: Sequence[UMNNCalibrator], steps: int | None = None) -> None:
        if not heads:
            raise ValueError("StackedUMNN needs at least one head")
        first = heads[0]
        shapes = {tuple(tuple(p.shape) for p in h.parameters()) for h in heads}
        if len(shapes) != 1 or len({(h.rescaling, h.steps) for h in heads}) != 1:
            raise ValueError("heads to stack must have the same shapes, rescaling and steps")
        self.tasks = len(heads)
        self.full_steps = int(first.steps)
        self.steps = int(steps or first.steps)
        self.context_dim = first.context_dim
        integrands = [h.integrand for h in heads]
        self.hidden = integrands[0].first_t.weight.shape[0]
        self.w_t = _stack([i.first_t.weight.squeeze(1) for i in integrands])  # [T, H]
        self.b_t = _stack([i.first_t.bias for i in integrands])  # [T, H]
        self.w_h = (torch.cat([i.first_h.weight.detach().to("cpu", torch.float32) for i in integrands]).contiguous()
                    if integrands[0].first_h is not None else None)  # [T*H, d]
        self.rest = [(_stack([i.rest[k].weight.T for i in integrands]), _stack([i.rest[k].bias for i in integrands]))
                     for k in range(len(integrands[0].rest))]  # ([T, in, out], [T, out])
        self.offset = _stack([h.offset for h in heads])  # [T, 1]
        self.context: list[tuple[torch.Tensor, torch.Tensor]] = []
        if first.rescaling:
            nets = [list(h.context_net) for h in heads]  # type: ignore[arg-type]
            cpu = [(n[0].weight.detach().to("cpu", torch.float32), n[0].bias.detach().to("cpu", torch.float32))
                   for n in nets]
            self.context_first = (torch.cat([w for w, _ in cpu]).contiguous(), torch.cat([b for _, b in cpu]))
            self.context = [(_stack([n[k].weight.T for n in nets]), _stack([n[k].bias for n in nets]))
                            for k in range(1, len(nets[0]))]

    def _per_task(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T*k]`` (one matmul for all tasks) -> ``[T, N, k]``."""
        return x.view(x.shape[0], self.tasks, -1).transpose(0, 1).contiguous()

    def _integrand(self, logits: torch.Tensor, base: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        """``f`` [T, n, m] at the nodes ``logits * fractions`` of ``n`` rows whose context part is ``base``."""
        tasks, n = logits.shape
        m = fractions.shape[1]
        t = logits.unsqueeze(-1) * fractions  # [T, n, m]
        a = torch.addcmul(base.unsqueeze(2), t.unsqueeze(-1), self.w_t.view(tasks, 1, 1, -1)).relu_()
        a = a.reshape(tasks, n * m, -1)
        last = len(self.rest) - 1
        for k, (w, b) in enumerate(self.rest):
            if k == last and w.shape[2] == 1:  # one output: a matrix-vector product per task
                a = torch.stack([torch.mv(a[i], w[i, :, 0]) for i in range(tasks)]) + b
            else:
                a = torch.baddbmm(b.unsqueeze(1), a, w)
                if k < last:
                    a = a.relu_()
        return nn.functional.elu(a.view(tasks, n, m)) + 1.0

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, h: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Calibrated logits ``z`` [T, N] for raw logits ``logits`` [T, N] and contexts ``h`` [N, d]."""
        tasks, n = logits.shape
        if tasks != self.tasks or h.shape[0] != n:
            raise ValueError(f"expected logits [{self.tasks}, N] and h [N, d], got {tuple(logits.shape)} "
                             f"and {tuple(h.shape)}")
        weights, fractions = _grid(int(steps or self.steps), torch.float32)
        logits = logits.float()
        base = self.b_t.unsqueeze(1).expand(tasks, n, self.hidden)  # [T, N, H]
        if self.w_h is not None and self.context_dim:
            base = self._per_task(h.float() @ self.w_h.T) + base
        f = torch.cat([self._integrand(logits[:, i:i + CHUNK_ROWS], base[:, i:i + CHUNK_ROWS], fractions)
                       for i in range(0, n, CHUNK_ROWS)], dim=1) if n else logits.new_zeros(tasks, 0, weights.numel())
        z = (f @ weights) * (logits * 0.5) + self.offset
        if self.context:
            w0, b0 = self.context_first
            c = self._per_task(torch.relu(torch.addmm(b0, h.float(), w0.T)))
            for k, (w, b) in enumerate(self.context):
                c = torch.baddbmm(b.unsqueeze(1), c, w)
                if k < len(self.context) - 1:
                    c = c.relu_()
            z = torch.exp(c[..., 0]) * z + c[..., 1]
        return z


def calibrate_batch(stacked: StackedUMNN, encoder: ContextEncoder, tasks: Sequence[str],
                    items: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]],
                    device: torch.device | str = "cpu") -> list[dict[str, torch.Tensor]]:
    """``calibrate`` of every request in ``items`` from one pass of ``stacked`` (heads in ``tasks`` order).

    Each request's rows are encoded once per list length (as ``calibrate`` does) and all of them
    are concatenated; a task a request lacks gets zero logits there, computed and dropped (one
    pass instead of one per task subset). Tasks outside ``tasks`` and empty ones pass through as
    float32. A request whose context does not fit raises ``ValueError`` naming its index before
    anything is computed.
    """
    outs: list[dict[str, torch.Tensor]] = [{} for _ in items]
    segments: dict[tuple[int, int], int] = {}  # (request, rows) -> its first row in the batch
    indices: list[torch.Tensor] = []
    wanted: list[tuple[int, str, int, torch.Tensor]] = []  # (request, task, first row, logits)
    total = 0
    for i, (task_scores, context) in enumerate(items):
        for task, scores in task_scores.items():
            scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
            outs[i][task] = scores  # replaced below for the tasks calibrated here
            if task not in tasks or scores.numel() == 0:
                continue
            n = scores.numel()
            if (i, n) not in segments:
                try:
                    indices.append(encoder.indices(request_context(context, n), n))
                except ValueError as exc:
                    raise ValueError(f"request {i}: {exc}" if len(items) > 1 else str(exc)) from None
                segments[(i, n)] = total
                total += n
            wanted.append((i, task, segments[(i, n)], torch.logit(scores.clamp(P_CLIP, 1 - P_CLIP))))
    if not wanted:
        return outs
    with torch.no_grad():
        h = encoder(torch.cat(indices).to(device)).float().cpu()
    logits = torch.zeros(len(tasks), total)
    for _, task, start, logit in wanted:
        logits[tasks.index(task), start:start + logit.numel()] = logit
    p = torch.sigmoid(stacked(logits, h))
    for i, task, start, logit in wanted:
        outs[i][task] = p[tasks.index(task), start:start + logit.numel()]
    return outs


class BatchedServing:
    """``calibrate``/``calibrate_many`` of :class:`~learners.calibration.learner.NeuralCalibrationLearner`
    through :class:`StackedUMNN` (a mixin: it reads ``predictor``, ``tasks``, ``device``).

    ``serving_fast = False`` serves through the modules instead (the reference path, and Platt's).
    """

    serving_fast: bool = True
    serving_steps: int | None = None  # quadrature nodes when serving (None: the model's own; for measuring)
    _serving: tuple[list[torch.Tensor], Any, StackedUMNN] | None = None

    def serving_path(self, rebuild: bool = False) -> StackedUMNN | None:
        """The heads' weights stacked for serving, copied again if any of them was written since.

        The parameters are listed once per stacking (``Module.parameters()`` walks the module tree:
        0.2 ms a call here); ``load_state_dict`` and optimizer steps write them in place, which
        their versions show. A parameter *replaced* by another object needs ``rebuild=True``.
        """
        if not self.serving_fast:
            return None
        if not rebuild and self._serving is not None:
            params, key, stacked = self._serving
            if key == (weights_key(params), self.serving_steps):
                return stacked
        heads = self.predictor["heads"]  # type: ignore[attr-defined]  (the averaged weights when averaging)
        params = list(heads.parameters())
        stacked = StackedUMNN([heads[t] for t in self.tasks], self.serving_steps)  # type: ignore[attr-defined]
        self._serving = (params, (weights_key(params), self.serving_steps), stacked)
        return stacked

    def calibrate(self, task_scores: dict[str, torch.Tensor], context: dict[str, Any]) -> dict[str, torch.Tensor]:
        if not self.serving_fast:
            return super().calibrate(task_scores, context)  # type: ignore[misc]
        return self.calibrate_many([(task_scores, context)])[0]

    def calibrate_many(self, items: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]]
                       ) -> list[dict[str, torch.Tensor]]:
        """All requests' rows and all tasks in one pass; element ``i`` is ``calibrate(*items[i])``.

        A bad request (a context field of the wrong length) raises ``ValueError`` naming its index
        before anything is computed; the learner is unchanged, so the caller can retry the others.
        """
        stacked = self.serving_path()
        if stacked is None:
            return super().calibrate_many(items)  # type: ignore[misc]
        return calibrate_batch(stacked, self.predictor["encoder"], self.tasks, items,  # type: ignore[attr-defined]
                               self.device)
