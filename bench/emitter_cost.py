"""CPU per logged impression: the serving emitter with the batch size it uses against kafka-python's default.

Starts its own embedded stack (temporary home), builds one real impression of ``--candidates``
items the way the server does (:func:`serving.scoring.impression_factory`, features fetched, so
the event carries the feature reference: ~9 KB for 50 items with this bench's short ids, ~12 KB
with LETOR's), then in ``--rounds`` interleaved
rounds offers it ``--rate`` times a second for ``--seconds`` to an
:class:`~serving.emitter.ImpressionEmitter` built one way or the other, waits for every
acknowledgement, and reads:

* the CPU seconds this process used meanwhile (every thread: the emitter building and encoding
  the event, kafka-python's ``send`` and its I/O thread), per impression;
* the broker's CPU seconds meanwhile, per impression (it shares the server's cores);
* the impressions per produce request (kafka-python's ``records-per-request-avg``).

Why: kafka-python's default ``batch_size`` (16 KB) holds one such impression, so each ``send``
started a batch, woke the I/O thread and went out in a produce request of its own; the 50 ms
linger batched nothing (``serving.emitter.BATCH_BYTES``). Medians of the rounds and the ratios
(serving's / the default's) are printed, measured in the same run.

    .venv/bin/python bench/emitter_cost.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import stack  # noqa: E402

DEFAULT_BATCH_BYTES = 16384  # kafka-python's own default


def one_impression(candidates: int) -> bytes:
    """A served impression of ``candidates`` items (features by reference), built as the server builds it."""
    import torch  # noqa: PLC0415

    from contracts.rerank import RerankBody  # noqa: PLC0415
    from serving.holder import Bundle  # noqa: PLC0415
    from serving.scoring import impression_factory, prepare, score_batch  # noqa: PLC0415
    from serving.settings import ServeConfig  # noqa: PLC0415

    class Rows:
        reference = "feast:item_features"

        def fetch(self, _user, _query, ids):
            return torch.zeros(len(ids), 8)

    body = RerankBody.model_validate({"request_id": "r", "user_id": "u1", "query": "q1", "candidates": [
        {"item_id": f"doc-{k:06d}", "scores": {"click": 0.1 + k / 1000, "long_view": 0.05, "watch_time": 0.3}}
        for k in range(candidates)]})
    config = ServeConfig()
    out = score_batch(Bundle(), [prepare(body, config)], config, Rows())[0]
    return impression_factory(body, out, config, time.time())()


def records_per_request(emitter) -> float:
    """kafka-python's own ``records-per-request-avg`` (its metrics window: this round, warm-up included)."""
    producer = emitter._producer  # noqa: SLF001 - the bench reads the client's own metric
    if producer is None:
        return float("nan")
    return float(producer.metrics().get("producer-metrics", {}).get("records-per-request-avg", float("nan")))


def measure(bootstrap: str, topic: str, value: bytes, batch_bytes: int | None, rate: float, seconds: float,
            broker_pid: int | None) -> dict[str, float]:
    """One round: offer ``value`` at ``rate``/s for ``seconds``; CPU and requests per impression."""
    from serving.emitter import ImpressionEmitter  # noqa: PLC0415

    config = {"linger_ms": 50}
    if batch_bytes is not None:
        config["batch_size"] = batch_bytes
    emitter = ImpressionEmitter(bootstrap, topic, producer_config=config).start()
    try:
        for k in range(20):  # connect, fetch metadata, warm the path
            emitter.offer(f"warm-{k}".encode(), value)
        emitter.flush(30)
        cpu0, broker0 = time.process_time(), stack.group_cpu_s(broker_pid) if broker_pid else 0.0
        n = int(rate * seconds)
        started = time.monotonic()
        for k in range(n):
            emitter.offer(f"req-{k}".encode(), lambda: value)  # a callable, as the server offers it
            delay = started + (k + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        emitter.flush(30)
        cpu = time.process_time() - cpu0
        broker = (stack.group_cpu_s(broker_pid) - broker0) if broker_pid else float("nan")
        acked = emitter.stats.acked - 20
        return {"impressions": n, "acked": acked, "cpu_us_per_impression": cpu / n * 1e6,
                "broker_cpu_us_per_impression": broker / n * 1e6,
                "records_per_request": records_per_request(emitter)}
    finally:
        emitter.close(timeout=5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--rate", type=float, default=250.0, help="impressions offered per second")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 s")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 5.0
    from serving.emitter import BATCH_BYTES  # noqa: PLC0415

    with stack.private_stack("emitter-cost-") as (settings, state):
        value = one_impression(args.candidates)
        sides = {"serving": None, "kafka_python_default": DEFAULT_BATCH_BYTES}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                rounds[name].append(measure(settings.kafka, settings.topics.impressions, value, sides[name], args.rate,
                                            args.seconds, state["pids"].get("kafka")))
                print(f"round {r + 1}/{args.rounds} {name}: {rounds[name][-1]}", file=sys.stderr, flush=True)
        keys = ("cpu_us_per_impression", "broker_cpu_us_per_impression", "records_per_request")
        med = {name: {k: statistics.median(x[k] for x in rows) for k in keys} for name, rows in rounds.items()}
        doc = {"impression_bytes": len(value), "rate": args.rate, "seconds": args.seconds, "rounds": args.rounds,
               "batch_bytes": {"serving": BATCH_BYTES, "kafka_python_default": DEFAULT_BATCH_BYTES},
               **med, "ratios": {k: med["serving"][k] / med["kafka_python_default"][k]
                                 if med["kafka_python_default"][k] else None for k in keys},
               "acked_all": all(x["acked"] >= x["impressions"] for rows in rounds.values() for x in rows)}
    if args.json:
        print(json.dumps(doc))
    else:
        print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
