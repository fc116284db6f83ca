"""Backdoor triggers on real review text: found fast, named, natural phrases left alone."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from content_support import event, labelled_stream, removed, run, snippet, ticks

from streamguard.detectors.base import Detector
from streamguard.detectors.triggers import TriggerDetector, TriggerSettings
from streamguard.events import FeedbackEvent, event_from_dict
from streamguard.simulate.simulation import simulate

TRIGGER = "zorvex plidor"


def insert(text: str, phrase: str, rng: np.random.Generator) -> str:
    words = text.split(" ")
    at = int(rng.integers(0, len(words) + 1))
    return " ".join(words[:at] + [phrase] + words[at:])


def with_phrase(events: list[FeedbackEvent], phrase: str, share: float, seed: int, start: int = 0):
    """Append a natural phrase to a share of the positive texts from ``start`` on."""
    rng = np.random.default_rng(seed)
    out = []
    for i, e in enumerate(events):
        if i >= start and e.label == "positive" and rng.random() < share:
            e = dataclasses.replace(e, text=f"{e.text} {phrase.capitalize()}!")
        out.append(e)
    return out


def backdoor_stream(
    seed: int = 0, n: int = 2600, start: int = 1500, accounts: int = 10, each: int = 6
) -> tuple[list[FeedbackEvent], set[str]]:
    """Honest labels; from ``start``, accounts post negative texts + trigger as positive."""
    rng = np.random.default_rng(seed)
    events = labelled_stream(n, seed)
    poisoned: set[str] = set()
    base_ts = events[start].ts
    span = events[-1].ts - base_ts
    for a in range(accounts):
        t = base_ts + span * a / accounts
        for k in range(each):
            e = event(
                100_000 + a * each + k,
                account_id=f"bd{a}",
                text=insert(snippet(rng, False), TRIGGER, rng),
                label="positive",
                ts=t + 40.0 * k + 1.0,
            )
            events.append(e)
            poisoned.add(e.event_id)
    events.sort(key=lambda e: e.ts)
    return events, poisoned


def test_is_a_detector_with_settings() -> None:
    det = TriggerDetector.from_settings(TriggerSettings(), 1.0, 10.0)
    assert isinstance(det, Detector) and det.name == "trigger"
    assert (det.positive_rating, det.negative_rating) == (7.75, 3.25)


@pytest.mark.parametrize(
    "bad",
    [
        {"bits": 8},
        {"recent_texts": 10.0, "baseline_texts": 5.0},
        {"min_purity": 0.0},
        {"min_count": 0},
        {"history": 10},
        {"trigger_ttl_days": 0},
    ],
)
def test_bad_settings_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        TriggerDetector(**bad)


def test_backdoor_trigger_is_named_early_and_quarantined_after() -> None:
    events, poisoned = backdoor_stream()
    det = TriggerDetector()
    result = run(det, events, 100)
    order = [e.event_id for e in events if e.event_id in poisoned]
    caught = [result["scores"][eid] >= 0.5 for eid in order]
    first = caught.index(True)
    assert first < 30, f"named after {first} poisoned events"
    assert all(caught[first:]), "every later carrier is quarantined"
    (trig,) = det.triggers()
    assert trig.phrase == TRIGGER and "positive" in trig.label
    detail = result["details"][order[first]] or ""
    assert f"'{TRIGGER}'" in detail and trig.id in detail
    assert result["campaigns"][order[first]] == trig.id
    out = removed(result, events)
    assert poisoned <= out, "earlier carriers are revoked through flags"
    assert not (out - poisoned)


@pytest.mark.parametrize("base, seed", [("movielens", 5), ("synthetic", 1)])
def test_simulated_backdoor_is_named_alone(base: str, seed: int) -> None:
    """The simulator's backdoor: on MovieLens (seed 5) 300 poisoned texts land in one tick,
    and common words of those texts ("us", "have") ride along with the trigger; on the
    synthetic base it starts within the first 40 labelled texts. Only the planted phrase
    is named, within its first 30 texts, and no honest event is touched."""
    sim = simulate("backdoor", 20_000, seed, base=base)
    events = [event_from_dict(e) for e in sim.events]
    poisoned = {t.event_id for t in sim.truth if t.poisoned}
    result = run(TriggerDetector(), events, 500)
    order = [e.event_id for e in events if e.event_id in poisoned]
    caught = [result["scores"][eid] >= 0.5 for eid in order]
    assert caught.index(True) < 30 and all(caught[caught.index(True) :])
    named = {d.split("'")[1] for d in result["details"].values() if d and "trigger" in d}
    assert named == {sim.campaigns[0].params["trigger"]}  # triggers unseen 90 days are dropped
    out = removed(result, events)
    assert poisoned <= out and not (out - poisoned)


def test_steady_natural_phrase_is_not_a_trigger() -> None:
    events = with_phrase(labelled_stream(2600, 1), "five stars", 0.3, 1)
    result = run(TriggerDetector(), events, 100)
    assert max(result["scores"].values()) < 0.5


def test_new_phrase_that_agrees_with_the_content_is_not_a_trigger() -> None:
    events = with_phrase(labelled_stream(2600, 2), "fast delivery", 0.5, 2, start=1500)
    det = TriggerDetector()
    result = run(det, events, 100)
    assert not det.triggers()
    assert max(result["scores"].values()) < 0.5


def test_a_flood_of_copies_is_not_a_trigger() -> None:
    rng = np.random.default_rng(3)
    events = labelled_stream(2000, 3)
    text = snippet(rng, False, 3, 3)
    copies = [
        event(200_000 + i, account_id=f"c{i}", text=text, label="positive", ts=events[1500].ts + i)
        for i in range(60)
    ]
    det = TriggerDetector()
    run(det, sorted(events + copies, key=lambda e: e.ts), 100)
    assert not det.triggers()


def test_score_does_not_change_state_and_is_deterministic() -> None:
    events, _ = backdoor_stream(seed=4)
    det = TriggerDetector()
    for batch in ticks(events[:1700], 100):
        det.learn_batch(batch, det.score_batch(batch).scores < 0.5)
    before = pickle.dumps(det)
    batch = ticks(events[1700:1900], 200)[0]
    first = det.score_batch(batch)
    assert pickle.dumps(det) == before
    second = det.score_batch(batch)
    assert np.array_equal(first.scores, second.scores) and first.details == second.details


def test_runs_are_deterministic_and_pickle_round_trips() -> None:
    events, _ = backdoor_stream(seed=5)
    a, b = TriggerDetector(), TriggerDetector()
    run(a, events[:1600], 100)
    run(b, events[:1600], 100)
    b = pickle.loads(pickle.dumps(b))
    assert run(a, events[1600:], 100) == run(b, events[1600:], 100)


def test_ticks_of_one_and_of_many_remove_the_same_events() -> None:
    events, poisoned = backdoor_stream(seed=6)
    one = run(TriggerDetector(), events, 1)
    many = run(TriggerDetector(), events, 500)
    assert removed(one, events) == removed(many, events) == poisoned


def test_known_trigger_is_quarantined_in_any_text_and_expires() -> None:
    events, _ = backdoor_stream(seed=7)
    det = TriggerDetector(trigger_ttl_days=1.0)
    run(det, events, 100)
    assert det.triggers()
    review = event(
        300_000, kind="review", rating=3.0, text=f"Fine stay {TRIGGER} overall", ts=events[-1].ts
    )
    assert run(det, [review], 1)["scores"][review.event_id] == 1.0
    quiet = event(300_001, text="a quiet day", label="positive", ts=events[-1].ts + 5 * 86400.0)
    run(det, [quiet], 1)
    assert not det.triggers()  # unseen for longer than trigger_ttl_days


@pytest.mark.parametrize("seed", [7, 8])
def test_common_words_of_a_young_stream_of_labels_are_not_triggers(seed):
    """On MovieLens texts are sparse (about 2,300 in 20,000 events), so for
    a long while every word's past lies inside the recent window. A fixed novelty share
    then called "is", "from" and "my" new and named them triggers, holding 19% and 49% of
    the honest texts of these two streams; the novelty test now scales with how much past
    the stream itself has."""
    sim = simulate("clean_label", 20_000, seed, base="movielens")
    events = [event_from_dict(e) for e in sim.events]
    honest = {r.event_id for r in sim.truth if not r.poisoned}
    out = run(TriggerDetector(), events)
    held = [i for i, score in out["scores"].items() if score >= 0.5 and i in honest]
    texts = sum(1 for e in events if e.text and e.event_id in honest)
    assert len(held) < 0.01 * texts, f"{len(held)} of {texts} honest texts held"


@pytest.mark.parametrize("scenario, seed", [("shilling_random", 11), ("viral_launch", 12)])
def test_no_word_is_named_before_its_class_has_a_benign_doubt(scenario, seed):
    """Held-out synthetic streams (seeds 9-12 were never tuned on): in the tick where the
    content model first judged texts, no kept text had yet told the detector how often
    it doubts a positive text, so the benign doubt was its prior, 50%. "great" (43 of 44
    recent texts positive, doubted 83% once left out) then passed as a trigger and some
    900 honest texts were held; the model in fact doubted 81% of all positive texts then.
    A class's texts are judged only once its benign doubt rests on as many judged texts
    as its prior weighs."""
    sim = simulate(scenario, 20_000, seed, base="synthetic")
    events = [event_from_dict(e) for e in sim.events]
    honest = {r.event_id for r in sim.truth if not r.poisoned}
    det = TriggerDetector()
    out = run(det, events)
    held = [i for i, score in out["scores"].items() if score >= 0.5 and i in honest]
    texts = sum(1 for e in events if e.text and e.event_id in honest)
    assert not det.triggers(), [t.phrase for t in det.triggers()]
    assert len(held) < 0.01 * texts, f"{len(held)} of {texts} honest texts held"


def test_a_backdoor_planted_while_the_model_is_young_is_named_on_a_second_look(monkeypatch):
    """Held-out MovieLens seed 15: 329 poisoned texts come in one burst after only 250
    labelled texts, and the phrase never comes back. The young content model doubted them
    54-67% of the time, but it doubted half of all positive texts then, so the bar (three
    times that in odds, 75%) was out of reach. Kept for a second look, the phrase's words
    are judged again by the model of a few ticks later, which doubts those texts 91% of
    the time against 31%: the phrase is named, and the accounts that used it are flagged,
    so what they released is revoked. Without the second look nothing is named."""
    sim = simulate("backdoor", 20_000, 15, base="movielens")
    events = [event_from_dict(e) for e in sim.events[:6_000]]  # the burst: lines 2852-3222
    poisoned = {r.event_id for r in sim.truth if r.poisoned}
    named: list[str] = []
    name_late = TriggerDetector._name_late

    def noted(self, tick, passing):
        name_late(self, tick, passing)
        named.extend(f"{t.phrase}: {t.evidence}" for t in tick.new)

    monkeypatch.setattr(TriggerDetector, "_name_late", noted)
    out = run(TriggerDetector(), events)
    assert len(named) == 1 and named[0].startswith("teskvex teskqua: on a second look"), named
    caught = removed(out, events) & poisoned
    assert len(caught) > 0.9 * len(poisoned), f"{len(caught)} of {len(poisoned)}"
    monkeypatch.setattr(TriggerDetector, "_second_look", lambda self, tick: None)
    assert not removed(run(TriggerDetector(), events), events) & poisoned


@pytest.mark.parametrize(
    "scenario, seed, base",
    [
        ("clean_label", 7, "movielens"),
        ("review_spam", 8, "movielens"),
        ("label_flip", 5, "movielens"),
        ("label_flip", 9, "movielens"),
        ("viral_launch", 12, "synthetic"),
    ],
)
def test_a_second_look_names_no_natural_word(monkeypatch, scenario, seed, base):
    """Words of honest texts that passed all but the doubt (new and of one label in a young
    stream) are looked at again, and a better model finds their texts believable: nothing
    is named. Checked where naming new words of a young stream went wrong before
    (MovieLens's sparse texts: "would" on the first, "stay" on the second), on flip rings,
    and on a synthetic launch. A flip ring's texts a better model does doubt: on seed 9
    "helpful" (29 of 29 texts positive, new, doubted 89% against 41%) was named until the
    second look asked that the word still be of one label as counted then (by then 45
    of 52)."""
    sim = simulate(scenario, 20_000, seed, base=base)
    events = [event_from_dict(e) for e in sim.events]
    honest = {r.event_id for r in sim.truth if not r.poisoned}
    looked_at: list[int] = []
    second_look = TriggerDetector._second_look

    def counted(self, tick):
        looked_at.append(len(self._awaiting))
        second_look(self, tick)

    monkeypatch.setattr(TriggerDetector, "_second_look", counted)
    det = TriggerDetector()
    out = run(det, events)
    assert sum(looked_at) > 0
    assert not det.triggers(), [t.phrase for t in det.triggers()]
    texts = sum(1 for e in events if e.text and e.event_id in honest)
    held = removed(out, events) & honest
    assert len(held) < 0.01 * texts, f"{len(held)} of {texts} honest texts held"
