"""The thin Kafka edge: consume a tick, publish its outcomes, commit its offsets.

Ordering rules, enforced by :class:`Publisher` (run by :mod:`streamguard.outbox`):

exactly-once (default)
  1. begin a transaction;
  2. send every output (clean, quarantine, dlq, tombstones) inside it;
  3. add the tick's next offsets to the same transaction;
  4. commit the transaction. Consumers of the outputs read with
     ``isolation_level=read_committed`` and see a tick's outputs all or not at all.

at-least-once
  1. send every output; 2. flush and wait for every acknowledgement; 3. only then commit
  the offsets. A crash between 2 and 3 repeats a tick's outputs, it never loses one.

A failed commit is retried with the *same* outputs (the tick is not re-scored, so detector
state never learns an event twice) with exponential backoff, until it succeeds, the
deadline derived from ``max_poll_interval_ms`` passes or the service is stopping; then the
caller rewinds the partitions to their committed offsets and polls again (with
exactly-once the abandoned transaction was aborted, so nothing of it is visible).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

from streamguard.config import KafkaSettings
from streamguard.events import Action
from streamguard.pipeline import SourceRecord, TickResult, dlq_message, quarantine_message

log = logging.getLogger(__name__)


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Options shared by every client: where the brokers are and how to authenticate."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "reconnect_backoff_max_ms": 5_000,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            opts["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return opts


def make_consumer(settings: KafkaSettings) -> KafkaConsumer:
    return KafkaConsumer(
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=settings.max_poll_records,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(settings.session_timeout_ms // 3, 100),
        **client_options(settings),
    )


def make_producer(settings: KafkaSettings, transactional_id: str | None) -> KafkaProducer:
    opts: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.producer_linger_ms,
        "batch_size": settings.producer_batch_bytes,
        "retry_backoff_ms": settings.producer_retry_backoff_ms,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
        **client_options(settings),
    }
    if transactional_id:
        opts["transactional_id"] = transactional_id
    producer = KafkaProducer(**opts)
    if transactional_id:
        producer.init_transactions()
    return producer


def to_source_records(polled: dict[TopicPartition, list[Any]]) -> list[SourceRecord]:
    """Flatten one poll into records, partition by partition, each in offset order."""
    records = []
    for tp in sorted(polled, key=lambda t: (t.topic, t.partition)):
        for m in polled[tp]:
            records.append(SourceRecord(m.value, m.topic, m.partition, m.offset))
    return records


def next_offsets(records: Sequence[SourceRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit after a tick: one past the last record of each partition."""
    last: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        last[tp] = max(last.get(tp, -1), r.offset)
    return {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()}


class Message(NamedTuple):
    """One output record. A tuple, because a tick's messages are pickled to the
    publisher process (:mod:`streamguard.outbox`)."""

    topic: str
    key: bytes | None
    value: bytes | None


def output_messages(result: TickResult, settings: KafkaSettings) -> list[Message]:
    """Every message a tick publishes, in input order, revocations last."""
    out = []
    for o in result.outcomes:
        value = o.record.value
        if o.action is Action.DLQ:
            assert o.error is not None
            out.append(Message(settings.dlq_topic, None, dlq_message(o.record, o.error)))
            continue
        assert o.event is not None and o.verdict is not None and value is not None
        key = o.event.event_id.encode()
        if o.action is Action.CLEAN:
            out.append(Message(settings.clean_topic, key, value))
        else:
            out.append(
                Message(settings.quarantine_topic, key, quarantine_message(value, o.verdict))
            )
    for rev in result.revocations:
        key = rev.event_id.encode()
        out.append(Message(settings.clean_topic, key, None))
        out.append(
            Message(settings.quarantine_topic, key, quarantine_message(rev.value, rev.verdict))
        )
    return out


_M = np.uint32(0x5BD1E995)


def key_partitions(keys: Sequence[bytes], count: int) -> np.ndarray:
    """The partition index (into the sorted partition ids) that the Java client and
    kafka-python's default partitioner pick for each key: ``murmur2(key) & 0x7fffffff``
    modulo ``count``. Hashed a whole tick at a time, keys of one length together, because
    kafka-python's pure-Python murmur2 took 12% of the publisher's time per event."""
    hashes = np.empty(len(keys), dtype=np.int64)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_length[len(key)].append(i)
    for length, rows in by_length.items():
        if len(rows) < 8:  # numpy's per-call cost is more than a few keys' Python loop
            hashes[rows] = [murmur2(keys[i]) for i in rows]
            continue
        joined = b"".join([keys[i] for i in rows])
        hashes[rows] = _murmur2(np.frombuffer(joined, np.uint8).reshape(len(rows), length))
    return (hashes & 0x7FFFFFFF) % count


def _murmur2(block: np.ndarray) -> np.ndarray:
    """Kafka's murmur2 of each row of an (n, length) uint8 array, as uint32 arithmetic."""
    n, length = block.shape
    h = np.full(n, 0x9747B28C ^ length, dtype=np.uint32)
    words = np.ascontiguousarray(block[:, : length // 4 * 4]).view("<u4")
    for j in range(length // 4):
        k = words[:, j] * _M
        k ^= k >> 24
        k *= _M
        h *= _M
        h ^= k
    tail, extra = length & ~3, length % 4
    if extra >= 3:
        h ^= block[:, tail + 2].astype(np.uint32) << 16
    if extra >= 2:
        h ^= block[:, tail + 1].astype(np.uint32) << 8
    if extra >= 1:
        h ^= block[:, tail].astype(np.uint32)
        h *= _M
    h ^= h >> 13
    h *= _M
    h ^= h >> 15
    return h


class CommitAbandoned(Exception):
    """Retrying the commit took too long; rewind to the committed offsets and poll again."""


def retry_until_deadline(
    attempt: Callable[[], None],
    settings: KafkaSettings,
    on_error: Callable[[Exception], None],
    stopping: Callable[[], bool],
    recover: Callable[[], None] = lambda: None,
) -> None:
    """Run ``attempt`` until it succeeds, backing off exponentially; raise CommitAbandoned
    once the deadline (half of ``max_poll_interval_ms``) passes or the service stops."""
    deadline = time.monotonic() + settings.max_poll_interval_ms / 2000.0
    backoff = 0.1
    while True:
        try:
            attempt()
            return
        except KafkaError as exc:
            on_error(exc)
            log.warning("commit failed, retrying in %.1fs: %r", backoff, exc)
            recover()
            if stopping() or time.monotonic() + backoff > deadline:
                raise CommitAbandoned(str(exc)) from exc
            time.sleep(backoff)
            backoff = min(backoff * 2, settings.retry_backoff_max_s)


class Publisher:
    """Owns the producer and publishes one tick's messages, retried with the same
    messages until the deadline. With exactly-once the tick's offsets go into the same
    transaction; with at-least-once the caller commits them once this returns."""

    def __init__(
        self,
        settings: KafkaSettings,
        producer_factory: Callable[[], KafkaProducer],
        on_error: Callable[[Exception], None] = lambda exc: None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.producer_factory = producer_factory
        self.producer = producer_factory()
        self.on_error = on_error
        self.stopping = stopping
        self.transactional = settings.guarantee == "exactly_once"

    def publish(
        self,
        messages: Sequence[Message],
        offsets: dict[TopicPartition, OffsetAndMetadata],
        group: ConsumerGroupMetadata | None,
    ) -> None:
        retry_until_deadline(
            lambda: self._publish(messages, offsets, group),
            self.settings,
            self.on_error,
            self.stopping,
            self._reset_producer,
        )

    def _publish(
        self,
        messages: Sequence[Message],
        offsets: dict[TopicPartition, OffsetAndMetadata],
        group: ConsumerGroupMetadata | None,
    ) -> None:
        if self.transactional:
            self.producer.begin_transaction()
        futures = [
            self.producer.send(t, key=k, value=v, partition=p)
            for (t, k, v), p in zip(messages, self._partitions(messages), strict=True)
        ]
        if self.transactional:  # the commit flushes the sends
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group)
            self.producer.commit_transaction()
            return
        timeout = self.settings.request_timeout_ms / 1000.0
        self.producer.flush(timeout=timeout)
        for f in futures:
            f.get(timeout=timeout)

    def _partitions(self, messages: Sequence[Message]) -> list[int | None]:
        """Each keyed message's partition, as the default partitioner would pick it (a
        revocation's tombstone lands beside the event it revokes); None for the rest."""
        chosen: list[int | None] = [None] * len(messages)
        by_topic: dict[str, list[int]] = defaultdict(list)
        for i, m in enumerate(messages):
            if m.key is not None:
                by_topic[m.topic].append(i)
        for topic, rows in by_topic.items():
            ids = sorted(self.producer.partitions_for(topic))
            picks = key_partitions([messages[i].key or b"" for i in rows], len(ids))
            for i, pick in zip(rows, picks.tolist(), strict=True):
                chosen[i] = ids[pick]
        return chosen

    def _reset_producer(self) -> None:
        """After a failure the producer may be in an abortable or fatal state: start afresh."""
        with contextlib.suppress(Exception):  # best effort before replacing it
            if self.transactional:
                self.producer.abort_transaction()
        with contextlib.suppress(Exception):
            self.producer.close(timeout=1)
        try:
            self.producer = self.producer_factory()
        except KafkaError as exc:
            log.warning("could not recreate the producer yet: %r", exc)

    def close(self) -> None:
        self.producer.close(timeout=5)


class CommitOnRevoke(ConsumerRebalanceListener):
    """Rebalance hooks. The loop commits every tick before it polls again, so when
    partitions are revoked (which only happens inside ``poll``) nothing processed is left
    uncommitted; the hooks record what moved and let the service react (checkpoints)."""

    def __init__(self, on_change: Callable[[str, list[TopicPartition]], None]) -> None:
        self.on_change = on_change

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(str(tp) for tp in revoked))
        self.on_change("revoked", list(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(str(tp) for tp in assigned))
        self.on_change("assigned", list(assigned))
