"""Serving: the reranker's request path, hot swap of model snapshots, and the promotion gate.

The request path:

* :mod:`serving.app`        FastAPI app: ``POST /rerank``, ``GET /healthz``, ``GET /models``, ``GET /metrics``
                            (bodies in :mod:`contracts.rerank`; a bad one is a 422 naming the field).
* :mod:`serving.request_body` parses the body in the handler (same model, same 422s) and documents it.
* :mod:`serving.scoring`    the model work: per-request preparation, then calibrate -> fuse -> rerank
                            for a batch of requests on one bundle; the response and the impression.
* :mod:`serving.microbatch` the scoring thread: concurrent requests scored in one padded batch,
                            each on the bundle it read on arrival.
* :mod:`serving.http_middleware` the body-size limit (413 before parsing) and the arrival stamp.
* :mod:`serving.features`   item features from Feast's Redis keys when a request does not carry them;
                            degraded (cache or none, never a 500) when the store is down or lost rows.
* :mod:`serving.feature_cache` the bounded LRU+TTL cache of recent feature rows used in an outage.
* :mod:`serving.read_routes` ``GET /healthz`` (ok/degraded with reasons), ``GET /models``, ``GET /metrics``.
* :mod:`serving.components` snapshot -> model object per role (calibrator, fusion, reranker), the
                            calling conventions, the canary check.
* :mod:`serving.baseline`   the cold-start policy and ``linear-pl`` (a small real list-wise learner).
* :mod:`serving.emitter`    non-blocking impression producer (bounded buffer, drop/failure counts).
* :mod:`serving.settings`   roles, limits, exploration, gate and watcher settings
                            (``STREAMRANK_SERVE_*`` / ``[serving]`` config section).

Hot swap:

* :mod:`serving.watcher`    wakes on Redis pub/sub, the ``model-updates`` tail (:mod:`serving.topic_tail`)
                            or a poll; loads, verifies, gates and swaps.
* :mod:`serving.holder`     the served bundle behind one reference; the decisions log.
* :mod:`serving.gate`       the promotion gate: SNIPS/IPS (:mod:`evaluation.ope`) of candidate vs current
                            on the recent explored examples of :mod:`serving.recent_examples`.

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
