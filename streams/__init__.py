"""The streams stage: impressions + feedback -> rewarded examples, on Kafka through faust-streaming.

Pure logic (no Kafka): :mod:`streams.join` (windows, watermarks, lateness), :mod:`streams.labeling`
(impression + feedback -> LabeledList), :mod:`streams.rewards` (item/list/query rewards).
The worker: :mod:`streams.app` (the Faust app), :mod:`streams.batch_fetch` (each fetch of the
source topics reaches the join as one batch; which part of Faust does what, and why),
:mod:`streams.agents` (the join's work per batch), :mod:`streams.join_writes` and
:mod:`streams.batch_produce` (entries and examples out as one record batch per partition),
:mod:`streams.records` (is a record a usable event; its key's partition),
:mod:`streams.positions` (lag, caught-up and idle partitions), :mod:`streams.delivery` (commit
barrier), :mod:`streams.dead_letter`, :mod:`streams.metrics` (counters and status files),
:mod:`streams.worker` / :mod:`streams.worker_process` (run and watch it).
Kafka plumbing: :mod:`streams.membership` and :mod:`streams.worker_fencing` (member ids,
LeaveGroup for dead members), :mod:`streams.recovery_order`, :mod:`streams.fetch_backoff`. Logs in and out: :mod:`streams.replay`, :mod:`streams.consume`.
The event contract itself is :mod:`contracts.events` (and :mod:`contracts.fast_decode`, its one-pass
decode of consumed records).
"""
