"""LDRO (Dual-Rerank) list-wise reranker and its GRPO baseline; see :mod:`learners.ranking.learner`."""
