"""kill -9 a streams worker mid-replay (alone, and in a two-worker group): no example is lost,
and a re-delivered example carries the same example id and the same labels.

CI runs one kill point per case; ``--long`` adds a sweep of kill points (from the first examples to
the end of the replay, each with a seeded extra delay, so kills land mid-batch, mid-flush and
mid-commit), because a crash-window bug shows in a few runs of a hundred (tests/long_runs.py).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from crash_evidence import crash_evidence
from streams_expect import (
    assert_copies_agree,
    expected_from_log,
    impression_request_ids,
    log_events,
    start_worker,
    wait_for_examples,
)

from contracts.events import LabeledList
from simulator.logs import write_simulated_log
from streams.replay import replay

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

REPLAY_SECONDS = 10.0


@pytest.fixture(scope="module")
def long_log(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("streams-kill") / "letor.jsonl"
    write_simulated_log(path, shared_data, 400, seed=5, namespace="kill", click_model="pbm", max_candidates=10,
                        with_features=False)
    return path


class PacedReplay(threading.Thread):
    """Replays ``log`` in the background so that it takes about ``seconds`` of wall time."""

    def __init__(self, log: Path, settings, seconds: float) -> None:
        super().__init__(daemon=True)
        events = log_events(log)
        span = max(1.0, events[-1]["ts"] - events[0]["ts"])
        self.log, self.settings, self.speed = log, settings, span / seconds
        self.summary = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.summary = replay([self.log], self.settings, speed=self.speed, progress=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.error = exc

    def finish(self, timeout: float = 60.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "replay did not finish"
        if self.error:
            raise self.error
        # the expected examples come from the log: every line must have reached the broker, in log order
        summary = self.summary.as_dict()
        assert (summary["errors"], summary["producer_rebuilds"], summary["lost"]) == (0, 0, 0), summary


#: kill points of the long sweep (``--long``); each one is a fresh pair of workers and topics
SWEEP_RUNS = 24


def wait_for_progress(worker, examples_out: int, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = worker.status()
        if doc and doc["counts"]["examples_out"] >= examples_out:
            return
        time.sleep(0.1)
    raise AssertionError(f"worker made no progress:\n{worker.log_tail()}")


def check_no_loss_and_stable_ids(log: Path, examples: list[LabeledList]) -> dict[str, list[LabeledList]]:
    expected = expected_from_log(log_events(log))
    by_id: dict[str, list[LabeledList]] = defaultdict(list)
    for example in examples:
        by_id[example.example_id].append(example)
    assert {e.request_id for e in examples} == set(expected)
    for example_id, copies in by_id.items():
        assert_copies_agree(example_id, copies, expected)
    assert len(by_id) == len(expected), "one example id per impression"
    return by_id


def check_with_logs(settings, log: Path, examples: list[LabeledList], workers: tuple) -> dict[str, list[LabeledList]]:
    """:func:`check_no_loss_and_stable_ids`; a failure (rare) also prints the suspect requests' source
    offsets, changelog records and the group's commits (crash_evidence.py), and the workers' log tails."""
    try:
        return check_no_loss_and_stable_ids(log, examples)
    except AssertionError as exc:
        tails = "\n".join(worker.log_tail(150) for worker in workers)  # the restart, recovery included
        # the evidence last: CI shows the tail of the output
        raise AssertionError(f"{exc}\n{tails}\n{crash_evidence(settings, log, examples)}") from exc


def kill_mid_replay_and_restart(settings, tmp_path: Path, log: Path, share_before_kill: float,
                                extra_delay_s: float = 0.0) -> tuple[list[LabeledList], dict, dict]:
    """Replay ``log``, kill -9 the worker once ``share_before_kill`` of the impressions have examples
    (and ``extra_delay_s`` later), start a new worker, and check every example. Returns the examples,
    them by id, and the new worker's last status."""
    request_ids = impression_request_ids(log)
    first = start_worker(settings, tmp_path, "kill-a")
    second = None
    feeder = PacedReplay(log, settings, REPLAY_SECONDS)
    try:
        feeder.start()
        wait_for_progress(first, max(1, int(len(request_ids) * share_before_kill)))
        time.sleep(extra_delay_s)
        first.kill9()
        second = start_worker(settings, tmp_path, "kill-b")
        feeder.finish()
        examples = wait_for_examples(settings, request_ids, timeout_s=60, workers=(second,))
        return examples, check_with_logs(settings, log, examples, (first, second)), second.status()
    finally:
        first.kill9()
        if second is not None:
            second.stop()


def test_kill9_mid_replay_and_restart_loses_no_example(settings, tmp_path, long_log):
    examples, by_id, restarted = kill_mid_replay_and_restart(settings, tmp_path, long_log, 0.2)
    assert restarted["counts"]["examples_out"] > 0
    print(f"{len(examples)} examples for {len(by_id)} impressions ({len(examples) - len(by_id)} re-deliveries)")


def test_two_workers_split_partitions_and_survive_a_rebalance_and_a_kill9(settings, tmp_path, long_log):
    request_ids = impression_request_ids(long_log)
    a = start_worker(settings, tmp_path, "group-a")
    b = None
    feeder = PacedReplay(long_log, settings, 2.5 * REPLAY_SECONDS)  # long enough for a rebalance mid-replay
    try:
        feeder.start()
        wait_for_progress(a, 5)
        b = start_worker(settings, tmp_path, "group-b")  # joins: the group rebalances, b recovers a's tables
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                b.status() and b.status()["counts"]["examples_out"] > 0
                and len(a.status()["assigned"]) < settings.partitions):
            time.sleep(0.2)
        assert len(b.status()["assigned"]) + len(a.status()["assigned"]) == settings.partitions
        assert b.status()["counts"]["examples_out"] > 0, b.log_tail()
        assert feeder.is_alive(), "the rebalance should happen mid-replay"
        a.kill9()  # b takes over every partition from the changelogs
        feeder.finish()
        examples = wait_for_examples(settings, request_ids, timeout_s=60, workers=(b,))
        check_with_logs(settings, long_log, examples, (a, b))
        assert sorted(b.status()["assigned"]) == list(range(settings.partitions))
    finally:
        a.kill9()
        if b is not None:
            b.stop()


@pytest.mark.long
@pytest.mark.parametrize("run", range(SWEEP_RUNS))
def test_kill9_at_many_points_loses_no_example_and_keeps_every_label(settings, tmp_path, long_log, run):
    """The first test at a different kill point per run: after 2 %..85 % of the examples, plus a
    seeded delay of up to 1 s (the status file that gives the progress is written once a second)."""
    share = 0.02 + 0.83 * run / max(1, SWEEP_RUNS - 1)
    kill_mid_replay_and_restart(settings, tmp_path, long_log, share, random.Random(run).uniform(0.0, 1.0))
