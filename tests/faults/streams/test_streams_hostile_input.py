"""Over a thousand malformed or hostile records, generated with hypothesis, through a running worker.

Every bad record must land in dead-letter with its original bytes, its source
topic/partition/offset and a reason; the valid events around them must still become correct
examples; the worker must stay up.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from streams_expect import (
    assert_matches_expected,
    expected_from_log,
    impression_request_ids,
    log_events,
    start_worker,
    wait_for_examples,
)

from contracts.events import FEEDBACK_KINDS
from simulator.logs import write_simulated_log
from streams.consume import read_topic
from streams.dead_letter import DeadLetter
from streams.replay import make_producer

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

N_HOSTILE = 1000
MAX_LIST = 200  # STREAMRANK_MAX_LIST_SIZE default; the worker reads the same settings


def feedback_doc(rid: str, n: int) -> dict:
    return {"schema": "streamrank.feedback.v1", "event_id": f"{rid}:fb{n}", "request_id": rid, "item_id": "d1",
            "ts": 1767225600.0 + n, "kind": "click", "value": 1.0}


def impression_doc(rid: str, n_items: int = 2) -> dict:
    return {"schema": "streamrank.impression.v1", "event_id": f"{rid}:imp", "request_id": rid,
            "ts": 1767225600.0, "user_id": "u1", "query": "q",
            "items": [{"item_id": f"d{i}", "position": i + 1, "scores": {"click": 0.5}, "duration_ms": 1000.0}
                      for i in range(n_items)]}


def dumps(doc) -> bytes:
    return json.dumps(doc).encode()


ids = st.integers(0, 10**9).map(lambda n: f"hx-{n}")
not_a_number = st.one_of(st.text(alphabet="abcxyz", min_size=1, max_size=5), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
not_a_string = st.one_of(st.integers(), st.lists(st.integers(), max_size=2), st.none(), st.booleans())


@st.composite
def hostile(draw) -> tuple[str, str, bytes | None, bytes]:
    """(kind, logical topic, key, value) of one record that breaks the contract."""
    rid = draw(ids)
    key = rid.encode()
    kind = draw(st.sampled_from(["garbage", "non_utf8", "not_object", "nan", "negative_watch", "oversized",
                                 "unknown_kind", "huge_string", "wrong_type", "missing", "extra", "wrong_topic",
                                 "key_mismatch", "unknown_schema", "item_required", "duplicate_items"]))
    topic = draw(st.sampled_from(["impressions", "feedback"]))
    if kind == "garbage":
        value = draw(st.binary(min_size=1, max_size=300).filter(lambda b: not b.lstrip().startswith(b"{")))
    elif kind == "non_utf8":
        good = dumps(feedback_doc(rid, 0))
        cut = draw(st.integers(1, len(good) - 1))
        value = good[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + good[cut:]
    elif kind == "not_object":
        value = dumps(draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=3), st.text(max_size=20),
                                     st.none(), st.booleans())))
    elif kind == "nan":
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        if topic == "feedback":
            value = dumps(feedback_doc(rid, 0)).replace(b'"value": 1.0', b'"value": ' + token.encode())
        else:
            field = draw(st.sampled_from([b'"ts": 1767225600.0', b'"click": 0.5', b'"duration_ms": 1000.0']))
            value = dumps(impression_doc(rid)).replace(field, field.split(b":")[0] + b": " + token.encode(), 1)
    elif kind == "negative_watch":
        topic = "feedback"
        doc = feedback_doc(rid, 0) | {"kind": "play_time_ms",
                                      "value": -draw(st.floats(1e-6, 1e9, allow_nan=False))}
        value = dumps(doc)
    elif kind == "oversized":
        topic = "impressions"
        value = dumps(impression_doc(rid, draw(st.integers(MAX_LIST + 1, MAX_LIST + 120))))
    elif kind == "unknown_kind":
        topic = "feedback"
        value = dumps(feedback_doc(rid, 0) | {"kind": draw(st.text(min_size=1, max_size=30).filter(
            lambda k: k not in FEEDBACK_KINDS))})
    elif kind == "huge_string":
        size = draw(st.integers(1025, 60_000))
        field = draw(st.sampled_from(["event_id", "user_id", "query"]))
        if topic == "feedback":
            value = dumps(feedback_doc(rid, 0) | {"event_id": "x" * size})
        else:
            value = dumps(impression_doc(rid) | {field: "q" * size})
    elif kind == "wrong_type":
        if topic == "feedback":
            field = draw(st.sampled_from(["ts", "value", "event_id", "request_id"]))
            bad = draw(not_a_number if field in ("ts", "value") else not_a_string)
            value = dumps(feedback_doc(rid, 0) | {field: bad})
        else:
            doc = impression_doc(rid)
            field = draw(st.sampled_from(["ts", "items", "user_id", "position"]))
            if field == "position":
                doc["items"][0]["position"] = draw(st.one_of(not_a_number, st.integers(-5, 0), st.just(1.5)))
            else:
                doc[field] = draw(not_a_number if field in ("ts", "items") else not_a_string)
            value = dumps(doc)
    elif kind == "missing":
        doc = feedback_doc(rid, 0) if topic == "feedback" else impression_doc(rid)
        doc.pop(draw(st.sampled_from(["event_id", "request_id", "ts"] + (["kind"] if topic == "feedback"
                                                                         else ["items", "user_id"]))))
        value = dumps(doc)
    elif kind == "extra":
        doc = feedback_doc(rid, 0) if topic == "feedback" else impression_doc(rid)
        doc[draw(st.sampled_from(["admin", "__proto__", "$where", "extra"]))] = draw(st.integers())
        value = dumps(doc)
    elif kind == "wrong_topic":
        value = dumps(impression_doc(rid) if topic == "feedback" else feedback_doc(rid, 0))
    elif kind == "key_mismatch":
        value = dumps(feedback_doc(rid, 0) if topic == "feedback" else impression_doc(rid))
        key = draw(st.sampled_from([b"other-key", b"", "hx-\u00e9".encode()]))
    elif kind == "unknown_schema":
        doc = feedback_doc(rid, 0) if topic == "feedback" else impression_doc(rid)
        doc["schema"] = draw(st.sampled_from(["streamrank.feedback.v2", "streamrank.click.v1", "", None, 7]))
        value = dumps(doc)
    elif kind == "item_required":
        topic = "feedback"
        doc = feedback_doc(rid, 0) | {"kind": draw(st.sampled_from(["click", "long_view", "like", "play_time_ms"]))}
        doc.pop("item_id")
        value = dumps(doc)
    else:  # duplicate_items
        topic = "impressions"
        doc = impression_doc(rid, 3)
        doc["items"][2]["item_id"] = doc["items"][0]["item_id"]
        value = dumps(doc)
    return kind, topic, key, value


#: The dead-letter reasons a record of each hostile kind may get (a cut inside the schema name
#: leaves valid UTF-8 JSON with an unknown schema; a position of 0 or below is out of range).
REASONS = {
    "garbage": {"bad_json"}, "non_utf8": {"bad_json", "unknown_schema"}, "not_object": {"bad_json"},
    "nan": {"not_finite"}, "negative_watch": {"out_of_range"}, "oversized": {"oversized_list"},
    "unknown_kind": {"unknown_kind"}, "huge_string": {"too_long"}, "wrong_type": {"schema_violation", "out_of_range"},
    "missing": {"missing_field"}, "extra": {"unknown_field"}, "wrong_topic": {"wrong_topic"},
    "key_mismatch": {"key_mismatch"}, "unknown_schema": {"unknown_schema"}, "item_required": {"schema_violation"},
    "duplicate_items": {"schema_violation"}, "conflicting_impression": {"conflicting_impression"},
}


def conflicting(impression_line: bytes) -> bytes:
    """A second impression for the same request (another event id, another list): the first one must stay."""
    doc = json.loads(impression_line)
    doc["event_id"] += ":conflict"
    doc["items"] = doc["items"][::-1]
    for position, item in enumerate(doc["items"], 1):
        item["position"] = position
    return dumps(doc)


def generate_hostile(n: int) -> list[tuple[str, str, bytes | None, bytes]]:
    collected: list[tuple[str, str, bytes | None, bytes]] = []

    @hyp_settings(max_examples=n + 100, database=None, phases=[Phase.generate], deadline=None,
                  suppress_health_check=list(HealthCheck))
    @given(hostile())
    def collect(record) -> None:
        collected.append(record)

    while len(collected) < n:
        collect()
    return collected[:n]


@pytest.fixture(scope="module")
def valid_log(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("streams-hostile") / "letor.jsonl"
    write_simulated_log(path, shared_data, 80, seed=2, namespace="hostile", click_model="cascade", max_candidates=8,
                        with_features=False)
    return path


def test_hostile_records_go_to_dead_letter_and_valid_ones_still_become_examples(settings, tmp_path, valid_log):
    hostile_records = generate_hostile(N_HOSTILE)
    assert len(hostile_records) >= 1000
    assert len({kind for kind, *_ in hostile_records}) == len(REASONS) - 1
    valid_lines = valid_log.read_bytes().splitlines()
    valid = [("impressions" if b'"streamrank.impression.v1"' in line else "feedback",
              json.loads(line)["request_id"].encode(), line) for line in valid_lines]
    # interleave: valid events keep their log order, hostile ones are sprinkled between them
    rng = random.Random(7)
    slots = sorted(rng.randrange(len(valid) + 1) for _ in hostile_records)
    stream: list[tuple[str | None, tuple[str, bytes | None, bytes]]] = []
    hi = 0
    impressions_seen = 0
    for i, record in enumerate(valid + [None]):
        while hi < len(slots) and slots[hi] == i:
            kind, *rest = hostile_records[hi]
            stream.append((kind, tuple(rest)))
            hi += 1
        if record is not None:
            stream.append((None, record))
            if record[0] == "impressions":
                impressions_seen += 1
                if impressions_seen % 4 == 0:  # right behind its original, while the window is open
                    stream.append(("conflicting_impression", ("impressions", record[1], conflicting(record[2]))))

    producer = make_producer(settings.kafka_bootstrap)
    sent: list[tuple[str, bytes, object]] = []
    for kind, (logical, key, value) in stream:
        future = producer.send(settings.topics.name(logical), key=key, value=value)
        if kind is not None:
            sent.append((kind, value, future))
    producer.flush()
    producer.close()
    provenance: dict[tuple[str, int, int], tuple[str, bytes]] = {}
    for kind, value, future in sent:
        meta = future.get(timeout=30)
        provenance[(meta.topic, meta.partition, meta.offset)] = (kind, value)

    worker = start_worker(settings, tmp_path, "hostile-w1")
    try:
        letters: list[DeadLetter] = []
        # Read until every hostile record's letter is there (or 30 s pass with none new): the worker
        # reaches its 12 partitions at different times. (Two CI runs that stopped one letter short were
        # a join bug, a conflicting impression met while its original's example was in flight, not a
        # late partition: tests/unit/streams/test_join_conflicts.py.)
        read_topic(settings.kafka_bootstrap, settings.topics.dead_letter,
                   lambda r: letters.append(DeadLetter.from_record(r)), expected=len(provenance), idle_s=30,
                   timeout_s=120)
        request_ids = impression_request_ids(valid_log)
        examples = wait_for_examples(settings, request_ids, workers=(worker,))
        assert worker.alive(), worker.log_tail()
        status = worker.status()
    finally:
        worker.stop()

    got = {(d.topic, d.partition, d.offset): d for d in letters}
    assert len(got) == len(letters), "each bad record is dead-lettered once"
    assert set(got) == set(provenance), "every hostile record, and nothing else, is in dead-letter"
    for where, letter in got.items():
        kind, value = provenance[where]
        assert letter.value == value, "dead-letter keeps the original bytes"
        assert letter.reason in REASONS[kind], (kind, letter.reason, letter.detail)
    reasons = Counter(d.reason for d in letters)
    for expected_reason in set().union(*REASONS.values()):
        assert reasons[expected_reason] > 0, (expected_reason, reasons)
    assert status["counts"]["dead_lettered"] == len(provenance)

    expected = expected_from_log(log_events(valid_log))
    assert {e.request_id for e in examples} == set(expected) and len(examples) == len(expected)
    for example in examples:
        assert_matches_expected(example, expected[example.request_id])
