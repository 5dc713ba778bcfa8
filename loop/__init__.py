"""The closed-loop demo (``streamrank demo``) and the data-path demo (``streamrank data-demo``).

Serve -> log -> join -> learn -> snapshot -> swap -> serve, on the embedded stack or external
Kafka/Redis. Not part of any stage: it starts the stages as child processes and plays users.

* :mod:`loop.config`     :class:`~loop.config.DemoConfig`, every knob ``--set`` can change.
* :mod:`loop.children`   start, wait for and stop the child processes (worker, learners, server).
* :mod:`loop.users`      simulated users: requests, the feedback clock, what each request was served.
* :mod:`loop.demo`       the orchestration of one run.
* :mod:`loop.readback`   what the run reads back from its stages (topics, status files, /metrics).
* :mod:`loop.summary`    the run's ``summary.json``, ``staleness.csv`` and the headline line.
* :mod:`loop.metrics`    pure summaries of a run (reward/NDCG/ECE over time, staleness) and its plots.
* :mod:`loop.data_path`  the data path alone: stack up, real data -> logs, replay, read back.
"""
