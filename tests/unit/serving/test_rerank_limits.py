"""Size and type limits of POST /rerank (issue 17): 413 for a body over the limit before it is parsed,
422 naming the field for numbers beyond float32, over-long context strings, booleans or numeric strings
used as numbers; all of it in the OpenAPI schema."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from support import CountingScorer

from common.config import Settings
from contracts.rerank import MAX_CONTEXT_ENTRIES, MAX_CONTEXT_KEY, MAX_CONTEXT_STRING
from serving.app import build_runtime, create_app
from serving.components import Component
from serving.settings import ServeConfig

LIMIT = 64 * 1024


@pytest.fixture
def served(tmp_path):
    runtime = build_runtime(Settings(home=tmp_path, kafka=None, redis=None),
                            ServeConfig(reranker="linear-pl", explore=False, max_body_bytes=LIMIT), with_watcher=False)
    model = CountingScorer(n_features=2)
    runtime.holder.swap(Component("reranker", "linear-pl", "1", model))
    with TestClient(create_app(runtime)) as client:
        yield client, model


def body(**changes) -> dict:
    doc = {"request_id": "r1", "user_id": "u1", "query": "q",
           "candidates": [{"item_id": f"i{k}", "scores": {"click": 0.5}, "features": [float(k), 0.0]} for k in range(3)]}
    doc.update(changes)
    return doc


def with_features(features: list) -> dict:
    doc = body()
    doc["candidates"][1]["features"] = features
    return doc


BAD = [
    ("feature beyond float32", with_features([1e308, 0.0]), "candidates.1.features.0", "less_than_equal"),
    ("negative feature beyond float32", with_features([0.0, -3.5e38]), "candidates.1.features.1", "greater_than_equal"),
    ("boolean feature", with_features([True, 0.0]), "candidates.1.features.0", "float_type"),
    ("numeric string feature", with_features(["1.0", 0.0]), "candidates.1.features.0", "float_type"),
    ("boolean score", body(candidates=[{"item_id": "a", "scores": {"click": True}}]), "candidates.0.scores.click",
     "float_type"),
    ("context string too long", body(context={"page": "x" * (MAX_CONTEXT_STRING + 1)}), "context.page",
     "string_too_long"),
    ("context number beyond float32", body(context={"price": 1e308}), "context.price", "less_than_equal"),
    ("context boolean", body(context={"flag": True}), "context.flag", "float_type"),
    ("context key too long", body(context={"k" * (MAX_CONTEXT_KEY + 1): 1.0}), f"context.{'k' * (MAX_CONTEXT_KEY + 1)}.[key]",
     "string_too_long"),
    ("too many context entries", body(context={f"k{i}": 1.0 for i in range(MAX_CONTEXT_ENTRIES + 1)}), "context",
     "too_long"),
    ("query too long", body(query="q" * 1025), "query", "string_too_long"),
    ("explore as number", body(explore=1), "explore", "bool_type"),
]


@pytest.mark.parametrize("case,doc,field,reason", BAD, ids=[b[0] for b in BAD])
def test_out_of_range_or_wrongly_typed_input_is_a_422_naming_the_field(served, case, doc, field, reason):
    client, model = served
    response = client.post("/rerank", json=doc)
    assert response.status_code == 422, response.text
    assert (response.json()["field"], response.json()["reason"]) == (field, reason)
    assert model.calls == 0


def test_limits_at_their_edge_are_served(served):
    client, model = served
    doc = with_features([3.4028234663852886e38, -3.4e38])
    doc["context"] = {f"k{i}": "x" * MAX_CONTEXT_STRING for i in range(MAX_CONTEXT_ENTRIES - 1)} | {"n": 3.4e38}
    assert len(json.dumps(doc)) < LIMIT
    assert client.post("/rerank", json=doc).status_code == 200 and model.calls == 1


def test_a_body_over_the_limit_is_a_413_naming_the_limit_and_is_never_validated(served):
    client, model = served
    raw = json.dumps(body(context={"page": "x" * 10})) + " " * LIMIT  # valid JSON, just large
    response = client.post("/rerank", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["max_bytes"] == LIMIT and str(LIMIT) in response.json()["message"]
    assert model.calls == 0


def test_a_50_mb_body_is_refused_from_its_declared_length_without_reading_it(served):
    client, model = served

    def fifty_megabytes():
        chunk = b" " * (1024 * 1024)
        for _ in range(50):
            yield chunk

    response = client.post("/rerank", content=fifty_megabytes(),
                           headers={"content-type": "application/json", "content-length": str(50 * 1024 * 1024)})
    assert response.status_code == 413 and response.json()["reason"] == "body_too_large"
    assert model.calls == 0


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(served):
    client, model = served

    def endless():  # no content-length: the limit counts the bytes as they arrive
        for _ in range(50):
            yield b" " * (16 * 1024)

    response = client.post("/rerank", content=endless(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["max_bytes"] == LIMIT
    assert model.calls == 0


def test_openapi_documents_the_limits(served):
    client, _ = served
    schema = client.get("/openapi.json").json()
    rerank = schema["paths"]["/rerank"]["post"]
    assert "413" in rerank["responses"] and str(LIMIT) in rerank["responses"]["413"]["description"]
    candidate = schema["components"]["schemas"]["Candidate"]["properties"]
    feature = candidate["features"]["anyOf"][0]["items"]
    assert feature["maximum"] == pytest.approx(3.4028234663852886e38) and feature["minimum"] < 0
    context = schema["components"]["schemas"]["RerankBody"]["properties"]["context"]
    assert context["maxProperties"] == MAX_CONTEXT_ENTRIES
    values = json.dumps(context["additionalProperties"])
    assert f'"maxLength": {MAX_CONTEXT_STRING}' in values
    assert "features" in schema["components"]["schemas"]["RerankResponse"]["properties"]["degraded"]["description"]


def test_an_answer_with_the_request_s_own_features_is_not_degraded(served):
    client, _ = served
    assert client.post("/rerank", json=body()).json()["degraded"] is None
