"""The simulator as users of a running server: requests over HTTP, feedback on Kafka when its time comes.

:class:`Users` plays LETOR/KuaiRand sessions against ``POST /rerank``, scores what each user was
shown (reward, NDCG@10, expected clicks, against the upstream order) and hands the session's
feedback to a :class:`FeedbackClock`, which produces each event at its (scaled) event time.
``streamrank simulate`` and ``streamrank demo`` both use it.
"""

from __future__ import annotations

import heapq
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm import tqdm

from common.config import Settings
from common.paths import shared_data
from loop import metrics as dm
from loop.config import DemoConfig


class Users:
    """The simulator as users: request over HTTP, answer with feedback on Kafka, record what happened."""

    def __init__(self, settings: Settings, config: DemoConfig, base_url: str, send_features: bool = True) -> None:
        from kafka import KafkaProducer  # noqa: PLC0415

        from simulator.click_models import ClickModel  # noqa: PLC0415
        from simulator.kuairand import load_kuairand  # noqa: PLC0415
        from simulator.letor import load_letor  # noqa: PLC0415
        from simulator.session import SessionSimulator, SimulatorConfig  # noqa: PLC0415

        data = shared_data()
        dataset = load_letor(data / "letor" / "rank.train")
        self.sim = SessionSimulator(dataset, load_kuairand(data / "kuairand"),
                                    SimulatorConfig(click_model=ClickModel("pbm", max_grade=max(1, dataset.max_grade)),
                                                    max_candidates=config.max_candidates),
                                    seed=config.seed, namespace=f"demo{int(time.time())}")
        self.url = f"{base_url}/rerank"
        self.send_features = send_features  # False: the server fetches them from Feast
        self.topic = settings.topics.feedback
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks=1, enable_idempotence=False, linger_ms=5,
                                      max_block_ms=5000)
        self.served: list[dm.Served] = []
        #: the index of the next request: request ``i`` is a pure function of (seed, i), so each
        #: :meth:`run` continues where the last one stopped (new request ids, users and queries)
        self.next_index = 0
        self.feedback_events = 0
        self.produce_errors = 0
        self.time_scale = config.session_time_scale
        self._lock = threading.Lock()
        self._local = threading.local()
        self.clock = FeedbackClock(self._produce)

    def _produce(self, request_id: str, event: Any) -> None:
        from contracts.events import encode  # noqa: PLC0415

        try:
            self.producer.send(self.topic, key=request_id.encode(), value=encode(event))
        except Exception:  # noqa: BLE001
            with self._lock:
                self.produce_errors += 1

    def _client(self):
        import httpx  # noqa: PLC0415

        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(timeout=10.0)
        return self._local.client

    def one(self, index: int) -> None:
        from evaluation.metrics import ndcg_at_k  # noqa: PLC0415
        from streams.rewards import (  # noqa: PLC0415
            ListOutcome,
            RewardWeights,
            item_reward,
            list_reward,
        )

        request = self.sim.request(index, ts=time.time())
        body = {"request_id": request.request_id, "user_id": request.user_id, "query": request.query,
                "context": {"user_activity": request.user_activity},
                "candidates": [{"item_id": c.item_id, "scores": c.scores, "duration_ms": c.duration_ms}
                               for c in request.candidates]}
        if self.send_features:
            for cand, c in zip(body["candidates"], request.candidates):
                cand["features"] = [round(float(x), 4) for x in c.features]
        started = time.monotonic()
        try:
            response = self._client().post(self.url, json=body)
            ok = response.status_code == 200
            doc = response.json() if ok else {}
            error = "" if ok else f"HTTP {response.status_code}: {response.text[:200]}"
        except Exception as exc:  # noqa: BLE001 - any failure is an error of the loop
            ok, doc, error = False, {}, f"{type(exc).__name__}: {exc}"
        latency = time.monotonic() - started
        record = dm.Served(t=time.time(), request_id=request.request_id, ok=ok, latency_s=latency, error=error)
        if ok:
            index_of = request.item_index()
            order = [index_of[item["item_id"]] for item in doc["items"]]
            feedback = scale_session(self.sim.respond(request, order, shown_at=request.ts), request.ts,
                                     self.time_scale)
            outcome = ListOutcome()
            for event in feedback:
                outcome.add(event.item_id, event.kind, event.value)
            weights = RewardWeights()
            shown = [request.candidates[j] for j in order]
            rewards = [item_reward(outcome.items[c.item_id], c.duration_ms, weights) if c.item_id in outcome.items
                       else 0.0 for c in shown]
            record.versions = dict(doc.get("model_versions", {}))
            record.reward = list_reward(rewards, range(1, len(shown) + 1))
            record.reward_upstream = self._upstream_reward(request, weights)
            record.ndcg10 = ndcg_at_k(request.relevance[order], 10)
            record.ndcg10_upstream = ndcg_at_k(request.relevance, 10)  # candidates come in the upstream order
            record.expected_clicks = self.sim.expected_clicks(request, order)
            record.expected_clicks_upstream = self.sim.expected_clicks(request, range(len(order)))
            record.clicks = [int(c.item_id in outcome.items and outcome.items[c.item_id].click > 0) for c in shown]
            record.click_probs = [float(item["calibrated"].get("click", 0.5)) for item in doc["items"]]
            with self._lock:
                self.feedback_events += len(feedback)
                self.served.append(record)
            self.clock.schedule(request.request_id, feedback, record)
            return
        with self._lock:
            self.served.append(record)

    def _upstream_reward(self, request: Any, weights: Any) -> float:
        """The list reward had the upstream order been shown (independent draws: RNG stream 2)."""
        from streams.rewards import ListOutcome, item_reward, list_reward  # noqa: PLC0415

        outcome = ListOutcome()
        for event in self.sim.respond(request, range(len(request.candidates)), stream=2, shown_at=request.ts):
            outcome.add(event.item_id, event.kind, event.value)
        rewards = [item_reward(outcome.items[c.item_id], c.duration_ms, weights) if c.item_id in outcome.items
                   else 0.0 for c in request.candidates]
        return list_reward(rewards, range(1, len(rewards) + 1))

    def run(self, duration_s: float, rate: float, concurrency: int) -> None:
        """Send requests at ``rate`` for ``duration_s`` seconds, then wait for their feedback to be produced.

        Request indices continue from the previous call, so a run made of several calls (as
        ``streamrank simulate`` reports per chunk) never reuses a request id."""
        interval = 1.0 / rate
        start = time.monotonic()
        futures = []
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="user") as pool, \
                tqdm(total=int(duration_s * rate), desc="requests", unit="req", disable=None) as bar:
            sent = 0
            while time.monotonic() - start < duration_s:
                target = start + sent * interval
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.one, self.next_index))
                self.next_index += 1
                sent += 1
                bar.update(1)
                if len(futures) > 4 * concurrency:  # back-pressure: never queue unboundedly
                    futures.pop(0).result()
            for f in futures:
                f.result()
        self.clock.drain()
        self.producer.flush(10)

    def close(self) -> None:
        self.clock.close()
        self.producer.close(5)

def scale_session(events: list[Any], shown_at: float, scale: float) -> list[Any]:
    """The same session played ``1/scale`` times faster: ``ts' = shown_at + scale * (ts - shown_at)``."""
    if scale == 1.0:
        return list(events)
    return [e.model_copy(update={"ts": round(shown_at + scale * (e.ts - shown_at), 6)}) for e in events]

class FeedbackClock:
    """Sends each feedback event when its event time comes (one thread, a heap ordered by time).

    A client sends a click when the user clicks, not when the list is shown; producing a whole
    session at once with future timestamps would move the join's watermark ahead of the clock
    and would let no session close by its ``session_end`` before its window. A served record's
    ``feedback_sent`` gets each event's event time and production time (its staleness starts at
    the last one the join's window kept, :func:`loop.metrics.learned_feedback_done`).
    """

    def __init__(self, send: Any) -> None:
        self._send = send
        self._heap: list[tuple[float, int, str, Any, Any]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="feedback-clock", daemon=True)
        self._thread.start()

    def schedule(self, request_id: str, events: list[Any], record: Any) -> None:
        if not events:
            return
        with self._cond:
            for event in events:
                self._seq += 1
                heapq.heappush(self._heap, (float(event.ts), self._seq, request_id, event, record))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.time()):
                    self._cond.wait(None if not self._heap else max(0.0, self._heap[0][0] - time.time()))
                if self._closed:
                    return
                _due, _seq, request_id, event, record = heapq.heappop(self._heap)
            self._send(request_id, event)
            record.feedback_sent.append((float(event.ts), time.time()))
            with self._cond:
                self._cond.notify_all()

    def drain(self, timeout_s: float = 120.0) -> None:
        """Wait until every scheduled event was sent (sessions still playing out at the end of a run)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap and time.monotonic() < deadline:
                self._cond.wait(0.2)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)
