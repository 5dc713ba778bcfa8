"""DRPO (SaFRO) multi-task fusion policy; see :mod:`learners.drpo.learner`."""
