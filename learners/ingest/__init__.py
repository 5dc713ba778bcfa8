"""From decoded examples to a learner's batch tensors, one example at a time (the tensor-native learn path).

Every learner family hands out a batch builder (``batch_builder(capacity)``) whose ``add(example)``
writes one validated example straight into preallocated arrays and whose batch the family learns
with ``learn_built``; ``learn_many`` is the two in a row. The runtime
(:mod:`learners.runtime.runner`) calls ``add`` as each record is decoded and hands full batches to
an update stage (:mod:`learners.runtime.pipeline`), so decoding and collation run beside the update.

* :mod:`learners.ingest.lists`    padded list batches of the list-wise policies (LDRO, GRPO, DRPO).
* :mod:`learners.ingest.rows`     per-task calibration rows (UMNN, Platt, isotonic, histogram).
* :mod:`learners.ingest.decode_pool`    decode worker processes (``RuntimeConfig.decode_workers``) for
  the list batches; :mod:`learners.ingest.decode_worker` is the worker, :mod:`learners.ingest.slots`
  the shared-memory slots and the pipe frames between them.
"""
