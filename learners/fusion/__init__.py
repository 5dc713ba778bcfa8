"""DRPO (SaFRO) multi-task fusion policy; see :mod:`learners.fusion.learner`."""
