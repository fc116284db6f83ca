"""``streamguard review``: the review API and page, the store, and (with Kafka) the
quarantine-topic materialiser and the release publisher, in one process."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from streamguard.config import Settings
from streamguard.metrics import ReviewQueueCollector
from streamguard.quarantine.api import create_app
from streamguard.quarantine.store import QuarantineStore

log = logging.getLogger(__name__)


def review_registry(store: QuarantineStore) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ReviewQueueCollector(store))
    return registry


class BackgroundServer:
    """The review app served by uvicorn from a daemon thread (the demo and the tests);
    ``port=0`` picks a free port, ``url`` tells which."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host

    def start(self, timeout_s: float = 10.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the review server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


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
