r"""Pure summaries of a closed-loop run: reward/NDCG/ECE over time, staleness, throughput, plots.

* **ECE** (Naeini et al., AAAI 2015; Guo et al., ICML 2017): :math:`\sum_b \frac{n_b}{N}
  |\bar y_b - \bar p_b|` over ``bins`` equal-width bins of the predicted probability.
* **NDCG@k** on the simulator's hidden LETOR grades (:func:`simulator.session.ndcg_at_k`).
* **Staleness** of an example: from the wall time its last feedback event was produced to the
  wall time a response first carried a reranker version whose snapshot had applied the
  example (its ``examples`` offset is at or below the snapshot's applied offset for that
  partition, from the manifest's ``meta.runtime.offsets``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


@dataclass
class Served:
    """One simulated request as the demo saw it."""

    t: float  # wall time the response arrived
    request_id: str
    ok: bool
    latency_s: float
    versions: dict[str, str] = field(default_factory=dict)
    reward: float = 0.0
    #: the list reward of the same request shown in the upstream order, with independent click
    #: draws of the same click model (a counterfactual the simulator can afford: the baseline)
    reward_upstream: float = 0.0
    ndcg10: float = 0.0
    #: the same request in the upstream order (what serving got): the per-request baseline that
    #: takes the draw of queries out of the curve
    ndcg10_upstream: float = 0.0
    #: the click model's expected clicks of the served and of the upstream order (low-noise reward)
    expected_clicks: float = 0.0
    expected_clicks_upstream: float = 0.0
    clicks: list[int] = field(default_factory=list)
    click_probs: list[float] = field(default_factory=list)
    #: (event time, wall time produced) of each feedback event, in production order
    feedback_sent: list[tuple[float, float]] = field(default_factory=list)
    error: str = ""

    @property
    def feedback_done_at(self) -> float:
        """Wall time its last feedback event was produced (the response's, if it had none)."""
        return self.feedback_sent[-1][1] if self.feedback_sent else self.t


def learned_feedback_done(served: Served, cutoff_ts: float | None) -> float:
    """Where an example's staleness starts: the wall time its last *learnable* feedback event
    was produced, i.e. the last one with event time ``<= cutoff_ts`` (the join's window end,
    impression ts + window; later events are dropped as outside the window and no model ever
    learns from them). No learnable event: the response time (the impression was the last
    thing the example learned from). ``cutoff_ts=None`` (no example seen): the last event."""
    if cutoff_ts is None:
        return served.feedback_done_at
    return max((sent for ts, sent in served.feedback_sent if ts <= cutoff_ts), default=served.t)


def ece(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() / p.size * abs(y[sel].mean() - p[sel].mean())
    return float(total)


def curves(served: Sequence[Served], start: float, bucket_s: float) -> list[dict[str, float]]:
    """Per time bucket: requests, mean list reward, mean NDCG@10, ECE of the served click probabilities.

    A trailing bucket with less than half the median number of requests (the run ended inside
    it) is left out: its mean would be noise.
    """
    ok = [s for s in served if s.ok]
    if not ok:
        return []
    n_buckets = int(math.floor((max(s.t for s in ok) - start) / bucket_s)) + 1
    out = []
    for b in range(n_buckets):
        rows = [s for s in ok if start + b * bucket_s <= s.t < start + (b + 1) * bucket_s]
        if not rows:
            continue
        probs = [p for s in rows for p in s.click_probs]
        labels = [c for s in rows for c in s.clicks]
        out.append({"t": round((b + 0.5) * bucket_s, 3), "requests": len(rows),
                    "reward": float(np.mean([s.reward for s in rows])),
                    "reward_upstream": float(np.mean([s.reward_upstream for s in rows])),
                    "ndcg10": float(np.mean([s.ndcg10 for s in rows])),
                    "ndcg10_upstream": float(np.mean([s.ndcg10_upstream for s in rows])),
                    "expected_clicks": float(np.mean([s.expected_clicks for s in rows])),
                    "expected_clicks_upstream": float(np.mean([s.expected_clicks_upstream for s in rows])),
                    "ece": ece(probs, labels)})
    if len(out) > 2 and out[-1]["requests"] < 0.5 * float(np.median([row["requests"] for row in out])):
        out.pop()
    return out


def first_served(served: Iterable[Served], model: str) -> dict[str, float]:
    """Wall time each version of ``model`` first appeared in a response."""
    out: dict[str, float] = {}
    for s in sorted(served, key=lambda s: s.t):
        version = s.versions.get(model)
        if version is not None and version not in out:
            out[version] = s.t
    return out


def manifest_offsets(manifest: dict[str, Any]) -> dict[str, int]:
    """``{"topic:partition": last applied offset}`` from a snapshot manifest (learner runtime meta)."""
    meta = manifest.get("meta") or {}
    for candidate in ((meta.get("runtime") or {}).get("offsets"), manifest.get("offsets"), meta.get("offsets")):
        if isinstance(candidate, dict) and candidate:
            return {str(k): int(v) for k, v in candidate.items()}
    return {}


def staleness(rows: Sequence[dict[str, Any]]) -> tuple[list[float], int]:
    """Staleness (s) of every example of :func:`staleness_rows` some served model version learned
    from (its last feedback -> first response by a version covering it); plus how many were never served."""
    values = [max(0.0, r["first_served_at"] - r["feedback_done_at"]) for r in rows if r["first_served_at"] is not None]
    return values, len(rows) - len(values)


def staleness_rows(examples: dict[str, tuple[str, int, float]], feedback_done: dict[str, float],
                   manifests: dict[str, Sequence[dict[str, Any]]], served_at: dict[str, dict[str, float]],
                   closed_by: dict[str, str] | None = None,
                   window_end: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per example with feedback: when its last feedback was sent, its join window ended
    (``window_end``: request_id -> impression ts + window; ``None`` if not given), its example
    produced, the first snapshot covering it created and first served (``None``: not served by the end).

    ``examples``: request_id -> ("topic:partition", offset, produce time); ``feedback_done``:
    request_id -> wall time of its last feedback event; ``manifests``: model -> its snapshot
    announcements; ``served_at``: model -> version -> first served wall time. An example counts
    as learned at the earliest first serving of any model version whose applied offsets cover it.
    """
    covered: list[tuple[float, float, dict[str, int]]] = []
    for model, docs in manifests.items():
        for doc in docs:
            when = served_at.get(model, {}).get(str(doc.get("version")))
            if when is not None:
                covered.append((when, float(doc.get("created_at", when)), manifest_offsets(doc)))
    covered.sort(key=lambda c: c[0])
    rows = []
    for request_id, (tp, offset, produced_at) in examples.items():
        if request_id not in feedback_done:
            continue
        hit = next(((when, created) for when, created, offs in covered if offs.get(tp, -1) >= offset), None)
        rows.append({"request_id": request_id, "closed_by": (closed_by or {}).get(request_id, ""),
                     "feedback_done_at": feedback_done[request_id],
                     "window_end_at": (window_end or {}).get(request_id), "example_at": produced_at,
                     "snapshot_created_at": None if hit is None else hit[1],
                     "first_served_at": None if hit is None else hit[0]})
    return rows


def staleness_by_close(rows: Sequence[dict[str, Any]], since: float | None = None) -> dict[str, dict[str, Any]]:
    """Staleness p50/p99 of :func:`staleness_rows` overall (``all``) and per close reason, for
    examples whose feedback ended at or after ``since`` (wall time; ``None``: all of them)."""
    groups: dict[str, list[float]] = {"all": []}
    counts: dict[str, int] = {"all": 0}
    for row in rows:
        if since is not None and row["feedback_done_at"] < since:
            continue
        for key in ("all", row["closed_by"] or "?"):
            counts[key] = counts.get(key, 0) + 1
            if row["first_served_at"] is not None:
                groups.setdefault(key, []).append(max(0.0, row["first_served_at"] - row["feedback_done_at"]))
    return {key: {"examples": counts[key], "served": len(groups.get(key, [])),
                  "p50_s": percentile(groups.get(key, []), 50), "p99_s": percentile(groups.get(key, []), 99)}
            for key in counts}


def staleness_breakdown(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Where the staleness of :func:`staleness_rows` goes, per example: join (feedback -> example
    produced), learn+publish (example -> snapshot created), swap (snapshot created -> first response).
    Rows with a ``window_end_at`` also split the join: the rest of the window after the last kept
    feedback (``window_rest_s``) and window end -> example produced (``after_window_s``: the
    allowed lateness and the join's batching; negative for sessions closed by ``session_end``)."""
    out: dict[str, list[float]] = {"join_s": [], "learn_publish_s": [], "swap_s": [], "window_rest_s": [],
                                   "after_window_s": []}
    for row in rows:
        out["join_s"].append(max(0.0, row["example_at"] - row["feedback_done_at"]))
        if row.get("window_end_at") is not None:
            out["window_rest_s"].append(max(0.0, row["window_end_at"] - row["feedback_done_at"]))
            out["after_window_s"].append(row["example_at"] - row["window_end_at"])
        if row["first_served_at"] is not None:
            out["learn_publish_s"].append(max(0.0, row["snapshot_created_at"] - row["example_at"]))
            out["swap_s"].append(max(0.0, row["first_served_at"] - row["snapshot_created_at"]))
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def plot(curve: list[dict[str, float]], output: Path, swaps_at: Sequence[float] = ()) -> list[Path]:
    """reward.png, ndcg10.png, expected_clicks.png, ece.png (Agg backend): the served curve, the upstream
    order's as a dashed baseline where there is one, and each swap as a short tick on the top edge
    (hundreds of swaps as full-height lines drowned the curve)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    paths = []
    t = [row["t"] for row in curve]
    for key, label in (("reward", "mean list reward"), ("ndcg10", "NDCG@10 (hidden LETOR grades)"),
                       ("expected_clicks", "expected clicks (click model)"),
                       ("ece", "ECE of served click probability")):
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        ax.plot(t, [row[key] for row in curve], marker="o", ms=3, label="served")
        if f"{key}_upstream" in curve[0]:
            ax.plot(t, [row[f"{key}_upstream"] for row in curve], ls="--", color="0.5", label="upstream order")
            ax.legend(loc="lower right", fontsize=8)
        if len(swaps_at):
            ax.plot(list(swaps_at), [1.0] * len(swaps_at), ls="none", marker="|", ms=7, color="0.35", alpha=0.5,
                    transform=ax.get_xaxis_transform(), clip_on=False, label="snapshot swap")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("seconds since start")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = output / f"{key}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
