"""Near-duplicate campaigns on real review text: templated spam, clean-label clusters."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from content_support import event, pools, removed, review_stream, run, snippet, spin, ticks

from streamguard.detectors.base import Detector
from streamguard.detectors.duplicates import NearDuplicateDetector, NearDuplicateSettings
from streamguard.events import FeedbackEvent


def spam_stream(seed: int = 0, spammers: int = 12) -> tuple[list[FeedbackEvent], set[str]]:
    """Benign reviews with a spun template from ``spammers`` accounts on two items.

    Each spammer also gives one ordinary rating just before its review (camouflage).
    """
    rng = np.random.default_rng(seed)
    events = review_stream(1500, seed)
    template = pools()[2][3]
    poisoned: set[str] = set()
    at = 300
    for a in range(spammers):
        at += int(rng.integers(40, 80))
        ts = events[at].ts
        filler = event(10_000 + 2 * a, kind="rating", account_id=f"spam{a}", ts=ts - 30.0)
        copy = event(
            10_001 + 2 * a,
            kind="review",
            account_id=f"spam{a}",
            item_id=f"target{a % 2}",
            rating=5.0,
            text=spin(template, rng),
            ts=ts - 10.0,
        )
        events[at:at] = [filler, copy]
        poisoned |= {filler.event_id, copy.event_id}
    events.sort(key=lambda e: e.ts)
    return events, poisoned


def test_is_a_detector_with_settings() -> None:
    det = NearDuplicateDetector.from_settings(NearDuplicateSettings(min_accounts=4))
    assert isinstance(det, Detector)
    assert det.name == "near_duplicate" and det.cfg.min_accounts == 4


@pytest.mark.parametrize(
    "bad",
    [
        {"num_perm": 48},
        {"bands": 30, "rows": 3},
        {"threshold": 0.0},
        {"min_accounts": 1},
        {"shingle": 12, "min_tokens": 10},
        {"ttl_days": 0},
        {"max_entries": 8},
    ],
)
def test_bad_settings_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        NearDuplicateDetector(**bad)


def test_minhash_estimates_jaccard() -> None:
    det = NearDuplicateDetector(num_perm=128, bands=32, rows=4)
    rng = np.random.default_rng(1)

    def draw(n: int) -> np.ndarray:  # shingle hashes use all 64 bits
        return rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)

    shared = draw(60)
    a = np.concatenate([shared, draw(40)])
    b = np.concatenate([shared, draw(40)])
    doc = np.repeat([0, 1], [len(a), len(b)])
    sig = det.signatures(np.concatenate([a, b]), doc, 2)
    estimate = float((sig[0] == sig[1]).mean())
    assert abs(estimate - 60 / 140) < 0.15
    again = det.signatures(np.concatenate([a[::-1], b]), doc, 2)
    assert np.array_equal(sig, again)  # a set's signature does not depend on order


def test_templated_campaign_is_found_and_everything_of_it_removed() -> None:
    events, poisoned = spam_stream()
    det = NearDuplicateDetector()
    result = run(det, events, 100)
    out = removed(result, events)
    assert poisoned <= out
    assert not (out - poisoned)  # no benign review touched
    quarantined = [eid for eid in poisoned if result["scores"][eid] >= 0.5]
    assert quarantined, "copies after the finding are quarantined at once"
    for eid in quarantined:
        assert result["campaigns"][eid] and result["campaigns"][eid].startswith("dup-")
        assert "campaign" in (result["details"][eid] or "")
    (campaign,) = det.campaigns()
    assert campaign.detector == "near_duplicate" and campaign.side == "templated-text"
    assert set(campaign.members) == {f"spam{a}" for a in range(12)}
    flagged = {flag.account_id for flag, _ in result["flags"]}
    assert flagged == {f"spam{a}" for a in range(12)}


def test_one_account_repeating_itself_is_not_a_campaign() -> None:
    rng = np.random.default_rng(3)
    text = snippet(rng, True, 4, 5)
    events = review_stream(400, 3)
    events += [
        event(5_000 + i, kind="review", account_id="fan", item_id=f"x{i}", text=spin(text, rng))
        for i in range(30)
    ]
    result = run(NearDuplicateDetector(), sorted(events, key=lambda e: e.ts), 50)
    assert max(result["scores"].values()) < 0.5


def test_clean_label_cluster_on_one_item() -> None:
    rng = np.random.default_rng(4)
    base = snippet(rng, True, 2, 2)
    events = review_stream(600, 4)
    copies = [
        event(
            7_000 + i,
            kind="label",
            label="positive",
            account_id=f"c{i % 3}",
            item_id="target",
            text=spin(base, rng),
            ts=events[100 + 30 * i].ts + 1.0,
        )
        for i in range(14)
    ]
    events = sorted(events + copies, key=lambda e: e.ts)
    det = NearDuplicateDetector()
    result = run(det, events, 100)
    ids = {e.event_id for e in copies}
    assert ids <= removed(result, events)
    assert not (removed(result, events) - ids)
    assert det.campaigns()[0].side == "single-item"


def test_short_texts_never_form_campaigns() -> None:
    events = [
        event(i, kind="review", account_id=f"u{i}", item_id="same", text="Great product, love it!")
        for i in range(40)
    ]
    result = run(NearDuplicateDetector(), events, 10)
    assert max(result["scores"].values()) == 0.0


def test_popular_phrases_in_honest_reviews_are_not_flagged() -> None:
    """Many accounts end honest reviews with "Five stars!" or "Fast delivery.": no cluster."""
    rng = np.random.default_rng(6)
    events = review_stream(1500, 6)
    events = [
        dataclasses.replace(e, text=f"{e.text} {('Five stars!', 'Fast delivery.')[i % 2]}")
        if i % 3 == 0
        else e
        for i, e in enumerate(events)
    ]
    short = [
        event(50_000 + i, kind="review", account_id=f"p{i}", item_id=f"i{int(rng.integers(200))}",
              text=("Five stars", "fast delivery!")[i % 2], ts=events[i * 10].ts + 1.0)
        for i in range(120)
    ]  # fmt: skip
    result = run(NearDuplicateDetector(), sorted(events + short, key=lambda e: e.ts), 100)
    assert max(result["scores"].values()) < 0.5
    assert not result["flags"]


def test_later_events_of_members_are_quarantined() -> None:
    events, _ = spam_stream(seed=5)
    later = event(99_999, kind="rating", account_id="spam0", ts=events[-1].ts + 60.0)
    result = run(NearDuplicateDetector(), events + [later], 100)
    assert result["scores"][later.event_id] >= 0.5
    assert result["campaigns"][later.event_id].startswith("dup-")


def test_score_does_not_change_state_and_is_deterministic() -> None:
    events, _ = spam_stream(seed=6)
    det = NearDuplicateDetector()
    for batch in ticks(events[:900], 300):
        det.learn_batch(batch, det.score_batch(batch).scores < 0.5)
    before = pickle.dumps(det)
    batch = ticks(events[900:1200], 300)[0]
    first = det.score_batch(batch)
    assert pickle.dumps(det) == before
    second = det.score_batch(batch)
    assert np.array_equal(first.scores, second.scores) and first.details == second.details
    assert run(NearDuplicateDetector(), events, 100) == run(NearDuplicateDetector(), events, 100)


def test_pickle_round_trip_continues_identically() -> None:
    events, _ = spam_stream(seed=7)
    a, b = NearDuplicateDetector(), NearDuplicateDetector()
    run(a, events[:800], 100)
    run(b, events[:800], 100)
    b = pickle.loads(pickle.dumps(b))
    assert run(a, events[800:], 100) == run(b, events[800:], 100)


def test_ticks_of_one_and_of_many_remove_the_same_events() -> None:
    events, poisoned = spam_stream(seed=8)
    one = run(NearDuplicateDetector(), events, 1)
    many = run(NearDuplicateDetector(), events, 500)
    assert removed(one, events) == removed(many, events) == poisoned
    assert {f.account_id for f, _ in one["flags"]} == {f.account_id for f, _ in many["flags"]}


def test_state_is_bounded() -> None:
    det = NearDuplicateDetector(max_entries=64, ttl_days=1.0, max_clusters=8)
    events, _ = spam_stream(seed=9)
    run(det, events, 100)
    assert det._sig.shape == (64, 64)
    assert len(det._clusters) <= 8
    late = [
        event(50_000 + i, kind="review", text=f"w{i} " * 20, ts=events[-1].ts + 10 * 86400.0)
        for i in range(3)
    ]
    run(det, late, 10)
    assert len(det._clusters) == 0  # idle clusters expire with event time
    assert len(det.campaigns()) == 1 and det.campaigns()[0].closed  # kept for review
