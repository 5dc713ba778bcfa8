"""The impression emitter batches impressions within its linger, on the real broker.

kafka-python's default ``batch_size`` (16 KB) holds one served impression of 50 items (~12 KB), so
each one went out in a produce request of its own whatever the linger (``serving.emitter.BATCH_BYTES``;
CPU per impression: ``bench/emitter_cost.py``). Counted here: kafka-python's produce requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kafka.producer.sender import Sender

from common.waiting import wait_for
from serving.emitter import ImpressionEmitter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[3]
IMPRESSIONS = 40
VALUE = b'{"items": "' + b"a" * 12_000 + b'"}'  # the size of a 50-item impression with features by reference


def produce_requests(settings, monkeypatch, producer_config: dict) -> int:
    """Produce requests kafka-python sends for ``IMPRESSIONS`` offered at once (all acknowledged)."""
    sent = []
    original = Sender._produce_request  # noqa: SLF001

    def counting(sender, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        sent.append(1)
        return original(sender, *args, **kwargs)

    monkeypatch.setattr(Sender, "_produce_request", counting)
    emitter = ImpressionEmitter(settings.kafka_bootstrap, settings.topics.impressions,
                                max_record_bytes=settings.max_event_bytes, producer_config=producer_config).start()
    try:
        emitter.offer(b"warm-up", VALUE)  # connect and fetch metadata before counting
        assert emitter.flush(30) and wait_for(lambda: emitter.stats.acked == 1, 30)
        sent.clear()
        for k in range(IMPRESSIONS):
            emitter.offer(f"r{k}".encode(), VALUE)
        assert emitter.flush(30)
        assert wait_for(lambda: emitter.stats.acked == 1 + IMPRESSIONS, 30), str(emitter.stats.as_dict())
        return len(sent)
    finally:
        emitter.close()
        monkeypatch.setattr(Sender, "_produce_request", original)


def test_impressions_offered_within_the_linger_share_produce_requests(settings, monkeypatch):
    serving = produce_requests(settings, monkeypatch, {"linger_ms": 500})
    one_each = produce_requests(settings, monkeypatch, {"linger_ms": 500, "batch_size": 16384})
    assert serving <= IMPRESSIONS // 8, f"{serving} produce requests for {IMPRESSIONS} impressions"
    assert one_each >= IMPRESSIONS // 4, f"kafka-python's default batch size: {one_each} requests"  # the test can tell


def test_the_emitter_bench_prints_both_batch_sizes_with_every_impression_acknowledged():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "emitter_cost.py"), "--json", "--rounds", "1",
                          "--seconds", "1", "--rate", "250"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert doc["acked_all"] and doc["impression_bytes"] > 8000  # a served 50-item impression
    assert doc["batch_bytes"] == {"serving": 256 * 1024, "kafka_python_default": 16384}
    for side in ("serving", "kafka_python_default"):
        assert doc[side]["cpu_us_per_impression"] > 0
    # more impressions share a request with the serving size (the default holds one impression per batch)
    assert doc["serving"]["records_per_request"] > 2 * doc["kafka_python_default"]["records_per_request"]
    assert doc["ratios"]["cpu_us_per_impression"] == doc["serving"]["cpu_us_per_impression"] / doc[
        "kafka_python_default"]["cpu_us_per_impression"]
