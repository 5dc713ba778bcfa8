"""The online learners, one subpackage per job; every learner satisfies :class:`contracts.learner.Learner`.

* :mod:`learners.registry`     model name -> factory (``umnn``, ``platt``, ``isotonic``, ``histogram``,
  ``ldro``, ``grpo``, ``drpo``).
* :mod:`learners.runtime`      the worker that feeds a learner from ``examples``, checkpoints, snapshots.
* :mod:`learners.ingest`       decoded examples written straight into a learner's batch tensors.
* :mod:`learners.distributed`  data-parallel training of one model on torch.distributed (``--ranks``).
* :mod:`learners.device`       which torch device a learner trains on (``--device``).
* :mod:`learners.calibration`  UMNN + SCLoss (UMC) and the Platt/isotonic/histogram baselines.
* :mod:`learners.policy`       what the list-wise policies share (Plackett-Luce, advantages, batches).
* :mod:`learners.ranking`      LDRO (Dual-Rerank) and its GRPO baseline.
* :mod:`learners.fusion`       DRPO (SaFRO) multi-task fusion with its satisfaction model.
"""
