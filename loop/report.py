"""``report.html``: one self-contained page per demo run, beside ``summary.json``.

The plots are inlined as base64 PNGs and the summary is laid out as tables (headline, reward
against the upstream order, staleness and where it goes, throughput, the promotion gate's last
decisions, the run's config), so the file can be mailed or attached to a ticket and opened
anywhere: it references nothing outside itself.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}
h1{font-size:22px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #dde1e8;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{text-align:left;padding:3px 10px;border-bottom:1px solid #eef0f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}.plots{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.plots img{width:100%;border:1px solid #eef0f4}.bad{color:#b42318}.ok{color:#1a7f37}
pre{background:#f6f7f9;padding:8px;overflow:auto;font-size:12px}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(value, default=str))
    return html.escape(str(value))


def _table(rows: Iterable[Iterable[Any]], header: Iterable[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f'<td class="{"num" if isinstance(c, (int, float)) else ""}">{_fmt(c)}</td>'
                                    for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _third(summary: dict[str, Any], key: str) -> list[Any]:
    first, last = summary.get(f"{key}_first_third"), summary.get(f"{key}_last_third")
    change = (last - first) / abs(first) if isinstance(first, float) and isinstance(last, float) and first else None
    return [key, first, last, None if change is None else f"{change:+.1%}"]


def render_report(summary: dict[str, Any], plots: Iterable[Path]) -> str:
    """The page's HTML for a finished run's ``summary`` and its PNG ``plots``."""
    errors = summary.get("errors", 0)
    status = f'<b class="{"ok" if not errors else "bad"}">{errors} errors</b>'
    headline = [("requests", summary.get("requests")), ("swaps", summary.get("swaps")),
                ("refusals", summary.get("refusals")), ("latency p50 (ms)", summary.get("latency_p50_ms")),
                ("latency p99 (ms)", summary.get("latency_p99_ms")), ("staleness p50 (s)", summary.get("staleness_p50_s")),
                ("staleness p99 (s)", summary.get("staleness_p99_s")), ("duration (s)", summary.get("duration_s")),
                ("feast", summary.get("feast"))]
    curves = [_third(summary, k) for k in ("reward", "reward_upstream", "ndcg10", "ndcg10_upstream",
                                           "expected_clicks", "expected_clicks_upstream", "ece")]
    breakdown = [(k, summary.get("staleness_breakdown_p50_s", {}).get(k), v)
                 for k, v in (summary.get("staleness_breakdown_p99_s") or {}).items()]
    by_close = [(k, v.get("examples"), v.get("served"), v.get("p50_s"), v.get("p99_s"))
                for k, v in (summary.get("staleness_by_close") or {}).items()]
    decisions = [(d.get("at"), d.get("model"), d.get("version"), d.get("action"), d.get("reason"))
                 for d in summary.get("decisions", [])]
    parts = [
        f"<h1>streamrank demo · {status}</h1>",
        f"<p>topic prefix <code>{_fmt(summary.get('topic_prefix'))}</code>; the upstream order is what serving "
        "received (the baseline every curve is compared with).</p>",
        "<h2>Headline</h2>", _table(headline),
        "<h2>Curves: first third vs last third of the run</h2>",
        _table(curves, ["metric", "first third", "last third", "change"]),
        '<h2>Plots</h2><div class="plots">' + "".join(_image(p) for p in plots if Path(p).exists()) + "</div>",
        "<h2>Staleness: where it goes (s)</h2>", _table(breakdown, ["part", "p50", "p99"]),
        _table(by_close, ["closed by", "examples", "served", "p50", "p99"]),
        "<h2>Throughput (per second)</h2>", _table(sorted((summary.get("throughput_per_s") or {}).items())),
        "<h2>Snapshots published</h2>", _table(sorted((summary.get("snapshots_published") or {}).items())),
        "<h2>Impressions</h2>", _table(sorted((summary.get("impressions") or {}).items())),
        "<h2>Promotion gate and swaps: last decisions</h2>",
        _table(decisions, ["at", "model", "version", "action", "reason"]),
        "<h2>Errors</h2>", _table([(e,) for e in summary.get("error_details", [])] or [("none",)]),
        "<h2>Config</h2>", f"<pre>{html.escape(json.dumps(summary.get('config', {}), indent=1, default=str))}</pre>",
    ]
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>streamrank demo report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")


def write_report(summary: dict[str, Any], output: Path) -> Path:
    """Write ``output/report.html`` from ``summary`` and the PNGs it lists; return its path."""
    path = Path(output) / "report.html"
    path.write_text(render_report(summary, [Path(p) for p in summary.get("plots", [])]), encoding="utf-8")
    return path
