"""`streamguard export`: the snapshot is the clean set as of a cut, rebuildable byte for byte,
and its manifest says what was left out and why."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading

import orjson
import pytest
from factories import event
from kafka_support import BOOTSTRAP, committed, produce, read_all, start_service, topics, wait_for
from review_support import filled_store

from streamguard.assembly import build_pipeline
from streamguard.config import load_settings
from streamguard.evaluate.runner import RowCollector
from streamguard.events import Action, Reason, Verdict
from streamguard.kafka import output_messages
from streamguard.pipeline import SourceRecord, quarantine_message
from streamguard.quarantine.release import ReleasePublisher
from streamguard.quarantine.store import Principal, QuarantineStore
from streamguard.simulate import simulate
from streamguard.snapshot import (
    Cut,
    TopicRecord,
    build_snapshot,
    detector_provenance,
    parse_until,
    write_snapshot,
)
from streamguard.snapshot.build import DATA_FILE, MANIFEST_FILE, snapshot_files
from streamguard.snapshot.sources import read_decisions

RITA = Principal("rita", "reviewer")
PROVENANCE = detector_provenance(load_settings())


def release(offset: int, i: int, **fields) -> TopicRecord:
    ev = event(i, **fields)
    return TopicRecord(0, offset, ev["event_id"].encode(), orjson.dumps(ev))


def tombstone(offset: int, i: int) -> TopicRecord:
    return TopicRecord(0, offset, f"e{i}".encode(), None)


def held(offset: int, i: int, campaign: str | None = "c1", retroactive: bool = False):
    reason = Reason("campaign", 0.9, "a cohort of new accounts", 0.5, campaign)
    verdict = Verdict(Action.QUARANTINE, 0.9, (reason,), retroactive)
    value = quarantine_message(orjson.dumps(event(i)), verdict)
    return TopicRecord(0, offset, f"e{i}".encode(), value)


def ids(snapshot) -> list[str]:
    return [orjson.loads(line)["event_id"] for line in snapshot.data.splitlines()]


def test_two_builds_of_the_same_records_are_byte_identical(tmp_path):
    clean = [release(i, i) for i in range(200)] + [tombstone(200, 7)]
    quarantine = [held(0, 7, retroactive=True), held(1, 500)]
    first = build_snapshot(clean, quarantine, None, Cut(), PROVENANCE)
    shuffled = clean[:]
    random.Random(1).shuffle(shuffled)  # fetch order must not matter, offsets do
    second = build_snapshot(shuffled, quarantine[::-1], None, Cut(), PROVENANCE)
    assert snapshot_files(first) == snapshot_files(second)
    write_snapshot(first, tmp_path / "a")
    write_snapshot(second, tmp_path / "b")
    for name in (DATA_FILE, MANIFEST_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert ids(first) == sorted(ids(first)), "lines are sorted by event_id"
    assert first.data.splitlines()[0] == orjson.dumps(
        orjson.loads(first.data.splitlines()[0]), option=orjson.OPT_SORT_KEYS
    ), "lines are canonical JSON with sorted keys"


def test_tombstones_remove_events_and_a_later_release_brings_one_back():
    clean = [release(i, i) for i in range(5)]
    clean += [tombstone(5, 1), tombstone(6, 3), release(7, 3)]  # e3 revoked, then approved
    snap = build_snapshot(clean, [held(0, 1), held(1, 3)], None, Cut(), PROVENANCE)
    assert ids(snap) == ["e0", "e2", "e3", "e4"]
    excluded = snap.manifest["excluded"]
    assert [x["event_id"] for x in excluded] == ["e1"]
    assert excluded[0]["tombstoned"] is True
    assert [x["event_id"] for x in snap.manifest["included_after_quarantine"]] == ["e3"]
    assert snap.manifest["counts"]["tombstones_read"] == 2


def test_the_cut_by_offsets_and_by_event_time():
    clean = [release(i, i) for i in range(10)]
    by_offsets = build_snapshot(clean, [], None, Cut(offsets={0: 4}), PROVENANCE)
    assert ids(by_offsets) == ["e0", "e1", "e2", "e3"]
    until = event(6)["ts"]  # inclusive: ts <= TIME
    by_time = build_snapshot(clean, [], None, Cut(until_ts=until), PROVENANCE)
    assert ids(by_time) == [f"e{i}" for i in range(7)]
    assert by_time.manifest["counts"]["after_time_cut"] == 3


def test_parse_until_reads_offsets_times_and_both():
    assert parse_until(["0:1234,1:999"]).offsets == {0: 1234, 1: 999}
    assert parse_until(["2024-01-01T00:00:00Z"]).until_ts == 1_704_067_200.0
    assert parse_until(["1704067200"]).until_ts == 1_704_067_200.0
    both = parse_until(["0:5", "1704067200.5"], quarantine="0:9")
    assert (both.offsets, both.until_ts, both.quarantine_offsets) == ({0: 5}, 1704067200.5, {0: 9})
    for bad in (["0:x"], ["yesterday"], ["0:1,0:2"], ["0:1", "0:2"]):
        with pytest.raises(ValueError):
            parse_until(bad)


def test_the_manifest_names_sources_settings_hash_and_the_lineage_of_exclusions(tmp_path):
    store = filled_store(tmp_path / "q.db")  # e0..e29 of campaign c1, e100..e109 anomaly
    store.decide(RITA, ["e0"], "approve", "a real fan", "e0")
    store.decide(RITA, ["e1"], "reject", "fake", "e1")
    decisions = read_decisions(f"sqlite:///{tmp_path / 'q.db'}")
    assert decisions is not None
    clean = [release(i, i) for i in range(200, 220)] + [release(20, 0)]  # e0 was released
    quarantine = [held(i, i) for i in range(30)]
    provenance = {**PROVENANCE, "source": {"clean_topic": {"end_offsets": {"0": 221}}}}
    snap = build_snapshot(clean, quarantine, decisions, Cut(offsets={0: 221}), provenance)
    m = snap.manifest
    assert m["files"][DATA_FILE]["sha256"] == hashlib.sha256(snap.data).hexdigest()
    assert m["files"][DATA_FILE]["events"] == len(snap.data.splitlines()) == 21
    assert m["streamguard_version"]
    settings = m["detector_settings"]
    assert len(settings["fingerprint"]) == 16 and "campaign" in settings["detectors"]
    assert m["source"]["clean_topic"]["end_offsets"] == {"0": 221}
    assert m["cut"]["offsets"] == {"0": 221}
    excluded = {x["event_id"]: x for x in m["excluded"]}
    assert set(excluded) == {f"e{i}" for i in range(1, 30)}
    e1 = excluded["e1"]
    assert e1["campaign_ids"] == ["c1"] and e1["detectors"] == ["campaign"]
    assert e1["reasons"][0]["detail"] == "a cohort of new accounts"
    assert e1["review"]["status"] == "rejected" and e1["review"]["decided_by"] == "rita"
    assert excluded["e2"]["review"]["status"] == "pending"
    assert m["included_after_quarantine"][0]["review"]["status"] == "approved"
    assert m["counts"]["excluded_by_review"] == {"pending": 28, "rejected": 1}
    assert m["counts"]["excluded_by_campaign"] == {"c1": 29}
    assert len(m["snapshot_id"]) == 16
    assert read_decisions(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert not (tmp_path / "missing.db").exists()


def test_the_snapshot_of_a_replayed_stream_is_the_final_clean_set():
    """The pipeline's own outputs, in Kafka's shape, give exactly the events left clean."""
    sim = simulate("shilling_bandwagon", 4_000, 2)
    settings = load_settings(overrides={"policy": {"warmup": 50}})
    pipeline = build_pipeline(settings)
    collector = RowCollector()
    offsets = {settings.kafka.clean_topic: 0, settings.kafka.quarantine_topic: 0}
    topic_records: dict[str, list[TopicRecord]] = {t: [] for t in offsets}
    lines = [orjson.dumps(e) for e in sim.events]
    for start in range(0, len(lines), 500):
        tick = [
            SourceRecord(v, "in", 0, start + i) for i, v in enumerate(lines[start : start + 500])
        ]
        result = pipeline.process(tick)
        collector.add(result)
        for msg in output_messages(result, settings.kafka):
            if msg.topic in offsets:
                topic_records[msg.topic].append(
                    TopicRecord(0, offsets[msg.topic], msg.key, msg.value)
                )
                offsets[msg.topic] += 1
    rows = collector.ordered()
    snap = build_snapshot(
        topic_records[settings.kafka.clean_topic],
        topic_records[settings.kafka.quarantine_topic],
        None,
        Cut(),
        PROVENANCE,
    )
    final_clean = sorted(r.event_id for r in rows if r.final_action == "clean")
    held_back = sorted(r.event_id for r in rows if r.final_action == "quarantine")
    assert held_back, "the scenario should hold something back"
    assert ids(snap) == final_clean
    assert [x["event_id"] for x in snap.manifest["excluded"]] == held_back


# ------------------------------------------------------------------ through the real broker


def _export(names, out, *until, store_url):
    env = dict(
        os.environ,
        STREAMGUARD_KAFKA__CLEAN_TOPIC=names["clean"],
        STREAMGUARD_KAFKA__QUARANTINE_TOPIC=names["quarantine"],
        STREAMGUARD_STORE__URL=store_url,
    )
    args = [a for u in until for a in (u if isinstance(u, list) else ["--until", u])]
    cmd = [sys.executable, "-m", "streamguard.cli", "export", "--bootstrap-servers", BOOTSTRAP]
    done = subprocess.run(
        [*cmd, *args, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return orjson.loads((out / MANIFEST_FILE).read_bytes())


@pytest.mark.kafka
def test_export_from_the_real_broker_after_the_service_and_a_review(tmp_path, kafka_broker):
    names = topics()
    stream = simulate("shilling_bandwagon", 3_000, 3).events
    total = produce(names["events"], stream)
    proc = start_service(names)
    try:
        wait_for(lambda: committed(names["group"], names["events"]) >= total, 180, "the stream")
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    quarantined = read_all(names["quarantine"])
    assert quarantined, "the service should have held something back"
    store_url = f"sqlite:///{tmp_path / 'review.db'}"
    settings = load_settings(
        overrides={
            "kafka": {
                "bootstrap_servers": BOOTSTRAP,
                "clean_topic": names["clean"],
                "quarantine_topic": names["quarantine"],
            },
            "store": {"url": store_url},
        }
    )
    store = QuarantineStore(tmp_path / "review.db")
    for _, value in quarantined:
        store.add_quarantine_message(value)
    first_held = orjson.loads(quarantined[0][1])["event"]["event_id"]
    rejected = orjson.loads(quarantined[-1][1])["event"]["event_id"]
    store.decide(RITA, [first_held], "approve", "legitimate", first_held)
    store.decide(RITA, [rejected], "reject", "fake", rejected)
    assert ReleasePublisher(settings.kafka, store, threading.Event()).publish_once() == 1
    store.close()

    m = _export(names, tmp_path / "a", "2200-01-01T00:00:00Z", store_url=store_url)
    snapshot = (tmp_path / "a" / DATA_FILE).read_bytes()
    included = {orjson.loads(line)["event_id"] for line in snapshot.splitlines()}
    clean = read_all(names["clean"])
    final: dict[str, bool] = {}
    for key, value in clean:
        final[key.decode()] = value is not None
    assert included == {e for e, live in final.items() if live}
    assert first_held in included, "the approved release is part of the training set"
    excluded = {x["event_id"]: x for x in m["excluded"]}
    assert excluded[rejected]["review"]["status"] == "rejected"
    assert first_held not in excluded
    assert set(excluded) == {orjson.loads(v)["event"]["event_id"] for _, v in quarantined} - {
        first_held
    }
    assert m["source"]["clean_topic"]["end_offsets"] == {"0": m["cut"]["offsets"]["0"]}

    # More traffic arrives; the manifest's rebuild flags still give the same bytes.
    produce(names["clean"], [event(999_999)])
    rebuilt = _export(names, tmp_path / "b", m["rebuild"], store_url=store_url)
    assert (tmp_path / "b" / DATA_FILE).read_bytes() == snapshot
    assert rebuilt == m
