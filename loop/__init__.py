"""The closed-loop demo (``streamrank demo``) and the data-path demo (``streamrank data-demo``).

Serve -> log -> join -> learn -> snapshot -> swap -> serve, on the embedded stack or external
Kafka/Redis. Not part of any stage: it starts the stages as child processes and plays users.

* :mod:`loop.config`     :class:`~loop.config.DemoConfig`, every knob ``--set`` can change.
* :mod:`loop.children`   start, wait for and stop the child processes (worker, learners, server).
* :mod:`loop.users`      simulated users: requests, the feedback clock, what each request was served.
* :mod:`loop.demo`       the orchestration of one run and its ``summary.json``.
* :mod:`loop.metrics`    pure summaries of a run: reward/NDCG/ECE over time, staleness, throughput.
* :mod:`loop.plots`      the run's plots.
* :mod:`loop.data_path`  the data path alone: stack up, real data -> logs, replay, read back.
"""
