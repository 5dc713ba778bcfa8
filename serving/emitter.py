"""Impression logging that never blocks a response: a bounded queue drained by one producer thread.

The request path only calls :meth:`ImpressionEmitter.offer`, a ``put_nowait`` on a bounded
queue: it returns at once, and when the queue is full (Kafka slow or down) the impression is
dropped and counted instead of making the user wait. One background thread owns the Kafka
producer (kafka-python, which may block in ``send`` for up to ``max_block_ms`` while the
broker is unreachable: that is why it lives off the request path) and counts acknowledged,
failed and dropped records. The counts are exported as Prometheus metrics by the app.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class EmitterStats:
    offered: int = 0
    acked: int = 0
    failed: int = 0  # handed to the producer, but the broker never acknowledged them
    dropped: int = 0  # the buffer was full: never handed to the producer

    def as_dict(self) -> dict[str, int]:
        return {"offered": self.offered, "acked": self.acked, "failed": self.failed, "dropped": self.dropped}


class ImpressionEmitter:
    """Bounded, non-blocking impression producer (one daemon thread)."""

    def __init__(self, bootstrap: str | None, topic: str, max_queue: int = 10_000, producer_config: dict | None = None,
                 reconnect_backoff_s: float = 1.0) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.stats = EmitterStats()
        self._queue: queue.Queue[tuple[bytes, bytes | Callable[[], bytes]]] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer = None
        # acks=1 and no idempotence (which needs acks=all): an impression waits for one broker,
        # never for a quorum, and a failed one is counted and dropped, not retried in order
        self._producer_config = dict(acks=1, enable_idempotence=False, linger_ms=5, max_block_ms=1000, request_timeout_ms=3000,
                                     delivery_timeout_ms=6000, retries=2, reconnect_backoff_max_ms=1000,
                                     max_request_size=8 * 1024 * 1024)
        self._producer_config.update(producer_config or {})
        self._backoff = reconnect_backoff_s
        self._thread = threading.Thread(target=self._run, name="impression-emitter", daemon=True)

    # -- request path ------------------------------------------------------------------------------
    def offer(self, key: bytes, value: bytes | Callable[[], bytes]) -> bool:
        """Queue one record without blocking; ``False`` (and a drop counted) when the buffer is full.

        ``value`` may be a zero-argument callable returning the bytes: it is called on the
        emitter thread, so building and encoding the event cost the request nothing.
        """
        with self._lock:
            self.stats.offered += 1
        try:
            self._queue.put_nowait((key, value))
            return True
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1
            return False

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # -- background ------------------------------------------------------------------------------
    def start(self) -> "ImpressionEmitter":
        if self.bootstrap:
            self._thread.start()
        return self

    def _on_ack(self, _metadata) -> None:
        with self._lock:
            self.stats.acked += 1

    def _on_error(self, exc: BaseException) -> None:
        with self._lock:
            self.stats.failed += 1
        log.debug("impression not delivered: %s", exc)

    def _connect(self):
        from kafka import KafkaProducer  # noqa: PLC0415

        return KafkaProducer(bootstrap_servers=self.bootstrap, **self._producer_config)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                key, value = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if callable(value):
                try:
                    value = value()
                except Exception as exc:  # noqa: BLE001 - an event that does not build is counted, not fatal
                    log.error("impression could not be built: %s", exc)
                    self._on_error(exc)
                    continue
            if self._producer is None:
                try:
                    self._producer = self._connect()
                except Exception as exc:  # noqa: BLE001 - broker down: count it, keep draining
                    log.warning("impression producer cannot connect to %s: %s", self.bootstrap, exc)
                    self._on_error(exc)
                    self._stop.wait(self._backoff)
                    continue
            try:
                future = self._producer.send(self.topic, key=key, value=value)
                future.add_callback(self._on_ack)
                future.add_errback(self._on_error)
            except Exception as exc:  # noqa: BLE001 - e.g. metadata timeout while the broker is down
                self._on_error(exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is drained and the producer flushed (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.qsize() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001
                return False
        return self._queue.qsize() == 0

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
            self._producer = None
