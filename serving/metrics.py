"""Prometheus metrics of the reranker service: what ``GET /metrics`` (serving.read_routes) exposes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("streamrank_rerank_requests", "rerank requests answered", ["status"],
                                registry=self.registry)
        self.latency = Histogram("streamrank_rerank_seconds", "rerank handler latency", registry=self.registry,
                                 buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.swaps = Gauge("streamrank_model_swaps", "snapshots swapped in", registry=self.registry)
        self.refusals = Gauge("streamrank_model_refusals", "snapshots refused or blocked", registry=self.registry)
        self.emitted = Gauge("streamrank_impressions_acked", "impressions acknowledged by Kafka", registry=self.registry)
        self.dropped = Gauge("streamrank_impressions_dropped", "impressions dropped (buffer full)",
                             registry=self.registry)
        self.failed = Gauge("streamrank_impressions_failed", "impressions the broker never acknowledged",
                            registry=self.registry)
        self.queued = Gauge("streamrank_impressions_queued", "impressions waiting in the buffer", registry=self.registry)
        self.features_unavailable = Gauge("streamrank_features_unavailable", "requests whose feature read failed "
                                          "(store unreachable)", registry=self.registry)
        self.features_from_cache = Gauge("streamrank_features_from_cache", "requests served item features from the "
                                         "local cache", registry=self.registry)
        self.healthy = Gauge("streamrank_healthy", "1: /healthz says ok, 0: degraded", registry=self.registry)
        self.degraded = Counter("streamrank_rerank_degraded", "requests answered degraded, by what", ["reason"],
                                registry=self.registry)
