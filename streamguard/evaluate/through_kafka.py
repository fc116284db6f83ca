"""Replay a stream through a real Kafka broker and the real service loop.

The lines go, in order, to a fresh single-partition input topic (so offset == line
number); a :class:`~streamguard.service.Service` consumes it exactly as ``streamguard
run`` would, with fixed-size ticks, and publishes to fresh output topics. Scores come
from the service's tick hook; the actions are then read back from the committed output
topics, and any disagreement between the two is an error, not a footnote.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from streamguard.assembly import build_pipeline
from streamguard.config import KafkaSettings, Settings
from streamguard.evaluate.metrics import VerdictRow
from streamguard.evaluate.runner import RowCollector
from streamguard.metrics import Metrics
from streamguard.pipeline import TickResult
from streamguard.probes import Liveness
from streamguard.service import Service


def replay_through_kafka(
    lines: Sequence[bytes],
    settings: Settings,
    bootstrap_servers: str,
    batch_size: int = 500,
    timeout_s: float = 600.0,
) -> tuple[list[VerdictRow], float]:
    run = uuid.uuid4().hex[:10]
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap_servers,
            "input_topic": f"sg-eval-{run}.events",
            "clean_topic": f"sg-eval-{run}.clean",
            "quarantine_topic": f"sg-eval-{run}.quarantine",
            "dlq_topic": f"sg-eval-{run}.dlq",
            "group_id": f"sg-eval-{run}",
            "instance_id": run,
            "max_poll_records": batch_size,
            "tick_linger_ms": 5_000,
        }
    )
    settings = settings.model_copy(update={"kafka": kafka})
    topics = [kafka.input_topic, kafka.clean_topic, kafka.quarantine_topic, kafka.dlq_topic]
    _create_topics(bootstrap_servers, topics)
    _produce(bootstrap_servers, kafka.input_topic, lines)

    collector = RowCollector()
    done = threading.Event()
    seen = [0]

    def on_tick(result: TickResult) -> None:
        collector.add(result)
        seen[0] += len(result.outcomes)
        if seen[0] >= len(lines):
            done.set()

    service = Service(settings, lambda: build_pipeline(settings), Metrics(), Liveness(), on_tick)
    thread = threading.Thread(target=service.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    finished = done.wait(timeout_s)
    elapsed = time.perf_counter() - started
    service.stopping.set()
    thread.join(60)
    if not finished:
        raise TimeoutError(f"only {seen[0]} of {len(lines)} lines were processed through Kafka")
    rows = collector.ordered()
    _check_against_topics(bootstrap_servers, kafka, rows)
    return rows, elapsed


def _create_topics(bootstrap: str, topics: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, lines: Sequence[bytes]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        batch_size=256 * 1024,
    )
    for line in lines:
        producer.send(topic, value=line)
    producer.flush()
    producer.close()


def read_topic(
    bootstrap: str, topic: str, idle_s: float = 3.0
) -> list[tuple[bytes | None, bytes | None]]:
    """Every committed (key, value) of a single-partition topic, start to end."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    end = consumer.end_offsets([tp])[tp]
    out: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + max(idle_s, 30.0)
    while consumer.position(tp) < end and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend((m.key, m.value) for m in records)
    consumer.close()
    return out


def _check_against_topics(bootstrap: str, kafka: KafkaSettings, rows: list[VerdictRow]) -> None:
    clean_log = read_topic(bootstrap, kafka.clean_topic)
    clean = {k.decode() for k, v in clean_log if k is not None and v is not None}
    tombstoned = {k.decode() for k, v in clean_log if k is not None and v is None}
    quarantined = {k.decode() for k, _ in read_topic(bootstrap, kafka.quarantine_topic) if k}
    dlq = len(read_topic(bootstrap, kafka.dlq_topic))
    expected_dlq = sum(r.final_action == "dlq" for r in rows)
    problems = []
    if dlq != expected_dlq:
        problems.append(f"dlq topic has {dlq} records, the service decided {expected_dlq}")
    for r in rows:
        if r.final_action == "quarantine" and r.event_id not in quarantined:
            problems.append(f"{r.event_id} quarantined but not in the quarantine topic")
        if r.first_action == "clean" and r.event_id not in clean:
            problems.append(f"{r.event_id} clean but not in the clean topic")
        if (
            r.first_action == "clean"
            and r.final_action == "quarantine"
            and r.event_id not in tombstoned
        ):
            problems.append(f"{r.event_id} revoked but no tombstone in the clean topic")
    if problems:
        raise AssertionError("Kafka outputs disagree with the verdicts: " + "; ".join(problems[:5]))
