"""A micro-batch answers every request exactly as it would be answered alone, with one feature read."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from contracts.rerank import RerankBody
from serving import components
from learners.registry import build_learner
from serving.components import Component
from serving.features import FeatureRead
from serving.holder import Bundle
from serving.scoring import InputError, prepare, rerank_once, score_batch
from serving.settings import ServeConfig

TASKS = ("click", "long_view", "watch_time")
D = 4


def body(i: int, n: int, features: bool = True) -> RerankBody:
    rng = np.random.default_rng(i)
    return RerankBody.model_validate({
        "request_id": f"r{i}", "user_id": f"u{i % 3}", "query": f"q{i}",
        "context": {"user_activity": ["high", "low"][i % 2]},
        "candidates": [{"item_id": f"i{i}-{k}", "scores": {t: float(rng.uniform(0.05, 0.95)) for t in TASKS},
                        **({"features": [float(x) for x in rng.random(D)]} if features else {})}
                       for k in range(n)]})


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    torch.manual_seed(0)
    return Bundle(calibrator=Component("calibrator", "umnn", "3", build_learner("umnn")),
                  fusion=Component("fusion", "drpo", "4", build_learner("drpo", n_features=D, hidden=8)),
                  reranker=Component("reranker", "ldro", "5", build_learner("ldro", n_features=D, hidden=8)))


def test_a_batch_of_different_lengths_answers_each_request_as_alone(bundle):
    config = ServeConfig(explore=False)
    bodies = [body(i, n) for i, n in enumerate((7, 3, 12, 1, 5))]
    batched = score_batch(bundle, [prepare(b, config) for b in bodies], config)
    for b, out in zip(bodies, batched):
        alone = rerank_once(bundle, b, config)
        assert out["order"] == alone["order"]
        assert out["scores"] == pytest.approx(alone["scores"], abs=1e-5)
        assert out["weights"] == pytest.approx(alone["weights"], abs=1e-6)
        assert out["fusion_logprob"] == pytest.approx(alone["fusion_logprob"], abs=1e-5)
        for task in TASKS:
            assert out["calibrated"][task] == pytest.approx(alone["calibrated"][task], abs=1e-6)
        assert out["versions"] == {"umnn": "3", "drpo": "4", "ldro": "5"} and out["list_logprob"] == 0.0
        assert out["batch_size"] == 5 and alone["batch_size"] == 1


def test_exploring_and_greedy_requests_share_a_batch(bundle):
    config = ServeConfig(explore=False)
    bodies = [body(i, 9) for i in range(4)]
    prepared = [prepare(b, config) for b in bodies]
    prepared[1].explore = prepared[3].explore = True
    out = score_batch(bundle, prepared, config)
    for i, o in enumerate(out):
        assert sorted(o["order"]) == list(range(9))
        if i in (1, 3):
            assert o["explored"] and o["list_logprob"] < 0.0 and o["prefix_logprob"] is not None
        else:
            assert not o["explored"] and o["list_logprob"] == 0.0 and o["prefix_logprob"] is None
            assert o["order"] == rerank_once(bundle, bodies[i], config)["order"]


class CountingSource:
    """A feature source with ``read``: one row per item id, its value the item's number."""

    reference = "test:features"

    def __init__(self, degraded: bool = False) -> None:
        self.reads: list[list[str]] = []
        self.degraded = degraded

    def read(self, user_id, query, item_ids):
        self.reads.append(list(item_ids))
        rows = torch.tensor([[float(i.split("-")[1])] * D for i in item_ids])
        return FeatureRead(rows, "cache" if self.degraded else "store")


@pytest.mark.parametrize("degraded", [False, True])
def test_fetched_features_come_from_one_read_and_each_request_gets_its_own_rows(bundle, degraded):
    config = ServeConfig(explore=False)
    source = CountingSource(degraded)
    bodies = [body(i, n, features=False) for i, n in enumerate((4, 6, 2))]
    out = score_batch(bundle, [prepare(b, config) for b in bodies], config, source)
    assert len(source.reads) == 1 and len(source.reads[0]) == 12
    for b, o in zip(bodies, out):
        expected = torch.tensor([[float(k)] * D for k in range(len(b.candidates))])
        assert torch.equal(o["request"].features, expected)
        assert o["feature_ref"] == "test:features"
        assert o["degraded"] == ("features" if degraded else None)


def test_a_request_mixing_candidates_with_and_without_features_is_refused_before_any_batch():
    doc = body(0, 3).model_dump()
    doc["candidates"][1]["features"] = None
    with pytest.raises(InputError) as err:
        prepare(RerankBody.model_validate(doc), ServeConfig())
    assert err.value.field == "candidates.1.features"


def test_too_many_candidates_is_refused_in_prepare():
    with pytest.raises(InputError) as err:
        prepare(body(0, 6), ServeConfig(max_candidates=5))
    assert err.value.field == "candidates" and "maximum 5" in err.value.reason


def test_the_impression_bytes_decode_to_the_event_the_model_path_builds(bundle):
    from contracts.events import Impression, decode, encode
    from serving.scoring import _impression_doc, impression_factory

    config = ServeConfig(explore=True, explore_rate=1.0)
    b = body(3, 6)
    out = rerank_once(bundle, b, config)
    raw = impression_factory(b, out, config, 1234.5)()
    event = decode(raw)
    assert isinstance(event, Impression) and event.request_id == "r3" and len(event.items) == 6
    model_built = Impression.model_validate(_impression_doc(b, out, config, 1234.5))
    assert event.model_dump(exclude={"event_id"}) == model_built.model_dump(exclude={"event_id"})
    assert [i.position for i in event.items] == list(range(1, 7))
    assert event.items[0].item_id == b.candidates[out["order"][0]].item_id
    assert event.context["explored"] == 1.0 and event.list_logprob == out["list_logprob"] < 0.0


def test_an_impression_the_contract_refuses_raises_the_contract_error_not_bad_bytes(bundle):
    from serving.scoring import impression_factory

    config = ServeConfig(explore=False)
    b = body(4, 3)
    out = rerank_once(bundle, b, config)
    out["calibrated"] = {t: [float("nan")] * 3 for t in out["calibrated"]}  # a broken calibrator's output
    with pytest.raises(ValueError, match="calibrated"):
        impression_factory(b, out, config, 1.0)()


class SlowSource(CountingSource):
    """A source whose read takes a while and records the thread it ran on and when it ended."""

    def __init__(self, seconds: float = 0.05, fail: bool = False) -> None:
        super().__init__()
        self.seconds, self.fail = seconds, fail
        self.threads: list[str] = []
        self.ended_at: float | None = None

    def read(self, user_id, query, item_ids):
        self.threads.append(threading.current_thread().name)
        time.sleep(self.seconds)
        self.ended_at = time.perf_counter()
        if self.fail:
            raise ConnectionError("store down")
        return super().read(user_id, query, item_ids)


def test_the_feature_read_overlaps_the_models_and_answers_as_a_read_on_the_scoring_thread(bundle):
    config = ServeConfig(explore=False)
    bodies = [body(i, n, features=False) for i, n in enumerate((5, 3))]
    source = SlowSource()
    out = score_batch(bundle, [prepare(b, config) for b in bodies], config, source)
    assert source.threads and source.threads[0] != threading.current_thread().name  # read off this thread
    assert len(source.reads) == 1 and len(source.reads[0]) == 8
    alone = score_batch(bundle, [prepare(b, config) for b in bodies], config, CountingSource())
    for o, a in zip(out, alone):
        assert torch.equal(o["request"].features, a["request"].features) and o["order"] == a["order"]
        assert o["degraded"] is None and o["feature_ref"] == "test:features"


def test_the_batch_says_how_long_each_stage_took_with_the_read_overlapping_the_models(bundle, monkeypatch):
    config = ServeConfig(explore=False)
    bodies = [body(i, n, features=False) for i, n in enumerate((5, 3))]
    slow_fusion = components.fusion_many

    def fusion_slowly(*args, **kwargs):
        time.sleep(0.03)
        return slow_fusion(*args, **kwargs)

    monkeypatch.setattr(components, "fusion_many", fusion_slowly)
    out = score_batch(bundle, [prepare(b, config) for b in bodies], config, SlowSource(seconds=0.05))
    stages = out[0]["stages"]
    assert all(o["stages"] == stages for o in out)  # the batch's stages, shared by its requests
    assert set(stages) == {"batch", "read", "calibrate", "fuse", "rerank"}
    assert 50.0 <= stages["read"] <= stages["batch"] and 30.0 <= stages["fuse"]
    assert stages["calibrate"] + stages["fuse"] + stages["rerank"] <= stages["batch"]
    # the read ran beside calibrate and fuse: the batch took less than the stages one after another
    assert stages["batch"] < stages["read"] + stages["calibrate"] + stages["fuse"] + stages["rerank"]
    inline = score_batch(bundle, [prepare(body(0, 4), config)], config, SlowSource(seconds=0.05))
    assert "read" not in inline[0]["stages"]  # features in the request: nothing was read


def test_a_model_that_raises_still_waits_for_the_read_and_a_failed_read_raises(bundle, monkeypatch):
    config = ServeConfig(explore=False)
    prepared = [prepare(body(0, 4, features=False), config)]
    source = SlowSource(seconds=0.1)

    def broken(*_args, **_kwargs):
        raise RuntimeError("calibrator broke")

    with monkeypatch.context() as m:
        m.setattr(components, "calibrate_many", broken)
        with pytest.raises(RuntimeError, match="calibrator broke"):
            score_batch(bundle, prepared, config, source)
        returned_at = time.perf_counter()
    assert source.ended_at is not None and source.ended_at <= returned_at
    with pytest.raises(ConnectionError, match="store down"):
        score_batch(bundle, prepared, config, SlowSource(seconds=0.0, fail=True))


def test_a_forked_child_reads_features_on_its_own_thread():
    """The feature-read executor is module state: after a fork the parent's worker thread is gone,
    so the child must get a new executor, or its first read waits forever."""
    import os  # noqa: PLC0415
    from concurrent.futures import wait as futures_wait  # noqa: PLC0415

    from serving import scoring  # noqa: PLC0415

    assert scoring._READER.submit(lambda: 1).result(timeout=10) == 1  # the parent's thread is running
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if a read runs
        try:
            done, _ = futures_wait([scoring._READER.submit(lambda: 2)], timeout=5)
            os._exit(0 if done else 3)
        except BaseException:  # noqa: BLE001 - any failure is the child's exit status
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert scoring._READER.submit(lambda: 5).result(timeout=10) == 5  # the parent's executor is unchanged
