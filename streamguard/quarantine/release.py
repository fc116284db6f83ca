"""Kafka for the review service: materialise the quarantine topic, release approvals.

Release is exactly once per approved event. Before a batch of outbox rows is sent, the
clean topic's end offsets are saved with the rows; the rows are marked sent after the
broker acknowledged. If the process dies in between, the next publisher reads the clean
topic from the saved offsets and marks the rows it finds there as sent instead of sending
them again.
"""

from __future__ import annotations

import logging
import threading

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamguard.config import KafkaSettings
from streamguard.kafka import client_options
from streamguard.quarantine.store import QuarantineStore

log = logging.getLogger(__name__)


class QuarantineMaterialiser:
    """Copies the quarantine topic into the store (upserts, so a replay is harmless)."""

    def __init__(self, settings: KafkaSettings, store: QuarantineStore, stop: threading.Event):
        self.settings = settings
        self.store = store
        self.stop = stop

    def run(self) -> None:
        consumer = KafkaConsumer(
            self.settings.quarantine_topic,
            group_id=f"{self.settings.group_id}-review",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **client_options(self.settings),
        )
        try:
            while not self.stop.is_set():
                polled = consumer.poll(timeout_ms=500)
                for records in polled.values():
                    for m in records:
                        if m.value is not None:
                            self.store.add_quarantine_message(m.value)
                if polled:
                    consumer.commit()
        finally:
            consumer.close(autocommit=False)


class ReleasePublisher:
    """Sends approved events from the outbox to the clean topic, once each."""

    def __init__(self, settings: KafkaSettings, store: QuarantineStore, stop: threading.Event):
        self.settings = settings
        self.store = store
        self.stop = stop
        self.producer = KafkaProducer(
            acks="all", enable_idempotence=True, **client_options(settings)
        )

    def run(self, interval_s: float = 1.0) -> None:
        self.recover()
        while not self.stop.is_set():
            try:
                self.publish_once()
            except KafkaError as exc:
                log.warning("release failed, will retry: %r", exc)
            self.stop.wait(interval_s)
        self.producer.close()

    def publish_once(self) -> int:
        rows = self.store.unsent()
        if not rows:
            return 0
        self.store.mark_attempt(
            [event_id for event_id, _ in rows],
            orjson.dumps(self._end_offsets(), option=orjson.OPT_NON_STR_KEYS),
        )
        futures = [
            self.producer.send(self.settings.clean_topic, key=e.encode(), value=v) for e, v in rows
        ]
        self.producer.flush()
        for f in futures:
            f.get(timeout=30)
        self.store.mark_sent([event_id for event_id, _ in rows])
        return len(rows)

    def recover(self) -> None:
        """Rows attempted but not marked: mark those already in the clean topic as sent."""
        attempts = self.store.attempted()
        if not attempts:
            return
        pending = {event_id for event_id, _ in attempts}
        starts: dict[int, int] = {}
        for _, offsets in attempts:
            for partition, offset in orjson.loads(offsets).items():
                starts[int(partition)] = min(starts.get(int(partition), offset), offset)
        found = self._scan(starts, pending)
        self.store.mark_sent(sorted(found))
        log.info(
            "release recovery: %d of %d attempted events were already published",
            len(found),
            len(pending),
        )

    def _end_offsets(self) -> dict[int, int]:
        consumer = KafkaConsumer(**client_options(self.settings))
        try:
            parts = consumer.partitions_for_topic(self.settings.clean_topic) or {0}
            tps = [TopicPartition(self.settings.clean_topic, p) for p in parts]
            return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
        finally:
            consumer.close()

    def _scan(self, starts: dict[int, int], wanted: set[str]) -> set[str]:
        consumer = KafkaConsumer(enable_auto_commit=False, **client_options(self.settings))
        try:
            tps = [TopicPartition(self.settings.clean_topic, p) for p in starts]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, starts[tp.partition])
            ends = consumer.end_offsets(tps)
            found: set[str] = set()
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                for records in consumer.poll(timeout_ms=500).values():
                    found.update(
                        m.key.decode() for m in records if m.key and m.key.decode() in wanted
                    )
            return found
        finally:
            consumer.close()
