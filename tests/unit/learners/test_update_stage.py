"""The threaded update stage computes as the inline one: same order, same intra-op thread count."""

from __future__ import annotations

import threading

import pytest
import torch

from learners.runtime.pipeline import UpdateStage


def test_the_worker_thread_uses_the_thread_count_of_the_thread_that_started_it():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        torch.ones(4).sum()  # this thread has run torch: it keeps 2 whatever another thread sets
        other = threading.Thread(target=torch.set_num_threads, args=(1,))  # e.g. a server's start-up thread
        other.start()
        other.join()
        assert torch.get_num_threads() == 2
        seen: list[int] = []
        stage = UpdateStage(threaded=True)
        stage.submit(lambda: seen.append(torch.get_num_threads()))
        stage.close()
        assert seen == [2]  # without taking the submitter's count the new thread would run on 1
    finally:
        torch.set_num_threads(before)


def test_tasks_run_in_submission_order_and_the_first_error_is_raised_on_drain():
    done: list[int] = []
    stage = UpdateStage(threaded=True, depth=1)
    for k in range(5):
        stage.submit(lambda k=k: done.append(k))
    stage.drain()
    assert done == [0, 1, 2, 3, 4]

    def fail() -> None:
        raise FloatingPointError("non-finite loss")

    stage.submit(fail)
    with pytest.raises(FloatingPointError, match="non-finite"):
        stage.drain()
