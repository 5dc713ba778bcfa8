"""The streams stage: impressions + feedback -> rewarded examples, on Kafka through faust-streaming.

Pure logic (no Kafka): :mod:`streams.join` (windows, watermarks, lateness), :mod:`streams.labeling`
(impression + feedback -> LabeledList), :mod:`streams.rewards` (item/list/query rewards).
The worker: :mod:`streams.app` (the Faust app), :mod:`streams.agents` (the join agent's work per
batch), :mod:`streams.delivery` (commit barrier), :mod:`streams.dead_letter`,
:mod:`streams.metrics`, :mod:`streams.worker` / :mod:`streams.worker_process` (run and watch it).
Kafka plumbing: :mod:`streams.recovery_order`, :mod:`streams.fetch_backoff`,
:mod:`streams.worker_fencing`. Logs in and out: :mod:`streams.replay`, :mod:`streams.consume`.
The event contract itself is :mod:`contracts.events`.
"""
