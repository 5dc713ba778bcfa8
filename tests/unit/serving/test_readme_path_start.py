"""How loop.readme_path starts the README's by-hand path (shared by its integration test and
bench/storage_bound.py): each stage's environment, and the requests served read from simulate's reports."""

from __future__ import annotations

from pathlib import Path

from common.config import Settings, Topics
from loop.readme_path import SIM_CONFIG, readme_env, simulate_reports


def test_every_stage_gets_the_run_s_endpoints_topics_config_and_port(tmp_path):
    settings = Settings(home=tmp_path, kafka="127.0.0.1:9", redis="127.0.0.1:7", topics=Topics(prefix="t1."))
    env = readme_env(settings, port=8123, duration_s=75)
    assert (env["STREAMRANK_KAFKA"], env["STREAMRANK_TOPIC_PREFIX"], env["STREAMRANK_HOME"]) == (
        "127.0.0.1:9", "t1.", str(tmp_path))
    assert env["STREAMRANK_SERVE_PORT"] == "8123" and Path(env["STREAMRANK_CONFIG"]) == SIM_CONFIG
    assert SIM_CONFIG.is_file()
    assert env["STREAMRANK_SNAPSHOT_INTERVAL_S"] == "15"  # a short run snapshots more often
    assert "STREAMRANK_SNAPSHOT_INTERVAL_S" not in readme_env(settings, port=8123, duration_s=180)


def test_requests_served_are_those_sent_less_those_failed_over_every_report():
    log = "\n".join([
        "simulate: 20 requests/s to http://x/rerank, feedback to t1.feedback; ...",
        "simulate: 500 requests, 3 failed, mean list reward 0.410, feedback events 900; server: 497 impressions",
        "some other line",
        "simulate: 510 requests, 0 failed, mean list reward 0.420, feedback events 910; server: 510 impressions",
    ])
    reports, served = simulate_reports(log)
    assert len(reports) == 2 and served == 497 + 510
    assert simulate_reports("") == ([], 0)
