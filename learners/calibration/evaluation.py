"""Prequential calibration evaluation on an OBD-format CSV (``streamrank eval calibration``).

1. Load the CSV in time order; fit the backbone (:mod:`learners.calibration.backbone`) on the earliest
   ``train_fraction`` of rows; score the rest with it (``p_hat``).
2. Turn each later row into the :class:`~contracts.events.LabeledList` the learners consume on
   the stream (impression with ``scores={"click": p_hat}``, user context, click label via
   :func:`streams.labeling.label_impression`): the same path as production.
3. For every method, in time order and in batches of ``batch_size``: **predict** the batch
   with the current state, then **learn** it (prequential, "test-then-train").
4. Metrics over all predictions (:mod:`evaluation.metrics`): ECE, PCOC, LogLoss, AUC and field
   ECE by position and by item; the backbone's raw scores are scored the same way.

Methods: ``umnn_scloss`` (UMC, BCE + λ·SCLoss on adaptive quantile bins), ``umnn`` (UMC, BCE
only), ``platt``, ``isotonic``, ``histogram`` and ``backbone``; for the SCLoss ablation also
``umnn_scloss@fixed_bins`` (the paper's equal-width bins). The simulator and MovieLens
benchmarks with bootstrap intervals: :mod:`learners.calibration.benchmark`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from common.figures import save_figure
from common.tables import render_table
from contracts.events import IMPRESSION_SCHEMA, Impression, JoinInfo, LabeledList, ShownItem
from evaluation.metrics import calibration_report, reliability_curve
from learners.calibration.backbone import ObdBackbone, load_obd_table, split_by_time
from learners.calibration.binning_learner import build_histogram, build_isotonic
from learners.calibration.learner import build_platt, build_umnn
from simulator.obd import USER_FEATURES
from streams.labeling import label_impression
from streams.rewards import ListOutcome, RewardWeights

FIELDS = ("position", "item")
DEFAULT_METHODS = ("umnn_scloss", "umnn", "platt", "isotonic", "histogram", "backbone")
FIXED_BINS = "umnn_scloss@fixed_bins"
KNOWN_METHODS = (*DEFAULT_METHODS, FIXED_BINS)


def method_factories(lr: float, context_fields: tuple[str, ...], seed: int,
                     umnn_settings: dict[str, Any] | None = None) -> dict[str, Callable[[], Any]]:
    """A fresh learner per method. ``umnn_settings`` (:class:`~learners.calibration.config.CalibrationConfig`
    fields, e.g. ``average``, ``lr_schedule``, ``sc_weight``) apply to the three UMNN variants only; a
    ``sc_weight`` there sets SCLoss's λ of the SCLoss variants (``umnn`` stays BCE only). The
    context-free baselines never change."""
    common = dict(tasks=("click",), seed=seed)
    extra = dict(umnn_settings or {})
    sc = {"sc_weight": extra.pop("sc_weight")} if "sc_weight" in extra else {}
    return {
        "umnn_scloss": lambda: build_umnn(name="umnn_scloss", lr=lr, context_fields=context_fields, **sc, **extra,
                                          **common),
        FIXED_BINS: lambda: build_umnn(name=FIXED_BINS, lr=lr, context_fields=context_fields, sc_binning="uniform",
                                       **sc, **extra, **common),
        "umnn": lambda: build_umnn(name="umnn", lr=lr, context_fields=context_fields, sc_weight=0.0, **extra,
                                   **common),
        "platt": lambda: build_platt(**common),
        "isotonic": lambda: build_isotonic(**common),
        "histogram": lambda: build_histogram(**common),
    }


def check_methods(methods: Sequence[str]) -> None:
    unknown = set(methods) - set(KNOWN_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(KNOWN_METHODS)}")


def obd_labeled_lists(frame: pd.DataFrame, p_hat: np.ndarray, tag: str) -> list[LabeledList]:
    """One LabeledList per OBD row, carrying the backbone's score as the ``click`` task score."""
    weights = RewardWeights()
    out = []
    for (_, r), score in zip(frame.iterrows(), p_hat):
        request_id = f"obd-{tag}-{int(r['row'])}"
        user_feats = tuple(str(r[f]) for f in USER_FEATURES)
        user_id = "obdu-" + hashlib.blake2b("|".join(user_feats).encode(), digest_size=6).hexdigest()
        context: dict[str, float | str] = dict(zip(USER_FEATURES, user_feats))
        context["user_item_affinity"] = float(r["affinity"])
        item = ShownItem(item_id=str(int(r["item_id"])), position=int(r["position"]),
                         scores={"click": float(score)}, propensity=min(1.0, float(r["propensity_score"])))
        imp = Impression(schema=IMPRESSION_SCHEMA, event_id=f"{request_id}:imp", request_id=request_id,
                         ts=float(r["ts"]), user_id=user_id, items=[item], context=context, source="obd")
        outcome = ListOutcome()
        if int(r["click"]):
            outcome.add(item.item_id, "click", 1.0)
        join = JoinInfo(closed_by="window", window_s=0.0, feedback_count=int(r["click"]), closed_at_ts=float(r["ts"]))
        out.append(label_impression(imp, outcome, weights, join))
    return out


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]
    predictions: dict[str, np.ndarray]
    labels: np.ndarray
    fields: dict[str, np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def prequential(learner: Any, examples: Sequence[LabeledList], batch_size: int, desc: str,
                progress: bool = True) -> np.ndarray:
    """Predict each batch with the current state, then learn it; returns the predictions."""
    preds: list[np.ndarray] = []
    for batch in tqdm(list(_batches(examples, batch_size)), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        scored = learner.score(batch)
        preds.append(scored["click"].numpy().astype(np.float64))
        learner.learn_many(batch)
    return np.concatenate(preds) if preds else np.zeros(0)


def evaluate_obd(path: str | Path, methods: Sequence[str] = DEFAULT_METHODS, batch_size: int = 128,
                 train_fraction: float = 0.3, lr: float = 1e-2, limit: int | None = None, seed: int = 0,
                 context_fields: tuple[str, ...] = ("position", "item", *USER_FEATURES),
                 progress: bool = True) -> EvalResult:
    check_methods(methods)
    table = load_obd_table(path, limit=limit)
    train, test = split_by_time(table, train_fraction)
    backbone = ObdBackbone(seed=seed).fit(train)
    p_hat = backbone.predict(test)
    examples = obd_labeled_lists(test, p_hat, table.tag)
    labels = test["click"].to_numpy(dtype=np.float64)
    fields = {"position": test["position"].to_numpy(), "item": test["item_id"].to_numpy()}
    predictions: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    factories = method_factories(lr, context_fields, seed)
    for method in methods:
        start = time.perf_counter()
        if method == "backbone":
            predictions[method] = p_hat.astype(np.float64)
        else:
            predictions[method] = prequential(factories[method](), examples, batch_size, method, progress)
        seconds[method] = time.perf_counter() - start
    metrics = {m: calibration_report(labels, predictions[m], fields) for m in methods}
    info = {"path": str(path), "rows": len(table.frame), "train_rows": len(train), "eval_rows": len(test),
            "eval_clicks": int(labels.sum()), "batch_size": batch_size, "lr": lr, "train_fraction": train_fraction,
            "context_fields": list(context_fields)}
    return EvalResult(metrics, predictions, labels, fields, seconds, info)


def plot_reliability(result: EvalResult, path: str | Path, bins: int = 20) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 6))
    top = 0.0
    for method, p in result.predictions.items():
        mean_p, mean_y, _ = reliability_curve(result.labels, np.clip(p, 0, 1), bins)
        ax.plot(mean_p, mean_y, marker="o", label=f"{method} (ECE {result.metrics[method]['ece']:.4f})")
        top = max(top, float(mean_p.max(initial=0)), float(mean_y.max(initial=0)))
    top = max(top * 1.1, 1e-3)
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="perfect")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed click rate")
    ax.set_title(f"Reliability, prequential on {Path(result.info['path']).name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


METRIC_ORDER = ("ece", "field_ece_position", "field_ece_item", "pcoc", "logloss", "auc")


def format_table(result: EvalResult) -> str:
    """The metrics of every method (one row each) and a line on the data it was evaluated on."""
    rows = [[method] + [f"{metrics[m]:.6f}" for m in METRIC_ORDER] + [f"{result.seconds.get(method, 0.0):.1f}"]
            for method, metrics in result.metrics.items()]
    lines = [render_table(["method", *METRIC_ORDER, "seconds"], rows)]
    info = result.info
    lines.append(f"rows {info['rows']} (backbone fit on first {info['train_rows']}, evaluated on "
                 f"{info['eval_rows']} with {info['eval_clicks']} clicks), batch {info['batch_size']}, lr {info['lr']}")
    return "\n".join(lines)
