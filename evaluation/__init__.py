"""Evaluation that does not depend on any learner: metrics and off-policy estimators.

* :mod:`evaluation.metrics`  calibration and ranking metrics (ECE, NDCG, log-loss, ...), numpy in, floats out.
* :mod:`evaluation.ope`      IPS, SNIPS and DR with bootstrap confidence intervals (the promotion gate's library).
* :mod:`evaluation.ope_obd`  the Open Bandit Dataset adapter for ``streamrank eval ope``.

The evaluations of a learner family live beside it: :mod:`learners.calibration.evaluation`,
:mod:`learners.policy.evaluation`.
"""
