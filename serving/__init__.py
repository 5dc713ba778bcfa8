"""Serving: the reranker service, hot-swap, promotion gate, off-policy evaluation, the closed-loop demo.

Modules (one job each):

* :mod:`serving.app` -- FastAPI app: ``POST /rerank``, ``GET /healthz``, ``GET /models``, ``GET /metrics``.
* :mod:`contracts.rerank` -- request/response bodies (strict pydantic; 422 names the field).
* :mod:`serving.settings` -- roles, limits, exploration, gate and watcher settings
  (``STREAMRANK_SERVE_*`` env / ``[serving]`` config section).
* :mod:`serving.components` -- snapshot -> model object per role (calibrator, fusion, reranker),
  the calling conventions, the canary check.
* :mod:`serving.holder` -- the served bundle behind one reference; decisions log.
* :mod:`serving.watcher` -- Redis pub/sub + ``model-updates`` topic + polling; load, verify, gate, swap.
* :mod:`serving.gate` -- promotion gate (SNIPS/IPS of candidate vs current on recent explored logs).
* :mod:`serving.recent_examples` -- the bounded window of recent ``examples`` the gate reads.
* :mod:`serving.emitter` -- non-blocking impression producer (bounded buffer, drop/failure counts).
* :mod:`serving.features` -- item features from Feast's Redis keys when requests do not carry them.
* :mod:`serving.baseline` -- the cold-start policy and ``linear-pl`` (a small real list-wise learner).
* :mod:`evaluation.ope`, :mod:`evaluation.ope_obd` -- IPS / SNIPS / DR with bootstrap CIs; OBD adapter.
* :mod:`loop.demo`, :mod:`loop.metrics`, :mod:`learners.runtime.snapshot_bridge` -- ``streamrank demo``.

What serving expects from the learners (see :mod:`serving.components`): a calibrator has
``calibrate(task_scores, context) -> dict[task, Tensor]``; a fusion policy
``fusion_weights(task_scores, context, explore=) -> (weights, logprob)``; a reranker
``rerank(RerankRequest, explore=) -> RerankResult`` whose ``scores`` are per candidate (the PL
logits) and whose ``logprob`` is the shown order's PL log-prob. Snapshots are rebuilt with
``build_learner(name, **meta["config"])`` + ``load_state_dict``.

What serving writes: impressions (``source="serving"``) with ``model_versions`` (model name ->
snapshot version), ``fusion`` weights + log-prob, ``list_logprob`` (0.0 when not exploring:
the greedy order had probability 1), ``context["explored"]`` (1.0/0.0) and, when exploring,
``context["logprob_top3"]`` (the PL log-prob of the top-3 placements, for the gate).
"""
