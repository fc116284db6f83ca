"""The core: every record gets exactly one outcome, poison never stops it, revocation works."""

from __future__ import annotations

import gc
import math

import numpy as np
import orjson
import pytest
from factories import T0, benign_stream, event, records
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.assembly import build_pipeline
from streamguard.config import KafkaSettings, load_settings
from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.events import (
    Action,
    InvalidEvent,
    Reason,
    Verdict,
    event_from_dict,
    event_from_json,
)
from streamguard.gc_tuning import GEN0_THRESHOLD
from streamguard.kafka import output_messages
from streamguard.pipeline import (
    Pipeline,
    ReleaseLog,
    SourceRecord,
    dlq_message,
    quarantine_message,
)
from streamguard.policy import Decisions, OnlineQuantile, Policy, PolicyConfig


class Scripted:
    """A decisive test detector: flags given event ids, raises on others, flags accounts."""

    def __init__(self, name="scripted", suspicious=(), explode=(), flag_accounts=()):
        self.name = name
        self.suspicious = set(suspicious)
        self.explode = set(explode)
        self.flag_accounts = list(flag_accounts)
        self.learned: list[str] = []

    def score_batch(self, batch: Batch) -> Scores:
        if any(e.event_id in self.explode for e in batch.events):
            raise RuntimeError("boom")
        scores = np.array([1.0 if e.event_id in self.suspicious else 0.0 for e in batch.events])
        details = ["scripted" if s else None for s in scores]
        flags = [
            f for f in self.flag_accounts if any(e.account_id == f.account_id for e in batch.events)
        ]
        return Scores(scores, details, [("c1" if s else None) for s in scores], flags)

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        self.learned += [e.event_id for e, k in zip(batch.events, keep, strict=True) if k]


def pipeline_with(*detectors):
    policy = Policy(
        [], [d.name for d in detectors], PolicyConfig(warmup=10, calibration_window=100)
    )
    return Pipeline(list(detectors), policy)


def test_every_record_gets_exactly_one_outcome_in_order():
    values = [event(0), b"garbage", None, event(3, rating=9), event(4)]
    result = pipeline_with(Scripted()).process(records(values))
    assert [o.record.offset for o in result.outcomes] == [0, 1, 2, 3, 4]
    assert [o.action for o in result.outcomes] == [
        Action.CLEAN,
        Action.DLQ,
        Action.DLQ,
        Action.DLQ,
        Action.CLEAN,
    ]


def test_suspicious_events_are_quarantined_with_reasons_and_not_learned():
    det = Scripted(suspicious={"e1"})
    result = pipeline_with(det).process(records([event(0), event(1), event(2)]))
    q = result.outcomes[1]
    assert q.action is Action.QUARANTINE
    assert q.verdict.reasons[0].detector == "scripted"
    assert q.verdict.reasons[0].campaign_id == "c1"
    assert q.verdict.score >= 0.5 > result.outcomes[0].verdict.score
    assert det.learned == ["e0", "e2"]


def test_a_poison_record_goes_to_the_dlq_and_the_rest_flows():
    det = Scripted(explode={"e2"}, suspicious={"e3"})
    result = pipeline_with(det).process(records([event(i) for i in range(5)]))
    actions = [o.action for o in result.outcomes]
    assert actions == [Action.CLEAN, Action.CLEAN, Action.DLQ, Action.QUARANTINE, Action.CLEAN]
    assert result.outcomes[2].error.error_class == "detector_error"
    assert "e2" not in det.learned


def test_each_detectors_scores_line_up_with_the_outcomes_and_dead_letters_have_none():
    det = Scripted(explode={"e3"}, suspicious={"e2"})
    values = [event(0), b"garbage", event(2), event(3), event(4)]
    result = pipeline_with(det, Scripted("other")).process(records(values))
    expected = [0.0, np.nan, 1.0, np.nan, 0.0]  # garbage and the event that broke a detector
    np.testing.assert_array_equal(result.scores["scripted"], expected)
    np.testing.assert_array_equal(result.scores["other"], [0.0, np.nan, 0.0, np.nan, 0.0])
    later = pipeline_with(det).process(records([event(5)], start=5))
    result.extend(later)
    assert [o.record.offset for o in result.outcomes] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(result.scores["scripted"], [*expected, 0.0])
    # a detector the other partition's pipeline did not run: no score for its events
    np.testing.assert_array_equal(result.scores["other"], [0.0, np.nan, 0.0, np.nan, 0.0, np.nan])


def test_flagged_account_revokes_its_earlier_clean_releases():
    det = Scripted()
    pipe = pipeline_with(det)
    first = pipe.process(
        records(
            [event(0, account_id="bad"), event(1, account_id="good"), event(2, account_id="bad")]
        )
    )
    assert all(o.action is Action.CLEAN for o in first.outcomes)
    det.flag_accounts = [Flag("bad", "c9", "ring of 20 accounts on item i1")]
    second = pipe.process(records([event(3, account_id="bad")], start=3))
    revoked = sorted(r.event_id for r in second.revocations)
    assert revoked == ["e0", "e2", "e3"][:2]
    assert all(
        r.verdict.retroactive and r.verdict.action is Action.QUARANTINE for r in second.revocations
    )
    assert second.revocations[0].verdict.reasons[0].campaign_id == "c9"
    # revoked once only: the release log forgets what it handed back
    third = pipe.process(records([event(4, account_id="bad")], start=4))
    assert {r.event_id for r in third.revocations} <= {"e3"}


def test_a_tick_spanning_weeks_still_revokes_releases_from_just_before_it():
    """On a slow stream (MovieLens: 500 events are weeks) the finding can come early in a
    long tick; the revocation window counts from the tick's start, not its last event."""
    day = 86400.0
    det = Scripted()
    pipe = pipeline_with(det)
    pipe.releases = ReleaseLog(max_accounts=10, per_account=8, window_seconds=14 * day)
    pipe.process(records([event(0, account_id="bad", ts=T0), event(1, ts=T0 + 1)]))
    det.flag_accounts = [Flag("bad", "c9", "ring on item i1")]
    tick = [event(2, account_id="bad", ts=T0 + 2 * day), event(3, ts=T0 + 40 * day)]
    revoked = pipe.process(records(tick, start=2)).revocations
    assert [r.event_id for r in revoked] == ["e0"]


def test_on_a_quiet_stream_a_finding_months_later_still_revokes_through_the_pipeline():
    """MovieLens's 20,000 ratings span two years: a drip found months in must take back
    what its members released then, while the log holds few accounts."""
    day = 86400.0
    det = Scripted()
    pipe = pipeline_with(det)
    pipe.releases = ReleaseLog(10, per_account=8, window_seconds=14 * day, keep_accounts=5)
    pipe.process(records([event(0, account_id="bad", ts=T0), event(1, ts=T0 + 1)]))
    pipe.process(records([event(2, ts=T0 + 90 * day)], start=2))
    det.flag_accounts = [Flag("bad", "c9", "drip on item i1")]
    tick = [event(3, account_id="bad", ts=T0 + 120 * day)]
    revoked = pipe.process(records(tick, start=3)).revocations
    assert [r.event_id for r in revoked] == ["e0"]


def test_past_the_window_only_accounts_whose_whole_history_the_log_holds_are_taken():
    """A drip's small accounts found late are taken back whole; a busy account that filled
    its log loses no more than the window, as it would without the floor."""
    log = ReleaseLog(max_accounts=1_000, per_account=3, window_seconds=100.0, keep_accounts=30)
    for i, (account, ts) in enumerate([("small", 10), ("small", 20)] + [("busy", 50)] * 4):
        raw = event(i, account_id=account, ts=T0 + ts + i)
        log.record(event_from_dict(raw), orjson.dumps(raw))
    now = T0 + 155.0  # the window starts at T0 + 55: only busy's newest release is inside
    log.expire(now)
    assert [e.event_id for e, _ in log.take("small", 0.0, now)] == ["e0", "e1"]
    assert [e.event_id for e, _ in log.take("busy", 0.0, now)] == ["e5"]


def test_a_flag_for_some_kinds_revokes_only_those_and_keeps_the_rest_revocable():
    log = ReleaseLog(max_accounts=10, per_account=8, window_seconds=1e9)
    kinds = ["rating", "label", "rating", "label"]
    for i, kind in enumerate(kinds):
        extra = {"label": "positive", "text": "fine"} if kind == "label" else {}
        raw = event(i, account_id="a", ts=T0 + i, kind=kind, **extra)
        log.record(event_from_dict(raw), orjson.dumps(raw))
    labels = log.take("a", 0.0, T0 + 9, frozenset({"label"}))
    assert [e.event_id for e, _ in labels] == ["e1", "e3"]
    assert [e.event_id for e, _ in log.take("a", 0.0, T0 + 9)] == ["e0", "e2"]


def test_release_log_hands_back_the_raw_values_byte_for_byte():
    log = ReleaseLog(max_accounts=10, per_account=3, window_seconds=1e9)
    raws = [orjson.dumps(event(i, account_id="a"), option=orjson.OPT_INDENT_2) for i in range(4)]
    raws[1] += b"\n \t"  # newlines and trailing whitespace survive the packing
    for raw in raws:
        log.record(event_from_json(raw), raw)
    assert [value for _, value in log.take("a", 0.0, T0 + 9)] == raws[1:]
    with pytest.raises(ValueError, match="per_account"):
        ReleaseLog(max_accounts=10, per_account=0, window_seconds=1.0)


@pytest.mark.parametrize("per_account", [1, 3, 5, 8, 64])
def test_release_log_keeps_exactly_the_newest_per_account_releases(per_account):
    """Everything up to the cap stays revocable (the old tuple log's slice kept only about
    half of it once an account had more than half the cap)."""
    log = ReleaseLog(max_accounts=10, per_account=per_account, window_seconds=1e9)
    for i in range(100):
        raw = event(i, account_id="a", ts=T0 + i)
        log.record(event_from_dict(raw), orjson.dumps(raw))
    newest = [f"e{i}" for i in range(100 - per_account, 100)]
    assert [e.event_id for e, _ in log.take("a", 0.0, T0 + 100)] == newest


def test_duplicate_detector_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        pipeline_with(Scripted("x"), Scripted("x"))


def test_unknown_fields_reach_the_output_topics_unchanged():
    """DESIGN.md: unknown fields are kept and passed through. The clean and quarantine
    topics carry the event's raw value, so they keep fields the parsed event does not."""
    values = [orjson.dumps(event(i, source="app", attrs={"x": 1})) for i in range(2)]
    result = pipeline_with(Scripted(suspicious={"e1"})).process(records(values))
    clean, quarantined = output_messages(result, KafkaSettings())
    assert clean.value == values[0]
    assert orjson.loads(quarantined.value)["event"] == orjson.loads(values[1])


def test_quarantine_and_dlq_messages_follow_the_contract():
    value = orjson.dumps(event(1, extra_field="kept"))
    verdict = Verdict(Action.QUARANTINE, 0.9, (Reason("anomaly", 0.9, "odd", 0.7, "c1"),))
    body = orjson.loads(quarantine_message(value, verdict))
    assert body["event"] == orjson.loads(value)
    assert body["verdict"]["action"] == "quarantine"
    assert body["verdict"]["reasons"] == [
        {
            "detector": "anomaly",
            "score": 0.9,
            "detail": "odd",
            "threshold": 0.7,
            "campaign_id": "c1",
        }
    ]
    dlq = orjson.loads(
        dlq_message(SourceRecord(b"\xffbad", "t", 3, 42), InvalidEvent("why", "json"))
    )
    assert dlq["error"] == "why" and (dlq["topic"], dlq["partition"], dlq["offset"]) == ("t", 3, 42)
    assert "raw_base64" in dlq  # not UTF-8: the exact bytes are kept too


def test_default_pipeline_stays_within_its_quarantine_budget_on_benign_traffic():
    """A fresh deployment on defaults: the calibrated detectors spend their share of the
    budget (they do quarantine outliers), and everything together stays within it. A short
    calibration window makes 30k events a long run: the threshold has caught up with the
    forest, which scores everything higher while it is young."""
    settings = load_settings(overrides={"policy": {"warmup": 500, "calibration_window": 5_000}})
    budget = settings.policy.target_quarantine_rate
    calibrated_part = budget * settings.policy.calibrated_share
    pipe = build_pipeline(settings)
    stream = benign_stream(30_000, seed=3)
    verdicts = []
    for start in range(0, len(stream), 500):
        verdicts += [
            o.verdict for o in pipe.process(records(stream[start : start + 500], start)).outcomes
        ]
    after_warmup = verdicts[5_000:]
    quarantined = [v for v in after_warmup if v is not None and v.action is Action.QUARANTINE]
    by_anomaly = [v for v in quarantined if any(r.detector == "anomaly" for r in v.reasons)]
    assert len(quarantined) / len(after_warmup) <= budget
    assert 0.5 * calibrated_part <= len(by_anomaly) / len(after_warmup) <= 2 * calibrated_part


def test_same_ticks_give_same_verdicts():
    stream = benign_stream(4_000, seed=5)

    def run():
        pipe = build_pipeline(load_settings(overrides={"policy": {"warmup": 200}}))
        return [
            (o.action, o.verdict.score)
            for start in range(0, 4_000, 250)
            for o in pipe.process(records(stream[start : start + 250], start)).outcomes
        ]

    assert run() == run()


small_int = st.integers(-(2**53), 2**53)
field_values = st.one_of(
    st.none(),
    st.booleans(),
    small_int,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.sampled_from(["rating", "review", "label", "vote", "2024-01-01T00:00:00Z", "positive"]),
    st.lists(small_int, max_size=3),
    st.dictionaries(st.text(max_size=5), small_int, max_size=3),
)
fuzzed_event = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=10),
        "kind": st.sampled_from(["rating", "review", "label", "vote"]),
    },
    optional={
        k: field_values
        for k in (
            "ts",
            "account_id",
            "item_id",
            "rating",
            "text",
            "label",
            "account_created_at",
            "ip",
            "attrs",
        )
    },
)
fuzzed_record = st.one_of(fuzzed_event.map(orjson.dumps), st.binary(max_size=80), st.none())


@settings(max_examples=60, deadline=None)
@given(st.lists(fuzzed_record, min_size=1, max_size=40))
def test_fuzzed_input_never_crashes_the_default_pipeline(values):
    pipe = build_pipeline(load_settings(overrides={"policy": {"warmup": 10}}))
    for _ in range(2):  # second pass: the same input against state that has seen it
        result = pipe.process(records(values))
        assert len(result.outcomes) == len(values)
        for o in result.outcomes:
            assert (o.action is Action.DLQ) == (o.error is not None)


@pytest.mark.parametrize("keep_accounts", [0, 29])
def test_release_log_forgets_accounts_whose_releases_left_the_window(keep_accounts):
    """A floor the window already holds (``keep_accounts`` 29) changes nothing."""
    log = ReleaseLog(1_000, per_account=8, window_seconds=100.0, keep_accounts=keep_accounts)
    for i in range(50):
        raw = event(i, account_id=f"a{i}", ts=T0 + i)
        log.record(event_from_dict(raw), orjson.dumps(raw))
    log.expire(T0 + 120.5)  # the horizon, T0 + 20.5, falls between releases 20 and 21
    assert len(log.table) == 29
    assert log.take("a20", 0.0, T0 + 49) == []
    assert [e.event_id for e, _ in log.take("a21", 0.0, T0 + 49)] == ["e21"]


def test_on_a_quiet_stream_the_release_log_keeps_its_most_recently_active_accounts():
    """A drip of a few fakes a week is found months in: where the window holds fewer
    accounts than ``keep_accounts``, the most recently active stay revocable, however old
    their releases."""
    log = ReleaseLog(max_accounts=1_000, per_account=8, window_seconds=100.0, keep_accounts=30)
    for i in range(50):
        raw = event(i, account_id=f"a{i}", ts=T0 + i)
        log.record(event_from_dict(raw), orjson.dumps(raw))
    now = T0 + 10_000.0  # every release is far outside the window
    log.expire(now)
    assert len(log.table) == 30
    assert log.reach(now) == -math.inf
    assert log.take("a19", 0.0, now) == []
    assert [e.event_id for e, _ in log.take("a20", 0.0, now)] == ["e20"]


def test_release_log_keeps_the_newest_releases_per_account():
    log = ReleaseLog(max_accounts=10, per_account=3, window_seconds=1e9)
    for i in range(5):
        raw = event(i, account_id="a", ts=T0 + i)
        log.record(event_from_dict(raw), orjson.dumps(raw))
    assert [e.event_id for e, _ in log.take("a", 0.0, T0 + 5)] == ["e2", "e3", "e4"]
    assert log.take("a", 0.0, T0 + 5) == []  # handed back once


def test_building_a_pipeline_raises_the_collectors_threshold_and_zero_leaves_it() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        build_pipeline(load_settings(overrides={"pipeline": {"gc_gen0_threshold": 0}}))
        assert gc.get_threshold() == (700, 10, 10)
        build_pipeline(load_settings())
        assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
        gc.set_threshold(2 * GEN0_THRESHOLD, 10, 10)  # a process's own higher setting stays
        build_pipeline(load_settings())
        assert gc.get_threshold() == (2 * GEN0_THRESHOLD, 10, 10)
    finally:
        gc.set_threshold(*saved)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=400),
    st.sampled_from([0.002, 0.01, 0.25, 0.5, 0.999]) | st.floats(0.0, 1.0),
    st.integers(1, 300),
)
def test_the_online_quantile_is_numpys_quantile_of_its_window_to_the_last_bit(
    values, q, window
) -> None:
    quantile = OnlineQuantile(q, window)
    for start in range(0, len(values), 37):  # pushed a tick at a time, wrapping the ring
        quantile.push(np.array(values[start : start + 37]))
        expected = float(np.quantile(quantile.buffer[: quantile.size], 1.0 - q))
        assert quantile.value() == expected


def test_a_detector_still_warming_up_sets_no_threshold_even_from_a_whole_warmup_of_scores():
    policy = Policy(["anomaly"], [], PolicyConfig(warmup=10, calibration_window=100))
    clean = Decisions([Verdict(Action.CLEAN, 0.0)] * 20, held=[])
    policy.learn({"anomaly": Scores(np.zeros(20), [None] * 20, warming=True)}, clean)
    assert policy.thresholds["anomaly"] == np.inf  # was 0.0: every later score above it
    policy.learn({"anomaly": Scores(np.linspace(0.0, 1.0, 20), [None] * 20)}, clean)
    assert 0.9 < policy.thresholds["anomaly"] <= 1.0


def test_ticks_as_long_as_the_policy_warmup_leave_the_next_tick_alone():
    """A half-space forest scores 0 in its first window; a first tick of 1,000 events (the
    policy's warmup) made that the threshold, and quarantined all of the second tick."""
    pipeline = build_pipeline(load_settings(overrides={"pipeline": {"micro_batch": 1000}}))
    stream = benign_stream(3_000, seed=3, accounts=2_000, items=300)
    ticks = [pipeline.process(records(stream[s : s + 1000], start=s)) for s in (0, 1000, 2000)]
    assert pipeline.detectors[0].name == "anomaly"
    held = [sum(o.action is Action.QUARANTINE for o in t.outcomes) for t in ticks]
    assert held[1] < 50 and held[2] < 50, held


def _verdicts_in_ticks(lines: list[bytes], tick: int, micro_batch: int):
    settings = load_settings(overrides={"pipeline": {"micro_batch": micro_batch}})
    pipeline = build_pipeline(settings)
    rows, revoked, columns = [], [], []
    for s in range(0, len(lines), tick):
        result = pipeline.process(records(lines[s : s + tick], start=s))
        rows += [
            (
                o.action,
                o.verdict.score if o.verdict else None,
                o.verdict.reasons if o.verdict else None,
            )
            for o in result.outcomes
        ]
        revoked += [r.event_id for r in result.revocations]
        columns.append(result.scores)
    scores = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
    return rows, revoked, scores


def test_a_long_tick_is_scored_in_micro_batches_exactly_as_short_ticks_would_be():
    """What a poll brings must not change verdicts: a tick of 1,000 records with
    micro-batches of 250 gives every record the verdict, score and reasons that ticks of
    250 give, and the same revocations (a campaign found late in the stream)."""
    from streamguard.simulate import simulate

    lines = [orjson.dumps(e) for e in simulate("shilling_random", 6_000, seed=2).events]
    lines.insert(1234, b"not json")  # a dead letter shifts the cut points inside a tick
    long_rows, long_revoked, long_scores = _verdicts_in_ticks(lines, 1_000, 250)
    short_rows, short_revoked, short_scores = _verdicts_in_ticks(lines, 250, 250)
    assert long_rows == short_rows
    assert any(action is Action.QUARANTINE for action, _, _ in long_rows)
    assert long_revoked == short_revoked and long_revoked  # the campaign revoked releases
    assert long_scores.keys() == short_scores.keys()
    for name in long_scores:
        np.testing.assert_array_equal(long_scores[name], short_scores[name])
    # and unsliced, the long ticks do score differently: the test can tell them apart
    unsliced_rows, _, _ = _verdicts_in_ticks(lines, 1_000, 1_000)
    assert unsliced_rows != short_rows
