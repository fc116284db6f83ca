"""Helpers for tests that talk to the real broker started by deploy/local-kafka.sh."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "local-kafka.sh"
PORT = int(os.environ.get("STREAMGUARD_TEST_KAFKA_PORT", "39092"))
BOOTSTRAP = f"127.0.0.1:{PORT}"


def broker(command: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KAFKA_PORT=str(PORT))
    return subprocess.run(
        ["bash", str(SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def topics(n_partitions: int = 1) -> dict[str, str]:
    """Fresh topic names for one test, created on the broker."""
    run = uuid.uuid4().hex[:8]
    names = {kind: f"t{run}.{kind}" for kind in ("events", "clean", "quarantine", "dlq")}
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics(
        [NewTopic(names["events"], n_partitions, 1)]
        + [NewTopic(names[k], 1, 1) for k in ("clean", "quarantine", "dlq")]
    )
    admin.close()
    names["group"] = f"g{run}"
    return names


def produce(topic: str, values: Iterable[dict | bytes | None]) -> int:
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    n = 0
    for v in values:
        raw = v if isinstance(v, bytes) or v is None else orjson.dumps(v)
        # kafka-python refuses a record with neither key nor value; the key is not relied on.
        producer.send(topic, key=b"null" if raw is None else None, value=raw)
        n += 1
    producer.flush()
    producer.close()
    return n


def read_all(topic: str, timeout_s: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every committed record of a single-partition topic."""
    consumer = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    end = consumer.end_offsets([tp])[tp]
    out = []
    deadline = time.monotonic() + timeout_s
    while consumer.position(tp) < end and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=300).values():
            out.extend((m.key, m.value) for m in batch)
    consumer.close()
    return out


def committed(group: str, topic: str, partitions: int = 1) -> int:
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False)
    total = 0
    for p in range(partitions):
        total += consumer.committed(TopicPartition(topic, p)) or 0
    consumer.close()
    return total


def members(group: str) -> int:
    """How many members the consumer group has right now (0 for an unknown group)."""
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        described = admin.describe_groups([group]).get(group) or {}
    finally:
        admin.close()
    return len(described.get("members") or [])


def start_service(
    names: dict[str, str],
    *extra: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``streamguard run`` on the test topics; its output goes to ``log`` when given."""
    environment = dict(os.environ)
    environment.update(
        {
            "STREAMGUARD_KAFKA__CLEAN_TOPIC": names["clean"],
            "STREAMGUARD_KAFKA__QUARANTINE_TOPIC": names["quarantine"],
            "STREAMGUARD_KAFKA__DLQ_TOPIC": names["dlq"],
            "STREAMGUARD_KAFKA__INSTANCE_ID": names["group"],
            "STREAMGUARD_HTTP__PORT": "0",
            "STREAMGUARD_POLICY__WARMUP": "50",
        }
    )
    environment.update(env or {})
    cmd = [
        sys.executable,
        "-m",
        "streamguard.cli",
        "run",
        "--bootstrap-servers",
        BOOTSTRAP,
        "--input-topic",
        names["events"],
        "--group-id",
        names["group"],
        *extra,
    ]
    if log is None:
        return subprocess.Popen(
            cmd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    with log.open("wb") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(cmd, env=environment, stdout=out, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout_s: float, what: str, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
