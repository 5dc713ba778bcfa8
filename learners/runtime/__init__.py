"""Running a learner on the stream: the effectively-once runtime, its Faust worker, checkpoints.

* :mod:`learners.runtime.runner`          transport-free runtime: batches, dedupe by example id,
  offsets in the checkpoint, dead-letter of bad examples.
* :mod:`learners.runtime.worker`          ``streamrank learn``: a Faust agent feeding the runtime;
  with ``--publish`` an apscheduler job publishes its checkpoints as snapshots.
* :mod:`learners.runtime.batching`        records, runtime config, batches in flight, example-id digests.
* :mod:`learners.runtime.pipeline`        the update stage: learns sealed batches beside the decoder (prefetch).
* :mod:`learners.runtime.checkpoint`      atomic, checksummed checkpoints (safetensors + JSON manifest).
* :mod:`learners.runtime.feature_fill`    item features for examples that name them instead of carrying them.
* :mod:`learners.runtime.process`         run ``streamrank learn`` as a child process and watch it.
"""
