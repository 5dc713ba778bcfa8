"""The contracts every stage shares, in one bottom layer that imports no stage.

* :mod:`contracts.events`   Impression, Feedback, LabeledList as UTF-8 JSON; ``decode`` is the one
  validation path (its errors name the field and a reason code); the JSON Schemas in ``schemas/``.
* :mod:`contracts.strict`   the strict pydantic base (no extra fields, finite floats, bounded ids).
* :mod:`contracts.learner`  the :class:`~contracts.learner.Learner` protocol, its state and the
  serving-side request/result of a reranker.
* :mod:`contracts.state`    one encoding of model/optimizer/RNG state for every learner family.
* :mod:`contracts.snapshot` the snapshot manifest (what a published model version is).
* :mod:`contracts.rerank`   the bodies of ``POST /rerank`` (also its OpenAPI schema).

Depends only on :mod:`common`, pydantic and torch, so the simulator, the learners, the feature
store and serving can share a contract without depending on the Kafka stage.
"""
