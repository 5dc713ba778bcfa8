"""POST /rerank: bad input gets a 422 naming the field and never reaches a model; good input ranks."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from support import CountingScorer

from common.config import Settings
from serving.app import build_runtime, create_app, server_timing
from serving.components import Component
from serving.settings import ServeConfig


@pytest.fixture
def served(tmp_path):
    settings = Settings(home=tmp_path, kafka=None, redis=None)
    runtime = build_runtime(settings, ServeConfig(max_candidates=5, reranker="linear-pl", explore=False),
                            with_watcher=False)
    model = CountingScorer(n_features=2)
    with torch.no_grad():
        model.feature_weight.copy_(torch.tensor([1.0, 0.0]))
    runtime.holder.swap(Component("reranker", "linear-pl", "7", model))
    with TestClient(create_app(runtime)) as client:
        yield client, model, runtime


def body(n: int = 3, **changes) -> dict:
    doc = {"request_id": "r1", "user_id": "u1", "query": "q",
           "candidates": [{"item_id": f"i{k}", "scores": {"click": 0.5, "long_view": 0.2}, "features": [float(k), 0.0]}
                          for k in range(n)]}
    doc.update(changes)
    return doc


def with_candidate(k: int, **changes) -> dict:
    doc = body()
    doc["candidates"][k].update(changes)
    return doc


BAD = [
    ("missing request_id", {k: v for k, v in body().items() if k != "request_id"}, "request_id"),
    ("missing candidates", {k: v for k, v in body().items() if k != "candidates"}, "candidates"),
    ("empty candidates", body(candidates=[]), "candidates"),
    ("too many candidates", body(6), "candidates"),
    ("score out of range", with_candidate(1, scores={"click": 1.5, "long_view": 0.2}), "candidates.1.scores.click"),
    ("score wrong type", with_candidate(0, scores={"click": "high", "long_view": 0.2}), "candidates.0.scores.click"),
    ("user_id wrong type", body(user_id=123), "user_id"),
    ("number as string", with_candidate(0, scores={"click": "0.5", "long_view": 0.2}), "candidates.0.scores.click"),
    ("explore wrong type", body(explore="yes"), "explore"),
    ("candidates wrong type", body(candidates="i0,i1"), "candidates"),
    ("unknown field", body(colour="red"), "colour"),
    ("duplicate item", body(candidates=[body()["candidates"][0]] * 2), "candidates"),
    ("feature lengths differ", with_candidate(2, features=[1.0]), "candidates.2.features"),
    ("missing scores", with_candidate(0, scores={}), "candidates.0.scores"),
]


@pytest.mark.parametrize("case,doc,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_422_naming_the_field_and_never_reaches_the_model(served, case, doc, field):
    client, model, _ = served
    response = client.post("/rerank", json=doc)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert model.calls == 0


@pytest.mark.parametrize("raw,field", [
    (b'{"request_id":"r","user_id":"u","candidates":[{"item_id":"a","scores":{"click":NaN}}]}', "candidates.0.scores.click"),
    (b'{"request_id":"r","user_id":"u","candidates":[{"item_id":"a","scores":{"click":0.1},"features":[Infinity]}]}',
     "candidates.0.features.0"),
])
def test_nan_and_infinite_numbers_are_refused(served, raw, field):
    client, model, _ = served
    response = client.post("/rerank", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert model.calls == 0


def test_not_json_is_a_422(served):
    client, model, _ = served
    response = client.post("/rerank", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422 and model.calls == 0


def test_valid_request_is_ranked_by_the_loaded_model_and_logged(served):
    client, model, runtime = served
    response = client.post("/rerank", json=body(4))
    assert response.status_code == 200, response.text
    doc = response.json()
    # feature 0 has weight 1 and the task scores are equal: highest feature first.
    assert [it["item_id"] for it in doc["items"]] == ["i3", "i2", "i1", "i0"]
    assert [it["position"] for it in doc["items"]] == [1, 2, 3, 4]
    assert doc["model_versions"] == {"linear-pl": "7"}
    assert doc["list_logprob"] == 0.0 and doc["explored"] is False
    assert doc["impression_logged"] is True and runtime.emitter.queued == 1
    assert model.calls == 1


def test_rerank_says_its_wait_and_handler_time_in_server_timing(served, monkeypatch):
    client, model, _ = served
    slow = model.rerank

    def rerank_slowly(request, explore=False):
        time.sleep(0.03)
        return slow(request, explore)

    monkeypatch.setattr(model, "rerank", rerank_slowly)
    response = client.post("/rerank", json=body(4))
    assert response.status_code == 200, response.text
    names = [part.strip().split(";")[0] for part in response.headers["server-timing"].split(",")]
    durations = {name: float(part.split("dur=")[1]) for name, part in
                 zip(names, response.headers["server-timing"].split(","))}
    assert names == ["wait", "handler", "queue", "batch", "calibrate", "fuse", "rerank"]  # no feature read here
    assert 30.0 <= durations["handler"] < 5000.0  # the model's 30 ms sleep is inside the handler
    assert 0.0 <= durations["wait"] < durations["handler"]
    assert 30.0 <= durations["rerank"] <= durations["batch"] <= durations["handler"]  # the sleep is in rerank
    assert durations["calibrate"] + durations["fuse"] + durations["rerank"] <= durations["batch"] + 0.01
    assert durations["queue"] + durations["batch"] <= durations["handler"]
    assert "server-timing" not in client.post("/rerank", json=body(6)).headers  # a 422 has no model time


def test_server_timing_without_an_arrival_stamp_names_only_the_handler():
    assert server_timing(None, 1.0, 1.0025) == "handler;dur=2.500"
    assert server_timing(0.999, 1.0, 1.0025) == "wait;dur=1.000, handler;dur=2.500"


def test_server_timing_names_the_handler_stages_in_order_and_skips_unknown_ones():
    stages = {"rerank": 0.5, "read": 0.25, "queue": -0.001, "batch": 2.0, "calibrate": 1.0, "fuse": 0.25,
              "elsewhere": 9.0}
    assert server_timing(0.999, 1.0, 1.0025, stages) == (
        "wait;dur=1.000, handler;dur=2.500, queue;dur=0.000, batch;dur=2.000, read;dur=0.250, "
        "calibrate;dur=1.000, fuse;dur=0.250, rerank;dur=0.500")


def test_exploration_logs_a_plackett_luce_log_prob_and_a_valid_impression(served):
    client, _, runtime = served
    doc = client.post("/rerank", json=body(4, explore=True)).json()
    assert doc["explored"] is True and doc["list_logprob"] < 0.0
    # The impression the emitter would send is a valid contract event with the same order.
    _, build = runtime.emitter._queue.get_nowait()
    from contracts.events import decode

    event = decode(build())
    assert [it.item_id for it in event.items] == [it["item_id"] for it in doc["items"]]
    assert event.list_logprob == pytest.approx(doc["list_logprob"])
    assert event.context["explored"] == 1.0 and event.model_versions == {"linear-pl": "7"}


def test_cold_start_ranks_by_fused_scores_without_any_snapshot(tmp_path):
    runtime = build_runtime(Settings(home=tmp_path, kafka=None, redis=None), ServeConfig(explore=False),
                            with_watcher=False)
    with TestClient(create_app(runtime)) as client:
        doc = client.post("/rerank", json={"request_id": "r", "user_id": "u", "candidates": [
            {"item_id": "low", "scores": {"click": 0.1}}, {"item_id": "high", "scores": {"click": 0.9}}]}).json()
        assert [it["item_id"] for it in doc["items"]] == ["high", "low"]
        assert doc["model_versions"] == {}
        models = client.get("/models").json()
        assert models["serving"]["reranker"]["cold_start"] is True
        metrics = client.get("/metrics").text
        assert 'streamrank_rerank_requests_total{status="200"} 1.0' in metrics
        assert 'streamrank_rerank_batch_size_count 1.0' in metrics and 'streamrank_rerank_batch_size_sum 1.0' in metrics


def test_openapi_documents_the_rerank_body(served):
    client, _, _ = served
    schema = client.get("/openapi.json").json()
    assert "/rerank" in schema["paths"] and "RerankBody" in json.dumps(schema["components"])


def test_explore_rate_explores_that_share_of_requests_and_serves_the_rest_greedily(tmp_path):
    settings = Settings(home=tmp_path, kafka=None, redis=None)
    runtime = build_runtime(settings, ServeConfig(max_candidates=5, reranker="linear-pl", explore=True,
                                                  explore_rate=0.25), with_watcher=False)
    model = CountingScorer(n_features=2)
    with torch.no_grad():
        model.feature_weight.copy_(torch.tensor([1.0, 0.0]))
    runtime.holder.swap(Component("reranker", "linear-pl", "7", model))
    with TestClient(create_app(runtime)) as client:
        docs = [client.post("/rerank", json=body(4, request_id=f"r{k}")).json() for k in range(400)]
        forced = client.post("/rerank", json=body(4, request_id="forced", explore=False)).json()
    explored = [d for d in docs if d["explored"]]
    assert 60 <= len(explored) <= 140  # 25% of 400 = 100; binomial sd ~ 8.7
    assert all(d["list_logprob"] < 0.0 for d in explored)
    greedy = [d for d in docs if not d["explored"]]
    assert all(d["list_logprob"] == 0.0 and [it["item_id"] for it in d["items"]] == ["i3", "i2", "i1", "i0"]
               for d in greedy)
    assert forced["explored"] is False  # a request that says wins over the rate


def test_explore_rate_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="explore_rate"):
        ServeConfig(explore_rate=1.5)


def test_cold_start_weights_leave_out_the_tasks_they_do_not_name(tmp_path):
    """``{"click": 1}`` is the click order, not click plus the other tasks at weight 1."""
    candidates = [{"item_id": "clicky", "scores": {"click": 0.6, "long_view": 0.01}},
                  {"item_id": "watchy", "scores": {"click": 0.5, "long_view": 0.9}}]
    orders = {}
    for name, weights in (("click only", {"click": 1.0}), ("default", None)):
        config = ServeConfig(explore=False, **({} if weights is None else {"default_fusion_weights": weights}))
        runtime = build_runtime(Settings(home=tmp_path, kafka=None, redis=None), config, with_watcher=False)
        with TestClient(create_app(runtime)) as client:
            doc = client.post("/rerank", json={"request_id": "r", "user_id": "u", "candidates": candidates}).json()
        orders[name] = [it["item_id"] for it in doc["items"]]
    assert orders == {"click only": ["clicky", "watchy"], "default": ["watchy", "clicky"]}


def test_fetched_features_are_logged_as_served_float32_in_the_shown_order(tmp_path):
    """Features the server fetched (not sent by the client) reach the impression as ``features_f32``:
    the float32 values the models scored, bit for bit (no rounding), each with its own item."""
    from contracts.events import decode
    from contracts.rerank import RerankBody
    from serving.scoring import impression_factory, rerank_once
    from serving.holder import Bundle

    class Source:
        def fetch(self, user_id, query, item_ids):
            return torch.tensor([[0.123456, 1.0], [0.5, 0.333333], [0.987654, 2.0]])[: len(item_ids)]

    config = ServeConfig(max_candidates=5, explore=False)
    doc = body(3)
    for cand in doc["candidates"]:
        cand.pop("features")
    doc["candidates"][2]["scores"] = {"click": 0.9, "long_view": 0.2}  # ranks first
    request = RerankBody.model_validate(doc)
    out = rerank_once(Bundle(), request, config, Source())
    event = decode(impression_factory(request, out, config, 1.0)())
    assert [it.item_id for it in event.items][0] == "i2"
    assert all(it.features is None and it.features_f32 is not None for it in event.items)
    by_id = {it.item_id: it.feature_row().tolist() for it in event.items}
    f32 = lambda *v: np.asarray(v, dtype=np.float32).tolist()  # noqa: E731
    assert by_id == {"i0": f32(0.123456, 1.0), "i1": f32(0.5, 0.333333), "i2": f32(0.987654, 2.0)}


@pytest.mark.parametrize("log_fetched", [False, True])
def test_fetched_features_are_named_not_copied_unless_configured(log_fetched):
    """By default an impression names the feature-store feature it was served with
    (context ``item_features``) instead of carrying 300 floats per item; ``log_fetched_features``
    copies them; features sent in the request are always logged."""
    from contracts.events import ITEM_FEATURES_KEY, decode
    from contracts.rerank import RerankBody
    from serving.scoring import impression_factory, rerank_once
    from serving.holder import Bundle

    class FeastLike:
        reference = "letor_document:features"

        def fetch(self, user_id, query, item_ids):
            return torch.tensor([[0.25, 1.0], [0.5, 0.75], [0.125, 2.0]])[: len(item_ids)]

    config = ServeConfig(max_candidates=5, log_fetched_features=log_fetched, explore=False)
    doc = body(3)
    sent = RerankBody.model_validate(doc)  # candidates carry their features
    for cand in doc["candidates"]:
        cand.pop("features")
    fetched = RerankBody.model_validate(doc)

    event = decode(impression_factory(fetched, rerank_once(Bundle(), fetched, config, FeastLike()), config, 1.0)())
    by_id = {it.item_id: None if it.feature_row() is None else list(it.feature_row()) for it in event.items}
    if log_fetched:
        assert by_id == {"i0": [0.25, 1.0], "i1": [0.5, 0.75], "i2": [0.125, 2.0]}
        assert ITEM_FEATURES_KEY not in event.context
    else:
        assert by_id == {"i0": None, "i1": None, "i2": None}
        assert event.context[ITEM_FEATURES_KEY] == "letor_document:features"

    event = decode(impression_factory(sent, rerank_once(Bundle(), sent, config, FeastLike()), config, 1.0)())
    assert all(it.n_features == 2 for it in event.items) and ITEM_FEATURES_KEY not in event.context
    sent_rows = {c.item_id: np.asarray(c.features, dtype=np.float32).tolist() for c in sent.candidates}
    assert {it.item_id: it.feature_row().tolist() for it in event.items} == sent_rows


def test_server_start_freezes_the_startup_heap(tmp_path):
    """After start-up the heap is in the permanent generation, so a full collection no longer
    walks torch/Feast/pydantic objects in the middle of requests."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    runtime = build_runtime(Settings(home=tmp_path, kafka=None, redis=None), ServeConfig(), with_watcher=False)
    try:
        with TestClient(create_app(runtime)):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_response_json_is_the_documented_model_and_stays_json_with_a_nan_score():
    from contracts.rerank import RerankBody, RerankResponse
    from serving.scoring import response_json

    request = RerankBody.model_validate(body(3))
    out = {"order": [2, 0, 1], "scores": [0.5, 0.25, 0.75],
           "calibrated": {"click": [0.1, 0.2, 0.3], "long_view": [0.0, 0.5, 1.0]},
           "versions": {"ldro": "4"}, "weights": {"click": 1.0}, "fusion_logprob": None, "list_logprob": 0.0,
           "explored": False}
    doc = json.loads(response_json(request, out, True))
    parsed = RerankResponse.model_validate(doc)
    assert [it.item_id for it in parsed.items] == ["i2", "i0", "i1"] and [it.position for it in parsed.items] == [1, 2, 3]
    assert parsed.items[0].score == 0.75 and parsed.items[0].calibrated == {"click": pytest.approx(0.3),
                                                                            "long_view": 1.0}
    assert parsed.impression_logged is True and parsed.model_versions == {"ldro": "4"}
    out["scores"] = [float("nan"), 0.25, 0.75]
    doc = json.loads(response_json(request, out, False))  # null, not the non-JSON token NaN
    assert doc["items"][1]["item_id"] == "i0" and doc["items"][1]["score"] is None
