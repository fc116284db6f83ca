"""Scale-out: state per partition, so verdicts do not depend on how many members there are.

The input is keyed by item (the scale-out contract in docs/ARCHITECTURE.md). The reference
is each partition's stream replayed in-process through its own pipeline; one member, two
members, and a partition moving to a member that joins mid-stream must all give exactly
the reference's verdicts, which puts the 2-member recall within 0 of the 1-member recall.
"""

from __future__ import annotations

import signal
import zlib

import orjson
import pytest
from kafka import KafkaProducer
from kafka_support import BOOTSTRAP, committed, read_all, start_service, topics, wait_for

from streamguard.assembly import build_pipeline
from streamguard.config import load_settings
from streamguard.evaluate.runner import replay
from streamguard.simulate import simulate

pytestmark = pytest.mark.kafka
PARTITIONS = 2
TICK = 250


def partition_of(line: bytes) -> int:
    return zlib.crc32(orjson.loads(line)["item_id"].encode()) % PARTITIONS


@pytest.fixture(scope="module")
def stream():
    sim = simulate("shilling_bandwagon", 6_000, 7)
    lines = [orjson.dumps(e) for e in sim.events]
    poisoned = {t.event_id for t in sim.truth if t.poisoned}
    settings = load_settings(overrides={"policy": {"warmup": 50}})  # as start_service sets
    by_partition: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for line in lines:
        by_partition[partition_of(line)].append(line)
    held: set[str] = set()
    for part in by_partition:
        rows, _ = replay(build_pipeline(settings), part, TICK, progress=False)
        held |= {r.event_id for r in rows if r.final_action == "quarantine"}
    assert held & poisoned, "the reference must catch some of the attack to compare"
    return by_partition, held


def produce_by_partition(topic: str, by_partition: list[list[bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    for partition, part in enumerate(by_partition):
        for line in part:
            producer.send(topic, value=line, partition=partition)
    producer.flush()
    producer.close()


def member_env(names, tmp_path, member: str) -> dict[str, str]:
    return {
        "STREAMGUARD_KAFKA__INSTANCE_ID": f"{names['group']}-{member}",
        "STREAMGUARD_STATE__DIR": str(tmp_path / "shared-state"),
        "STREAMGUARD_STATE__EVERY_TICKS": "2",
        "STREAMGUARD_KAFKA__MAX_POLL_RECORDS": str(TICK),
        "STREAMGUARD_KAFKA__TICK_LINGER_MS": "4000",
    }


def held_events(names) -> set[str]:
    return {k.decode() for k, _ in read_all(names["quarantine"])}


def stop_all(procs) -> list[str]:
    logs = []
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        logs.append(proc.communicate(timeout=60)[0].decode(errors="replace"))
    return logs


@pytest.mark.parametrize("members", [1, 2])
def test_verdicts_are_the_same_with_one_or_two_members(stream, tmp_path, kafka_broker, members):
    by_partition, expected = stream
    names = topics(PARTITIONS)
    produce_by_partition(names["events"], by_partition)
    procs = [start_service(names, env=member_env(names, tmp_path, str(m))) for m in range(members)]
    total = sum(len(p) for p in by_partition)
    try:
        wait_for(
            lambda: committed(names["group"], names["events"], PARTITIONS) >= total,
            240,
            "the whole stream",
        )
    finally:
        stop_all(procs)
    assert held_events(names) == expected


def test_a_partition_that_moves_takes_its_state_along(stream, tmp_path, kafka_broker):
    by_partition, expected = stream
    names = topics(PARTITIONS)
    produce_by_partition(names["events"], by_partition)
    total = sum(len(p) for p in by_partition)
    first = start_service(names, env=member_env(names, tmp_path, "a"))
    procs = [first]
    try:
        wait_for(
            lambda: committed(names["group"], names["events"], PARTITIONS) >= total // 3,
            120,
            "a third of the stream",
        )
        procs.append(start_service(names, env=member_env(names, tmp_path, "b")))
        wait_for(
            lambda: committed(names["group"], names["events"], PARTITIONS) >= total,
            240,
            "the rest",
        )
    finally:
        logs = stop_all(procs)
    assert committed(names["group"], names["events"], PARTITIONS) >= total
    assert "restored detector state of" in logs[1], "the joining member started from scratch"
    assert held_events(names) == expected
