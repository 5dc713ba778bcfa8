"""The live dashboard in a real headless Chromium (Debian's ``chromium``, installed by ``scripts/setup.sh
--test``) against a running ``streamrank demo`` on the embedded stack: the page loads, its curves gain
points, a hot swap appears, and a screenshot is written. ``report.html`` is checked when the run ends.

``STREAMRANK_SCREENSHOT_DIR=DIR`` also copies the screenshots there (README's pictures come from it).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from loop.demo import DemoConfig, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
#: flags for a sandbox with no display, no GPU and no network beyond loopback
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def _counts(page) -> dict:
    return page.evaluate("() => ({...window.streamrankDashboard.pointCounts, polls: window.streamrankDashboard.polls,"
                         " errors: window.streamrankDashboard.errors})")


def test_dashboard_page_shows_the_running_loop_in_chromium(embedded_stack, tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `bash scripts/setup.sh --test`"
    output = tmp_path / "demo"
    config = DemoConfig(duration_s=40.0, output=output, rate=8.0, concurrency=2, feast=False, drain_s=3.0,
                        bucket_s=5.0)
    urls: queue.Queue[str] = queue.Queue()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_demo(config, replace(embedded_stack), announce=urls.put,
                                                                    show_progress=False)), daemon=True)
    runner.start()
    url = urls.get(timeout=120)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard")
    shots = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_function("() => window.streamrankDashboard && window.streamrankDashboard.polls >= 1", timeout=20_000)
        page.wait_for_function("() => window.streamrankDashboard.pointCounts.serving >= 2", timeout=30_000)
        first = _counts(page)
        time.sleep(6.0)  # three polls later the curves must be longer
        page.wait_for_function(f"() => window.streamrankDashboard.pointCounts.serving > {first['serving']}",
                               timeout=15_000)
        page.wait_for_function("() => window.streamrankDashboard.pointCounts.swaps >= 1", timeout=40_000)
        page.wait_for_function("() => window.streamrankDashboard.pointCounts.simulator >= 2", timeout=30_000)
        later = _counts(page)
        assert later["serving"] > first["serving"] and later["errors"] == 0, (first, later)
        assert page.locator("#nodata").is_hidden()  # the page shows data, not its empty-state banner
        assert page.locator("#t-swaps tbody tr td").first.inner_text().strip() not in ("", "none yet")
        assert page.locator("#t-serving tbody tr").count() == 3
        assert page.locator("#c-reward canvas").count() >= 1
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        shots.append(shot)
        data = httpx.get(url + "/data", timeout=5).json()
        assert data["point_counts"]["serving"] >= later["serving"] - 1 and data["examples_seen"] > 0
        errors_while_running = list(console_errors)  # once the demo stops, the page's polls are refused
        runner.join(timeout=180)
        assert not runner.is_alive(), "the demo did not finish"
        report = output / "report.html"
        assert report.exists() and result.get("report") == str(report)
        html = report.read_text()
        assert html.count("data:image/png;base64,") == 4 and "http://" not in html and "https://" not in html
        page.goto(report.as_uri())
        report_shot = tmp_path / "report.png"
        page.screenshot(path=str(report_shot), full_page=False)
        shots.append(report_shot)
        browser.close()
    assert result["errors"] == 0, result.get("error_details")
    assert not errors_while_running, errors_while_running
    for shot in shots:
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    if os.environ.get("STREAMRANK_SCREENSHOT_DIR"):
        target = Path(os.environ["STREAMRANK_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, target / shot.name)
