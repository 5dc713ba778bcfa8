"""Streams worker throughput (decode + validate + join + rewards + emit) vs raw consumers, same run.

    .venv/bin/python bench/join_bench.py [--sessions 5000] [--rounds 2] [--features] [--quick] [--json]

``--quick``: 3,000 sessions, 2 rounds (a few minutes on 2 cores). ``--json``: print only one JSON
object on stdout (the tables go to stderr), with ``worker_to_kafka_python`` (the worker's
events/s over the raw kafka-python consumer's, same run, median of rounds), ``crc32c``
(kafka-python's C CRC is installed) and ``worker_cpu_us_per_event``.

Each round replays a simulated LETOR log into fresh topics on the embedded broker (noida),
then reads the same topics three ways:

* ``aiokafka raw``: an ``AIOKafkaConsumer`` assigned every partition of ``impressions`` and
  ``feedback``, ``getmany`` from the seek until every record was seen (no decoding): the
  ceiling of the client Faust itself uses;
* ``kafka-python raw``: the same with ``KafkaConsumer.poll``;
* ``faust no-op``: a minimal Faust app (same broker settings as the worker, including its
  empty-fetch backoff, streams.fetch_backoff) whose agent only counts ``take_events``
  batches: Faust's own per-event ceiling on this machine;
* ``worker``: a ``streamrank worker`` subprocess (Faust app, group and changelog table; the
  join applies each fetched batch at once, streams.batch_fetch; examples and metrics out). Its span is from the start of its first batch to the
  end of the batch holding the last record, read from its status file; start-up and group
  join are excluded, as the raw consumers' connection set-up is (the worker's span starts at
  its first batch, so its first fetch is not counted: a small bias in its favour).

Prints events/s for each and the worker's ratio to each raw consumer (median over rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from support import fresh_topics, settings_env  # noqa: E402

from common import stack  # noqa: E402
from common.stack import process_cpu_s  # noqa: E402
from common.config import load_settings  # noqa: E402
from simulator.click_models import ClickModel  # noqa: E402
from simulator.kuairand import load_kuairand  # noqa: E402
from simulator.letor import load_letor  # noqa: E402
from simulator.logs import simulated_sessions, write_log  # noqa: E402
from simulator.session import SessionSimulator, SimulatorConfig  # noqa: E402
from streams.replay import replay  # noqa: E402
from streams.worker_process import WorkerProcess  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CONFIG = "[join]\nwindow_s = 20.0\nallowed_lateness_s = 1.0\nidle_timeout_s = 2.0\n"


async def aiokafka_raw(bootstrap: str, topics: list[str], expected: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count, start = 0, time.perf_counter()  # from the seek: includes the first fetch, as the worker's does
        while count < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            count += sum(len(v) for v in batch.values())
        return count / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def kafka_python_raw(bootstrap: str, topics: list[str], expected: int) -> float:
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", max_poll_records=5000,
                             max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        count, start = 0, time.perf_counter()
        while count < expected:
            batch = consumer.poll(timeout_ms=1000)
            count += sum(len(v) for v in batch.values())
        return count / (time.perf_counter() - start)
    finally:
        consumer.close()


def faust_noop_child(bootstrap: str, prefix: str, expected: int, port: int) -> None:
    """Run in a subprocess: a Faust app that only counts events, then prints its rate."""
    import faust  # noqa: PLC0415

    from streams import fetch_backoff  # noqa: PLC0415
    from streams.app import WorkerOptions  # noqa: PLC0415

    fetch_backoff.install(WorkerOptions().empty_fetch_backoff_s)
    app = faust.App(f"{prefix}noop-bench", broker=f"kafka://{bootstrap}", store="memory://", web_host="127.0.0.1",
                    web_port=port, web_bind="127.0.0.1", broker_session_timeout=6, broker_heartbeat_interval=1,
                    consumer_auto_offset_reset="earliest", topic_partitions=4, topic_replication_factor=1,
                    broker_max_poll_records=5000, consumer_max_fetch_size=8 * 1024 * 1024,
                    stream_buffer_maxsize=20000, autodiscover=False)
    source = app.topic(f"{prefix}impressions", f"{prefix}feedback", key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "t0": None}

    @app.agent(source)
    async def count(stream):  # noqa: ANN001, ANN202
        async for events in stream.take_events(1000, within=0.25):
            seen["t0"] = seen["t0"] or time.time()
            seen["n"] += len(events)
            if seen["n"] >= expected:
                print(f"FAUST_NOOP_RATE {seen['n'] / (time.time() - seen['t0'])}", flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def faust_noop_rate(settings, expected: int) -> float:
    from streams.app import free_port  # noqa: PLC0415

    proc = subprocess.run([sys.executable, __file__, "--faust-noop-child", settings.kafka_bootstrap,
                           settings.topics.prefix, str(expected), str(free_port())],
                          capture_output=True, text=True, timeout=300)
    for line in (proc.stdout + proc.stderr).splitlines():
        if "FAUST_NOOP_RATE" in line:
            return float(line.split("FAUST_NOOP_RATE", 1)[1].split()[0])
    raise RuntimeError(f"faust no-op run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def worker_rate(settings, env: dict, expected: int, n_impressions: int, log_dir: Path,
                broker_pgid: int | None = None) -> tuple[float, dict]:
    """Events/s of a worker subprocess, and its status doc plus ``cpu_s``: CPU it used from ready to done
    (start-up and group join excluded; less sensitive than wall time to other load on the machine)."""
    def broker_cpu_s() -> float:  # the broker and its launcher; 0 when the broker is not ours
        return stack.group_cpu_s(broker_pgid) if broker_pgid else 0.0

    worker = WorkerProcess(settings, env, "bench-worker", log_dir).start()
    try:
        worker.wait_ready(120)
        cpu_at_ready = process_cpu_s(worker.proc.pid)
        broker_at_ready = broker_cpu_s()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            doc = worker.status() or {}
            counts = doc.get("counts", {})
            if counts.get("events_in", 0) >= expected and counts.get("examples_out", 0) >= n_impressions:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"worker did not finish:\n{worker.log_tail()}")
        doc["cpu_s"] = process_cpu_s(worker.proc.pid) - cpu_at_ready
        doc["broker_cpu_s"] = broker_cpu_s() - broker_at_ready
        span = doc["last_input_at"] - doc["first_input_at"]
        return counts["events_in"] / span, doc
    finally:
        worker.stop()


def crc32c_installed() -> bool:
    """kafka-python checks record CRCs with the C ``crc32c`` module when it is importable (else pure Python)."""
    try:
        import crc32c  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--features", action="store_true", help="include 300-dim item features (bigger events)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (logs, status files)")
    parser.add_argument("--quick", action="store_true", help="3,000 sessions, 2 rounds")
    parser.add_argument("--json", dest="json_only", action="store_true",
                        help="print only the JSON result on stdout (tables on stderr)")
    parser.add_argument("--json-out", dest="json_out", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.rounds = 3000, 2
    console = Console(stderr=args.json_only)

    home = Path(tempfile.mkdtemp(prefix="join-bench-"))
    base = load_settings({**os.environ, "STREAMRANK_HOME": str(home)})
    external = bool(os.environ.get("STREAMRANK_KAFKA"))
    state = {"kafka": base.kafka, "redis": base.redis} if external else stack.up(base)
    base = base.with_endpoints(kafka=state["kafka"], redis=state["redis"])
    try:
        log = home / "letor.jsonl"
        sim = SessionSimulator(load_letor(DATA / "letor" / "rank.train"), load_kuairand(DATA / "kuairand"),
                               SimulatorConfig(click_model=ClickModel("pbm"), max_candidates=10,
                                               with_features=args.features), seed=0, namespace="bench")
        summary = write_log(simulated_sessions(sim, args.sessions), log, desc="simulate")
        config = home / "bench.toml"
        config.write_text(CONFIG)
        mean_bytes = log.stat().st_size / summary.events
        rows = []
        for round_no in range(args.rounds):
            settings = fresh_topics(base)
            replay([log], settings)
            topics = [settings.topics.impressions, settings.topics.feedback]
            env = settings_env(settings) | {"STREAMRANK_CONFIG": str(config)}
            raw_aio = asyncio.run(aiokafka_raw(settings.kafka_bootstrap, topics, summary.events))
            raw_kp = kafka_python_raw(settings.kafka_bootstrap, topics, summary.events)
            noop = faust_noop_rate(settings, summary.events)
            ours, doc = worker_rate(settings, env, summary.events, summary.impressions, home / f"logs-{round_no}",
                                    broker_pgid=None if external else state["pids"].get("kafka"))
            rows.append({"aiokafka": raw_aio, "kafka_python": raw_kp, "faust_noop": noop, "worker": ours,
                         "worker_busy_s": doc["busy_s"], "worker_batches": doc["counts"]["batches"],
                         "worker_cpu_us_per_event": 1e6 * doc["cpu_s"] / summary.events,
                         "broker_cpu_us_per_event": 1e6 * doc["broker_cpu_s"] / summary.events,
                         "examples_out": doc["counts"]["examples_out"], "closed_by": doc["closed_by"]})
            console.print(f"round {round_no + 1}: aiokafka raw {raw_aio:,.0f} ev/s, kafka-python raw "
                          f"{raw_kp:,.0f} ev/s, faust no-op {noop:,.0f} ev/s, worker {ours:,.0f} ev/s, "
                          f"{1e6 * doc['cpu_s'] / summary.events:,.0f} CPU us/event (examples {doc['counts']['examples_out']}, "
                          f"closed by {doc['closed_by']})")
    finally:
        if not external:
            stack.down(base)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    med = {k: statistics.median(r[k] for r in rows) for k in ("aiokafka", "kafka_python", "faust_noop", "worker")}
    ratio_aio = statistics.median(r["worker"] / r["aiokafka"] for r in rows)
    ratio_kp = statistics.median(r["worker"] / r["kafka_python"] for r in rows)
    ratio_noop = statistics.median(r["worker"] / r["faust_noop"] for r in rows)
    table = Table(title=f"join throughput: {summary.events:,} events ({summary.impressions:,} impressions), "
                        f"mean {mean_bytes:,.0f} B")
    for col in ("reader", "events/s (median)", "worker ratio (median of rounds)"):
        table.add_column(col)
    table.add_row("aiokafka raw consumer", f"{med['aiokafka']:,.0f}", f"{ratio_aio:.2f}")
    table.add_row("kafka-python raw consumer", f"{med['kafka_python']:,.0f}", f"{ratio_kp:.2f}")
    table.add_row("Faust no-op agent (take_events)", f"{med['faust_noop']:,.0f}", f"{ratio_noop:.2f}")
    table.add_row("streamrank worker (join+reward)", f"{med['worker']:,.0f}", "1.00")
    cpu_us = statistics.median(r["worker_cpu_us_per_event"] for r in rows)
    broker_us = statistics.median(r["broker_cpu_us_per_event"] for r in rows)
    console.print(f"worker CPU per event (median of rounds): {cpu_us:,.0f} us")
    console.print(table)
    result = {"events": summary.events, "impressions": summary.impressions, "mean_bytes": mean_bytes,
              "rounds": rows, "median": med, "ratio_vs_aiokafka": ratio_aio, "ratio_vs_kafka_python": ratio_kp,
              "ratio_vs_faust_noop": ratio_noop, "worker_to_kafka_python": ratio_kp, "crc32c": crc32c_installed(),
              "worker_cpu_us_per_event": cpu_us, "broker_cpu_us_per_event_while_worker_reads": broker_us}
    print(json.dumps(result, default=float))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--faust-noop-child":
        faust_noop_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
