"""Evaluation that does not depend on any learner: metrics and off-policy estimators.

* :mod:`evaluation.metrics`  calibration metrics (ECE, field-level ECE, PCOC, log-loss, AUC) and NDCG@k.
* :mod:`evaluation.bootstrap` cluster-bootstrap 95 % intervals of the calibration metrics.
* :mod:`evaluation.ope`      IPS, SNIPS and DR with bootstrap confidence intervals (the promotion gate's library).
* :mod:`evaluation.ope_obd`  the Open Bandit Dataset adapter for ``streamrank eval ope``.
* :mod:`evaluation.intervals` paired relative gains with a hierarchical bootstrap interval; per-seed t intervals.
* :mod:`evaluation.drift`    dip and recovery time of a metric curve after a shift.

The evaluations of a learner family live beside it: :mod:`learners.calibration.evaluation`,
:mod:`learners.policy.evaluation` (with :mod:`learners.policy.evaluation_fusion` and
:mod:`learners.policy.evaluation_drift`).
"""
