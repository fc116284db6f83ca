"""Two members in one consumer group: a rebalance mid-stream loses and doubles nothing."""

from __future__ import annotations

import signal
import subprocess

import pytest
from factories import benign_stream
from kafka_support import (
    committed,
    members,
    produce,
    read_all,
    start_service,
    topics,
    wait_for,
)

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
        # Member a may well finish the first half before b is up: the second half is only
        # sent once b is in the group, so the two share it whatever a's speed.
        wait_for(lambda: members(names["group"]) == 2, 120, "member b to join the group")
        produce(names["events"], second)
        wait_for(
            lambda: committed(names["group"], names["events"], PARTITIONS) >= 12_000,
            180,
            "both members to finish",
        )
    finally:
        logs = [stop(proc) for proc in (a, b) if proc is not None]
    assert "partitions assigned" in logs[1], "the second member never got partitions"
    assert_each_once(names, {e["event_id"] for e in first + second})


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, out[-2000:]
    return out


def assert_each_once(names: dict[str, str], ids: set[str]) -> None:
    clean_log = read_all(names["clean"])
    clean = [k.decode() for k, v in clean_log if v is not None]
    revoked = {k.decode() for k, v in clean_log if v is None}
    held = [k.decode() for k, _ in read_all(names["quarantine"])]
    assert len(clean) == len(set(clean)) and len(held) == len(set(held)), "an event doubled"
    assert set(clean) | set(held) == ids, "an event was lost"
    assert set(clean) & set(held) == revoked & set(clean), "held and released, not revoked"


def test_a_rebalance_with_a_tick_in_flight_loses_and_doubles_nothing(kafka_broker):
    """Member a is busy (small ticks, a backlog) when b joins, so a's revoke hook finds a
    scored tick still being committed by its publisher process and settles it first."""
    names = topics(PARTITIONS)
    stream = benign_stream(20_000, seed=23)
    produce(names["events"], stream)
    small_ticks = {"STREAMGUARD_KAFKA__MAX_POLL_RECORDS": "40"}
    a = start_service(names, env={**small_ticks, "STREAMGUARD_KAFKA__INSTANCE_ID": "a"})
    b = None
    try:
        wait_for(lambda: committed(names["group"], names["events"], PARTITIONS) > 0, 120, "a")
        b = start_service(names, env={**small_ticks, "STREAMGUARD_KAFKA__INSTANCE_ID": "b"})
        wait_for(
            lambda: committed(names["group"], names["events"], PARTITIONS) >= len(stream),
            180,
            "both members to finish",
        )
    finally:
        logs = [stop(proc) for proc in (a, b) if proc is not None]
    assert "settling the tick in flight before partitions move" in logs[0], logs[0][-2000:]
    # Left to commit after the rebalance, its offsets would carry a stale generation and be
    # refused (the broker fences them), forcing a rewind and a second scoring.
    assert "commit failed" not in logs[0], logs[0][-2000:]
    assert "partitions assigned" in logs[1], "the second member never got partitions"
    assert_each_once(names, {e["event_id"] for e in stream})
