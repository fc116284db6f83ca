"""``/metrics``, ``/healthz`` and ``/readyz`` on a small threaded HTTP server.

Kept on the standard library on purpose: probes must answer even when the event loop of
a heavier web stack would be busy, and the service needs nothing more than three GETs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class Liveness:
    """Health is "the main loop turned recently"; readiness is the loop's own verdict."""

    def __init__(self, stall_seconds: float = 120.0) -> None:
        self.stall_seconds = stall_seconds
        self.last_beat = time.monotonic()
        self.ready = False
        self.why_not_ready = "starting"

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def set_ready(self, ready: bool, why: str = "") -> None:
        self.ready = ready
        self.why_not_ready = why

    def healthy(self) -> bool:
        return time.monotonic() - self.last_beat < self.stall_seconds


def _handler(registry: CollectorRegistry, liveness: Liveness) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
        "/healthz": lambda: (
            (200, "text/plain", b"ok\n")
            if liveness.healthy()
            else (503, "text/plain", b"main loop stalled\n")
        ),
        "/readyz": lambda: (
            (200, "text/plain", b"ready\n")
            if liveness.ready
            else (503, "text/plain", f"not ready: {liveness.why_not_ready}\n".encode())
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            route = routes.get(self.path.split("?", 1)[0])
            status, ctype, body = route() if route else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # probes are scraped every few seconds; keep the logs for events

    return Handler


class ProbeServer:
    """Serves the probes from a daemon thread; ``port=0`` picks a free port."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, liveness: Liveness):
        self.host = host
        self.server = ThreadingHTTPServer((host, port), _handler(registry, liveness))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def start(self) -> ProbeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
