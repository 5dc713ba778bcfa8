"""docker-compose.yml cannot drift from the CLI: it validates, and every project service's
command starts against the embedded stack and passes the service's own health check.

No Docker engine runs here, so each service's `command` and `environment` are taken from
`docker-compose config` (the normalised file) and mapped onto the embedded stack: Kafka and
Redis addresses, a fresh topic prefix, a temporary STREAMRANK_HOME in place of the volume,
free loopback ports in place of the container ports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import REPO

from common.stack import free_port
from streams.consume import read_topic

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("docker-compose") is None,
                                 reason="docker-compose missing: scripts/setup.sh --test installs it")]

COMPOSE = REPO / "docker-compose.yml"
STREAMRANK = str(Path(sys.executable).parent / "streamrank")
CONTAINER_HOME = "/var/lib/streamrank"


def compose_config() -> dict:
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE), "--profile", "sim", "--profile", "monitoring",
                          "config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


CONFIG = compose_config() if shutil.which("docker-compose") else {"services": {}}
PROJECT_SERVICES = sorted(name for name, svc in CONFIG["services"].items()
                          if str(svc.get("image", "")).startswith("streamrank"))


def test_compose_file_validates_with_the_expected_topology():
    services = CONFIG["services"]
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert any("kafka-data" in v for v in services["kafka"]["volumes"])
    assert "--appendonly" in services["redis"]["command"] and any("redis-data" in v for v in services["redis"]["volumes"])
    assert {"topic-init", "features-apply", "stats-agent", "worker", "learner-umnn", "learner-drpo", "learner-ldro", "serve", "simulator"} <= set(
        PROJECT_SERVICES)
    for name in PROJECT_SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["environment"]["STREAMRANK_KAFKA"] == "kafka:9092"
        if svc.get("restart") != "no" and "profiles" not in svc:
            assert "healthcheck" in svc, f"{name} has no health check"


def test_dockerfile_installs_with_the_readme_recipe():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "RUN scripts/setup.sh" in dockerfile
    assert "scripts/setup.sh" in makefile and "make demo" in (REPO / "README.md").read_text()
    assert "pip install" not in dockerfile  # no second, divergent recipe
    assert re.search(r"^USER streamrank$", dockerfile, re.M)


class Mapping:
    """Rewrites container addresses, paths and ports into this machine's embedded equivalents."""

    def __init__(self, settings, home: Path) -> None:
        self.settings = settings
        self.home = home
        self.ports: dict[str, int] = {}

    def port(self, container_port: str) -> int:
        return self.ports.setdefault(container_port, free_port())

    def arg(self, text: str) -> str:
        text = text.replace(CONTAINER_HOME, str(self.home))
        text = re.sub(r"http://(?:127\.0\.0\.1|[a-z-]+):(\d+)", lambda m: f"http://127.0.0.1:{self.port(m.group(1))}", text)
        return text

    def argv(self, argv: list[str]) -> list[str]:
        out, port_flag = [], False
        for token in argv:
            out.append(str(self.port(token)) if port_flag else self.arg(token))
            port_flag = token in ("--port", "--web-port")
        return out

    def env(self, environment: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRANK_")}
        env.update({k: str(v) for k, v in environment.items()})
        env.update(STREAMRANK_KAFKA=self.settings.kafka_bootstrap, STREAMRANK_REDIS=self.settings.redis,
                   STREAMRANK_TOPIC_PREFIX=self.settings.topics.prefix, STREAMRANK_HOME=str(self.home),
                   STREAMRANK_PARTITIONS=str(self.settings.partitions), STREAMRANK_BIND_HOST="127.0.0.1",
                   PYTHONUNBUFFERED="1")
        return env


def start(service: str, mapping: Mapping, logs: Path) -> subprocess.Popen:
    svc = CONFIG["services"][service]
    log = open(logs / f"{service}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([STREAMRANK, *mapping.argv(svc["command"])], env=mapping.env(svc["environment"]),
                            stdout=log, stderr=subprocess.STDOUT, cwd=mapping.home)


def healthy(service: str, mapping: Mapping) -> bool:
    test = CONFIG["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "streamrank", "project health checks use `streamrank health`"
    probe = subprocess.run([STREAMRANK, *mapping.argv(test[2:])], capture_output=True, timeout=30,
                           env=mapping.env(CONFIG["services"][service]["environment"]))
    return probe.returncode == 0


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_healthy(service: str, proc: subprocess.Popen, mapping: Mapping, logs: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{service} exited {proc.returncode}:\n{(logs / f'{service}.log').read_text()[-3000:]}"
        if healthy(service, mapping):
            return
        time.sleep(2)
    pytest.fail(f"{service} not healthy after {timeout}s:\n{(logs / f'{service}.log').read_text()[-3000:]}")


@pytest.mark.parametrize("service", PROJECT_SERVICES)
def test_service_command_starts_healthy_on_the_embedded_stack(service, settings, tmp_path):
    svc = CONFIG["services"][service]
    mapping = Mapping(settings, tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    started: list[subprocess.Popen] = []
    try:
        for dependency in svc.get("depends_on", {}):
            if dependency not in PROJECT_SERVICES or dependency == "topic-init":  # the fixture made the topics
                continue
            dep = start(dependency, mapping, logs)
            started.append(dep)
            if CONFIG["services"][dependency].get("restart") == "no":
                assert dep.wait(timeout=300) == 0, (logs / f"{dependency}.log").read_text()[-3000:]
            else:
                wait_healthy(dependency, dep, mapping, logs)
        proc = start(service, mapping, logs)
        started.append(proc)
        if svc.get("restart") == "no":  # a job: must finish successfully
            assert proc.wait(timeout=300) == 0, (logs / f"{service}.log").read_text()[-3000:]
        elif "healthcheck" in svc:
            wait_healthy(service, proc, mapping, logs)
        else:  # the simulator: runs until stopped; it must stay up and send traffic
            time.sleep(20)
            assert proc.poll() is None, (logs / f"{service}.log").read_text()[-3000:]
            impressions: list = []
            read_topic(settings.kafka_bootstrap, settings.topics.impressions, impressions.append, expected=1, idle_s=10)
            assert impressions, "the simulator's requests produced no impressions"
    finally:
        for proc in reversed(started):
            stop(proc)
