"""``GET /dashboard`` (one static page), ``GET /dashboard/data`` (its JSON) and the vendored chart library.

The page polls ``/dashboard/data?since=T`` every two seconds and appends what is new, so a
tab left open costs the server one small JSON document per poll. Nothing is fetched from
outside the server: uPlot is vendored under ``serving/static/vendor/uplot`` (an air-gapped
cluster reaches no CDN).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Optional

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from serving.dashboard import dashboard_data

_STATIC = resources.files("serving") / "static"
_VENDOR = {"uPlot.iife.min.js": "application/javascript", "uPlot.min.css": "text/css", "LICENSE": "text/plain"}


class DashboardData(BaseModel):
    """The dashboard's data: what serves, what the gate decided, and time series since ``since``."""

    now: float = Field(description="server wall time (epoch seconds)")
    started_at: float = Field(description="when this server started recording")
    bucket_s: float = Field(description="width of one time bucket of `points`")
    serving: dict[str, Any] = Field(description="per role (calibrator, fusion, reranker): model, version, loaded_at")
    swaps: list[dict[str, Any]] = Field(description="snapshots swapped in: at, model, role, version")
    refusals: dict[str, int] = Field(description="snapshots not swapped in, by action (refused, blocked-by-gate)")
    gate: list[dict[str, Any]] = Field(description="promotion-gate verdicts: estimate, current, lower_bound, reason")
    points: list[dict[str, Any]] = Field(
        description="per bucket: requests_per_s, latency_p50_ms/p99_ms, examples, reward (mean list reward of "
                    "the examples joined in it), staleness_p50_s/p99_s (joined -> first served by a covering snapshot)")
    simulator: dict[str, Any] = Field(
        description="the demo's simulator curves (reward, reward_upstream, ndcg10, ndcg10_upstream per bucket), "
                    "empty outside a demo")
    staleness: dict[str, Any] = Field(description="p50_s/p99_s over the last 2,000 covered examples")
    consumers: list[dict[str, Any]] = Field(description="each streams worker's and learner's lag and dead letters")
    dead_letters: dict[str, int] = Field(description="records on the dead-letter topic, by reason")
    examples_seen: int = Field(description="examples read from the examples topic")
    point_counts: dict[str, int] = Field(description="how many serving/simulator points and swaps this answer has")


def add_dashboard_routes(app: FastAPI, runtime: Any) -> None:
    """Register the page, its data endpoint and the vendored files on ``app``."""

    @app.get("/dashboard", response_class=HTMLResponse, summary="Live dashboard (HTML)")
    def dashboard_page() -> HTMLResponse:
        return HTMLResponse((_STATIC / "dashboard.html").read_text(encoding="utf-8"))

    @app.get("/dashboard/data", response_model=DashboardData, summary="The dashboard's data (JSON)",
             responses={404: {"description": "the dashboard is off (STREAMRANK_SERVE_DASHBOARD=0)"}})
    def dashboard_json(since: Optional[float] = Query(None, description="only points and swaps after this epoch time"),
                       simulator_since: Optional[float] = Query(None, description="only simulator points after this")) \
            -> dict[str, Any]:
        recorder = runtime.dashboard
        if recorder is None:
            raise HTTPException(404, "the dashboard is off")
        bundle = runtime.holder.bundle
        serving = {}
        for role in ("calibrator", "fusion", "reranker"):
            comp = bundle.component(role)
            serving[role] = ({"model": comp.name, "version": comp.version, "loaded_at": comp.loaded_at} if comp
                             else {"model": runtime.config.roles()[role], "version": None, "cold_start": True})
        return dashboard_data(recorder, serving, runtime.holder.recent_decisions(1000), runtime.status_folder, since,
                              simulator_since)

    @app.get("/dashboard/vendor/{name}", include_in_schema=False)
    def vendored(name: str) -> Response:
        if name not in _VENDOR:
            raise HTTPException(404, f"no vendored file {name!r}")
        return Response((_STATIC / "vendor" / "uplot" / name).read_bytes(), media_type=_VENDOR[name],
                        headers={"Cache-Control": "max-age=86400"})
