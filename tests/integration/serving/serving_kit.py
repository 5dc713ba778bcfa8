"""Helpers for serving tests on the real stack: small real models, raw snapshot writes, a served app."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import replace

import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as safetensors_save

from common.waiting import wait_for as common_wait_for
from feature_store.snapshots import Manifest, SnapshotRegistry, tensor_specs
from serving.app import build_runtime, create_app
from serving.baseline import LinearListScorer
from serving.gate import GateConfig
from serving.settings import ServeConfig

N_FEATURES = 4
TASKS = ("click", "long_view", "watch_time")


def scorer(feature_weights: list[float] | None = None, task_weight: float = 0.0, n_features: int = N_FEATURES,
           scale: float = 1.0) -> LinearListScorer:
    """A linear PL scorer with chosen weights (a real model, published like any learner)."""
    model = LinearListScorer(n_features=n_features)
    with torch.no_grad():
        model.task_weight.fill_(task_weight)
        weights = feature_weights if feature_weights is not None else [1.0] + [0.0] * (n_features - 1)
        model.feature_weight.copy_(torch.tensor(weights, dtype=torch.float32) * scale)
    return model


def body(request_id: str, n: int = 6, n_features: int = N_FEATURES, explore: bool | None = None) -> dict:
    doc = {"request_id": request_id, "user_id": "u1", "query": "q",
           "candidates": [{"item_id": f"i{k}", "scores": {t: 0.3 for t in TASKS},
                           "features": [float(k)] + [0.5] * (n_features - 1)} for k in range(n)]}
    if explore is not None:
        doc["explore"] = explore
    return doc


def write_raw_snapshot(registry: SnapshotRegistry, model: str, tensors: dict[str, torch.Tensor], meta: dict,
                       flip_byte: bool = False, announce: bool = True) -> str:
    """Store a version *without* the registry's own checks and point ``current`` at it.

    This is what a buggy or malicious publisher (or bit rot) could leave in Redis; serving
    must refuse it on its own.
    """
    raw = safetensors_save({k: v.contiguous() for k, v in tensors.items()})
    blob = raw[:-1] + bytes([raw[-1] ^ 0xFF]) if flip_byte else raw  # bit rot after the checksum was taken
    version = str(registry.redis.incr(registry._key(model, "seq")))
    manifest = Manifest(name=model, version=version, parent=registry.current_version(model), created_at=time.time(),
                        sha256=hashlib.sha256(raw).hexdigest(), size_bytes=len(raw), tensors=tensor_specs(tensors),
                        meta=meta)
    registry.redis.set(registry._blob_key(model, version), blob)
    registry.redis.set(registry._manifest_key(model, version), manifest.to_json())
    registry.redis.zadd(registry._key(model, "versions"), {version: int(version)})
    registry.redis.set(registry._key(model, "current"), version)
    if announce:
        registry.redis.publish(registry.channel, json.dumps({**json.loads(manifest.to_json()), "event": "publish"}))
    return version


def serve_config(**changes) -> ServeConfig:
    base = ServeConfig(calibrator="", fusion="", reranker="linear-pl", poll_interval_s=0.3, explore=False,
                       gate=GateConfig(enabled=False))
    return replace(base, **changes)


@contextmanager
def served(settings, config: ServeConfig | None = None):
    """The app on the real broker + Redis (watcher, emitter, examples reader all running)."""
    runtime = build_runtime(settings, config or serve_config())
    with TestClient(create_app(runtime)) as client:
        yield client, runtime


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    return common_wait_for(predicate, timeout, interval)


def served_version(client) -> str | None:
    return client.get("/models").json()["serving"]["reranker"].get("version")
