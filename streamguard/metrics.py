"""Prometheus metrics: ``streamguard_<thing>_<unit>``, counters end in ``_total``.

Label sets are bounded on purpose: actions, kinds, detector names, error classes and
partition numbers, never account or item ids. Every metric lives in the registry passed
in, so each test (and each demo run) builds its own ``CollectorRegistry``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamguard.pipeline import TickResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    """All of StreamGuard's pipeline metrics, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.events = Counter(
            "streamguard_events", "Input records by event kind", ["kind"], registry=r
        )
        self.verdicts = Counter(
            "streamguard_verdicts", "Verdicts by action", ["action"], registry=r
        )
        self.reasons = Counter(
            "streamguard_quarantine_reasons", "Quarantines by detector", ["detector"], registry=r
        )
        self.dlq = Counter(
            "streamguard_dlq", "Dead-lettered records by error class", ["error_class"], registry=r
        )
        self.revocations = Counter(
            "streamguard_revocations", "Clean events revoked later", registry=r
        )
        self.scores = Histogram(
            "streamguard_detector_score",
            "Per-detector raw score in [0, 1]",
            ["detector"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "streamguard_batch_size_events", "Records per tick", buckets=BATCH_BUCKETS, registry=r
        )
        self.latency = Histogram(
            "streamguard_processing_latency_seconds",
            "Time to process one tick, parse to verdicts",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "streamguard_commit_latency_seconds",
            "Time to publish a tick's outputs and commit its offsets",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_errors = Counter(
            "streamguard_commit_errors", "Failed output/offset commits", registry=r
        )
        self.produce_errors = Counter(
            "streamguard_produce_errors", "Failed produce requests", registry=r
        )
        self.lag = Gauge(
            "streamguard_consumer_lag_records",
            "Records behind the log end",
            ["partition"],
            registry=r,
        )
        self.ready = Gauge(
            "streamguard_ready", "1 when consuming and committing normally", registry=r
        )
        self.thresholds = Gauge(
            "streamguard_detector_threshold",
            "Calibrated raw-score threshold",
            ["detector"],
            registry=r,
        )
        self.tracked = Gauge(
            "streamguard_state_entries", "Entries in bounded state tables", ["table"], registry=r
        )

    def observe_tick(self, result: TickResult, seconds: float) -> None:
        self.batch_size.observe(len(result.outcomes))
        self.latency.observe(seconds)
        for o in result.outcomes:
            self.events.labels(o.event.kind if o.event else "invalid").inc()
            self.verdicts.labels(o.action.value).inc()
            if o.error is not None:
                self.dlq.labels(o.error.error_class).inc()
            if o.verdict is not None:
                for reason in o.verdict.reasons:
                    self.reasons.labels(reason.detector).inc()
                for name, score in o.verdict.detector_scores.items():
                    self.scores.labels(name).observe(min(max(score, 0.0), 1.0))
        if result.revocations:
            self.revocations.inc(len(result.revocations))

    def observe_state(
        self, thresholds: dict[str, float], tables: Iterable[tuple[str, int]]
    ) -> None:
        for name, value in thresholds.items():
            if value != float("inf"):
                self.thresholds.labels(name).set(value)
        for table, size in tables:
            self.tracked.labels(table).set(size)
