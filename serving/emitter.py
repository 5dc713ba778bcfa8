"""Impression logging that never blocks a response: a bounded queue drained by one producer thread.

The request path only calls :meth:`ImpressionEmitter.offer`, a ``put_nowait`` on a bounded
queue: it returns at once, and when the queue is full (Kafka slow or down) the impression is
dropped and counted instead of making the user wait. One background thread owns the Kafka
producer (kafka-python, which may block in ``send`` for up to ``max_block_ms`` while the
broker is unreachable: that is why it lives off the request path) and counts acknowledged,
failed and dropped records. The counts are exported as Prometheus metrics by the app.

Size (issue 17): a record over ``max_record_bytes`` (``Settings.max_event_bytes``, under the
broker's own limit) is never sent: it is counted in ``too_large`` and logged, because a record the
broker refuses can leave a kafka-python producer failing every later send
(:mod:`common.record_size`). If the broker refuses one anyway (its limit is smaller than
configured) or the producer's idempotence state breaks, the producer is closed and built anew
(``producer_rebuilds``) and the records that failed only because of the broken producer are sent
once more on the new one: those smaller than the largest record the broker refused as too large
(that size, or more, is then dropped as too large like the configured limit). That rule is
:class:`common.record_size.BrokenProducerRule`, shared with replay; the emitter applies it to each
failure as it arrives, on the producer's I/O thread, so the request path never waits for it.
Sending again makes the log at least once around a rebuild: a record the broker took just before
the producer broke (its acknowledgement lost with the producer) is logged twice; the join keeps the
first copy of an impression (``event_id``), so a copy costs no label.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from common.record_size import BrokenProducerRule, producer_max_request_size, record_bytes

log = logging.getLogger(__name__)
#: the most bytes of impressions kafka-python gathers per partition before it sends them (or the linger
#: ends): ~20 impressions of 50 items; never more than ``max_record_bytes``, which is under the broker's limit
BATCH_BYTES = 256 * 1024


@dataclass
class EmitterStats:
    offered: int = 0
    acked: int = 0
    failed: int = 0  # handed to the producer, but the broker never acknowledged them
    dropped: int = 0  # the buffer was full: never handed to the producer
    too_large: int = 0  # over max_record_bytes: never handed to the producer
    producer_rebuilds: int = 0  # producers closed and built anew after a fatal client error
    resent: int = 0  # records sent again after failing only because the producer had broken

    def as_dict(self) -> dict[str, int]:
        return {"offered": self.offered, "acked": self.acked, "failed": self.failed, "dropped": self.dropped,
                "too_large": self.too_large, "producer_rebuilds": self.producer_rebuilds, "resent": self.resent}


class ImpressionEmitter:
    """Bounded, non-blocking impression producer (one daemon thread)."""

    def __init__(self, bootstrap: str | None, topic: str, max_queue: int = 10_000, producer_config: dict | None = None,
                 reconnect_backoff_s: float = 1.0, max_record_bytes: int = 1_000_000) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
        self.max_record_bytes = max_record_bytes
        self.bootstrap = bootstrap
        self.topic = topic
        self.stats = EmitterStats()
        self._queue: queue.Queue[tuple[bytes, bytes | Callable[[], bytes]]] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer = None
        # acks=1 and no idempotence (which needs acks=all): an impression waits for one broker,
        # never for a quorum, and a failed one is counted and dropped, not retried in order
        # batch_size: kafka-python's default (16 KB) holds one impression of 50 items (~12 KB), so each
        # send started a batch, woke the I/O thread and went out in a produce request of its own: the
        # linger batched nothing. A batch now fills for up to the linger (bench/emitter_cost.py).
        self._producer_config = dict(acks=1, enable_idempotence=False, linger_ms=5, max_block_ms=1000, request_timeout_ms=3000,
                                     delivery_timeout_ms=6000, retries=2, reconnect_backoff_max_ms=1000,
                                     max_request_size=producer_max_request_size(max_record_bytes),
                                     batch_size=min(max_record_bytes, BATCH_BYTES))
        self._producer_config.update(producer_config or {})
        self._rebuild = threading.Event()  # set by a fatal send error (on the producer's I/O thread)
        self._resend: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._warned_at = float("-inf")
        #: which failed records to send again on a rebuilt producer, and the size the broker refused
        self._broken = BrokenProducerRule(max_record_bytes)
        self._lost_at: collections.deque[tuple[float, str]] = collections.deque(maxlen=10_000)  # (when, why) per loss
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
                self._lost_at.append((time.monotonic(), "dropped (buffer full)"))
            return False

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def health(self, window_s: float = 30.0) -> list[str]:
        """Why impression logging is degraded now: records lost in the last ``window_s``, by why (empty: none)."""
        since = time.monotonic() - window_s
        with self._lock:
            recent = collections.Counter(why for at, why in self._lost_at if at >= since)
        return [f"impressions: {n} {why} in the last {window_s:.0f} s" for why, n in sorted(recent.items())]

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
            self._lost_at.append((time.monotonic(), "not acknowledged by the broker"))
        log.debug("impression not delivered: %s", exc)

    def _on_send_error(self, key: bytes, value: bytes, resend: bool, exc: BaseException) -> None:
        size = record_bytes(key, value)
        if self._broken.note(exc, size):
            self._rebuild.set()
            if resend and not self._broken.refuses(size):
                self._resend.append((key, value))  # a victim of the broken producer, not at fault itself
                return
        self._on_error(exc)

    def _connect(self):
        from kafka import KafkaProducer  # noqa: PLC0415

        return KafkaProducer(bootstrap_servers=self.bootstrap, **self._producer_config)

    def _next(self) -> tuple[bytes, bytes | Callable[[], bytes], bool] | None:
        """The next record: one to send again first, else one from the queue (``None`` after 0.2 s idle)."""
        try:
            again = self._resend.popleft()
        except IndexError:
            pass
        else:
            with self._lock:
                self.stats.resent += 1
            return again[0], again[1], False
        try:
            queued = self._queue.get(timeout=0.2)
        except queue.Empty:
            return None
        return queued[0], queued[1], True

    def _too_large(self, key: bytes, value: bytes) -> bool:
        size = record_bytes(key, value)
        if not self._broken.refuses(size):
            return False
        with self._lock:
            self.stats.too_large += 1
            self._lost_at.append((time.monotonic(), "over the record size limit"))
            warn, now = False, time.monotonic()
            if now - self._warned_at >= 10.0:
                warn, self._warned_at = True, now
        if warn:
            log.warning("impression %r of %d bytes is over the record limit of %d bytes: dropped (%d so far)",
                        key[:64], size, self.max_record_bytes, self.stats.too_large)
        return True

    def _ensure_producer(self) -> bool:
        if self._rebuild.is_set() and self._producer is not None:
            self._rebuild.clear()
            producer, self._producer = self._producer, None
            try:
                producer.close(timeout=1)
            except Exception:  # noqa: BLE001 - it is broken already
                pass
            with self._lock:
                self.stats.producer_rebuilds += 1
            log.warning("impression producer rebuilt after a fatal client error")
        if self._producer is None:
            try:
                self._producer = self._connect()
            except Exception as exc:  # noqa: BLE001 - broker down: count it, keep draining
                log.warning("impression producer cannot connect to %s: %s", self.bootstrap, exc)
                return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._next()
            if item is None:
                continue
            key, value, first_try = item
            if callable(value):
                try:
                    value = value()
                except Exception as exc:  # noqa: BLE001 - an event that does not build is counted, not fatal
                    log.error("impression could not be built: %s", exc)
                    self._on_error(exc)
                    continue
            if self._too_large(key, value):
                continue
            if not self._ensure_producer():
                self._on_error(ConnectionError(f"no producer for {self.bootstrap}"))
                self._stop.wait(self._backoff)
                continue
            try:
                future = self._producer.send(self.topic, key=key, value=value)
                future.add_callback(self._on_ack)
                future.add_errback(lambda exc, k=key, v=value, again=first_try: self._on_send_error(k, v, again, exc))
            except Exception as exc:  # noqa: BLE001 - e.g. metadata timeout while the broker is down
                self._on_send_error(key, value, first_try, exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is drained and the producer flushed (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread.is_alive():
            while (self._queue.qsize() or self._resend) and time.monotonic() < deadline:
                time.sleep(0.02)
            producer = self._producer
            if producer is not None:
                try:
                    producer.flush(timeout=max(0.1, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - closed under us by a rebuild: look again
                    pass
            if not self._queue.qsize() and not self._resend:
                break  # a failed send may have queued a resend during that flush: then go round again
        return self._queue.qsize() == 0 and not self._resend

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
