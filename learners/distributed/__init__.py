"""Data-parallel training of ONE model on torch.distributed (DESIGN.md, "two traps": never a silent split).

* :mod:`learners.distributed.group`  the process group (gloo on CPU, nccl on CUDA; torchrun's
  environment or explicit rank/world), and the explicit, disjoint partition assignment.
* :mod:`learners.distributed.sync`   example-weighted gradient all-reduce, all-reduced batch
  moments and the union's sampling noise, so N ranks on batches A, B, ... take the step one
  process takes on their union.
* :mod:`learners.distributed.ledger` each rank's offsets and applied ids merged into rank 0's checkpoint.
* :mod:`learners.distributed.rank`   one rank's lockstep loop over the partitions it owns.
* :mod:`learners.distributed.launch` ``--ranks N``: start the ranks and stop them all when one dies.
"""
