"""Feature store and model snapshots: Feast on Redis, streaming stats, versioned snapshot registry.

Modules, one job each (data flow: streams -> learners -> feature_store -> serving):

* :mod:`feature_store.snapshots`     ``SnapshotRegistry``: publish / current / load / rollback /
                                     list_versions / verify of safetensors + JSON-manifest snapshots in
                                     Redis, announced on ``model-updates`` (Kafka) and Redis pub/sub.
* :mod:`feature_store.snapshot_scripts` the registry's Lua scripts (pointer move, version numbers).
* :mod:`feature_store.scheduling`    ``LearnerJobs``: apscheduler jobs in the learner process (snapshot
                                     every T s when changed and on shutdown; scheduled materialize) and
                                     ``MaterializeRepair`` (re-materializes rows the online store lost).
* :mod:`feature_store.settings`      intervals, retention, batching (``STREAMRANK_SNAPSHOT_*``, ...).
* :mod:`feature_store.feast_repo`    renders the runnable Feast repo (``feature_store.yaml`` from config +
                                     the definitions in ``feature_store/repo``), apply, materialize.
* :mod:`feature_store.offline_data`  the repo's parquet, generated from ../shared/data.
* :mod:`feature_store.online_read`   serving's read: 1 user + 1 query + N items in one Redis round trip
                                     on Feast-written keys (and the Feast SDK path to compare with).
* :mod:`feature_store.stream_stats`  pure decayed item/query statistics.
* :mod:`feature_store.stats_push`    Feast push of those stats, and resuming from stored values.
* :mod:`feature_store.stats_agent`   the Faust agent: ``examples`` -> stats -> push, dead-letter.
* :mod:`streamrank.cli.features`      ``streamrank features ...`` and ``streamrank snapshots ...``.
"""
