"""Prometheus metrics: ``streamguard_<thing>_<unit>``, counters end in ``_total``.

Three sources feed one registry:

- :meth:`Metrics.observe_tick`, called by the main loop after each tick, counts events,
  verdicts, reasons, dead letters, revocations and campaigns, and observes latency and
  batch size. It aggregates per tick before touching a metric, so its cost stays a small
  share of the pipeline's few microseconds per event.
- :class:`PipelineCollector` exposes what lives in the pipeline: state table sizes,
  calibrated thresholds, the event-time watermark, and whatever each detector reports
  through the optional ``stats()`` method (:class:`ReportsStats`). ``metrics.py`` knows
  no detector by name: a detector opts in by returning a small dict.
- :class:`ReviewQueueCollector` reads the review queue's depth and age from the
  quarantine store at scrape time.

Label sets are bounded on purpose: kinds, actions, detector names, error classes, table
names and partition numbers, never account, item or campaign ids. Known label values are
created at zero up front, so a rate is 0 (not "no data") before the first quarantine.

Detector stats, the naming rule (see ``docs/OPERATIONS.md``): a key ``k`` of
``detector.stats()`` becomes ``streamguard_detector_<k>{detector="<name>"}``, a counter
when ``k`` ends in ``_total`` and a gauge otherwise; the key ``state_entries`` joins the
pipeline's own tables as ``streamguard_state_entries{table="<name>"}``. The dashboards and
alerts rely on these keys:

=====================  ======================================================
``open_campaigns``     campaigns the detector holds open now
``campaigns_total``    campaigns opened since start
``drift_alarms_total`` drift alarms raised since start
``state_entries``      entries in the detector's bounded state
=====================  ======================================================
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streamguard import __version__
from streamguard.events import Action

if TYPE_CHECKING:
    from streamguard.pipeline import Pipeline, TickResult
    from streamguard.quarantine.store import QuarantineStore

log = logging.getLogger(__name__)

# ``*_created`` samples double the series count and no dashboard or alert reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)
SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))

KINDS = ("rating", "review", "label", "vote", "invalid")
ACTIONS = tuple(a.value for a in Action)
# The error classes that parse_event and the pipeline produce (events.InvalidEvent).
ERROR_CLASSES = ("empty", "json", "contract", "range", "detector_error")
PIPELINE_TABLES = ("accounts", "items", "releases")

STAT_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")
# Keys that would collide with the families this module defines itself.
RESERVED_STAT_PREFIXES = ("score", "threshold", "stats_errors")


@runtime_checkable
class ReportsStats(Protocol):
    """Optional detector method: a few numbers about its state, cheap to compute.

    Called from the main loop between ticks (never from the scrape thread), at most once
    per refresh interval, so it may read state without locks. Values must be finite.
    """

    def stats(self) -> Mapping[str, float]: ...


class ScoreHistograms(Collector):
    """A labelled histogram updated with one numpy call per label per tick.

    ``prometheus_client.Histogram.observe`` takes a lock per value; at tens of thousands
    of events a second times several detectors that would cost more than a detector.
    """

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]):
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._lock = threading.Lock()
        self._counts: dict[str, np.ndarray] = {}
        self._sums: dict[str, float] = {}

    def touch(self, value: str) -> None:
        with self._lock:
            self._counts.setdefault(value, np.zeros(len(self.bounds) + 1, dtype=np.int64))
            self._sums.setdefault(value, 0.0)

    def observe_many(self, value: str, samples: np.ndarray) -> None:
        samples = samples[np.isfinite(samples)]  # one NaN would poison the sum for good
        if not len(samples):
            return
        # Prometheus buckets are "less than or equal to the bound": side="left" puts a
        # sample equal to a bound into that bound's bucket; the last slot is +Inf.
        slots = np.searchsorted(self.bounds, samples, side="left")
        add = np.bincount(slots, minlength=len(self.bounds) + 1)
        with self._lock:
            counts = self._counts.get(value)
            if counts is None:
                counts = self._counts[value] = np.zeros(len(self.bounds) + 1, dtype=np.int64)
            counts += add
            self._sums[value] = self._sums.get(value, 0.0) + float(samples.sum())

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            snapshot = [(v, c.copy(), self._sums[v]) for v, c in sorted(self._counts.items())]
        for value, counts, total in snapshot:
            cumulative = np.cumsum(counts)
            pairs = zip(self.bounds, cumulative[:-1], strict=True)
            buckets = [(_le(bound), float(n)) for bound, n in pairs]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric([value], buckets, total)
        yield family


class PipelineCollector(Collector):
    """State sizes, thresholds, watermark, campaigns and detector stats, at scrape time.

    The scrape thread must not walk detector state while the main loop mutates it, so
    the main loop takes a snapshot (:meth:`refresh`) and scrapes read the snapshot.
    """

    def __init__(
        self, pipelines: Callable[[], Sequence[Pipeline]], campaigns: CampaignTracker
    ) -> None:
        self.pipelines = pipelines  # one per owned partition under `streamguard run`
        self.campaigns = campaigns
        self._snapshot: list[Metric] = []
        self._warned: set[str] = set()

    def refresh(self) -> None:
        pipelines = self.pipelines()
        tables = GaugeMetricFamily(
            "streamguard_state_entries", "Entries in bounded state tables", labels=["table"]
        )
        tables.add_metric(["accounts"], sum(len(p.features.accounts) for p in pipelines))
        tables.add_metric(["items"], sum(len(p.features.items) for p in pipelines))
        tables.add_metric(["releases"], sum(len(p.releases.table) for p in pipelines))
        thresholds = GaugeMetricFamily(
            "streamguard_detector_threshold",
            "Calibrated raw-score threshold of each calibrated detector (mean over partitions)",
            labels=["detector"],
        )
        by_detector: dict[str, list[float]] = {}
        for p in pipelines:
            for name, value in p.policy.thresholds.items():
                if math.isfinite(value):
                    by_detector.setdefault(name, []).append(value)
        for name, values in sorted(by_detector.items()):
            thresholds.add_metric([name], sum(values) / len(values))
        families: list[Metric] = [tables, thresholds]
        families += self._detector_families(tables, pipelines)
        watermark = max((p.features.watermark for p in pipelines), default=-math.inf)
        if math.isfinite(watermark):
            families.append(
                GaugeMetricFamily(
                    "streamguard_event_time_watermark_seconds",
                    "Latest event time seen (Unix seconds); stream freshness",
                    value=watermark,
                )
            )
        families.append(
            GaugeMetricFamily(
                "streamguard_campaigns_active",
                "Campaigns with a quarantined event within the last "
                f"{self.campaigns.window_seconds:g}s of event time",
                value=self.campaigns.active(watermark),
            )
        )
        self._snapshot = families

    def _detector_families(
        self, tables: GaugeMetricFamily, pipelines: Sequence[Pipeline]
    ) -> list[Metric]:
        """Detector stats summed over partitions (counts and sizes add up)."""
        totals: dict[str, dict[str, float]] = {}
        for pipeline in pipelines:
            for detector in pipeline.detectors:
                for key, value in self._stats(detector):
                    per_detector = totals.setdefault(key, {})
                    per_detector[detector.name] = per_detector.get(detector.name, 0.0) + value
        families: list[Metric] = []
        for key, samples in sorted(totals.items()):
            if key == "state_entries":
                for detector_name, value in samples.items():
                    tables.add_metric([detector_name], value)
                continue
            name = f"streamguard_detector_{key}"
            doc = f"Detector-reported {key.replace('_', ' ')} (stats() protocol)"
            family: Metric
            if key.endswith("_total"):
                family = CounterMetricFamily(name, doc, labels=["detector"])
            else:
                family = GaugeMetricFamily(name, doc, labels=["detector"])
            for detector_name, value in samples.items():
                family.add_metric([detector_name], value)
            families.append(family)
        return families

    def _stats(self, detector: object) -> list[tuple[str, float]]:
        stats = getattr(detector, "stats", None)
        if not callable(stats):
            return []
        name = getattr(detector, "name", type(detector).__name__)
        try:
            raw = dict(stats())
        except Exception:  # a metrics hook must never stop the stream
            self._warn_once(name, "stats() raised; its numbers are left out", exc_info=True)
            return []
        out = []
        for key, value in sorted(raw.items()):
            problem = _stat_problem(key, value)
            if problem:
                self._warn_once(f"{name}.{key}", f"stats() key {key!r} skipped: {problem}")
                continue
            out.append((key, float(value)))
        return out

    def _warn_once(self, what: str, message: str, exc_info: bool = False) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("detector %s: %s", what, message, exc_info=exc_info)

    def collect(self) -> Iterator[Metric]:
        yield from self._snapshot


class CampaignTracker:
    """Campaign ids seen in verdicts: counts new ones, and those active in event time.

    Campaign ids never become labels; they are only remembered here, in insertion order
    of their latest sighting, capped at ``max_ids`` (an id evicted and seen again counts
    as new: after that many other campaigns, it is news again).
    """

    def __init__(self, window_seconds: float = 3600.0, max_ids: int = 100_000) -> None:
        if window_seconds <= 0 or max_ids < 1:
            raise ValueError("window_seconds must be > 0 and max_ids >= 1")
        self.window_seconds = window_seconds
        self.max_ids = max_ids
        self._last_seen: OrderedDict[str, float] = OrderedDict()

    def see(self, campaign_id: str, ts: float) -> bool:
        """Record a sighting; True when the id is new."""
        seen = self._last_seen
        previous = seen.pop(campaign_id, None)
        seen[campaign_id] = ts if previous is None else max(ts, previous)
        if len(seen) > self.max_ids:
            seen.popitem(last=False)
        return previous is None

    def active(self, now: float) -> int:
        if not math.isfinite(now):
            return len(self._last_seen)
        horizon = now - self.window_seconds
        return sum(1 for ts in self._last_seen.values() if ts >= horizon)


class ReviewQueueCollector(Collector):
    """Queue depth, oldest pending age and decisions, read from the store at scrape time."""

    def __init__(self, store: QuarantineStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        stats = self.store.stats()
        yield GaugeMetricFamily(
            "streamguard_review_queue_depth_events",
            "Quarantined events waiting for a decision",
            value=stats["pending"],
        )
        yield GaugeMetricFamily(
            "streamguard_review_oldest_age_seconds",
            "Age of the oldest pending event in the queue",
            value=stats["oldest_age_seconds"],
        )
        decisions = CounterMetricFamily(
            "streamguard_review_decisions", "Reviewer decisions by outcome", labels=["outcome"]
        )
        decisions.add_metric(["approved"], stats["approved"])
        decisions.add_metric(["rejected"], stats["rejected"])
        yield decisions


class Metrics:
    """All of StreamGuard's service metrics, bound to one registry.

    ``watch(pipeline, store)`` adds the collectors that read the pipeline's state and the
    review queue; ``observe_tick`` is the per-tick hook of the main loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        refresh_seconds: float = 1.0,
        campaign_window_seconds: float = 3600.0,
    ) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.refresh_seconds = refresh_seconds
        self.campaigns = CampaignTracker(campaign_window_seconds)
        self.pipeline_collector: PipelineCollector | None = None
        self._refreshed_at = -math.inf
        Info("streamguard_build", "StreamGuard version", registry=r).info({"version": __version__})
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.events = _counter("streamguard_events", "Input records by event kind", "kind", r)
        self.verdicts = _counter("streamguard_verdicts", "Verdicts by action", "action", r)
        self.reasons = _counter(
            "streamguard_quarantine_reasons",
            "Quarantined events by the detector that gave a reason (an event may count twice)",
            "detector",
            r,
        )
        self.dlq = _counter(
            "streamguard_dead_letters", "Dead-lettered records by error class", "error_class", r
        )
        self.revocations = _counter(
            "streamguard_revocations",
            "Clean events revoked later, by the detector that flagged the account",
            "detector",
            r,
        )
        self.new_campaigns = Counter(
            "streamguard_campaigns_detected",
            "Campaign ids seen for the first time in a quarantine reason",
            registry=r,
        )
        self.scores = ScoreHistograms(
            "streamguard_detector_score", "Per-detector raw score in [0, 1]", "detector",
            SCORE_BUCKETS,
        )  # fmt: skip
        r.register(self.scores)
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
            "streamguard_commit_errors", "Failed output/offset commit attempts", registry=r
        )
        self.produce_errors = Counter(
            "streamguard_produce_errors", "Failed produce requests", registry=r
        )
        self.lag = Gauge(
            "streamguard_consumer_lag_records",
            "Records behind the log end, per assigned input partition",
            ["partition"],
            registry=r,
        )
        self.ready = Gauge(
            "streamguard_ready", "1 when consuming and committing normally", registry=r
        )
        self.last_tick = Gauge(
            "streamguard_last_tick_timestamp_seconds",
            "Wall-clock time of the last processed tick (Unix seconds)",
            registry=r,
        )
        for kind in KINDS:
            self.events.labels(kind)
        for action in ACTIONS:
            self.verdicts.labels(action)
        for error_class in ERROR_CLASSES:
            self.dlq.labels(error_class)

    def watch(
        self,
        pipeline: Pipeline,
        store: QuarantineStore | None = None,
        pipelines: Callable[[], Sequence[Pipeline]] | None = None,
    ) -> Metrics:
        """Expose the pipeline's state (and the review queue, when the store is local).

        ``pipeline`` names the detectors; ``pipelines``, when given, yields the live
        pipelines to read at refresh (one per owned partition), else ``pipeline`` is read.
        """
        for detector in pipeline.detectors:
            self.reasons.labels(detector.name)
            self.revocations.labels(detector.name)
            self.scores.touch(detector.name)
        live = pipelines if pipelines is not None else (lambda: [pipeline])
        self.pipeline_collector = PipelineCollector(live, self.campaigns)
        self.pipeline_collector.refresh()
        self._refreshed_at = time.monotonic()
        self.registry.register(self.pipeline_collector)
        if store is not None:
            self.registry.register(ReviewQueueCollector(store))
        return self

    def observe_tick(self, result: TickResult, seconds: float) -> None:
        outcomes = result.outcomes
        self.batch_size.observe(len(outcomes))
        self.latency.observe(seconds)
        self.last_tick.set_to_current_time()
        kinds: Tally[str] = Tally()
        actions: Tally[str] = Tally()
        errors: Tally[str] = Tally()
        reasons: Tally[str] = Tally()
        for o in outcomes:
            event, verdict = o.event, o.verdict
            kinds[event.kind if event is not None else "invalid"] += 1
            actions[o.action] += 1
            if o.error is not None:
                errors[o.error.error_class] += 1
            if verdict is None:
                continue
            for reason in verdict.reasons:
                reasons[reason.detector] += 1
                if reason.campaign_id is not None and event is not None:
                    self._campaign(reason.campaign_id, event.ts)
        _add(self.events, kinds)
        _add(self.verdicts, actions)
        _add(self.dlq, errors)
        _add(self.reasons, reasons)
        for name, column in result.scores.items():
            scored = column[~np.isnan(column)]
            if len(scored):
                self.scores.observe_many(name, np.clip(scored, 0, 1))
        if result.revocations:
            self._observe_revocations(result)
        self._maybe_refresh()

    def _observe_revocations(self, result: TickResult) -> None:
        by_detector: Tally[str] = Tally()
        for r in result.revocations:
            for reason in r.verdict.reasons:
                by_detector[reason.detector] += 1
                if reason.campaign_id is not None:
                    self._campaign(reason.campaign_id, r.ts)
        _add(self.revocations, by_detector)

    def _campaign(self, campaign_id: str, ts: float) -> None:
        if self.campaigns.see(campaign_id, ts):
            self.new_campaigns.inc()

    def _maybe_refresh(self) -> None:
        if self.pipeline_collector is None:
            return
        now = time.monotonic()
        if now - self._refreshed_at >= self.refresh_seconds:
            self.pipeline_collector.refresh()
            self._refreshed_at = now


def _counter(name: str, doc: str, label: str, registry: CollectorRegistry) -> Counter:
    return Counter(name, doc, [label], registry=registry)


def _add(counter: Counter, tally: Mapping[str, int]) -> None:
    for value, n in tally.items():
        counter.labels(value).inc(n)


def _le(bound: float) -> str:
    return floatToGoString(bound)


def _stat_problem(key: object, value: object) -> str | None:
    if not isinstance(key, str) or not STAT_KEY.match(key):
        return "keys must match [a-z][a-z0-9_]*"
    if key.startswith(RESERVED_STAT_PREFIXES):
        return f"keys starting with {RESERVED_STAT_PREFIXES} are reserved"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return f"value must be a number, got {type(value).__name__}"
    if not math.isfinite(float(value)):
        return "value must be finite"
    return None
