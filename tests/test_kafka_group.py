"""Two members in one consumer group: a rebalance mid-stream loses and doubles nothing."""

from __future__ import annotations

import signal

import pytest
from factories import benign_stream
from kafka_support import committed, produce, read_all, start_service, topics, wait_for

pytestmark = pytest.mark.kafka
PARTITIONS = 4


def test_second_member_joins_mid_stream_every_event_once(kafka_broker):
    names = topics(PARTITIONS)
    first, second = benign_stream(6_000, seed=21), benign_stream(12_000, seed=22)[6_000:]
    produce(names["events"], first)
    a = start_service(names, env={"STREAMGUARD_KAFKA__INSTANCE_ID": names["group"] + "-a"})
    b = None
    try:
        wait_for(
            lambda: committed(names["group"], names["events"], PARTITIONS) > 0,
            120,
            "member a to start",
        )
        b = start_service(names, env={"STREAMGUARD_KAFKA__INSTANCE_ID": names["group"] + "-b"})
        produce(names["events"], second)
        wait_for(
            lambda: committed(names["group"], names["events"], PARTITIONS) >= 12_000,
            180,
            "both members to finish",
        )
    finally:
        logs = []
        for proc in (a, b):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                logs.append(proc.communicate(timeout=60)[0].decode(errors="replace"))
    assert all(p.returncode == 0 for p in (a, b) if p is not None), logs
    assert "partitions assigned" in logs[1], "the second member never got partitions"
    clean_log = read_all(names["clean"])
    clean = [k.decode() for k, v in clean_log if v is not None]
    revoked = {k.decode() for k, v in clean_log if v is None}
    held = [k.decode() for k, _ in read_all(names["quarantine"])]
    ids = {e["event_id"] for e in first + second}
    assert len(clean) == len(set(clean)) and len(held) == len(set(held)), "an event doubled"
    assert set(clean) | set(held) == ids, "an event was lost"
    assert set(clean) & set(held) == revoked & set(clean), "held and released, not revoked"
