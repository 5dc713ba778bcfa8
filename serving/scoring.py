"""The request path's model work: validated bodies in, answers out, for one request or a micro-batch.

Two steps, so that a bad request fails alone and the expensive part is shared:

* :func:`prepare` (per request, on the event loop, may raise :class:`InputError` -> HTTP 422):
  the explore coin, the upstream task scores as one float64 vector per task, the request and
  calibration contexts, and the inline features as one ``[n, d]`` float32 array (or a note that
  they are fetched);
* :func:`score_batch` (on the micro-batcher's thread, :mod:`serving.microbatch`): for ``B``
  prepared requests that read the same :class:`~serving.holder.Bundle`, one feature-store read
  for all their items (on a helper thread, overlapping the calibrator and the fusion policy, which
  do not need the rows), one calibrator pass over all their rows, one fusion-policy pass over the
  ``B`` contexts and one padded reranker pass over the ``B`` lists
  (:func:`serving.components.calibrate_many` / ``fusion_many`` / ``rerank_many``: one call per
  request for models without a batched method). Per request it then checks the order is a
  permutation, clips the log-probs, computes the gate's top-k prefix log-prob and turns the
  calibrated scores into Python floats once.

:func:`rerank_once` is both steps for one request (tests, benches, the canary).

What is left (py-spy of the server, 50 candidates x 300 Feast features,
``bench/serving_load.py --quick --py-spy FILE`` or ``py-spy record --pid``):

* under 8 clients, before the batched UMNN path: ~60 % of the samples on the scoring thread
  (the calibrator's quadrature ~31 %, the feature read ~9 %, the reranker's padded pass ~8 %, the
  fusion policy ~7 %), ~24 % on the event loop (HTTP, routing, the body's validation ~0.4 %, the
  answer), the rest on the Kafka client threads (impressions out, examples and dead letters in);
* one client, with it (22c65bf): the scoring thread ~50 % (calibrator ~13 %, fusion policy ~12 %:
  small torch ops whose cost hardly grows with the batch, feature read ~11 %, reranker ~8 %, waking
  the event loop ~6 %), the event loop ~28 %, the Kafka threads ~15 %;
* one client again after the attention change (d600e3c, 25 s at 400 Hz, load ~3): the scoring
  thread 55 % (feature read 16.6 %, of it 11.5 % inside the Redis script call; calibrator 13.7 %;
  fusion policy 12.0 %; reranker 7.7 %), the event loop 29 %, the Kafka producer's sender 9 %, the
  emitter 5.5 %. Many of the fusion policy's samples sit on lines that only add two tiny tensors:
  the scoring thread waiting to take the GIL back after a torch op released it, while the event
  loop or a Kafka thread runs Python. The model work of one request in process (no HTTP, no
  Redis) is ~2.5 ms (``bench/serving_stages.py``) against ~4 ms measured by the handler; a
  shorter GIL switch interval (0.2 ms) did not shorten it (two alternating runs each);
* the server's CPU by thread under 8 clients (20c8bd7's code, ``/proc/PID/task/*/stat``, ~35 s of
  the swap phase and the last steady half): the scoring thread 50 %, the event loop 18 %, the
  feature-read thread 11 %, the Kafka producer's I/O thread 11 %, the impression emitter 9.5 %.
  Reading the features while the models run (12bf789) took one client's p99 0.87-0.89x in two
  same-run A/Bs (p50 0.96-0.99x); the producer's 50 ms linger cut its I/O thread from 0.43 to
  0.33 ms of CPU per request. Tried and reverted: DRPO's and LDRO's passes as one TorchScript call
  each (outputs equal; the interpreter costs about what eager dispatch does per op, and the
  server's p50 / per-core figures were 1.005x / 0.94x of the eager path's in one A/B).

* one client, by the ``Server-Timing`` stages (33acd82, BENCHMARKS.md "Where the handler's time
  goes"): the batch's calibrate / fuse / rerank take about twice their in-process time (2.1 / 0.7 /
  0.7 vs 0.9 / 0.4 / 0.4 ms), and the same calibration repeated at once in the server takes its
  in-process time. A read-through window on the item features (no Redis read for 95 % of the rows)
  and a 0.1 ms switch interval did not move the client's p50 beyond run-to-run noise.
* the GIL is not what doubles the stages (2026-12-07, BENCHMARKS.md "A model process, tried"): the
  same models in a process of their own, fed each batch over a Unix socket, took as long there
  (calibrate / fuse / rerank 1.7 / 0.9 / 0.9 ms) and the client's p50 did not move (6.75 vs 6.52 ms;
  8 clients 205 vs 231 requests per core-second); without the concurrent feature read, the
  emitter and the Kafka consumers the stages were as slow too. In process, the same passes take
  1.3-1.5x their back-to-back time when other Python runs between them, and more while the bench's
  client, broker and Redis share the 2 cores. What is left is the models' own compute.

Per item in Python remain: reading each candidate's task scores out of the validated body
(``np.fromiter``), the answer's per-item dicts (:func:`response_json`) and the impression's
(:func:`impression_factory`, on the emitter's thread). The UMNN quadrature is compute-bound at its
50 nodes (fewer nodes miss the 1e-4 bound: :mod:`learners.calibration.batched`).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Any, Sequence

import msgspec
import numpy as np
import torch

from common.errors import StreamrankError
from contracts.events import FEATURES_F32_DTYPE, IMPRESSION_SCHEMA, ITEM_FEATURES_KEY, Impression, encode
from contracts.fast_decode import accept
from contracts.learner import RerankRequest
from contracts.rerank import RerankBody
from serving import components
from serving.baseline import pl_logprob
from serving.gate import prefix_key
from serving.holder import Bundle
from serving.settings import ServeConfig

_EXPLORE_COIN = random.Random()  # which requests explore (ServeConfig.explore_rate)


class InputError(StreamrankError, ValueError):
    """A request the service refuses (HTTP 422) with the field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class Prepared:
    """One validated request, ready for :func:`score_batch`."""

    body: RerankBody
    explore: bool
    raw: dict[str, torch.Tensor]  # upstream task scores, float64 [n] per task
    context: dict[str, Any]  # body.context + user_id + query
    calibration_context: dict[str, Any]
    features: torch.Tensor | None  # [n, d] from the request; None: fetched from the feature source

    @property
    def size(self) -> int:
        return len(self.body.candidates)

    @property
    def item_ids(self) -> list[str]:
        return [c.item_id for c in self.body.candidates]


def prepare(body: RerankBody, config: ServeConfig) -> Prepared:
    """The per-request part (see the module docstring); raises :class:`InputError` for a body the models cannot take."""
    n = len(body.candidates)
    if n > config.max_candidates:
        raise InputError("candidates", f"{n} candidates > the maximum {config.max_candidates}")
    explore = config.explore if body.explore is None else body.explore
    if body.explore is None and explore and config.explore_rate < 1.0:
        explore = _EXPLORE_COIN.random() < config.explore_rate
    raw = {t: torch.from_numpy(np.fromiter((c.scores[t] for c in body.candidates), dtype=np.float64, count=n))
           for t in body.candidates[0].scores}
    context: dict[str, Any] = dict(body.context)
    context.update(user_id=body.user_id, query=body.query)
    # Calibrator context fields (learners.calibration): per-item id, the user, and the upstream
    # position (the final position is not known before reranking).
    calibration_context = {**context, "item": [c.item_id for c in body.candidates], "user": body.user_id,
                           "position": list(range(1, n + 1))}
    return Prepared(body, bool(explore), raw, context, calibration_context, _inline_features(body))


def _inline_features(body: RerankBody) -> torch.Tensor | None:
    """The request's own ``[n, d]`` features; None when no candidate carries any (they are fetched)."""
    feats = [c.features for c in body.candidates]
    if all(f is None for f in feats):
        return None
    dims = {len(f) for f in feats if f is not None}
    if any(f is None for f in feats) or len(dims) != 1:
        bad = next(i for i, f in enumerate(feats) if f is None or len(f) != len(feats[0] or []))
        raise InputError(f"candidates.{bad}.features", "every candidate needs features of the same length, or none")
    return torch.from_numpy(np.asarray(feats, dtype=np.float32))  # ~3x faster than torch.tensor on lists


def _fetch_features(batch: Sequence[Prepared], source: Any) -> list[tuple[torch.Tensor, str | None]]:
    """Each request's features and what degraded them; one feature-store read for every request that needs one."""
    out: list[tuple[torch.Tensor, str | None] | None] = [
        (p.features, None) if p.features is not None else None for p in batch]
    need = [i for i, p in enumerate(batch) if p.features is None]
    if not need:
        return out  # type: ignore[return-value]
    if source is None:
        for i in need:
            out[i] = (torch.zeros((batch[i].size, 0)), None)
        return out  # type: ignore[return-value]
    ids = [item for i in need for item in batch[i].item_ids]
    first = batch[need[0]].body
    if hasattr(source, "read"):
        read = source.read(first.user_id, first.query, ids)
        features, degraded = read.features, read.degraded
    else:  # a plain source: only fetch(), never degraded
        features, degraded = source.fetch(first.user_id, first.query, ids), None
    start = 0
    for i in need:
        n = batch[i].size
        out[i] = (features[start:start + n], degraded)
        start += n
    return out  # type: ignore[return-value]


def _new_reader() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-read")


#: The one thread that reads features while the scoring thread calibrates and fuses (see
#: :func:`score_batch`); an executor starts its thread at the first submit, in the process that submits.
_READER = _new_reader()


def _reader_after_fork() -> None:
    """A forked child gets a new executor: the parent's worker thread does not exist in the child,
    but its executor would still count it and queue reads that nothing runs, so the child's first
    feature read would wait forever (a server forked from a process that had scored with reads:
    a pre-forking process manager, or mutmut's forked test runs)."""
    global _READER
    _READER = _new_reader()


os.register_at_fork(after_in_child=_reader_after_fork)


def _timed_fetch(batch: Sequence[Prepared], source: Any) -> tuple[list[tuple[torch.Tensor, str | None]], float]:
    """:func:`_fetch_features` and how long it took (seconds), wherever it runs."""
    started = time.perf_counter()
    features = _fetch_features(batch, source)
    return features, time.perf_counter() - started


def score_batch(bundle: Bundle, batch: Sequence[Prepared], config: ServeConfig,
                feature_source: Any = None) -> list[dict[str, Any]]:
    """Calibrate -> fuse -> rerank ``batch`` on one bundle; one answer dict per request (see :func:`rerank_once`).

    The feature-store read (only the reranker needs its rows) runs on another thread while this one
    calibrates and fuses: the store's own time (a Redis script call, in another process) overlaps
    the models' instead of adding to it. A model that raises still waits for the read to end.

    Each answer's ``stages`` holds the batch's wall-clock milliseconds per stage (``serving.app``
    sends them in ``Server-Timing``): ``batch`` (all of this call), ``calibrate``, ``fuse``,
    ``rerank``, and ``read`` (the feature-store read's own duration, on the helper thread, so it
    overlaps the first two; absent when no request of the batch needed a read). Measuring costs a
    few ``perf_counter`` calls per batch."""
    clock = time.perf_counter
    started = clock()
    reading = None
    if feature_source is not None and any(p.features is None for p in batch):
        reading = _READER.submit(_timed_fetch, batch, feature_source)
    try:
        calibrated = components.calibrate_many(bundle.calibrator, [(p.raw, p.calibration_context) for p in batch])
        calibrated_at = clock()
        fused = components.fusion_many(bundle.fusion, [(c, p.context) for c, p in zip(calibrated, batch)],
                                       [p.explore for p in batch], config.default_fusion_weights)
        fused_at = clock()
    finally:  # a model that raised still lets the read end before this batch's error goes up
        if reading is not None:
            futures_wait([reading])
    features, read_s = reading.result() if reading is not None else _timed_fetch(batch, feature_source)
    read_at = clock()
    requests = [RerankRequest(item_ids=tuple(p.item_ids), features=f, task_scores=c,
                              context={**p.context, "fusion_weights": w}, upstream_scores=p.raw)
                for p, (f, _), c, (w, _) in zip(batch, features, calibrated, fused)]
    results = components.rerank_many(bundle.reranker, requests, [p.explore for p in batch])
    reranked_at = clock()
    versions = bundle.model_versions()
    reference = getattr(feature_source, "reference", None)
    answers = [_answer(p, request, result, cal, weights, fusion_logprob, degraded, versions, reference, config,
                       len(batch))
               for p, request, result, cal, (weights, fusion_logprob), (_, degraded)
               in zip(batch, requests, results, calibrated, fused, features)]
    ms = 1000.0
    stages = {"batch": (clock() - started) * ms, "calibrate": (calibrated_at - started) * ms,
              "fuse": (fused_at - calibrated_at) * ms, "rerank": (reranked_at - read_at) * ms}
    if reading is not None:
        stages["read"] = read_s * ms
    for answer in answers:
        answer["stages"] = stages
    return answers


def _answer(p: Prepared, request: RerankRequest, result: Any, calibrated: dict[str, torch.Tensor],
            weights: dict[str, float], fusion_logprob: float | None, degraded: str | None,
            versions: dict[str, str], reference: str | None, config: ServeConfig, batch_size: int) -> dict[str, Any]:
    n = p.size
    if sorted(result.order) != list(range(n)):
        raise RuntimeError("reranker returned an order that is not a permutation of the candidates")
    list_logprob = result.logprob if p.explore else 0.0  # greedy: the shown order had probability 1
    if list_logprob is not None:
        list_logprob = min(0.0, float(list_logprob))
    prefix_logprob = None
    if p.explore and config.gate.prefix_k and len(result.scores) == n:
        # The PL log-prob of the top-k placements (the promotion gate's low-variance estimator).
        prefix_logprob = min(0.0, pl_logprob(torch.tensor(result.scores), result.order, config.gate.prefix_k))
    # Calibrated scores as Python floats, one ``tolist`` per task, shared by the response and the
    # impression (instead of indexing a tensor once per item and task, twice).
    calibrated_values = {t: torch.as_tensor(v).tolist() for t, v in calibrated.items()}
    return {"order": list(result.order), "scores": list(result.scores), "calibrated": calibrated_values,
            "weights": weights, "feature_ref": reference if p.features is None else None,
            "fusion_logprob": fusion_logprob, "list_logprob": list_logprob, "explored": p.explore,
            "prefix_logprob": prefix_logprob, "versions": versions, "request": request, "degraded": degraded,
            "batch_size": batch_size}


def rerank_once(bundle: Bundle, body: RerankBody, config: ServeConfig, feature_source: Any = None) -> dict[str, Any]:
    """Calibrate -> fuse -> rerank one request on one bundle; pure apart from the models' own RNG."""
    return score_batch(bundle, [prepare(body, config)], config, feature_source)[0]


def response_json(body: RerankBody, out: dict[str, Any], logged: bool) -> bytes:
    """The ``RerankResponse`` document of one answered request, as JSON bytes.

    Built as plain dicts (constructing and re-validating 50 ``RankedItem`` models was the request
    path's largest cost after the models) and encoded by msgspec (0.07 vs 0.82 ms for
    ``json.dumps`` on 50 items: a one-off timing, not a bench in ``bench/``). JSON has no NaN or
    Infinity: msgspec
    writes a non-finite number as ``null``, as serialising the ``RerankResponse`` model does.
    """
    calibrated = out["calibrated"]
    items = [{"item_id": body.candidates[idx].item_id, "position": pos, "score": float(out["scores"][idx]),
              "calibrated": {t: v[idx] for t, v in calibrated.items()}}
             for pos, idx in enumerate(out["order"], 1)]
    doc = {"request_id": body.request_id, "items": items, "model_versions": out["versions"],
           "fusion_weights": out["weights"], "fusion_logprob": out["fusion_logprob"],
           "list_logprob": out["list_logprob"], "explored": bool(out["explored"]), "impression_logged": logged,
           "degraded": out.get("degraded")}
    return msgspec.json.encode(doc)


def impression_factory(body: RerankBody, out: dict[str, Any], config: ServeConfig, ts: float):
    """A closure building the Impression bytes (runs on the emitter thread).

    The event is built as a plain dict (``None`` fields left out, as :func:`contracts.events.encode`
    leaves them out) and encoded by msgspec, then checked by the contract's compiled accept-filter
    (:func:`contracts.fast_decode.accept`, which accepts nothing the pydantic model refuses). An
    event it does not accept is built with the pydantic model instead, which raises the contract's
    error exactly as before (the emitter counts it). Building 50 ``ShownItem`` models and dumping
    them was ~0.9 ms of the server's GIL per request; the dict path is a fraction of it."""

    def build() -> bytes:
        doc = _impression_doc(body, out, config, ts)
        raw = msgspec.json.encode(doc)
        if accept(raw) is not None:
            return raw
        return encode(Impression.model_validate(doc))

    return build


def _impression_doc(body: RerankBody, out: dict[str, Any], config: ServeConfig, ts: float) -> dict[str, Any]:
    """The Impression event of one answered request as a JSON-ready dict without ``None`` fields."""
    calibrated = out["calibrated"]
    served = out["request"].features  # [n, d] float32: the request's own rows, or as fetched
    rows = None
    copy_fetched = config.log_fetched_features or not out.get("feature_ref")
    inline = any(c.features is not None for c in body.candidates)
    if config.log_features and served.shape[1] and (inline or copy_fetched):
        # Features go into the event as ``features_f32`` (issue 16): each row's float32 bytes,
        # which msgspec writes as base64, exactly the values the models scored; the learners read
        # them with one np.frombuffer instead of parsing 300 decimal numbers an item.
        rows = np.ascontiguousarray(served.detach().cpu().numpy(), dtype=FEATURES_F32_DTYPE)
    items = []
    for pos, idx in enumerate(out["order"], 1):
        cand = body.candidates[idx]
        item: dict[str, Any] = {"item_id": cand.item_id, "position": pos, "scores": cand.scores,
                                "calibrated": {t: v[idx] for t, v in calibrated.items()}}
        if cand.duration_ms is not None:
            item["duration_ms"] = cand.duration_ms
        if rows is not None:  # as served: from the request, or as fetched from the feature store
            item["features_f32"] = rows[idx].tobytes()
        items.append(item)
    context: dict[str, float | str] = dict(body.context)
    context["explored"] = 1.0 if out["explored"] else 0.0
    if out["prefix_logprob"] is not None:
        context[prefix_key(config.gate.prefix_k)] = out["prefix_logprob"]
    if config.log_features and not copy_fetched:
        # the learners read these rows back from the feature store (learners.runtime.feature_fill)
        context[ITEM_FEATURES_KEY] = out["feature_ref"]
    fusion: dict[str, Any] = {"weights": out["weights"]}
    if out["fusion_logprob"] is not None:
        fusion["logprob"] = out["fusion_logprob"]
    doc = {"schema": IMPRESSION_SCHEMA, "event_id": f"{body.request_id}:imp:{uuid.uuid4().hex[:8]}",
           "request_id": body.request_id, "ts": ts, "user_id": body.user_id, "query": body.query, "items": items,
           "fusion": fusion, "list_logprob": out["list_logprob"], "model_versions": out["versions"],
           "context": context, "source": "serving"}
    return {k: v for k, v in doc.items() if v is not None}
