"""A search/short-video session simulator grounded in real data, with an API for the closed loop.

Truth comes from LETOR relevance grades; durations and user activity from KuaiRand-Pure.

For each request the simulator picks a training query and a real KuaiRand user; each
candidate document is mapped to a real KuaiRand video (its duration). It then gives each
candidate **upstream multi-task scores** as an upstream ranker would: informative, noisy and
deliberately miscalibrated (over-confident and biased up) functions of the truth:

    p_click     = sigmoid(T * logit(alpha(r)) + b + noise_click)
    p_long_view = sigmoid(T * logit(alpha(r) * lv(r)) + b + noise_lv)
    watch_time  = sigmoid(T * logit(m(r)) + b + noise_wt)         (predicted watch ratio)

where the noise scales depend on the user's *intent* (``browse`` users: the click score is
sharp, the long-view score noisy; ``deep`` users: the reverse). Intent is drawn from the
user's real KuaiRand activity degree, so the best fusion weights depend on the context
(which is what a per-request fusion policy can exploit and a static weight vector cannot).

:meth:`SessionSimulator.respond` answers any shown order (the logged one, or one served by
our reranker) with feedback events: clicks from the click model, play time from a Beta watch
ratio times the real duration, long view past ``min(long_view_fraction*duration,
long_view_ms)``, like/follow/share, query reformulation when the list disappointed, and
session end; each with a realistic delay after the impression.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from contracts.events import FEEDBACK_SCHEMA, IMPRESSION_SCHEMA, Feedback, FusionDecision, Impression, ShownItem, f32_bytes
from simulator.click_models import ClickModel
from simulator.kuairand import KuaiRandMarginals
from simulator.letor import LetorDataset, LetorQuery

TASKS = ("click", "long_view", "watch_time")
START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated event time starts here
DEEP_INTENT_PROB = {"full_active": 0.8, "high_active": 0.65, "middle_active": 0.45, "low_active": 0.2,
                    "2_14_day_new": 0.3, "single_day_new": 0.25}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class SimulatorConfig:
    click_model: ClickModel = field(default_factory=ClickModel)
    max_candidates: int | None = None  # show at most this many (None: the whole query)
    mean_interarrival_s: float = 0.5
    score_temperature: float = 1.8  # > 1: over-confident upstream scores
    score_bias: float = 0.7  # > 0: upstream scores biased up
    sharp_noise: float = 0.5
    blunt_noise: float = 1.6
    long_view_fraction: float = 0.5
    long_view_ms: float = 18_000.0
    reformulate_no_click: float = 0.7
    reformulate_base: float = 0.4
    session_end_prob: float = 0.8
    with_features: bool = True


@dataclass(frozen=True)
class Candidate:
    item_id: str
    features: np.ndarray
    scores: dict[str, float]
    duration_ms: float


@dataclass(frozen=True)
class SimRequest:
    """One request: candidates in upstream order plus the hidden truth (for evaluation only)."""

    index: int
    request_id: str
    ts: float
    user_id: str
    user_activity: str
    intent: str
    query: str
    candidates: tuple[Candidate, ...]
    relevance: np.ndarray  # hidden truth, aligned with candidates

    def item_index(self) -> dict[str, int]:
        return {c.item_id: i for i, c in enumerate(self.candidates)}


class SessionSimulator:
    """Deterministic by seed: request ``i`` and the response to a given order never change."""

    def __init__(self, dataset: LetorDataset, kuairand: KuaiRandMarginals, config: SimulatorConfig | None = None,
                 seed: int = 0, namespace: str = "sim") -> None:
        if len(dataset) == 0:
            raise ValueError("the dataset has no queries")
        self.dataset = dataset
        self.kuairand = kuairand
        self.config = config or SimulatorConfig()
        self.seed = seed
        self.namespace = namespace
        self._next_index = 0
        self._clock = START_TS

    # -- requests -------------------------------------------------------------------------
    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index, stream])

    def _video_for(self, item_id: str) -> float:
        digest = int(hashlib.blake2b(f"{self.seed}:{item_id}".encode(), digest_size=8).hexdigest(), 16)
        return float(self.kuairand.durations_ms[digest % len(self.kuairand.durations_ms)])

    def request(self, index: int, ts: float) -> SimRequest:
        """Build request ``index`` at event time ``ts`` (pure function of seed and index)."""
        rng = self._rng(index, 0)
        query: LetorQuery = self.dataset.queries[int(rng.integers(len(self.dataset)))]
        u = int(rng.integers(len(self.kuairand.user_ids)))
        activity = self.kuairand.user_activity[u]
        intent = "deep" if rng.random() < DEEP_INTENT_PROB.get(activity, 0.4) else "browse"
        cfg = self.config
        rel = query.relevance.astype(np.float64)
        attr = cfg.click_model.attractiveness(rel)
        grade = rel / max(1, self.dataset.max_grade)
        lv_given_click = 0.15 + 0.6 * grade
        ratio = 0.2 + 0.6 * grade
        noise = {"click": cfg.sharp_noise if intent == "browse" else cfg.blunt_noise,
                 "long_view": cfg.blunt_noise if intent == "browse" else cfg.sharp_noise,
                 "watch_time": cfg.blunt_noise}
        truth = {"click": attr, "long_view": attr * lv_given_click, "watch_time": ratio}
        scores = {task: _sigmoid(cfg.score_temperature * _logit(np.clip(truth[task], 0.01, 0.95)) + cfg.score_bias
                                 + rng.normal(0.0, noise[task], size=len(rel))) for task in TASKS}
        order = np.argsort(-scores["click"], kind="stable")  # the upstream ranker sorts by its click score
        if cfg.max_candidates:
            order = order[: cfg.max_candidates]
        candidates = tuple(Candidate(item_id=query.doc_ids[j], features=query.features[j],
                                     scores={t: float(round(scores[t][j], 6)) for t in TASKS},
                                     duration_ms=self._video_for(query.doc_ids[j])) for j in order)
        return SimRequest(index=index, request_id=f"{self.namespace}-{self.seed}-{index}", ts=ts,
                          user_id=f"kr{int(self.kuairand.user_ids[u])}", user_activity=activity, intent=intent,
                          query=f"q{query.qid}", candidates=candidates, relevance=query.relevance[order].copy())

    def next_request(self) -> SimRequest:
        index = self._next_index
        self._clock += float(self._rng(index, 2).exponential(self.config.mean_interarrival_s))
        self._next_index += 1
        return self.request(index, self._clock)

    def requests(self, n: int) -> Iterator[SimRequest]:
        for _ in range(n):
            yield self.next_request()

    # -- events ---------------------------------------------------------------------------
    def impression(self, request: SimRequest, order: Sequence[int] | None = None, *, source: str = "letor-sim",
                   fusion: FusionDecision | None = None, list_logprob: float | None = None,
                   model_versions: dict[str, str] | None = None,
                   calibrated: Sequence[dict[str, float]] | None = None) -> Impression:
        """The Impression event for ``request`` shown in ``order`` (candidate indices; default upstream).

        With ``config.with_features`` the items carry their features as ``features_f32`` (float32
        bytes, issue 16), rounded to 4 decimals first as the float-list form was, so a learner sees
        the same float32 values as from the old logs.
        """
        order = list(range(len(request.candidates))) if order is None else list(order)
        items = []
        for pos, j in enumerate(order, 1):
            c = request.candidates[j]
            items.append(ShownItem(item_id=c.item_id, position=pos, scores=c.scores, duration_ms=c.duration_ms,
                                   calibrated=calibrated[j] if calibrated is not None else None,
                                   features_f32=f32_bytes(np.round(c.features.astype(np.float64), 4))
                                   if self.config.with_features else None))
        return Impression(schema=IMPRESSION_SCHEMA, event_id=f"{request.request_id}:imp", request_id=request.request_id,
                          ts=request.ts, user_id=request.user_id, query=request.query, items=items, fusion=fusion,
                          list_logprob=list_logprob, model_versions=model_versions or {},
                          context={"user_activity": request.user_activity}, source=source)

    def respond(self, request: SimRequest, order: Sequence[int] | None = None, *, stream: int = 1,
                shown_at: float | None = None) -> list[Feedback]:
        """Feedback events for ``request`` shown in ``order``, in time order."""
        cfg = self.config
        order = list(range(len(request.candidates))) if order is None else list(order)
        rng = self._rng(request.index, 10 + stream)
        t0 = request.ts if shown_at is None else shown_at
        rel = request.relevance[order].astype(np.float64)
        engagement = self.kuairand.engagement(request.user_activity)
        clicks = cfg.click_model.sample_clicks(rel, rng, engagement)
        grade = rel / max(1, self.dataset.max_grade)
        events: list[tuple[float, str, str | None, float]] = []
        best_clicked = -1.0
        for k, j in enumerate(order):
            if not clicks[k]:
                continue
            cand = request.candidates[j]
            t_click = t0 + 1.0 + 0.8 * k + float(rng.lognormal(0.5, 0.6))
            mean = 0.2 + 0.6 * grade[k]
            frac = float(rng.beta(mean * 4.0, (1.0 - mean) * 4.0))
            play_ms = frac * cand.duration_ms
            events.append((t_click, "click", cand.item_id, 1.0))
            threshold = min(cfg.long_view_fraction * cand.duration_ms, cfg.long_view_ms)
            if play_ms >= threshold:
                events.append((t_click + threshold / 1000.0, "long_view", cand.item_id, 1.0))
            events.append((t_click + play_ms / 1000.0, "play_time_ms", cand.item_id, round(play_ms, 1)))
            for kind, p in (("like", 0.03 + 0.15 * grade[k]), ("follow", 0.01 + 0.04 * grade[k]),
                            ("share", 0.005 + 0.02 * grade[k])):
                if rng.random() < p:
                    events.append((t_click + 0.5 * play_ms / 1000.0, kind, cand.item_id, 1.0))
            best_clicked = max(best_clicked, grade[k])
        p_ref = cfg.reformulate_no_click if best_clicked < 0 else cfg.reformulate_base * (1.0 - best_clicked)
        if rng.random() < p_ref:
            events.append((t0 + 10.0 + float(rng.exponential(8.0)), "reformulate", None, 1.0))
        if rng.random() < cfg.session_end_prob:
            last = max((e[0] for e in events), default=t0)
            events.append((last + 2.0 + float(rng.exponential(3.0)), "session_end", None, 1.0))
        events.sort(key=lambda e: e[0])
        return [Feedback(schema=FEEDBACK_SCHEMA, event_id=f"{request.request_id}:fb{n}", request_id=request.request_id,
                         item_id=item, ts=round(ts, 6), kind=kind, value=value)
                for n, (ts, kind, item, value) in enumerate(events)]

    # -- truth (evaluation only) --------------------------------------------------------------
    def expected_clicks(self, request: SimRequest, order: Sequence[int]) -> float:
        return float(self.config.click_model.click_probabilities(request.relevance[list(order)]).sum())
