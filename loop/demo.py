"""``streamrank demo``: the closed loop serve -> log -> join -> learn -> snapshot -> swap -> serve.

What it starts (and stops again, in reverse order, whatever happens):

1. the embedded stack (broker + Redis) unless one is running or ``STREAMRANK_KAFKA``/
   ``STREAMRANK_REDIS`` point at external ones; a fresh topic prefix per run;
2. the Feast repo, applied against that Redis (when ``feature_store`` provides it);
3. subprocesses: the streams worker (``streamrank worker``: impressions ⋈ feedback ->
   ``examples``), one learner worker per model (``streamrank learn --model NAME``), and the
   reranker (``streamrank serve``) with exploration on;
4. snapshots every ``snapshot_interval_s``: by the learners themselves (``learn --publish``),
   or, with learner workers that cannot, by :mod:`learners.runtime.snapshot_bridge` from their checkpoints;
5. the LETOR/KuaiRand simulator as users: ``rate`` requests/s over HTTP from ``concurrency``
   threads, each answered with the simulator's feedback events on the ``feedback`` topic.

At the end it reads ``examples`` and ``model-updates`` back, computes the summary
(:mod:`loop.metrics`), writes ``summary.json`` and PNG plots to ``output`` and prints
the headline numbers.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from common import stack
from common.config import Settings, Topics, read_stack_state
from common.paths import shared_data
from loop import metrics as dm
from streams.agents import status_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    duration_s: float = 120.0
    output: Path = Path("out/demo")
    rate: float = 20.0  # requests per second
    concurrency: int = 4
    snapshot_interval_s: float = 1.0
    seed: int = 0
    learners: tuple[str, ...] = ("ldro", "umnn")
    reranker: str = "ldro"
    calibrator: str = "umnn"
    fusion: str = ""  # e.g. "drpo" (add it to learners too)
    max_candidates: int = 30
    bucket_s: float = 10.0
    drain_s: float = 8.0
    #: Wall seconds per simulated second of a user's session: 0.05 plays a 30 s session (clicks,
    #: watching, likes, a reformulation, the session end) out in 1.5 s. Each feedback event is
    #: produced when its (scaled) event time comes, as a client would send it.
    session_time_scale: float = 0.05
    #: The join's event-time window (wall seconds, so in scaled session time: 1.5 s = 30 s of a
    #: session) and allowed lateness; sessions without a ``session_end`` close by the window, so
    #: their staleness includes the rest of the window after their last event (the summary splits
    #: staleness by close reason). Users produce feedback in event-time order on loopback, so
    #: 0.1 s of lateness lost no in-window event in the runs of BENCHMARKS.md (the join's ``late``
    #: counter, in ``summary["join"]``); a deployment sets it to its transport's disorder.
    join_window_s: float = 1.5
    join_lateness_s: float = 0.1
    #: The learners' micro-batch: a take of up to ``learner_batch`` examples waits at most
    #: ``learner_within_s``, and a partial batch is learned once its oldest example waited
    #: ``learner_max_wait_s`` (``None``: only full batches, so at 20 examples/s an example waited
    #: up to 0.8 s for 15 more). Both waits are part of the staleness; shorter ones cost more
    #: learner steps (``summary["learner_timings_s"]``, ``summary["cpu_s"]``).
    learner_within_s: float = 0.1
    learner_max_wait_s: float | None = 0.05
    #: How long the join worker's take() batch waits to fill (part of every example's join time).
    join_within_s: float = 0.05
    #: LDRO starts from the cold-start policy (its skip term on the task logits), see LDROConfig.
    warm_start_ldro: bool = True
    #: The task scores LDRO reads: ``upstream`` (stationary) or ``calibrated`` (the online UMNN's
    #: output, which moves with every calibrator swap and carries the upstream position's bias).
    ldro_task_inputs: str = "upstream"
    learner_batch: int = 16
    #: Share of requests served by a Gumbel-Max sample (logged with its PL log-prob, used by the
    #: gate); the others get the current model's greedy order (ServeConfig.explore_rate).
    explore_rate: float = 0.2
    #: staleness is also summarised without the examples whose feedback ended in the first
    #: ``warmup_s`` seconds (``summary["staleness_after_warmup"]``)
    warmup_s: float = 10.0
    gate_window: int = 150
    feast: bool = True
    startup_timeout_s: float = 120.0
    #: Cold start (no reranker snapshot yet, or none passed the gate) ranks by these fusion weights
    #: over the task logits; the default is the upstream ranker's own order (its click score), the
    #: baseline a learned reranker has to beat.
    cold_start_weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0})


#: DemoConfig fields with their own ``streamrank demo`` option (``--set`` takes the others)
DEMO_OPTION_FIELDS = frozenset({"duration_s", "output", "rate", "concurrency", "snapshot_interval_s", "seed",
                                "learners", "reranker", "calibrator", "fusion", "feast"})


def demo_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Check ``--set`` values against the :class:`DemoConfig` fields they name (ValueError names the key)."""
    fields = {f.name: f for f in dataclasses.fields(DemoConfig)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields or key in DEMO_OPTION_FIELDS:
            known = ", ".join(sorted(set(fields) - DEMO_OPTION_FIELDS))
            hint = " (use its own option)" if key in DEMO_OPTION_FIELDS else f"; known: {known}"
            raise ValueError(f"{key!r} is not a DemoConfig field --set can change{hint}")
        kind = str(fields[key].type)
        if value is None:
            if "None" not in kind:
                raise ValueError(f"{key}: null is not allowed (type {kind})")
        elif kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError(f"{key}: expected true or false, got {value!r}")
        elif kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key}: expected an integer, got {value!r}")
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key}: expected a number, got {value!r}")
            value = float(value)
        elif kind.startswith("str"):
            if not isinstance(value, str):
                raise ValueError(f"{key}: expected a string, got {value!r}")
        elif kind.startswith("dict") and not isinstance(value, dict):
            raise ValueError(f"{key}: expected a JSON object, got {value!r}")
        out[key] = value
    return out


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    exited_early: int | None = None


class Children:
    """Subprocesses of the demo (own process groups), stopped in reverse start order."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, *args: str) -> Child:
        path = self.log_dir / f"{name}.log"
        fh = open(path, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([sys.executable, "-m", "streamrank.cli.main", *args], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        fh.close()
        child = Child(name, proc, path)
        self.children.append(child)
        return child

    def crashed(self) -> list[Child]:
        for child in self.children:
            if child.exited_early is None and child.proc.poll() is not None:
                child.exited_early = child.proc.returncode
        return [c for c in self.children if c.exited_early is not None]

    def stop_all(self) -> None:
        self.crashed()
        for child in reversed(self.children):
            if child.proc.poll() is None:
                stack.stop_pid(child.proc.pid, grace=15)
            try:
                child.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _wait_http(url: str, timeout: float, children: Children) -> None:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if children.crashed():
            raise RuntimeError(f"a demo process exited during start-up: {[c.name for c in children.crashed()]} "
                               f"(logs under {children.log_dir})")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _wait_assigned(status_files: dict[str, tuple[Child, Path]], timeout: float, children: Children) -> float:
    """Block until each child's status file (written by the child, with its pid) lists assigned
    partitions; returns the seconds waited. Raises naming the stages that are not ready."""
    started = time.monotonic()
    waiting = dict(status_files)
    while waiting:
        if children.crashed():
            raise RuntimeError(f"a demo process exited during start-up: {[c.name for c in children.crashed()]} "
                               f"(logs under {children.log_dir})")
        for name, (child, path) in list(waiting.items()):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if doc.get("pid") == child.proc.pid and doc.get("assigned"):
                del waiting[name]
        if waiting and time.monotonic() - started > timeout:
            raise RuntimeError(f"not consuming after {timeout:.0f}s (no partitions assigned): {sorted(waiting)} "
                               f"(logs under {children.log_dir})")
        if waiting:
            time.sleep(0.2)
    return time.monotonic() - started


# -- the simulated users ---------------------------------------------------------------------------
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
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks=1, linger_ms=5,
                                      max_block_ms=5000)
        self.served: list[dm.Served] = []
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
        from simulator.session import ndcg_at_k  # noqa: PLC0415
        from streams.rewards import ListOutcome, RewardWeights, item_reward, list_reward  # noqa: PLC0415

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

    def run(self, duration_s: float, rate: float, concurrency: int) -> None:
        interval = 1.0 / rate
        start = time.monotonic()
        futures = []
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="user") as pool, \
                tqdm(total=int(duration_s * rate), desc="requests", unit="req", disable=None) as bar:
            index = 0
            while time.monotonic() - start < duration_s:
                target = start + index * interval
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.one, index))
                index += 1
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


# -- reading the topics back ------------------------------------------------------------------------
def example_offsets(settings: Settings) -> tuple[dict[str, tuple[str, int, float]], dict[str, str], dict[str, float]]:
    """request_id -> ("topic:partition", offset, produce time in s) of its joined example;
    request_id -> how the join closed it (``session_end``, ``window``, ``idle``); and
    request_id -> the event time its window ended (impression ts + window: later feedback was
    dropped, so an example's staleness starts at its last feedback event up to there)."""
    from streams.consume import read_topic  # noqa: PLC0415

    out: dict[str, tuple[str, int, float]] = {}
    closed_by: dict[str, str] = {}
    window_end: dict[str, float] = {}

    def on_record(record) -> None:
        rid = record.key.decode() if record.key else ""
        if rid in out:
            return
        out[rid] = (f"{record.topic}:{record.partition}", record.offset, record.timestamp / 1000.0)
        try:
            doc = json.loads(record.value)
            closed_by[rid] = str(doc["join"]["closed_by"])
            window_end[rid] = float(doc["impression"]["ts"]) + float(doc["join"]["window_s"])
        except (ValueError, KeyError, TypeError):
            closed_by[rid] = "?"

    read_topic(settings.kafka_bootstrap, settings.topics.examples, on_record, idle_s=3.0, timeout_s=60)
    return out, closed_by, window_end


def announcements(settings: Settings) -> list[dict[str, Any]]:
    from streams.consume import read_topic  # noqa: PLC0415

    out: list[dict[str, Any]] = []

    def on_record(record) -> None:
        try:
            out.append(json.loads(record.value))
        except ValueError:
            pass

    read_topic(settings.kafka_bootstrap, settings.topics.model_updates, on_record, idle_s=3.0, timeout_s=60)
    return out


def _get_json(url: str) -> dict:
    import httpx  # noqa: PLC0415

    try:
        return httpx.get(url, timeout=5).json()
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- the run ------------------------------------------------------------------------------------------
#: Where a demo that starts its own embedded stack keeps it (under ``STREAMRANK_HOME``).
DEMO_STACK_DIR = "demo-stack"


def _stack_settings(settings: Settings) -> tuple[Settings, bool]:
    """Endpoints of a running/external stack, or a newly started one (then ``True``: stop it at the end).

    A stack the demo starts itself lives in a fresh ``<home>/demo-stack``: noida-db rewrites its
    whole log file whenever anything changes, so a broker that still holds earlier runs' records
    spends CPU on them all run long (a second 60 s demo in the same home found a 221 MB log and
    the broker at 40% of a core; docs/brokers.md)."""
    if settings.kafka and settings.redis and (os.environ.get("STREAMRANK_KAFKA") or _alive(settings)):
        return settings, False
    run = replace(settings, home=Path(settings.home) / DEMO_STACK_DIR)
    if run.home.exists() and not _alive(run):
        shutil.rmtree(run.home)  # what a previous demo left (it is stopped): records no one will read
    state = stack.up(run)
    return run.with_endpoints(kafka=state["kafka"], redis=state["redis"]), bool(state.get("pids"))


def _alive(settings: Settings) -> bool:
    state = read_stack_state(settings.home)
    return bool(state) and all(stack.pid_alive(int(p)) for p in state.get("pids", {}).values())


def run_demo(config: DemoConfig, settings: Settings) -> dict[str, Any]:
    output = Path(config.output)
    (output / "logs").mkdir(parents=True, exist_ok=True)
    base, started_stack = _stack_settings(settings)
    settings = replace(base, topics=Topics(prefix=f"demo{int(time.time())}."))
    stack.ensure_topics(settings.kafka_bootstrap, list(settings.topics.all().values()), settings.partitions)
    children: Children | None = None
    publisher = users = registry = None
    summary: dict[str, Any] = {"errors": 0, "error_details": []}
    try:
        feast_status = _apply_feast(settings, config) if config.feast else "skipped (--no-feast)"
        use_feast = feast_status.startswith("applied")
        demo_config = output / "streamrank-demo.json"
        demo_config.write_text(json.dumps(stage_config(config)))
        port = stack.free_port()
        env = dict(os.environ)
        env.update(STREAMRANK_KAFKA=settings.kafka_bootstrap, STREAMRANK_REDIS=settings.redis or "",
                   STREAMRANK_TOPIC_PREFIX=settings.topics.prefix, STREAMRANK_HOME=str(settings.home),
                   STREAMRANK_PARTITIONS=str(settings.partitions), STREAMRANK_CONFIG=str(demo_config.resolve()),
                   STREAMRANK_SNAPSHOT_INTERVAL_S=str(config.snapshot_interval_s), PYTHONUNBUFFERED="1",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   STREAMRANK_SERVE_PORT=str(port), STREAMRANK_SERVE_EXPLORE="1",
                   STREAMRANK_SERVE_EXPLORE_RATE=str(config.explore_rate),
                   STREAMRANK_SERVE_RERANKER=config.reranker, STREAMRANK_SERVE_CALIBRATOR=config.calibrator,
                   STREAMRANK_SERVE_FUSION=config.fusion, STREAMRANK_SERVE_POLL_INTERVAL_S="0.5",
                   STREAMRANK_SERVE_GATE_WINDOW=str(config.gate_window), STREAMRANK_SERVE_GATE_MIN_SAMPLES="60",
                   STREAMRANK_SERVE_DEFAULT_FUSION_WEIGHTS=json.dumps(config.cold_start_weights),
                   STREAMRANK_SERVE_FEATURE_SOURCE="feast" if use_feast else "request")
        children = Children(env, output / "logs")
        checkpoints = output / "checkpoints"
        worker = children.start("streams-worker", "worker", "--name", "demo-worker", "--within", str(config.join_within_s))
        status_files = {worker.name: (worker, status_dir(settings) / "demo-worker.json")}
        learners_publish = _learn_can_publish()
        for model in config.learners:
            learner = children.start(f"learner-{model}", "learn", "--model", model, "--checkpoint-dir", str(checkpoints),
                           "--batch-size", str(config.learner_batch), "--within", str(config.learner_within_s),
                           *([] if config.learner_max_wait_s is None else ["--max-wait", str(config.learner_max_wait_s)]),
                           "--checkpoint-every", "1",
                           "--idle-flush", "1.0", "--progress", "10", *(["--publish"] if learners_publish else []))
            status_files[learner.name] = (learner, checkpoints / model / "status.json")
        children.start("server", "serve")
        base_url = f"http://127.0.0.1:{port}"
        _wait_http(f"{base_url}/healthz", config.startup_timeout_s, children)
        # Users start when every stage consumes: a worker or learner still joining its group
        # would leave the first examples unlearned (on a loaded machine that took 30 s).
        ready_after = _wait_assigned(status_files, config.startup_timeout_s, children)
        log.info("all stages assigned their partitions after %.1f s", ready_after)

        from feature_store.snapshots import SnapshotRegistry  # noqa: PLC0415
        from learners.runtime.snapshot_bridge import CheckpointPublisher  # noqa: PLC0415

        registry = SnapshotRegistry(settings.redis_url, settings)
        publisher = CheckpointPublisher(registry, checkpoints, list(config.learners), config.snapshot_interval_s)
        publisher.learners_publish = learners_publish
        if not learners_publish:  # older learner workers: publish their checkpoints from here
            publisher.start()
        users = Users(settings, config, base_url, send_features=not use_feast)
        started = time.time()
        users.run(config.duration_s, config.rate, config.concurrency)
        time.sleep(config.drain_s)  # let the last examples be learned, published and swapped
        models = _get_json(f"{base_url}/models?limit=1000")
        # every swap, refusal and gate verdict with its timing (the summary keeps the last 20)
        (output / "decisions.json").write_text(json.dumps(models.get("decisions", []), indent=1, default=str))
        import httpx  # noqa: PLC0415

        metrics_text = httpx.get(f"{base_url}/metrics", timeout=5).text
        crashed = children.crashed()
        summary = summarise(config, settings, users, models, metrics_text, started, publisher, crashed, feast_status,
                            children.children)
    finally:
        if users is not None:
            users.close()
        if publisher is not None:
            publisher.close()
        if registry is not None:
            registry.close()
        if children is not None:
            children.stop_all()
        if started_stack:
            stack.down(base)
            shutil.rmtree(Path(base.home) / "noida", ignore_errors=True)  # the broker's log of this run
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def stage_config(config: DemoConfig) -> dict[str, Any]:
    """The demo's ``STREAMRANK_CONFIG``: join window in scaled session time, LDRO's warm start."""
    doc: dict[str, Any] = {"join": {"window_s": config.join_window_s, "allowed_lateness_s": config.join_lateness_s,
                                    "idle_timeout_s": 5.0}}
    ldro: dict[str, Any] = {"task_inputs": config.ldro_task_inputs}
    if config.warm_start_ldro:
        ldro["init_task_weights"] = dict(config.cold_start_weights)
    doc["learners"] = {"ldro": ldro}
    return doc


def _learn_can_publish() -> bool:
    """Whether ``streamrank learn`` publishes snapshots itself (``--publish``)."""
    try:
        from streamrank.cli import main as cli  # noqa: PLC0415

        if "learn" not in cli.cli.commands:
            cli._register_stage_commands()
        return any(p.name == "publish" for p in cli.cli.commands["learn"].params)
    except Exception:  # noqa: BLE001 - no learner CLI: the bridge publishes
        return False


def _apply_feast(settings: Settings, config: DemoConfig) -> str:
    """``feast apply`` + materialise (all 3,005 LETOR documents); the server then fetches item features."""
    try:
        from feature_store.feast_repo import apply, materialize_all  # noqa: PLC0415
    except ImportError as exc:
        return f"skipped (feature_store not available: {exc})"
    try:
        repo = apply(settings, limit=3005, progress=True)
        materialize_all(repo, store=repo.store())
        return f"applied ({repo.path})"
    except Exception as exc:  # noqa: BLE001 - the loop serves with request features without it
        log.warning("feast apply failed: %s", exc)
        return f"failed: {type(exc).__name__}: {str(exc)[:300]}"


#: reward-curve columns summarised as first-third and last-third means
CURVE_KEYS = ("reward", "ndcg10", "ndcg10_upstream", "expected_clicks", "expected_clicks_upstream", "ece")


def summarise(config: DemoConfig, settings: Settings, users: Users, models: dict, metrics_text: str, started: float,
              publisher, crashed: list[Child], feast_status: str, children_list: list[Child]) -> dict[str, Any]:
    served = users.served
    ok = [s for s in served if s.ok]
    failed = [s for s in served if not s.ok]
    curve = dm.curves(served, started, config.bucket_s)
    examples, closed_by, window_end = example_offsets(settings)
    updates = announcements(settings)
    by_model: dict[str, list[dict]] = {}
    for doc in updates:
        by_model.setdefault(doc.get("name", "?"), []).append(doc)
    feedback_done = {s.request_id: dm.learned_feedback_done(s, window_end.get(s.request_id)) for s in ok}
    served_at = {m: dm.first_served(ok, m) for m in by_model}
    rows = dm.staleness_rows(examples, feedback_done, by_model, served_at, closed_by, window_end)
    stale, unserved = dm.staleness(rows)
    parts = dm.staleness_breakdown(rows)
    _write_staleness_csv(Path(config.output) / "staleness.csv", started, rows)
    elapsed = max(1e-9, max((s.t for s in served), default=started) - started)
    third = max(1, len(curve) // 3)
    errors = len(failed) + users.produce_errors + len(crashed)
    details = [s.error for s in failed[:10]]
    details += [f"{c.name} exited with {c.exited_early} (log {c.log_path})" for c in crashed]
    if users.produce_errors:
        details.append(f"{users.produce_errors} feedback events not produced")
    swaps_at = [d["at"] - started for d in models.get("decisions", []) if d.get("action") == "swapped"]
    latencies = [s.latency_s * 1000 for s in ok]
    applied = {m: max((int(((d.get("meta") or {}).get("runtime") or {}).get("applied", 0)) for d in docs), default=0)
               for m, docs in by_model.items()}

    def mean(rows, key):
        vals = [r[key] for r in rows if r[key] == r[key]]
        return float(np.mean(vals)) if vals else None

    summary = {
        "errors": errors,
        "error_details": details,
        "swaps": int(models.get("swaps", 0)),
        "refusals": int(models.get("refusals", 0)),
        "staleness_p50_s": dm.percentile(stale, 50),
        "staleness_p99_s": dm.percentile(stale, 99),
        "staleness_examples": len(stale),
        "staleness_breakdown_p50_s": {k: dm.percentile(v, 50) for k, v in parts.items()},
        "staleness_breakdown_p99_s": {k: dm.percentile(v, 99) for k, v in parts.items()},
        "staleness_by_close": dm.staleness_by_close(rows),
        # the loop's steady state: examples whose feedback ended after the first warmup_s seconds
        # (start-up: first snapshots, first canaries and the gate's first 60 explored rounds)
        "staleness_after_warmup": {"warmup_s": config.warmup_s,
                                   **dm.staleness_by_close(rows, since=started + config.warmup_s)},
        "examples_not_yet_served": unserved,
        "reward_curve": curve,
        **{f"{key}_{part}_third": mean(rows_, key) for key in CURVE_KEYS
           for part, rows_ in (("first", curve[:third]), ("last", curve[-third:]))},
        "requests": len(served),
        "latency_p50_ms": dm.percentile(latencies, 50),
        "latency_p99_ms": dm.percentile(latencies, 99),
        "throughput_per_s": {
            "simulator_requests": len(ok) / elapsed,
            "feedback_events": users.feedback_events / elapsed,
            "impressions_acked": dm_metric(metrics_text, "streamrank_impressions_acked") / elapsed,
            "examples_joined": len(examples) / elapsed,
            **{f"learner_{m}_examples": n / elapsed for m, n in applied.items()},
            **{f"snapshots_{m}": len(docs) / elapsed for m, docs in by_model.items()},
        },
        "impressions": {"acked": dm_metric(metrics_text, "streamrank_impressions_acked"),
                        "dropped": dm_metric(metrics_text, "streamrank_impressions_dropped"),
                        "failed": dm_metric(metrics_text, "streamrank_impressions_failed")},
        "snapshots_published": {m: len(docs) for m, docs in by_model.items()},
        "learner_timings_s": learner_timings(Path(config.output) / "checkpoints", config.learners),
        "join": join_counts(status_dir(settings) / "demo-worker.json"),
        "snapshot_publisher": {"by": "learners (learn --publish)" if publisher.learners_publish else "checkpoint bridge",
                               "bridge_published": dict(publisher.published), "errors": publisher.errors[:10]},
        "serving": models.get("serving"),
        "decisions": models.get("decisions", [])[-20:],
        "feast": feast_status,
        "duration_s": elapsed,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "topic_prefix": settings.topics.prefix,
        "pids": {c.name: c.proc.pid for c in children_list},
        "cpu_s": {c.name: process_cpu_s(c.proc.pid) for c in children_list},
    }
    output = Path(config.output)
    summary["plots"] = [str(p) for p in dm.plot(curve, output, swaps_at)] if curve else []
    return summary


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used so far (Linux /proc; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def join_counts(status_path: Path) -> dict[str, Any]:
    """The streams worker's counters (late and outside-window feedback, closes by reason) from its status file."""
    try:
        doc = json.loads(status_path.read_text())
    except (OSError, ValueError):
        return {}
    return {"counts": doc.get("counts", {}), "closed_by": doc.get("closed_by", {})}


def learner_timings(checkpoints: Path, models: Sequence[str]) -> dict[str, Any]:
    """Each learner's step timings (batch wait, learn, checkpoint, publish) from its final status.json."""
    out: dict[str, Any] = {}
    for model in models:
        try:
            out[model] = json.loads((checkpoints / model / "status.json").read_text()).get("timings_s", {})
        except (OSError, ValueError):
            out[model] = {}
    return out


def _write_staleness_csv(path: Path, started: float, rows: list[dict[str, Any]]) -> None:
    """Per example, seconds since the run started (empty: not served by the end of the run);
    ``window_end_s``: its join window's end (impression ts + window, event time = wall time here).
    ``bench/staleness_split.py`` reads it back."""
    import csv  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["request_id", "closed_by", "feedback_done_s", "example_s", "snapshot_created_s",
                         "first_served_s", "staleness_s", "window_end_s"])
        for row in sorted(rows, key=lambda r: r["feedback_done_at"]):
            rel = [None if row.get(k) is None else round(row[k] - started, 3)
                   for k in ("feedback_done_at", "example_at", "snapshot_created_at", "first_served_at", "window_end_at")]
            stale = None if row["first_served_at"] is None else round(max(0.0, row["first_served_at"]
                                                                                - row["feedback_done_at"]), 3)
            writer.writerow([row["request_id"], row["closed_by"], *("" if v is None else v for v in rel[:4]),
                             "" if stale is None else stale, "" if rel[4] is None else rel[4]])


def dm_metric(text: str, name: str) -> float:
    return _metric(text, name)


def headline(summary: dict[str, Any]) -> str:
    keys = ("errors", "swaps", "refusals", "staleness_p50_s", "staleness_p99_s", "reward_first_third",
            "reward_last_third", "ndcg10_first_third", "ndcg10_last_third", "ndcg10_upstream_first_third",
            "ndcg10_upstream_last_third", "expected_clicks_first_third", "expected_clicks_last_third",
            "ece_first_third", "ece_last_third",
            "requests", "latency_p50_ms", "latency_p99_ms")
    return json.dumps({k: summary.get(k) for k in keys}, indent=2, default=str)

