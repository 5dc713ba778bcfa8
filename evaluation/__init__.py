"""Evaluation that does not depend on any learner: metrics and off-policy estimators.

* :mod:`evaluation.metrics`  calibration metrics (ECE, field-level ECE, PCOC, log-loss, AUC) and NDCG@k.
* :mod:`evaluation.ope`      IPS, SNIPS and DR with bootstrap confidence intervals (the promotion gate's library).
* :mod:`evaluation.ope_obd`  the Open Bandit Dataset adapter for ``streamrank eval ope``.

The evaluations of a learner family live beside it: :mod:`learners.calibration.evaluation`,
:mod:`learners.policy.evaluation`.
"""
