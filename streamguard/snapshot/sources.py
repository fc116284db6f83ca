"""The thin edges of an export: read a topic up to fixed offsets, read review decisions.

Topics are read with ``isolation_level=read_committed`` (aborted transactions never
reach a snapshot) from the beginning of each partition to an exclusive end offset; with
no end given, to the partition's committed end (the last stable offset) at the time of
reading, which the manifest records so the same snapshot can be rebuilt later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from kafka import KafkaConsumer, TopicPartition

from streamguard.config import KafkaSettings
from streamguard.kafka import client_options
from streamguard.quarantine.store import STATUS, QuarantineStore, QueueFilter
from streamguard.snapshot.build import ReviewDecision, TopicRecord

log = logging.getLogger(__name__)
SQLITE = "sqlite:///"


class ExportError(RuntimeError):
    """The export cannot be made as asked; the message says why."""


def read_topic(
    settings: KafkaSettings,
    topic: str,
    ends: Mapping[int, int] | None = None,
    timeout_s: float = 300.0,
) -> tuple[list[TopicRecord], dict[int, int]]:
    """Every committed record of ``topic`` below ``ends`` (all partitions must be named),
    and the end offsets actually used."""
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        **client_options(settings),
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ExportError(f"topic {topic!r} does not exist or has no partitions")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        available = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
        targets = _targets(topic, available, ends)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[TopicRecord] = []
        deadline = time.monotonic() + timeout_s
        pending = [tp for tp in tps if consumer.position(tp) < targets[tp.partition]]
        while pending:
            if time.monotonic() > deadline:
                raise ExportError(f"timed out reading {topic!r} after {timeout_s:.0f}s")
            for tp, batch in consumer.poll(timeout_ms=500).items():
                end = targets[tp.partition]
                records.extend(
                    TopicRecord(tp.partition, m.offset, m.key, m.value)
                    for m in batch
                    if m.offset < end
                )
            pending = [tp for tp in pending if consumer.position(tp) < targets[tp.partition]]
        return records, targets
    finally:
        consumer.close()


def _targets(
    topic: str, available: Mapping[int, int], ends: Mapping[int, int] | None
) -> dict[int, int]:
    if ends is None:
        return dict(available)
    unknown = sorted(set(ends) - set(available))
    if unknown:
        raise ExportError(f"{topic!r} has no partition {unknown}")
    missing = sorted(set(available) - set(ends))
    if missing:
        raise ExportError(
            f"offsets for {topic!r} must name every partition; missing {missing} (use P:0)"
        )
    beyond = {p: (o, available[p]) for p, o in ends.items() if o > available[p]}
    if beyond:
        detail = ", ".join(f"{p}: {o} > {a}" for p, (o, a) in sorted(beyond.items()))
        raise ExportError(f"offsets beyond the committed end of {topic!r} ({detail})")
    return dict(ends)


def read_decisions(url: str, page_size: int = 5_000) -> dict[str, ReviewDecision] | None:
    """Every event the review store knows, with its status; None when the store is a
    SQLite file that does not exist (reading must not create one)."""
    if url.startswith(SQLITE) and not Path(url[len(SQLITE) :]).exists():
        log.warning("review store %s does not exist; lineage will carry no decisions", url)
        return None
    store = QuarantineStore(url)
    try:
        decisions: dict[str, ReviewDecision] = {}
        for status in STATUS:
            page = 1
            while True:
                _, rows = store.queue(QueueFilter(status=status, page=page, page_size=page_size))
                for r in rows:
                    decisions[r["event_id"]] = ReviewDecision(
                        r["event_id"], r["status"], r["decided_by"], r["decided_at"]
                    )
                if len(rows) < page_size:
                    break
                page += 1
        return decisions
    finally:
        store.close()


def redact(url: str) -> str:
    """The store URL without a password, for the manifest."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = (parts.username or "") + "@" + (parts.hostname or "")
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
