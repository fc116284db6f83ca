"""The slow-push detector: pushes spread over weeks found and revoked; viral bursts left alone."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from factories import benign_stream, event, records
from pydantic import ValidationError

from streamguard.detectors.base import Batch
from streamguard.detectors.slow_push import SlowPushDetector, SlowPushSettings
from streamguard.events import event_from_dict
from streamguard.pipeline import Pipeline
from streamguard.policy import Policy, PolicyConfig

T0 = 1_700_000_000.0
HOUR = 3600.0


class World:
    """MovieLens-like traffic without metadata: users appear once and rate in a sitting."""

    def __init__(self, seed: int = 0, items: int = 400) -> None:
        self.rng = np.random.default_rng(seed)
        self.items = [f"i{k}" for k in range(items)]
        self.quality = self.rng.uniform(2.0, 4.3, items)
        pop = 1.0 / (np.arange(items) + 5.0)
        self.pop = pop / pop.sum()
        self.events: list[dict[str, Any]] = []
        self.fake: set[str] = set()
        self.users = 0
        self.t = T0

    def _add(self, account: str, item: str, rating: float, **extra: Any) -> None:
        self.t += 30.0
        fields = {"account_id": account, "item_id": item, "rating": float(rating), **extra}
        self.events.append(event(len(self.events), ts=self.t, **fields))

    def sittings(self, n: int, size: int = 20) -> None:
        """``n`` honest users, each rating ``size`` items drawn by popularity."""
        for _ in range(n):
            self.users += 1
            picks = self.rng.choice(len(self.items), size, replace=False, p=self.pop)
            for k in picks.tolist():
                r = np.clip(np.round(self.rng.normal(self.quality[k], 1.0) * 2) / 2, 1, 5)
                self._add(f"u{self.users}", self.items[k], r)
            self.t += 6 * HOUR

    def fake_sitting(
        self, name: str, target: str, filler: int = 15, created: float | None = None
    ) -> None:
        """An average-model shill: filler near each item's quality, the target at 5
        (``created``: the account's creation date, sent with each event)."""
        self.fake.add(name)
        extra = {} if created is None else {"account_created_at": created}
        self.sitting_with(name, target, filler, **extra)

    def sitting_with(self, name: str, target: str, filler: int, **extra: Any) -> None:
        """One sitting: ``filler`` items near their quality, and ``target`` at 5."""
        picks = self.rng.choice(len(self.items) - 1, filler, replace=False).tolist()
        for j, k in enumerate(picks):
            if j == filler // 2:
                self._add(name, target, 5.0, **extra)
            r = np.clip(np.round(self.quality[k] * 2) / 2, 1, 5)
            self._add(name, self.items[k], r, **extra)

    def burst(self, item: str, raters: int) -> None:
        """A new release: many users rate it in their sitting with a natural spread."""
        for _ in range(raters):
            self.users += 1
            self._add(f"u{self.users}", item, np.clip(np.round(self.rng.normal(3.8, 1.0)), 1, 5))
            for k in self.rng.choice(len(self.items), 5, replace=False, p=self.pop).tolist():
                self._add(f"u{self.users}", self.items[k], np.round(self.quality[k]))


def detector(**kw: Any) -> SlowPushDetector:
    return SlowPushDetector(**{"windows_events": (800, 3_000), "warmup_events": 1_000, **kw})


def run(det: SlowPushDetector, events: list[dict[str, Any]], size: int = 100):
    parsed = [event_from_dict(e) for e in events]
    scores, flags = [], []
    for start in range(0, len(parsed), size):
        batch = Batch.of(parsed[start : start + size])
        out = det.score_batch(batch)
        det.learn_batch(batch, out.scores < 0.5)
        scores.extend(out.scores.tolist())
        flags.extend(out.flagged_accounts)
    return np.array(scores), flags


def spread_push(seed: int = 0, accounts: int = 15, favourites: int = 0) -> World:
    """Honest warm-up, then fake accounts arriving one by one between honest sittings
    (``favourites``: how many items of middling popularity draw mostly 5s)."""
    w = World(seed)
    w.quality[-1] = 2.0  # pushers pick an obscure, below-average item
    w.quality[100 : 100 + favourites] = 5.0
    w.sittings(100)
    for a in range(accounts):
        w.sittings(3)
        w.fake_sitting(f"f{a}", "i399")  # the least popular item: a handful of honest ratings
    w.sittings(20)
    return w


def test_a_push_spread_over_weeks_opens_a_campaign_and_flags_its_members():
    w = spread_push()
    assert w.t - T0 > 14 * 24 * HOUR  # a spread push, not a burst
    det = detector()
    scores, flags = run(det, w.events)
    (camp,) = det.campaigns()
    assert camp.side == "push" and list(camp.targets) == ["i399"] and camp.score >= 0.5
    assert set(camp.members) <= w.fake and len(camp.members) >= 5
    assert {f.account_id for f in flags} <= w.fake
    fake = np.array([e["account_id"] in w.fake for e in w.events])
    assert not (scores[~fake] >= 0.5).any()
    late = {f"f{a}" for a in range(10, 15)}
    pushed = {e["account_id"]: e["ts"] for e in w.events if e["item_id"] == "i399"}
    after = [
        i
        for i, e in enumerate(w.events)
        if e["account_id"] in late and e["ts"] >= pushed[e["account_id"]]
    ]
    assert (scores[after] >= 0.5).all()  # members who join after the opening are held ...
    assert late <= {f.account_id for f in flags}  # ... and their earlier filler revoked


def test_one_step_off_the_top_is_the_streams_own_step():
    """On half stars one step below 5 is 4.5: a user who gives the pushed item a 4.5
    while the campaign is open joins it, one who gives it a 4 (the commonest rating on
    such a scale) does not."""
    w = spread_push()
    w._add("sloppy", "i399", 4.5)
    w._add("honest", "i399", 4.0)
    det = detector()
    scores, flags = run(det, w.events)
    (camp,) = det.campaigns()
    assert "sloppy" in camp.members and "honest" not in camp.members
    assert scores[-2] >= 0.5 and scores[-1] < 0.5


def test_members_earlier_releases_are_revoked_through_the_pipeline():
    w = spread_push(seed=1)
    det = detector()
    pipe = Pipeline([det], Policy([], [det.name], PolicyConfig()))
    revoked = []
    recs = records(w.events)
    for start in range(0, len(recs), 100):
        revoked += pipe.process(recs[start : start + 100]).revocations
    assert revoked and all(r.verdict.retroactive for r in revoked)
    assert {r.account_id for r in revoked} <= w.fake
    assert any(r.item_id != "i399" for r in revoked)  # the filler goes too, not only the push


def assert_finds_nothing(events: list[dict[str, Any]]) -> None:
    det = detector()
    scores, flags = run(det, events)
    assert det.campaigns() == [] and not flags and not (scores >= 0.5).any()


def test_a_viral_release_rated_with_a_natural_spread_opens_nothing():
    w = World(seed=2)
    w.sittings(100)
    w.burst("i398", 60)
    w.sittings(30)
    assert_finds_nothing(w.events)


def test_benign_traffic_alone_opens_nothing():
    w = World(seed=3)
    w.sittings(300)
    assert_finds_nothing(w.events)


@pytest.mark.parametrize(("items", "seed"), [(30, 0), (100, 3), (100, 4), (1000, 9)])
def test_a_young_catalogue_with_short_histories_opens_nothing(items, seed):
    """Honest items of fixed quality, all new at the start: a window covers most of an
    item's life, and the few ratings before it can show far fewer of an extreme than the
    item gives by chance. The share they predict is then an upper bound, not a point
    estimate (these seeds opened a campaign on honest raters with the point estimate)."""
    det = SlowPushDetector()
    scores, flags = run(det, benign_stream(30_000, seed=seed, items=items), size=500)
    assert det.campaigns() == [] and not flags and not (scores >= 0.5).any()


def test_a_push_packed_into_hours_is_left_to_the_campaign_detector():
    """Most of a run within hours is a burst: the campaign detector judges bursts with
    tests made for them (which account is new, who else is busy), so the long view opens
    nothing even when a few stragglers later stretch the run over days."""
    w = World(seed=5)
    w.quality[-1] = 2.0
    w.sittings(100)
    for a in range(15):
        w.fake_sitting(f"f{a}", "i399")  # back to back: about two hours
    for a in range(15, 18):
        w.sittings(3)
        w.fake_sitting(f"f{a}", "i399")  # stragglers over the next days
    w.sittings(20)
    assert w.t - T0 > 14 * 24 * HOUR
    assert_finds_nothing(w.events)


def test_a_run_given_mostly_by_accounts_old_by_their_creation_dates_opens_nothing():
    """Established users rallying to an item are enthusiasm, not sock puppets: when
    accounts old by their creation dates give half the run or more, the young ones among
    them are not taken for a campaign either."""
    w = World(seed=6)
    w.quality[-1] = 2.0
    w.sittings(100)
    for a in range(15):
        w.sittings(3)
        old = a % 3 != 0  # ten of the fifteen have had their accounts for a year
        w.fake_sitting(f"f{a}", "i399", created=w.t - (365 if old else 2) * 24 * HOUR)
    w.sittings(20)
    assert_finds_nothing(w.events)


def test_fans_busier_than_twice_the_streams_typical_account_open_nothing():
    """Sock puppets are cheap. Fifteen users who rate 60 films a sitting (the stream's
    typical user rates 20) and love an obscure one are its audience, not a push: the
    same run from sixteen-event accounts opens a campaign (first test)."""
    w = World(seed=7)
    w.quality[-1] = 2.0
    w.sittings(100)
    for a in range(15):
        w.sittings(3)
        w.sitting_with(f"fan{a}", "i399", filler=59)
    w.sittings(20)
    assert_finds_nothing(w.events)


@pytest.mark.parametrize("tick", [100, 500])
def test_ruling_extremes_out_from_counts_changes_no_verdict(monkeypatch, tick):
    """The tick-wide shortcut (``_may_pass``) is exact: run a push with it and with every
    extreme tested, the same scores and campaigns. It must rule out some extremes and
    not all. A short item run (``ring_size``), so busy items outgrow it; ticks of 500
    hold several of the push's ratings each."""
    w = spread_push(seed=8)
    fast = detector(ring_size=32)
    passed: list[np.ndarray] = []
    shortcut = SlowPushDetector._may_pass

    def counted(self, *args):
        passed.append(shortcut(self, *args))
        return passed[-1]

    monkeypatch.setattr(SlowPushDetector, "_may_pass", counted)
    scores, _ = run(fast, w.events, tick)
    ruled = np.concatenate(passed)
    assert ruled.any() and not ruled.all()
    monkeypatch.setattr(SlowPushDetector, "_may_pass", lambda self, t, b, r, at: at >= 0)
    slow = detector(ring_size=32)
    assert np.array_equal(run(slow, w.events, tick)[0], scores)
    assert [c.members for c in slow.campaigns()] == [c.members for c in fast.campaigns()]
    assert fast.campaigns() and (scores >= 0.5).any()  # the push is still found


@pytest.mark.parametrize("tick", [100, 500])
def test_every_extreme_ruled_out_fails_the_count_questions_in_every_window(monkeypatch, tick):
    """What ``_may_pass`` rules out, the test itself would have: for each such extreme,
    each window has too few ratings of the extreme or an item busy before it. Checked
    where the bound is closest: on the push's own target, and on items of middling
    popularity that draw mostly 5s (busy at the extreme, quiet in all)."""
    from streamguard.detectors.slow_push import _added, _positions

    w = spread_push(seed=8, favourites=100)
    det = detector(ring_size=32)
    shortcut = SlowPushDetector._may_pass
    ruled_out = 0

    def checked(self, t, batch, rated, at):
        nonlocal ruled_out
        possible = shortcut(self, t, batch, rated, at)
        for i in at[~possible].tolist():
            item_id = batch.events[i].item_id
            positions = _positions(t.item_ids, rated, {item_id})[item_id]
            side, clock = int(t.codes[i]), int(t.clocks[i])
            added = _added(t, batch, positions, i)
            recent, (born, kept_all, kept_side) = self._history(
                self._items.row(item_id), side, clock, added
            )
            for window in self.windows:
                first = self._first_questions(
                    recent, clock, window, side, clock - born, kept_all, kept_side
                )
                assert first is None, (item_id, i, window)
            ruled_out += 1
        return possible

    monkeypatch.setattr(SlowPushDetector, "_may_pass", checked)
    run(det, w.events, tick)
    assert ruled_out > 100


def test_window_counts_follow_the_ring_as_it_forgets():
    """Each item's count per window and side is what the ring holds in that window."""
    w = spread_push(seed=8)
    det = detector()
    run(det, w.events)
    ring, counts = det._ring, det._items.cols["in_window"]
    for k, start in enumerate(ring.starts):
        held = np.zeros_like(counts[:, 3 * k : 3 * k + 3])
        exact = np.array([0, 1, 2, 0, 0, 0, 0, 0])[ring.code[start : ring.end]]
        np.add.at(held, (ring.item[start : ring.end], exact), 1)
        assert np.array_equal(held, counts[:, 3 * k : 3 * k + 3])
        assert ring.end - start == min(det._clock, det.windows[k])


def test_idle_ids_are_forgotten_and_their_rows_reused():
    """State stays bounded: a sweep forgets items idle for ``ttl_events`` rated events and
    accounts idle for ``account_ttl_events``, then the least recent accounts beyond
    ``max_accounts``; new ids take the forgotten rows. The push is still found."""
    w = spread_push(seed=2)
    det = detector(ttl_events=3_000, account_ttl_events=3_000, max_accounts=100)
    scores, _ = run(det, w.events)
    assert (scores >= 0.5).any()
    accounts, items = det._accounts, det._items
    horizon = det._clock - 3_000
    last = {key: accounts.cols["last"][row] for key, row in accounts.index.items()}
    recent = sorted((v for v in last.values() if v >= horizon), reverse=True)
    assert len(recent) > 100  # the cap has work to do
    det._swept = -(10**9)  # the next tick's sweep, now
    det._expire()
    assert len(accounts) == 100
    assert min(last[key] for key in accounts.index) >= recent[100]  # the most recent kept
    assert (items.cols["last"][items.live_rows()] >= horizon).all()
    assert len(items) < len({e["item_id"] for e in w.events})
    assert sorted(accounts.index.values()) == accounts.live_rows().tolist()
    rows, seen = len(accounts.ids), len(w.events)
    w.sittings(5)  # five new users take forgotten rows
    run(det, w.events[seen:])
    assert len(accounts.ids) == rows and len(accounts) == 105


def test_score_batch_is_repeatable_and_a_checkpoint_resumes_the_same():
    w = spread_push(seed=4)
    head, tail = w.events[:2_500], w.events[2_500:]
    det = detector()
    run(det, head)
    copy = pickle.loads(pickle.dumps(det))
    batch = Batch.of([event_from_dict(e) for e in tail[:100]])
    first = det.score_batch(batch).scores.copy()
    assert np.array_equal(det.score_batch(batch).scores, first)
    assert np.array_equal(run(det, tail)[0], run(copy, tail)[0])


def test_settings_are_strict_and_frozen():
    with pytest.raises(ValidationError):
        SlowPushSettings(threshold_nats=0)
    with pytest.raises(ValidationError):
        SlowPushSettings(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="longest window"):
        SlowPushSettings(windows_events=(3_000, 12_000), max_items=10_000)
    with pytest.raises(ValueError, match="longest window"):
        SlowPushDetector(windows_events=(3_000,), ttl_events=2_000)
    with pytest.raises(ValidationError, match="account_ttl_events"):
        SlowPushSettings(account_ttl_events=5_000)
    knobs = SlowPushSettings().model_dump(exclude={"enabled"})
    assert SlowPushDetector(**knobs).name == "slow_push"
