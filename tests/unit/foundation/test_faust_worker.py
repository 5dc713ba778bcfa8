"""The Faust worker class of the streams worker and the learner freezes the start-up heap once Faust
says start-up finished, and sets its collection thresholds then (the streams worker's), not before."""

from __future__ import annotations

import asyncio
import gc

import faust
import pytest

from common.faust_worker import FrozenHeapWorker
from common.logs import plain_worker
from streams.worker import GC_THRESHOLDS, StreamsWorker


@pytest.fixture
def restored_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.parametrize("worker_class, thresholds", [(FrozenHeapWorker, None), (StreamsWorker, GC_THRESHOLDS)])
def test_startup_finished_freezes_the_heap_and_sets_the_thresholds(restored_gc, worker_class, thresholds):
    gc.unfreeze()
    before = gc.get_threshold()
    worker = plain_worker(faust.App("frozen-heap-test", broker="kafka://127.0.0.1:1"), "warning", worker_class)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before  # nothing happens at construction
    asyncio.run(worker.on_startup_finished())
    assert gc.get_freeze_count() > 1000  # the modules, the app, the worker
    assert gc.get_threshold() == (thresholds or before)
