"""Unit tests of streamguard.metrics: names, counts, collectors, bounded labels."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from factories import T0, benign_stream, event, records
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamguard.assembly import build_pipeline
from streamguard.config import Settings
from streamguard.detectors.base import Batch, Scores
from streamguard.events import Action, FeedbackEvent, Reason, Verdict, parse_event
from streamguard.metrics import (
    SCORE_BUCKETS,
    CampaignTracker,
    Metrics,
    ReportsStats,
    ScoreHistograms,
)
from streamguard.pipeline import Outcome, Pipeline, Revocation, SourceRecord, TickResult
from streamguard.policy import Policy
from streamguard.quarantine.store import QuarantineStore


def scrape(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} as Prometheus would read it."""
    text = generate_latest(metrics.registry).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def parsed(i: int, **fields: Any) -> FeedbackEvent:
    e = parse_event(orjson.dumps(event(i, **fields)))
    assert isinstance(e, FeedbackEvent)
    return e


def quarantined(i: int, detector: str, campaign: str | None = None, **fields: Any) -> Outcome:
    e = parsed(i, **fields)
    reason = Reason(detector, 0.9, "why", None, campaign)
    verdict = Verdict(Action.QUARANTINE, 0.9, (reason,))
    return Outcome(SourceRecord(b"{}", "t", 0, i), Action.QUARANTINE, e, verdict)


def clean(i: int, **fields: Any) -> Outcome:
    verdict = Verdict(Action.CLEAN, 0.1, ())
    return Outcome(SourceRecord(b"{}", "t", 0, i), Action.CLEAN, parsed(i, **fields), verdict)


def dead(i: int, raw: bytes) -> Outcome:
    error = parse_event(raw)
    assert not isinstance(error, FeedbackEvent)
    return Outcome(SourceRecord(raw, "t", 0, i), Action.DLQ, error=error)


class StatsDetector:
    """A quiet detector that reports numbers through the optional stats() protocol."""

    def __init__(self, name: str, stats: dict[str, Any] | Exception) -> None:
        self.name = name
        self._stats = stats
        self.calls = 0

    def score_batch(self, batch: Batch) -> Scores:
        return Scores.quiet(len(batch))

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        self.calls += 1
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats


def watched(*detectors: StatsDetector) -> tuple[Metrics, Pipeline]:
    pipeline = Pipeline(list(detectors), Policy([], [d.name for d in detectors]))
    return Metrics(refresh_seconds=0.0).watch(pipeline), pipeline


# -- names -----------------------------------------------------------------------------------


def test_names_follow_prometheus_conventions() -> None:
    metrics = Metrics().watch(build_pipeline(Settings()))
    families = list(metrics.registry.collect())
    ours = [f for f in families if f.name.startswith("streamguard")]
    assert len(ours) >= 15
    for family in ours:
        if family.type == "counter":
            assert all(s.name == f"{family.name}_total" for s in family.samples), family.name
        else:
            assert not family.name.endswith("_total"), family.name
        assert not any(s.name.endswith("_created") for s in family.samples), family.name
    names = {s.name for f in families for s in f.samples}
    for expected in (
        "streamguard_events_total",
        "streamguard_verdicts_total",
        "streamguard_quarantine_reasons_total",
        "streamguard_dead_letters_total",
        "streamguard_revocations_total",
        "streamguard_campaigns_detected_total",
        "streamguard_campaigns_active",
        "streamguard_detector_score_bucket",
        "streamguard_processing_latency_seconds_bucket",
        "streamguard_commit_latency_seconds_bucket",
        "streamguard_batch_size_events_bucket",
        "streamguard_commit_errors_total",
        "streamguard_produce_errors_total",
        "streamguard_ready",
        "streamguard_state_entries",
        "streamguard_build_info",
        "process_resident_memory_bytes",
    ):
        assert expected in names, expected


def test_known_label_values_exist_at_zero_before_any_event() -> None:
    samples = scrape(Metrics().watch(build_pipeline(Settings())))
    for kind in ("rating", "review", "label", "vote", "invalid"):
        assert value(samples, "streamguard_events_total", kind=kind) == 0
    for action in ("clean", "quarantine", "dlq"):
        assert value(samples, "streamguard_verdicts_total", action=action) == 0
    assert value(samples, "streamguard_dead_letters_total", error_class="json") == 0
    assert value(samples, "streamguard_quarantine_reasons_total", detector="anomaly") == 0


# -- observe_tick ------------------------------------------------------------------------------


def test_observe_tick_counts_a_hand_built_tick() -> None:
    metrics = Metrics()
    nan = float("nan")
    tick = TickResult(
        [
            clean(1),
            clean(2, kind="review", text="fine", rating=4),
            quarantined(3, "a", campaign="c1"),
            quarantined(4, "a", campaign="c1"),
            quarantined(5, "b"),
            dead(6, b"not json"),
            dead(7, b'{"event_id": "x"}'),
        ],
        scores={  # dead letters have no scores
            "a": np.array([0.2, 0.3, 0.95, 0.95, nan, nan, nan]),
            "b": np.array([nan, nan, nan, nan, 0.95, nan, nan]),
        },
    )
    metrics.observe_tick(tick, 0.004)
    s = scrape(metrics)
    assert value(s, "streamguard_events_total", kind="rating") == 4
    assert value(s, "streamguard_events_total", kind="review") == 1
    assert value(s, "streamguard_events_total", kind="invalid") == 2
    assert value(s, "streamguard_verdicts_total", action="clean") == 2
    assert value(s, "streamguard_verdicts_total", action="quarantine") == 3
    assert value(s, "streamguard_verdicts_total", action="dlq") == 2
    assert value(s, "streamguard_quarantine_reasons_total", detector="a") == 2
    assert value(s, "streamguard_quarantine_reasons_total", detector="b") == 1
    assert value(s, "streamguard_dead_letters_total", error_class="json") == 1
    assert value(s, "streamguard_dead_letters_total", error_class="contract") == 1
    assert value(s, "streamguard_campaigns_detected_total") == 1
    assert value(s, "streamguard_batch_size_events_sum") == 7
    assert value(s, "streamguard_processing_latency_seconds_sum") == pytest.approx(0.004)
    assert value(s, "streamguard_detector_score_count", detector="a") == 4
    assert value(s, "streamguard_detector_score_sum", detector="a") == pytest.approx(2.4)
    assert value(s, "streamguard_detector_score_count", detector="b") == 1


def test_revocations_count_by_detector_and_their_campaigns_are_new() -> None:
    metrics = Metrics()
    reason = Reason("campaign", 1.0, "retroactive: c9", None, "c9")
    verdict = Verdict(Action.QUARANTINE, 1.0, (reason,), retroactive=True)
    revoked = [Revocation(f"e{i}", "a1", "i1", T0 + i, b"{}", verdict) for i in range(3)]
    metrics.observe_tick(TickResult([], revoked), 0.001)
    metrics.observe_tick(TickResult([quarantined(9, "campaign", campaign="c9")]), 0.001)
    s = scrape(metrics)
    assert value(s, "streamguard_revocations_total", detector="campaign") == 3
    assert value(s, "streamguard_campaigns_detected_total") == 1  # c9 once, not twice


def test_counts_match_a_real_pipeline_run() -> None:
    pipeline = build_pipeline(Settings())
    metrics = Metrics().watch(pipeline)
    values: list[Any] = [*benign_stream(1500), b"\xff", None, {"event_id": "bad"}]
    totals: dict[str, int] = {"clean": 0, "quarantine": 0, "dlq": 0}
    recs = records(values)
    for start in range(0, len(recs), 500):
        result = pipeline.process(recs[start : start + 500])
        metrics.observe_tick(result, 0.01)
        for o in result.outcomes:
            totals[o.action.value] += 1
    s = scrape(metrics)
    for action, n in totals.items():
        assert value(s, "streamguard_verdicts_total", action=action) == n
    assert sum(s["streamguard_events_total"].values()) == len(values)
    assert value(s, "streamguard_batch_size_events_count") == 4
    assert value(s, "streamguard_detector_score_count", detector="anomaly") == 1500


def test_score_histogram_matches_prometheus_client_histogram() -> None:
    rng = np.random.default_rng(3)
    samples = np.concatenate([rng.random(997), [0.0, 0.05, 0.5, 1.0]])  # bounds land inside
    ours = ScoreHistograms("h", "doc", "detector", SCORE_BUCKETS)
    for chunk in np.array_split(samples, 7):
        ours.observe_many("d", chunk)
    registry = CollectorRegistry()
    reference = Histogram("h", "doc", ["detector"], buckets=SCORE_BUCKETS, registry=registry)
    for x in samples:
        reference.labels("d").observe(float(x))
    expected = {
        (s.name, s.labels.get("le")): s.value
        for f in registry.collect()
        for s in f.samples
        if not s.name.endswith("_created")
    }
    got = {(s.name, s.labels.get("le")): s.value for f in ours.collect() for s in f.samples}
    assert got.keys() == expected.keys()
    for key, v in expected.items():
        assert got[key] == pytest.approx(v), key


def test_score_histogram_ignores_non_finite_scores() -> None:
    ours = ScoreHistograms("h", "doc", "detector", SCORE_BUCKETS)
    ours.observe_many("d", np.array([0.2, np.nan, np.inf, 0.4]))
    samples = {(s.name, s.labels.get("le")): s.value for f in ours.collect() for s in f.samples}
    assert samples[("h_count", None)] == 2
    assert samples[("h_sum", None)] == pytest.approx(0.6)


# -- bounded labels --------------------------------------------------------------------------


def test_series_count_does_not_grow_with_accounts_items_or_campaigns() -> None:
    metrics = Metrics()

    def tick(start: int) -> TickResult:
        outcomes = []
        for i in range(start, start + 200):
            ids = {"account_id": f"acc{i}", "item_id": f"item{i}"}
            if i % 4 == 0:
                outcomes.append(quarantined(i, "a", campaign=f"c{i}", **ids))
            else:
                outcomes.append(clean(i, **ids))
        return TickResult(outcomes, scores={"a": np.full(len(outcomes), 0.1)})

    metrics.observe_tick(tick(0), 0.01)
    first = sum(len(v) for v in scrape(metrics).values())
    for start in range(200, 4000, 200):
        metrics.observe_tick(tick(start), 0.01)
    after = scrape(metrics)
    assert sum(len(v) for v in after.values()) == first
    assert value(after, "streamguard_campaigns_detected_total") == 1000
    label_values = {v for series in after.values() for labels in series for _, v in labels}
    assert not any(v.startswith(("acc", "item", "c1")) for v in label_values)


# -- campaigns --------------------------------------------------------------------------------


def test_campaign_tracker_counts_new_ids_and_active_ones_in_event_time() -> None:
    tracker = CampaignTracker(window_seconds=3600, max_ids=3)
    assert tracker.see("c1", T0) is True
    assert tracker.see("c1", T0 + 10) is False
    assert tracker.see("c2", T0 + 5000) is True
    assert tracker.active(T0 + 5000) == 1  # c1 was last seen 4990 s earlier
    assert tracker.active(T0 + 100) == 2
    tracker.see("c3", T0 + 5001)
    tracker.see("c4", T0 + 5002)  # evicts c1, the least recently seen
    assert tracker.see("c1", T0 + 5003) is True
    with pytest.raises(ValueError):
        CampaignTracker(window_seconds=0)


def test_campaigns_active_comes_from_the_pipeline_watermark() -> None:
    metrics, pipeline = watched(StatsDetector("d", {}))
    pipeline.process(records([event(0)]))  # moves the watermark to T0
    metrics.observe_tick(TickResult([quarantined(0, "d", campaign="c1")]), 0.01)
    assert value(scrape(metrics), "streamguard_campaigns_active") == 1


# -- detector stats protocol ------------------------------------------------------------------


def test_detector_stats_become_metrics_by_the_naming_rule() -> None:
    campaign = StatsDetector(
        "campaign", {"open_campaigns": 2, "campaigns_total": 5, "state_entries": 40}
    )
    drift = StatsDetector("drift", {"drift_alarms_total": 3.0, "open_windows": 1})
    assert isinstance(campaign, ReportsStats)
    metrics, _ = watched(campaign, drift)
    s = scrape(metrics)
    assert value(s, "streamguard_detector_open_campaigns", detector="campaign") == 2
    assert value(s, "streamguard_detector_campaigns_total", detector="campaign") == 5
    assert value(s, "streamguard_detector_drift_alarms_total", detector="drift") == 3
    assert value(s, "streamguard_detector_open_windows", detector="drift") == 1
    assert value(s, "streamguard_state_entries", table="campaign") == 40
    assert value(s, "streamguard_state_entries", table="accounts") == 0
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE streamguard_detector_drift_alarms_total counter" in text
    assert "# TYPE streamguard_detector_open_campaigns gauge" in text


def test_bad_stats_are_skipped_with_one_warning_and_never_break_a_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = StatsDetector(
        "bad",
        {"Bad-Key": 1, "score_p99": 1, "nan_value": float("nan"), "text": "x", "ok": 1},
    )
    broken = StatsDetector("broken", RuntimeError("boom"))
    caplog.set_level(logging.WARNING, logger="streamguard.metrics")
    metrics, _ = watched(bad, broken)
    for _ in range(3):
        metrics.observe_tick(TickResult([]), 0.001)
    s = scrape(metrics)
    assert value(s, "streamguard_detector_ok", detector="bad") == 1
    assert not any(
        n.startswith(("streamguard_detector_nan", "streamguard_detector_text")) for n in s
    )
    assert "streamguard_detector_score_p99" not in s
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 5  # four bad keys of "bad" and the raising "broken", once each


def test_stats_are_read_by_the_main_loop_not_by_scrapes() -> None:
    detector = StatsDetector("d", {"open_campaigns": 1})
    pipeline = Pipeline([detector], Policy([], ["d"]))
    metrics = Metrics(refresh_seconds=3600.0).watch(pipeline)
    calls = detector.calls
    for _ in range(5):
        generate_latest(metrics.registry)
    assert detector.calls == calls  # scrapes read the snapshot
    metrics.observe_tick(TickResult([]), 0.001)
    assert detector.calls == calls  # refresh interval not reached
    metrics.refresh_seconds = 0.0
    metrics.observe_tick(TickResult([]), 0.001)
    assert detector.calls == calls + 1


def test_thresholds_and_state_tables_come_from_the_pipeline() -> None:
    pipeline = build_pipeline(Settings())
    metrics = Metrics(refresh_seconds=0.0).watch(pipeline)
    recs = records(benign_stream(2500))
    for start in range(0, len(recs), 500):
        metrics.observe_tick(pipeline.process(recs[start : start + 500]), 0.01)
    s = scrape(metrics)
    assert value(s, "streamguard_state_entries", table="accounts") == len(
        pipeline.features.accounts
    )
    assert value(s, "streamguard_state_entries", table="items") > 0
    assert 0 < value(s, "streamguard_detector_threshold", detector="anomaly") <= 1
    assert value(s, "streamguard_event_time_watermark_seconds") == pipeline.features.watermark


def test_watching_keeps_the_pipeline_picklable() -> None:
    pipeline = build_pipeline(Settings())
    Metrics().watch(pipeline)
    pickle.loads(pickle.dumps(pipeline))  # metrics hold the pipeline, never the reverse


# -- review queue -----------------------------------------------------------------------------


def test_review_queue_depth_and_age_come_from_the_store(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q.db")
    try:
        metrics = Metrics().watch(build_pipeline(Settings()), store)
        s = scrape(metrics)
        assert value(s, "streamguard_review_queue_depth_events") == 0
        assert value(s, "streamguard_review_oldest_age_seconds") == 0
        outcome = quarantined(1, "anomaly")
        outcome.record = SourceRecord(orjson.dumps(event(1)), "t", 0, 1)
        store.add_tick(TickResult([outcome]))
        s = scrape(metrics)
        assert value(s, "streamguard_review_queue_depth_events") == 1
        assert value(s, "streamguard_review_oldest_age_seconds") >= 0
        assert value(s, "streamguard_review_decisions_total", outcome="approved") == 0
    finally:
        store.close()
