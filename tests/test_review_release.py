"""Approved events reach the real clean topic exactly once, even across a crash."""

from __future__ import annotations

import threading

import orjson
import pytest
from kafka_support import BOOTSTRAP, produce, read_all, topics, wait_for
from review_support import filled_store

from streamguard.config import load_settings
from streamguard.events import Action, Reason, Verdict
from streamguard.pipeline import quarantine_message
from streamguard.quarantine.release import QuarantineMaterialiser, ReleasePublisher
from streamguard.quarantine.store import Principal, QuarantineStore, QueueFilter

pytestmark = pytest.mark.kafka
RITA = Principal("rita", "reviewer")


def kafka_settings(names):
    return load_settings(
        overrides={
            "kafka": {
                "bootstrap_servers": BOOTSTRAP,
                "clean_topic": names["clean"],
                "quarantine_topic": names["quarantine"],
                "group_id": names["group"],
            }
        }
    ).kafka


def test_approved_event_appears_in_the_clean_topic_once(tmp_path, kafka_broker):
    names = topics()
    store = filled_store(tmp_path / "q.db")
    publisher = ReleasePublisher(kafka_settings(names), store, threading.Event())
    assert store.decide(RITA, ["e1", "e2"], "approve", "fine", "bulk") == 2
    assert store.decide(RITA, ["e1", "e2"], "approve", "fine", "retry") == 0  # double click
    assert publisher.publish_once() == 2
    assert publisher.publish_once() == 0
    keys = sorted(k.decode() for k, _ in read_all(names["clean"]))
    assert keys == ["e1", "e2"]


def test_a_crash_after_send_before_mark_does_not_release_twice(tmp_path, kafka_broker):
    names = topics()
    store = filled_store(tmp_path / "q.db")
    settings = kafka_settings(names)
    store.decide(RITA, ["e3", "e4"], "approve", "ok", "bulk")
    crashing = ReleasePublisher(settings, store, threading.Event())
    store.mark_sent = lambda ids: (_ for _ in ()).throw(RuntimeError("killed"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        crashing.publish_once()
    del store.mark_sent  # the next process has the real method again
    restarted = ReleasePublisher(settings, store, threading.Event())
    restarted.recover()
    assert restarted.publish_once() == 0
    keys = sorted(k.decode() for k, _ in read_all(names["clean"]))
    assert keys == ["e3", "e4"]


def test_the_quarantine_topic_is_materialised_into_the_store(tmp_path, kafka_broker):
    names = topics()
    source = filled_store(tmp_path / "source.db")
    total, rows = source.queue(QueueFilter(page_size=500))
    messages = [quarantine_message(orjson.dumps(r["event"]), _verdict(r)) for r in rows]
    produce(names["quarantine"], messages)
    store = QuarantineStore(tmp_path / "review.db")
    stop = threading.Event()
    worker = threading.Thread(target=QuarantineMaterialiser(kafka_settings(names), store, stop).run)
    worker.start()
    try:
        wait_for(lambda: store.counts()["quarantined"] == total, 60, "materialised queue")
    finally:
        stop.set()
        worker.join(30)
    assert {c["campaign_id"] for c in store.campaigns()} == {"c1"}


def _verdict(row):
    reasons = tuple(
        Reason(r["detector"], r["score"], r["detail"], r.get("threshold"), r.get("campaign_id"))
        for r in row["verdict"]["reasons"]
    )
    return Verdict(Action.QUARANTINE, row["score"], reasons)
