"""``streamguard review``: the review API and page, the store, and (with Kafka) the
quarantine-topic materialiser and the release publisher, in one process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streamguard.config import Settings
from streamguard.quarantine.api import create_app
from streamguard.quarantine.store import QuarantineStore

log = logging.getLogger(__name__)


class ReviewQueueCollector(Collector):
    """Queue depth, oldest item age and decisions, read from the store at scrape time."""

    def __init__(self, store: QuarantineStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.store.stats()
        yield GaugeMetricFamily(
            "streamguard_review_queue_depth_events",
            "Quarantined events waiting for a decision",
            stats["pending"],
        )
        yield GaugeMetricFamily(
            "streamguard_review_oldest_age_seconds",
            "Age of the oldest pending event in the queue",
            stats["oldest_age_seconds"],
        )
        decisions = CounterMetricFamily(
            "streamguard_review_decisions", "Reviewer decisions by outcome", labels=["outcome"]
        )
        decisions.add_metric(["approved"], stats["approved"])
        decisions.add_metric(["rejected"], stats["rejected"])
        yield decisions


def review_registry(store: QuarantineStore) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ReviewQueueCollector(store))
    return registry


def run_review(
    settings: Settings, store: QuarantineStore, host: str, port: int, use_kafka: bool
) -> int:
    stop = threading.Event()
    threads = []
    if use_kafka:
        from streamguard.quarantine.release import QuarantineMaterialiser, ReleasePublisher

        for worker in (
            QuarantineMaterialiser(settings.kafka, store, stop),
            ReleasePublisher(settings.kafka, store, stop),
        ):
            t = threading.Thread(target=worker.run, daemon=True, name=type(worker).__name__)
            t.start()
            threads.append(t)
    app = create_app(store, review_registry(store))
    log.info("review service on http://%s:%d/", host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    return 0
