"""Data-parallel training of ONE model on torch.distributed (DESIGN.md, "two traps": never a silent split).

* :mod:`learners.distributed.group`  the process group (gloo on CPU, nccl on CUDA; torchrun's
  environment or explicit rank/world), and the explicit, disjoint partition assignment.
* :mod:`learners.distributed.sync`   example-weighted gradient all-reduce and all-reduced batch
  moments, so N ranks on batches A, B, ... take the step one process takes on their union.
"""
