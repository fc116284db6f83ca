"""Label flips on real review text: rings caught, honest mislabels tolerated."""

from __future__ import annotations

import dataclasses
import doctest
import pickle

import numpy as np
import pytest
from content_support import event, labelled_stream, removed, run, snippet, ticks

from streamguard.detectors import label_flip, text_model
from streamguard.detectors.base import Detector
from streamguard.detectors.label_flip import LabelFlipDetector, LabelFlipSettings
from streamguard.detectors.text_model import TextModel
from streamguard.events import FeedbackEvent
from streamguard.text import doc_features, tokenize_texts


def with_noise(events: list[FeedbackEvent], rate: float, seed: int) -> list[FeedbackEvent]:
    """Honest users mislabel a few texts."""
    rng = np.random.default_rng(seed)
    flip = {"positive": "negative", "negative": "positive"}
    return [
        dataclasses.replace(e, label=flip[e.label or "positive"]) if rng.random() < rate else e
        for e in events
    ]


def ring_stream(
    seed: int = 0, members: int = 6, each: int = 15, flip_rate: float = 0.9, start: int = 800
) -> tuple[list[FeedbackEvent], set[str]]:
    rng = np.random.default_rng(seed)
    events = with_noise(labelled_stream(2500, seed), 0.03, seed)
    poisoned: set[str] = set()
    t0, t1 = events[start].ts, events[-1].ts
    for a in range(members):
        for k in range(each):
            positive = bool(rng.random() < 0.7)
            said = positive ^ bool(rng.random() < flip_rate)
            e = event(
                500_000 + a * each + k,
                account_id=f"ring{a}",
                ip="203.0.113.7" if a % 2 else None,
                text=snippet(rng, positive),
                label="positive" if said else "negative",
                ts=float(rng.uniform(t0, t1)),
            )
            events.append(e)
            poisoned.add(e.event_id)
    events.sort(key=lambda e: e.ts)
    return events, poisoned


def test_doctests() -> None:
    assert doctest.testmod(label_flip).failed == 0
    assert doctest.testmod(text_model).failed == 0


def test_is_a_detector_with_settings() -> None:
    det = LabelFlipDetector.from_settings(LabelFlipSettings(threshold=5.0))
    assert isinstance(det, Detector) and det.name == "label_flip" and det.cfg.threshold == 5.0


@pytest.mark.parametrize(
    "bad",
    [
        {"confidence": 0.4},
        {"min_p0": 0.2, "max_p0": 0.1},
        {"flip_rate": 0.1},
        {"threshold": 0.0},
        {"floor": 1.0},
        {"ttl_days": 0},
    ],
)
def test_bad_settings_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        LabelFlipDetector(**bad)


def test_text_model_learns_polarity_from_real_reviews() -> None:
    rng = np.random.default_rng(1)
    model = TextModel(bits=16)
    texts = [snippet(rng, bool(i % 3)) for i in range(1500)]
    cls = np.array([1 if i % 3 else 0 for i in range(1500)])
    tb = tokenize_texts(texts)
    feats, doc, _ = doc_features(tb)
    for start in range(0, 1200, 100):
        sel = (doc >= start) & (doc < start + 100)
        model.learn("sentiment", [0, 1], feats[sel], doc[sel] - start, cls[start : start + 100])
    sel = doc >= 1200
    p = model.proba("sentiment", [0, 1], feats[sel], doc[sel] - 1200, 300)
    accuracy = float((p.argmax(axis=1) == cls[1200:]).mean())
    assert accuracy > 0.8
    assert model.familiar("sentiment", feats[:5], 1).any()
    assert not model.familiar("nope", feats[:5], 1).any()


def test_taking_grams_out_equals_judging_the_text_without_them() -> None:
    """What a backdoor check needs: a text read without one word, or one phrase."""
    rng = np.random.default_rng(2)
    model = TextModel(bits=16)
    texts = [snippet(rng, bool(i % 3)) for i in range(600)]
    cls = np.array([1 if i % 3 else 0 for i in range(600)])
    feats, doc, _ = doc_features(tokenize_texts(texts))
    model.learn("sentiment", [0, 1], feats, doc, cls)
    feats, doc, _ = doc_features(tokenize_texts(["the staff was rude and the room was dirty"]))
    together = np.arange(len(feats))
    together[:2] = 0  # the first two grams go out as one phrase
    p, without = model.proba_without("sentiment", [0, 1], feats, doc, 1, together=together)
    assert np.allclose(p, model.proba("sentiment", [0, 1], feats, doc, 1))
    for i in range(len(feats)):
        out = np.isin(together, together[i])
        rest = model.proba("sentiment", [0, 1], feats, doc, 1, mask=~out)
        assert np.allclose(without[i], rest[0])


def test_a_ring_is_caught_and_honest_users_are_not() -> None:
    events, poisoned = ring_stream()
    det = LabelFlipDetector()
    result = run(det, events, 100)
    out = removed(result, events)
    assert len(out & poisoned) / len(poisoned) >= 0.8
    assert not (out - poisoned), "honest mislabels (3 %) never add up to a flag"
    flagged = {flag.account_id for flag, _ in result["flags"]}
    assert flagged == {f"ring{a}" for a in range(6)}
    quarantined = [eid for eid in poisoned if result["scores"][eid] >= 0.5]
    assert all((result["campaigns"][eid] or "").startswith("flip-") for eid in quarantined)
    assert "contradict" in (result["details"][quarantined[-1]] or "")
    ring_ids = {r for r, members in det.rings() if len(members) > 1}
    assert ring_ids, "accounts sharing an IP end up in one ring"


def test_reviews_whose_rating_contradicts_the_text() -> None:
    rng = np.random.default_rng(2)
    events = labelled_stream(1500, 2)
    liar = [
        event(
            600_000 + k,
            kind="review",
            account_id="liar",
            rating=5.0,
            text=snippet(rng, False, 2, 3),
            ts=events[900 + 40 * k].ts + 1.0,
        )
        for k in range(12)
    ]
    result = run(LabelFlipDetector(), sorted(events + liar, key=lambda e: e.ts), 100)
    assert {f.account_id for f, _ in result["flags"]} == {"liar"}


def test_score_does_not_change_state_and_is_deterministic() -> None:
    events, _ = ring_stream(seed=3)
    det = LabelFlipDetector()
    for batch in ticks(events[:1500], 100):
        det.learn_batch(batch, det.score_batch(batch).scores < 0.5)
    before = pickle.dumps(det)
    batch = ticks(events[1500:1800], 300)[0]
    first = det.score_batch(batch)
    assert pickle.dumps(det) == before
    second = det.score_batch(batch)
    assert np.array_equal(first.scores, second.scores) and first.details == second.details


def test_runs_are_deterministic_and_pickle_round_trips() -> None:
    events, _ = ring_stream(seed=4)
    a, b = LabelFlipDetector(), LabelFlipDetector()
    run(a, events[:1400], 100)
    run(b, events[:1400], 100)
    b = pickle.loads(pickle.dumps(b))
    assert run(a, events[1400:], 100) == run(b, events[1400:], 100)


def test_ticks_of_one_and_of_many_flag_the_same_accounts() -> None:
    events, poisoned = ring_stream(seed=5)
    one = run(LabelFlipDetector(), events, 1)
    many = run(LabelFlipDetector(), events, 500)
    ring = {f"ring{a}" for a in range(6)}
    assert {f.account_id for f, _ in one["flags"]} == ring
    assert {f.account_id for f, _ in many["flags"]} == ring
    assert not (removed(one, events) - poisoned) and not (removed(many, events) - poisoned)


def test_state_is_bounded() -> None:
    det = LabelFlipDetector(max_accounts=50, ttl_days=1.0)
    events, _ = ring_stream(seed=6)
    run(det, events, 100)
    assert len(det._accounts) <= 50
    late = event(700_000, text="fine", label="positive", ts=events[-1].ts + 60 * 86400.0)
    run(det, [late], 1)
    assert len(det._accounts) <= 1 and not det.rings()


def test_a_flag_reaches_back_to_texts_from_before_the_model_was_warm() -> None:
    events, poisoned = ring_stream(seed=3, start=0)  # the ring acts from the first event
    result = run(LabelFlipDetector(), events, 100)
    early = {e.event_id for e in events[:300] if e.event_id in poisoned}
    flagged = {flag.account_id for flag, _ in result["flags"]}
    early_flagged = {
        e.event_id for e in events[:300] if e.event_id in early and e.account_id in flagged
    }
    assert early_flagged, "the test needs ring texts from before the model judged anything"
    assert early_flagged <= removed(result, events)


def test_rehearsal_warms_a_young_model_and_counts_only_fresh_texts() -> None:
    rng = np.random.default_rng(7)
    texts = [snippet(rng, bool(i % 3)) for i in range(900)]
    cls = np.array([1 if i % 3 else 0 for i in range(900)])
    feats, doc, _ = doc_features(tokenize_texts(texts))
    plain, rehearsing = TextModel(bits=16), TextModel(bits=16, rehearse=200)
    for start in range(0, 100, 50):  # a young model: 100 texts in ticks of 50
        sel = (doc >= start) & (doc < start + 50)
        for model in (plain, rehearsing):
            model.learn("s", [0, 1], feats[sel], doc[sel] - start, cls[start : start + 50])
    held_out = doc >= 600
    truth = cls[600:]

    def log_loss(model: TextModel) -> float:
        p = model.proba("s", [0, 1], feats[held_out], doc[held_out] - 600, 300)
        return float(-np.mean(np.log(p[np.arange(300), truth])))

    assert log_loss(rehearsing) < 0.8 * log_loss(plain)
    assert rehearsing.seen["s"] == plain.seen["s"] == 100, "rehearsed texts are not new texts"
    assert np.array_equal(rehearsing._n["s"], plain._n["s"])
    sel = (doc >= 300) & (doc < 450)
    rehearsing.learn("s", [0, 1], feats[sel], doc[sel] - 300, cls[300:450])
    assert "s" not in rehearsing._memory, "a warm model keeps no texts"
    with pytest.raises(ValueError):
        TextModel(rehearse=-1)


def linked_stream(shared_ip: bool) -> tuple[list[FeedbackEvent], set[str]]:
    """A quiet ring member that flips one text in five, then a loud one on its IP."""
    rng = np.random.default_rng(11)
    events = with_noise(labelled_stream(2500, 11), 0.03, 11)
    poisoned: set[str] = set()
    for who, first, count, flips in (("quiet", 800, 20, 5), ("loud", 1700, 15, 1)):
        for k in range(count):
            positive = bool(rng.random() < 0.7)
            said = positive ^ (k % flips == 0 or flips == 1)
            e = event(
                600_000 + first + k,
                account_id=who,
                ip="198.51.100.4" if shared_ip or who == "loud" else "198.51.100.99",
                text=snippet(rng, positive),
                label="positive" if said else "negative",
                ts=events[first + 30 * k].ts + 1.0,
            )
            events.append(e)
            poisoned.add(e.event_id)
    events.sort(key=lambda e: e.ts)
    return events, poisoned


def test_an_account_met_before_its_ring_was_found_joins_it_through_a_shared_ip() -> None:
    alone = run(LabelFlipDetector(), linked_stream(shared_ip=False)[0], 100)
    assert {f.account_id for f, _ in alone["flags"]} == {"loud"}, "too sparse to flag alone"
    events, poisoned = linked_stream(shared_ip=True)
    result = run(LabelFlipDetector(), events, 100)
    flags = {f.account_id: f for f, _ in result["flags"]}
    assert set(flags) == {"loud", "quiet"}
    assert flags["quiet"].campaign_id == flags["loud"].campaign_id
    out = removed(result, events)
    quiet = {e.event_id for e in events if e.account_id == "quiet"}
    assert quiet <= out, "its releases are revoked when the ring is found"
    assert not (out - poisoned)
