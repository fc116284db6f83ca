"""``streamguard demo``: the whole job on the embedded default, no Kafka needed.

Simulated traffic with attack campaigns runs through the real pipeline tick by tick;
quarantines and dead letters go to SQLite; metrics and probes are served on localhost.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
from tqdm import tqdm

from streamguard.assembly import build_pipeline
from streamguard.config import Settings
from streamguard.metrics import Metrics
from streamguard.pipeline import Pipeline, SourceRecord
from streamguard.probes import Liveness, ProbeServer
from streamguard.quarantine.api import create_app
from streamguard.quarantine.service import BackgroundServer, review_registry
from streamguard.quarantine.store import QuarantineStore
from streamguard.simulate import simulate

CHUNK = 50_000
TICK = 500


def simulated_records(scenario: str, seed: int, limit: int | None) -> Iterator[SourceRecord]:
    """Endless (or ``limit``) simulated records: one scenario run after another."""
    produced = 0
    round_no = 0
    while limit is None or produced < limit:
        size = CHUNK if limit is None else min(CHUNK, limit - produced)
        sim = simulate(scenario, size, seed + round_no)
        for i, event in enumerate(sim.events):
            event = dict(event, event_id=f"r{round_no}-{event['event_id']}")
            yield SourceRecord(orjson.dumps(event), "demo", 0, produced + i)
        produced += len(sim.events)
        round_no += 1


def run_demo(
    settings: Settings,
    events: int | None,
    scenario: str,
    seed: int,
    db: Path,
    stop: threading.Event,
    linger: float = 0.0,
    review_port: int = 8080,
) -> int:
    pipeline = build_pipeline(settings)
    store = QuarantineStore(db)
    metrics = Metrics().watch(pipeline, store)
    liveness = Liveness()
    server = ProbeServer(settings.http.host, settings.http.port, metrics.registry, liveness).start()
    review = BackgroundServer(
        create_app(store, review_registry(store)), settings.review.host, review_port
    ).start()
    token = store.add_token("demo-admin", "admin")
    length = "until Ctrl-C" if events is None else f"{events} events"
    print(f"StreamGuard demo: scenario {scenario!r}, {length}")
    print(f"  metrics   {server.url}/metrics   (health {server.url}/healthz, {server.url}/readyz)")
    print(f"  review    {review.url}/   (log in with the token {token})")
    print(f"  quarantine store  {db}")
    totals: Counter[str] = Counter()
    liveness.set_ready(True)
    metrics.ready.set(1)
    started = time.perf_counter()
    tick: list[SourceRecord] = []
    bar = tqdm(total=events, unit="ev", file=sys.stderr, disable=None)
    try:
        for record in simulated_records(scenario, seed, events):
            tick.append(record)
            if len(tick) == TICK:
                _process(pipeline, metrics, store, tick, totals, liveness)
                bar.update(len(tick))
                tick = []
                # The simulated source is pulled on demand: the only backlog is what is
                # left of a bounded run.
                metrics.lag.labels("0").set(0 if events is None else events - record.offset - 1)
            if stop.is_set():
                break
        if tick:
            _process(pipeline, metrics, store, tick, totals, liveness)
            bar.update(len(tick))
            metrics.lag.labels("0").set(0)
        elapsed = time.perf_counter() - started
        bar.close()
        _linger(linger, stop, liveness)
    finally:
        bar.close()
        server.stop()
        review.stop()
    _summary(totals, store, elapsed)
    store.close()
    return 0


def _process(
    pipeline: Pipeline,
    metrics: Metrics,
    store: QuarantineStore,
    tick: list[SourceRecord],
    totals: Counter[str],
    liveness: Liveness,
) -> None:
    t0 = time.perf_counter()
    result = pipeline.process(tick)
    metrics.observe_tick(result, time.perf_counter() - t0)
    store.add_tick(result)
    totals.update(o.action.value for o in result.outcomes)
    totals["revoked"] += len(result.revocations)
    liveness.beat()


def _linger(seconds: float, stop: threading.Event, liveness: Liveness) -> None:
    """Keep serving /metrics after the last event, so a scraper sees the final counts."""
    if seconds <= 0:
        return
    print(f"  stream done; serving /metrics for {seconds:g}s more", flush=True)
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        liveness.beat()
        stop.wait(min(left, 5.0))


def _summary(totals: Counter[str], store: QuarantineStore, elapsed: float) -> None:
    n = totals["clean"] + totals["quarantine"] + totals["dlq"]
    print(f"\nprocessed {n} events in {elapsed:.1f}s ({n / max(elapsed, 1e-9):,.0f} events/s)")
    print(
        f"  clean {totals['clean']}, quarantined {totals['quarantine']}, "
        f"dead-lettered {totals['dlq']}, revoked later {totals['revoked']}"
    )
    for detectors, count in store.top_reasons():
        print(f"  quarantined by {detectors}: {count}")
