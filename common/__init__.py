"""Shared helpers every stage may import; imports no other streamrank package.

* :mod:`common.config`  the one config: endpoints, topic names, ports, intervals (``STREAMRANK_*``).
* :mod:`common.paths`   the repository root and the real data folder (``../shared/data``).
* :mod:`common.waiting` poll a condition until it holds or a deadline passes.
* :mod:`common.errors`  :class:`~common.errors.StreamrankError`, the root of the project's exceptions.
* :mod:`common.stack`   the embedded stack: a Kafka-protocol broker from a pip wheel + Redis on loopback.
* :mod:`common.record_size` the record size limit every producer checks, and which producer errors are fatal.
* :mod:`common.topics`  the project's topics on a broker: created with their partitions and retention.
* :mod:`common.heap`    freeze a long-running process's start-up heap (fewer GC passes).
* :mod:`common.faust_worker` the Faust worker class that freezes it once start-up finished.
* :mod:`common.health`  the health probes used by container health checks.
* :mod:`common.logs`    long-running commands' logging: no ANSI off a terminal, progress lines at INFO.
* :mod:`common.tables`  the CLI's plain-text tables (rich, never wrapped).
"""
