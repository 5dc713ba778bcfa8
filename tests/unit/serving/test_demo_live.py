"""The demo's live view (simulator curves for the dashboard, the terminal panel) and its report.html."""

from __future__ import annotations

import json

import pytest

from loop.live import LiveView, SimulatorCurves
from loop.metrics import Served, plot
from loop.report import render_report, write_report


def served(t: float, reward: float, ok: bool = True) -> Served:
    return Served(t=t, request_id=f"r{t}", ok=ok, latency_s=0.01, reward=reward, reward_upstream=reward / 2,
                  ndcg10=0.8, ndcg10_upstream=0.6, expected_clicks=1.0, expected_clicks_upstream=0.9)


def test_curves_bucket_incrementally_and_wait_for_late_responses():
    log: list[Served] = [served(100.2, 1.0), served(101.9, 3.0), served(102.5, 5.0), served(103.0, 9.0, ok=False)]
    curves = SimulatorCurves(bucket_s=2.0, grace_s=1.0)
    assert curves.update(log, now=102.9) == []  # bucket [100, 102) ended 0.9 s ago: a late response may come
    log.append(served(101.0, 2.0))  # a late one for the first bucket
    closed = curves.update(log, now=103.1)
    assert [(p["t"], p["requests"], p["reward"], p["reward_upstream"]) for p in closed] == [(102.0, 3, 2.0, 1.0)]
    closed = curves.update(log, now=105.0)
    assert [(p["t"], p["requests"], p["reward"]) for p in closed] == [(104.0, 1, 5.0)]  # the failed one is left out
    assert len(curves.points) == 2 and curves.update(log, now=200.0) == []


def test_live_view_writes_the_simulator_file_and_stays_quiet_without_a_terminal(tmp_path, capsys):
    log = [served(1000.0 + 0.1 * i, 1.0) for i in range(40)]
    status = tmp_path / "status" / "simulator.json"
    fetched: list[str] = []
    view = LiveView(lambda: log, status, "http://127.0.0.1:9", 60.0, bucket_s=1.0, interval_s=0.05,
                    fetch=lambda url: fetched.append(url) or {"swaps": 3, "refusals": 1})
    assert view.show is False  # pytest's stderr is not a terminal
    view.start()
    for _ in range(100):
        if view.passes >= 2:
            break
        view._halt.wait(0.05)
    view.stop()
    doc = json.loads(status.read_text())
    assert len(doc["points"]) == 4 and doc["points"][0]["requests"] == 10
    assert fetched == []  # no panel: no polling of the server either
    assert capsys.readouterr().err == ""


def test_panel_shows_the_facts_and_the_dashboard_url():
    from rich.console import Console

    view = LiveView(lambda: [served(1.0, 2.0)], None, "http://127.0.0.1:9", 10.0, show=True,  # type: ignore[arg-type]
                    fetch=lambda url: {"swaps": 3, "refusals": 1, "staleness": {"p99_s": 2.5}})
    view.curves.points = [{"t": 1.0, "reward": 2.0, "reward_upstream": 1.5, "ndcg10": 0.9, "ndcg10_upstream": 0.7}]
    view.facts = {"swaps": 3, "refusals": 1, "staleness": {"p99_s": 2.5}}
    console = Console(record=True, width=100)
    console.print(view.panel())
    text = console.export_text()
    for expected in ("3 / 1", "2.000 vs 1.500", "0.900 vs 0.700", "2.5 s", "http://127.0.0.1:9/dashboard"):
        assert expected in text, text


@pytest.fixture
def curve():
    return [{"t": 5.0 * k + 2.5, "requests": 10, "reward": 1.0 + k, "reward_upstream": 1.0, "ndcg10": 0.8,
             "ndcg10_upstream": 0.7, "expected_clicks": 1.0, "expected_clicks_upstream": 0.9, "ece": 0.1}
            for k in range(4)]


def test_report_is_one_self_contained_page(tmp_path, curve):
    plots = plot(curve, tmp_path, swaps_at=[3.0, 7.0])
    summary = {"errors": 0, "swaps": 2, "refusals": 1, "plots": [str(p) for p in plots],
               "reward_first_third": 1.0, "reward_last_third": 4.0, "staleness_breakdown_p99_s": {"join_s": 1.5},
               "staleness_breakdown_p50_s": {"join_s": 0.5}, "decisions": [{"at": 1.0, "model": "ldro", "version": "2",
                                                                           "action": "swapped", "reason": "<ok>"}],
               "config": {"rate": 8.0}, "error_details": []}
    path = write_report(summary, tmp_path)
    html = path.read_text()
    assert html.count('src="data:image/png;base64,') == 4 and "http" not in html.replace("http-equiv", "")
    assert "+300.0%" in html  # reward: first third 1.0 -> last third 4.0
    assert "&lt;ok&gt;" in html and "<ok>" not in html  # reasons are escaped
    assert '&quot;rate&quot;: 8.0' in html
    failing = render_report({**summary, "errors": 2, "error_details": ["server exited"]}, [])
    assert "2 errors" in failing and "server exited" in failing and "data:image" not in failing
