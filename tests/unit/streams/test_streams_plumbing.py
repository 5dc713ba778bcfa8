"""Record validation, dead-letter headers, metrics rendering and the config sections (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.config import config_section, load_settings
from contracts.fast_decode import FeedbackS, ImpressionS
from streams.records import Rejected, partition_for_key, validate_record
from streams.app import load_stage_config
from streams.dead_letter import DeadLetter
from streams.metrics import StreamMetrics, read_statuses

SETTINGS = load_settings({"STREAMRANK_HOME": "/nonexistent-streamrank-home"})
FEEDBACK = {"schema": "streamrank.feedback.v1", "event_id": "e1", "request_id": "r1", "item_id": "a", "ts": 1.0,
            "kind": "click"}
IMPRESSION = {"schema": "streamrank.impression.v1", "event_id": "i1", "request_id": "r1", "ts": 1.0, "user_id": "u",
              "items": [{"item_id": "a", "position": 1}]}


def raw(doc) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("value, key, topic, reason", [
    (None, b"r1", "feedback", "empty_value"),
    (b"", b"r1", "feedback", "empty_value"),
    (b"{nope", b"r1", "feedback", "bad_json"),
    (b"\xff\xfe{}", b"r1", "feedback", "bad_json"),
    (b"[1,2]", b"r1", "feedback", "bad_json"),
    (raw({**FEEDBACK, "kind": "teleport"}), b"r1", "feedback", "unknown_kind"),
    (raw({**FEEDBACK, "kind": "play_time_ms", "value": -3}), b"r1", "feedback", "out_of_range"),
    (raw(FEEDBACK).replace(b'"ts": 1.0', b'"ts": NaN'), b"r1", "feedback", "not_finite"),
    (raw({**IMPRESSION, "items": [{"item_id": f"x{i}", "position": i + 1} for i in range(201)]}), b"r1",
     "impressions", "oversized_list"),
    (raw(IMPRESSION), b"r1", "feedback", "wrong_topic"),
    (raw(FEEDBACK), b"r1", "impressions", "wrong_topic"),
    (raw(FEEDBACK), b"r2", "feedback", "key_mismatch"),
    (raw(FEEDBACK), None, "feedback", "key_mismatch"),
    (b"{" + b" " * 1_000_001 + b"}", b"r1", "feedback", "too_large"),
])
def test_invalid_records_are_rejected_with_a_reason(value, key, topic, reason):
    result = validate_record(value, key, topic, SETTINGS)
    assert isinstance(result, Rejected) and result.reason == reason, result


def test_valid_records_decode_to_events():
    # the fast structs (contracts.fast_decode) are what valid records decode to
    assert isinstance(validate_record(raw(FEEDBACK), b"r1", "feedback", SETTINGS), FeedbackS)
    assert isinstance(validate_record(raw(IMPRESSION), b"r1", "impressions", SETTINGS), ImpressionS)


def test_partitioner_matches_the_faust_producers_default():
    """The table changelog (aiokafka's partitioner) must put a key where the replay (kafka-python) put it."""
    from aiokafka.partitioner import DefaultPartitioner  # noqa: PLC0415

    keys = ["r1", "letor-3-17", "obd-ab12-9", "\u00e9t\u00e9"] + [f"kill-5-{i}" for i in range(50)]
    for key in keys:
        assert partition_for_key(key, 4) == DefaultPartitioner()(key.encode(), list(range(4)), list(range(4)))
    assert len({partition_for_key(k, 4) for k in keys}) == 4


def test_dead_letter_round_trips_through_headers():
    letter = DeadLetter("bad_json", "", "x" * 900, "t.feedback", 3, 42, b"k", b"\xff")
    record = SimpleNamespace(key=b"k", value=b"\xff", headers=letter.headers())
    back = DeadLetter.from_record(record)
    assert back == DeadLetter("bad_json", "", "x" * 500, "t.feedback", 3, 42, b"k", b"\xff")
    assert back.source == "t.feedback/3/42"
    with pytest.raises(ValueError, match="missing headers"):
        DeadLetter.from_record(SimpleNamespace(key=None, value=b"", headers=[]))


def test_metrics_render_as_parseable_prometheus_text(tmp_path):
    metrics = StreamMetrics(worker='w"1')
    metrics.inc("events_in", 7)
    metrics.inc("dead_lettered")
    metrics.dead_letter_reasons["bad_json"] += 1
    metrics.lag = {"t.impressions/0": 5}
    families = {f.name: f for f in text_string_to_metric_families(metrics.prometheus())}
    assert families["streamrank_streams_events_in"].samples[0].value == 7
    assert families["streamrank_streams_lag"].samples[0].labels["tp"] == "t.impressions/0"
    with pytest.raises(KeyError):
        metrics.inc("not_a_metric")
    metrics.write_status(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    [doc] = read_statuses(tmp_path)
    assert doc["counts"]["events_in"] == 7 and doc["total_lag"] == 5


def test_join_and_reward_sections_come_from_the_config_file(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text("[join]\nwindow_s = 42\n[rewards]\nclick = 3.5\n")
    settings = replace(SETTINGS, config_path=toml)
    join, weights = load_stage_config(settings)
    assert join.window_s == 42 and weights.click == 3.5 and weights.long_view == 2.0
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({"join": {"idle_timeout_s": 1}}))
    assert config_section(replace(SETTINGS, config_path=as_json), "join") == {"idle_timeout_s": 1}
    assert config_section(SETTINGS, "join") == {}
    as_json.write_text("{")
    with pytest.raises(ValueError, match="STREAMRANK_CONFIG"):
        config_section(replace(SETTINGS, config_path=as_json), "join")
    toml.write_text("[join]\nwindw_s = 1\n")
    with pytest.raises(ValueError, match="unknown join settings"):
        load_stage_config(replace(SETTINGS, config_path=toml))


def test_config_path_is_read_from_the_environment(tmp_path):
    env = {"STREAMRANK_HOME": str(tmp_path), "STREAMRANK_CONFIG": str(tmp_path / "x.toml")}
    assert load_settings(env).config_path == (tmp_path / "x.toml").resolve()


def test_the_joiner_marks_a_partition_caught_up_only_when_it_processed_up_to_the_high_watermark():
    from streams.agents import Joiner  # noqa: PLC0415
    from streams.join import JoinConfig  # noqa: PLC0415
    from streams.rewards import RewardWeights  # noqa: PLC0415

    imp_topic, fb_topic = SETTINGS.topics.impressions, SETTINGS.topics.feedback
    tp = lambda topic, p: SimpleNamespace(topic=topic, partition=p)  # noqa: E731
    highwater = {(imp_topic, 0): 10, (imp_topic, 1): 7, (fb_topic, 0): 99}
    consumer = SimpleNamespace(assignment=lambda: [tp(imp_topic, 0), tp(imp_topic, 1), tp(imp_topic, 2), tp(fb_topic, 0)],
                               highwater=lambda t: highwater.get((t.topic, t.partition)))
    joiner = Joiner(SimpleNamespace(consumer=consumer), SETTINGS, JoinConfig(window_s=1.5, allowed_lateness_s=0.1),
                    RewardWeights(), StreamMetrics("w"), {}, None, None)
    for partition in (0, 1, 2):
        joiner.watermarks.observe(partition, "feedback", 100.0)
    joiner.watermarks.observe(0, "impressions", 90.0)
    joiner.watermarks.observe(1, "impressions", 99.0)
    joiner.positions.last_offsets[(imp_topic, 0)] = 9  # read up to the high watermark (10)
    joiner.positions.last_offsets[(imp_topic, 1)] = 5  # offset 6 still unread
    joiner.positions.update_caught_up(joiner.watermarks)                # partition 2: nothing read yet, so not caught up
    assert joiner.watermarks.impressions_caught_up == {0}
    assert joiner.watermarks.get(0) == pytest.approx(98.9) and joiner.watermarks.get(1) == pytest.approx(98.9)
    highwater[(imp_topic, 0)] = 12  # more impressions arrived on partition 0
    joiner.positions.update_caught_up(joiner.watermarks)
    assert joiner.watermarks.impressions_caught_up == set() and joiner.watermarks.get(0) == pytest.approx(89.9)
    joiner.positions.app = SimpleNamespace()  # no consumer (start-up): nothing is caught up
    joiner.positions.update_caught_up(joiner.watermarks)
    assert joiner.watermarks.impressions_caught_up == set()


def test_a_partition_is_idle_only_after_the_timeout_with_both_lags_known_and_zero():
    """Unknown lag (no fetch answered since the assignment) must not count as zero lag."""
    from streams.positions import ConsumerPositions  # noqa: PLC0415

    imp_topic, fb_topic = SETTINGS.topics.impressions, SETTINGS.topics.feedback
    metrics = StreamMetrics("w")
    positions = ConsumerPositions(SimpleNamespace(), SETTINGS, metrics, idle_timeout_s=2.0)
    assert not positions.partition_idle(0, now=100.0)  # the idle clock starts at the first look
    metrics.lag = {}
    assert not positions.partition_idle(0, now=103.0)  # lags unknown: not idle
    metrics.lag = {f"{imp_topic}/0": 0}
    assert not positions.partition_idle(0, now=103.0)  # the feedback lag still unknown
    metrics.lag = {f"{imp_topic}/0": 0, f"{fb_topic}/0": 3}
    assert not positions.partition_idle(0, now=103.0)  # feedback waiting in the topic
    metrics.lag = {f"{imp_topic}/0": 0, f"{fb_topic}/0": 0}
    assert positions.partition_idle(0, now=103.0)
    positions.read(fb_topic, 0, offset=7, now=103.5)  # new input restarts the clock
    assert not positions.partition_idle(0, now=104.0)
    assert positions.partition_idle(0, now=105.5)
