"""``streamguard review``: the review API and page, the store, and (with Kafka) the
quarantine-topic materialiser and the release publisher, in one process."""

from __future__ import annotations

import logging
import threading

import uvicorn
from prometheus_client import CollectorRegistry

from streamguard.config import Settings
from streamguard.metrics import ReviewQueueCollector
from streamguard.quarantine.api import create_app
from streamguard.quarantine.store import QuarantineStore

log = logging.getLogger(__name__)


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
