"""The batched role calls of serving.components (``calibrate_many``, ``fusion_many``, ``rerank_many``): one
model pass for a micro-batch when the model has the batched method, the per-request call otherwise (and for
a batch of one), and the same answer shapes as the per-request calls. The stand-in models record every call,
so a batch that silently fell back to one call per request (the same answers, a batch's cost each) fails."""

from __future__ import annotations

from typing import Any

import torch

from contracts.learner import RerankRequest, RerankResult
from serving.components import Component, calibrate_many, fusion_many, rerank, rerank_many


def scores(*values: float) -> dict[str, torch.Tensor]:
    return {"click": torch.tensor(values, dtype=torch.float32), "like": torch.tensor(values, dtype=torch.float32) / 2}


def clicks(out: list[dict[str, torch.Tensor]]) -> list[list[float]]:
    return [[round(v, 6) for v in o["click"].tolist()] for o in out]


class Calibrator:
    """``calibrate`` adds 0.1 to the click score; ``calibrate_many`` (when ``batched``) adds 0.2. Neither
    answers ``like``, which keeps its input score."""

    def __init__(self, batched: bool) -> None:
        self.calls: list[tuple[str, Any]] = []
        if batched:
            self.calibrate_many = self._many

    def calibrate(self, task_scores: dict[str, torch.Tensor], context: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("one", context["user"]))
        return {"click": (task_scores["click"] + 0.1).tolist()}

    def _many(self, items: list) -> list[dict[str, Any]]:
        self.calls.append(("many", [context["user"] for _, context in items]))
        return [{"click": (s["click"] + 0.2).tolist()} for s, _ in items]


def test_calibrate_many_makes_one_batched_call_and_answers_float64_with_untouched_tasks_kept():
    model = Calibrator(batched=True)
    items = [(scores(0.1, 0.2), {"user": "u1"}), (scores(0.5), {"user": "u2"})]
    out = calibrate_many(Component("calibrator", "x", "1", model), items)
    assert model.calls == [("many", ["u1", "u2"])]
    assert clicks(out) == [[0.3, 0.4], [0.7]]
    assert all(o["click"].dtype == torch.float64 and o["like"].dtype == torch.float64 for o in out)
    assert torch.equal(out[1]["like"], torch.tensor([0.25], dtype=torch.float64))


def test_calibrate_many_calls_per_request_for_one_request_or_a_model_without_the_batched_method():
    one = Calibrator(batched=True)
    out = calibrate_many(Component("calibrator", "x", "1", one), [(scores(0.5), {"user": "u1"})])
    assert one.calls == [("one", "u1")] and clicks(out) == [[0.6]]
    plain = Calibrator(batched=False)
    out = calibrate_many(Component("calibrator", "x", "1", plain), [(scores(0.5), {"user": "u1"}),
                                                                    (scores(0.25), {"user": "u2"})])
    assert plain.calls == [("one", "u1"), ("one", "u2")]
    assert clicks(out) == [[0.6], [0.35]]


def test_calibrate_many_without_a_calibrator_passes_every_requests_scores_through():
    items = [(scores(0.5), {"user": "u1"}), (scores(0.25), {"user": "u2"})]
    out = calibrate_many(None, items)
    assert [o is s for o, (s, _) in zip(out, items)] == [True, True]


class Fusion:
    """``fusion_weights`` answers (click: 1, like: explore) and a log-prob; ``fusion_weights_many`` (when
    ``batched``) answers numpy-like keys and values, and no log-prob for the second request."""

    def __init__(self, batched: bool) -> None:
        self.calls: list[tuple[str, Any]] = []
        if batched:
            self.fusion_weights_many = self._many

    def fusion_weights(self, task_scores, context, explore=False):
        self.calls.append(("one", context["user"], explore))
        return {"click": 1, "like": float(explore)}, -0.5

    def _many(self, items: list, explores: list) -> list:
        self.calls.append(("many", [context["user"] for _, context in items], list(explores)))
        return [({"click": torch.tensor(0.75), 7: 0.25}, torch.tensor(-1.5)), ({"click": 1.0}, None)]


def test_fusion_many_makes_one_batched_call_and_answers_plain_floats_and_keys():
    model = Fusion(batched=True)
    items = [(scores(0.5), {"user": "u1"}), (scores(0.25), {"user": "u2"})]
    out = fusion_many(Component("fusion", "x", "1", model), items, [True, False], {"click": 1.0})
    assert model.calls == [("many", ["u1", "u2"], [True, False])]
    assert out == [({"click": 0.75, "7": 0.25}, -1.5), ({"click": 1.0}, None)]
    assert all(type(v) is float for weights, _ in out for v in weights.values())
    assert type(out[0][1]) is float


def test_fusion_many_without_the_batched_method_passes_each_requests_context_and_explore_flag():
    model = Fusion(batched=False)
    items = [(scores(0.5), {"user": "u1"}), (scores(0.25), {"user": "u2"})]
    out = fusion_many(Component("fusion", "x", "1", model), items, [True, False], {"click": 1.0})
    assert model.calls == [("one", "u1", True), ("one", "u2", False)]
    assert out == [({"click": 1.0, "like": 1.0}, -0.5), ({"click": 1.0, "like": 0.0}, -0.5)]


def test_fusion_many_without_a_fusion_model_uses_the_configured_weights():
    out = fusion_many(None, [(scores(0.5), {"user": "u1"})], [True], {"click": 2.0})
    assert out == [({"click": 2.0, "like": 0.0}, None)]


def request(n: int) -> RerankRequest:
    return RerankRequest(item_ids=tuple(f"i{k}" for k in range(n)), features=torch.zeros(n, 0),
                         task_scores={"click": torch.linspace(0.1, 0.9, n, dtype=torch.float64)})


class Reranker:
    """``rerank`` answers the reversed order; ``rerank_many`` (when ``batched``) the identity."""

    def __init__(self, batched: bool) -> None:
        self.calls: list[tuple[str, Any]] = []
        if batched:
            self.rerank_many = self._many

    def rerank(self, req: RerankRequest, explore: bool = True) -> RerankResult:
        self.calls.append(("one", explore, torch.is_grad_enabled()))
        n = len(req.item_ids)
        return RerankResult(order=list(range(n))[::-1], scores=[0.0] * n)

    def _many(self, requests: list, explores: list) -> list[RerankResult]:
        self.calls.append(("many", list(explores), torch.is_grad_enabled()))
        return [RerankResult(order=list(range(len(r.item_ids))), scores=[0.0] * len(r.item_ids)) for r in requests]


def test_rerank_many_makes_one_batched_call_without_autograd():
    model = Reranker(batched=True)
    out = rerank_many(Component("reranker", "x", "1", model), [request(3), request(2)], [False, True])
    assert model.calls == [("many", [False, True], False)]
    assert [r.order for r in out] == [[0, 1, 2], [0, 1]]


def test_rerank_many_calls_per_request_with_its_explore_flag_for_one_request_or_no_batched_method():
    one = Reranker(batched=True)
    out = rerank_many(Component("reranker", "x", "1", one), [request(3)], [False])
    assert one.calls == [("one", False, False)] and out[0].order == [2, 1, 0]
    plain = Reranker(batched=False)
    out = rerank_many(Component("reranker", "x", "1", plain), [request(3), request(2)], [False, True])
    assert plain.calls == [("one", False, False), ("one", True, False)]
    assert [r.order for r in out] == [[2, 1, 0], [1, 0]]


def test_rerank_many_without_a_reranker_ranks_each_request_as_the_cold_start_does():
    requests = [request(4), request(3)]
    out = rerank_many(None, requests, [False, False])
    assert [r.order for r in out] == [rerank(None, r, False).order for r in requests]
    assert out[0].order == [3, 2, 1, 0]  # the upstream click score, highest first
