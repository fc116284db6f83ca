"""Slow pushes: fake accounts that give one item the same extreme over days or weeks.

Why a detector of its own. The campaign detector looks for lockstep within hours (its
groups, holds and freshness tests are tuned for bursts), and the drift detector needs
dozens of values per item inside windows of hours. A push whose 20 fake accounts arrive
over two weeks (or a drip over months) slips between both: on MovieLens, an item with a
handful of honest ratings in 900 days receives twenty 5s within thirteen days, and nothing
fires. Without account metadata "new account" does not help either, since honest
MovieLens users also appear once and rate dozens of films in a sitting.

What still gives it away is the item. For each extreme rating (top of the scale for a
push, bottom for a nuke) the detector looks back over long windows counted in rated events
(the stream clock, so a window means the same on a busy marketplace and on MovieLens) and
asks two questions, each a tail probability in nats:

- **volume**: so many extreme ratings on this item in the window, when its own history
  before the window (a Gamma posterior whose prior is an average item, wide enough for
  heavy-tailed popularity) predicts few? Negative binomial tail.
- **concentration**: so large a share of the item's ratings in the window at that
  extreme, when its history (or, without history, a high natural ceiling) predicts less?
  A new release or a viral item draws many ratings of mixed values: it fails here.

A window whose total reaches ``threshold_nats`` with at least ``min_accounts`` distinct
accounts and ``min_concentration_nats`` of concentration opens a
:class:`~streamguard.campaigns.Campaign`, unless most of its run came within one day (a
burst: the campaign detector's) or accounts old by their creation dates gave half of it.
Its members are the accounts that gave the extreme (or one step off it) in the window,
except accounts whose creation date says they are old (real users rallied to a cause are
not sock puppets). Members are flagged since their first event (the pipeline revokes their
earlier releases), their later events are quarantined while the campaign is open
(``hold_events`` rated events since its last activity), and accounts that rate the target
at or next to the extreme meanwhile join.

Baselines learn from kept events only; the windows hold what was observed, so the push
itself keeps accumulating evidence while it is quarantined. State is bounded: items and
accounts are LRU tables with a size cap and expiry in stream clock, each item keeps its
last ``ring_size`` ratings. ``score_batch`` never changes committed state (a tick's own
ratings are laid over it), so scoring is repeatable; ``learn_batch`` commits.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamguard.campaigns import Campaign
from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.detectors.lockstep import binom_logsf, gamma_poisson_logsf, surprise
from streamguard.features import LRUTable

DAY = 86400.0
_RATED = 1  # KIND_CODES of rating (0) and review (1) are <= this
_HIGH, _LOW = 1, 2
_SIDE_NAME = {_HIGH: "push", _LOW: "nuke"}
_NEAR = 4  # bit or-ed into a side code: one step off the extreme
# The exact extreme of a side code: 0 (middle) for a rating one step off.
_EXACT = (0, _HIGH, _LOW, 0, 0, 0, 0, 0)
_CLOCK = itemgetter(0)  # a rating's stream clock
_CEILING_PRIOR = 4.0  # pseudo-ratings behind the concentration ceiling
# A target is quiet: its own past rate of the extreme (Gamma posterior mean) at most this many
# times an average item's. Pushes pick obscure items; popular ones draw honest extremes.
_QUIET = 4.0
_CEILING_MIN_RATINGS = 10  # items with this many kept ratings make the ceiling
_CEILING_EVERY = 2_000  # rated events between two updates of the ceilings and the typical
_TYPICAL_SAMPLE = 2_000  # most recently active accounts whose median activity is typical
_MIN_CAP = 20.0  # the smallest activity cap of members (events), whatever the group's median


class SlowPushSettings(BaseModel):
    """Settings of the slow-push detector (``detectors.slow_push`` in the config).

    Thresholds are in nats and were set on simulated benign, viral-launch and attack
    streams over both bases (synthetic and MovieLens), above the largest honest window
    seen after warm-up; windows and holds count rated events.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Off by default: it costs about 5 us an event, a fifth of the detector core's
    # throughput (docs/DETECTORS.md). Turn it on where drips over months matter more.
    enabled: bool = False
    windows_events: tuple[int, ...] = (3_000, 12_000)
    threshold_nats: float = Field(22.0, gt=0)
    min_concentration_nats: float = Field(4.0, ge=0)
    min_accounts: int = Field(5, ge=2, le=64)
    prior_shape: float = Field(0.5, gt=0)
    concentration_ceiling: float = Field(0.5, gt=0, lt=1)
    fresh_age_days: float = Field(30.0, ge=0)
    min_span_hours: float = Field(24.0, ge=0)
    hold_events: int = Field(12_000, ge=0)
    warmup_events: int = Field(5_000, ge=0)
    ring_size: int = Field(128, ge=8, le=4096)
    max_accounts: int = Field(500_000, ge=1)
    max_items: int = Field(200_000, ge=1)
    ttl_events: int = Field(200_000, ge=1)


# One rating in an item's ring: stream clock, side code (with the near bit), account, kept,
# event time.
_Rating = tuple[int, int, str, bool, float]


class _Item:
    """One item: its recent ratings (observed) and its baseline counts (kept only)."""

    __slots__ = ("born", "kept", "kept_side", "recent", "in_ring", "last_clock")

    def __init__(self, clock: int, ring_size: int) -> None:
        self.born = clock
        self.kept = 0  # kept ratings since first seen
        self.kept_side = [0, 0, 0]  # kept ratings per side code (middle, high, low)
        # (clock, side code with the near bit, account, kept, time) of the last ratings.
        self.recent: deque[_Rating] = deque(maxlen=ring_size)
        # Ratings in the ring per exact code (middle or near, high, low): an item whose
        # ring holds fewer than ``min_accounts`` of an extreme cannot pass the test.
        self.in_ring = [0, 0, 0]
        self.last_clock = clock

    def append(self, rating: _Rating) -> None:
        """Add a rating to the ring, forgetting the oldest when it is full."""
        recent, in_ring = self.recent, self.in_ring
        if len(recent) == recent.maxlen:
            in_ring[_EXACT[recent[0][1]]] -= 1
        recent.append(rating)
        in_ring[_EXACT[rating[1]]] += 1


class _Account:
    __slots__ = ("first_ts", "created", "last_clock", "campaign", "n")

    def __init__(self, ts: float, clock: int) -> None:
        self.n = 0  # events seen
        self.first_ts = ts
        self.created = math.nan
        self.last_clock = clock
        self.campaign = ""


@dataclass
class _Tick:
    """What scoring a tick decided, committed by ``learn_batch``."""

    clocks: np.ndarray  # stream clock of each event (rated events advance it)
    codes: np.ndarray  # side code per event (0 for middle or unrated)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    targets: dict[tuple[str, int], str] = field(default_factory=dict)
    next_id: int = 0


class SlowPushDetector:
    """Finds pushes and nukes spread over weeks from the target item's long-run view.

    Parameters are those of :class:`SlowPushSettings` plus the rating scale.

    >>> SlowPushDetector(warmup_events=0).open_campaigns
    0
    """

    name = "slow_push"

    def __init__(
        self,
        windows_events: tuple[int, ...] = (3_000, 12_000),
        threshold_nats: float = 22.0,
        min_concentration_nats: float = 4.0,
        min_accounts: int = 5,
        prior_shape: float = 0.5,
        concentration_ceiling: float = 0.5,
        fresh_age_days: float = 30.0,
        min_span_hours: float = 24.0,
        hold_events: int = 12_000,
        warmup_events: int = 5_000,
        ring_size: int = 128,
        max_accounts: int = 500_000,
        max_items: int = 200_000,
        ttl_events: int = 200_000,
        rating_low: float = 1.0,
        rating_high: float = 5.0,
    ) -> None:
        if not windows_events or min(windows_events) < 1:
            raise ValueError(f"windows_events must be positive, got {windows_events}")
        self.windows = tuple(sorted(windows_events))
        self.threshold_nats = threshold_nats
        self.min_concentration_nats = min_concentration_nats
        self.min_accounts = min_accounts
        self.prior_shape = prior_shape
        self.ceiling = concentration_ceiling
        self.fresh_age = fresh_age_days * DAY
        self.min_span_hours = min_span_hours
        self.hold_events = hold_events
        self.warmup_events = warmup_events
        self.ring_size = ring_size
        self.ttl_events = ttl_events
        self.low, self.high = rating_low, rating_high
        self._items: LRUTable[_Item] = LRUTable(max_items)
        self._accounts: LRUTable[_Account] = LRUTable(max_accounts)
        self._campaigns: dict[str, Campaign] = {}
        self._targets: dict[tuple[str, int], str] = {}
        self._closed: deque[Campaign] = deque(maxlen=1_000)
        self._clock = 0  # rated events seen
        self._kept = 0  # kept rated events
        self._kept_side = [0, 0, 0]
        # The concentration ceiling per side: the share of that extreme that established
        # items reach naturally (their 99th percentile), never below the configured one.
        self._ceilings = [concentration_ceiling] * 3
        self._ceiling_clock = 0
        self._typical = 0.0  # the median activity (events) of recently active accounts
        self._next_id = 0
        self._opened_total = 0
        self._pending: _Tick | None = None

    # ------------------------------------------------------------------ reporting

    @property
    def open_campaigns(self) -> int:
        return len(self._campaigns)

    def campaigns(self, include_closed: bool = True) -> list[Campaign]:
        """Open campaigns (and recently closed ones), oldest first, as copies."""
        out = [c.copy() for c in self._campaigns.values()]
        return [c.copy() for c in self._closed] + out if include_closed else out

    def stats(self) -> dict[str, float]:
        """Numbers for the metrics collector (see :mod:`streamguard.metrics`)."""
        return {
            "open_campaigns": float(len(self._campaigns)),
            "campaigns_total": float(self._opened_total),
            "state_entries": float(len(self._accounts) + len(self._items)),
        }

    # ------------------------------------------------------------------ protocol

    def score_batch(self, batch: Batch) -> Scores:
        n = len(batch)
        scores = Scores(np.zeros(n), [None] * n, [None] * n)
        rated = _rated(batch)
        clocks = self._clock + np.cumsum(rated) - 1
        near_high = batch.rating >= self.high - 1.0  # a sloppy fake's 4 or 4.5
        near_low = batch.rating <= self.low + 1.0
        codes = np.where(near_high, _HIGH | _NEAR, np.where(near_low, _LOW | _NEAR, 0))
        codes = np.where(batch.rating >= self.high, _HIGH, codes)
        codes = np.where(batch.rating <= self.low, _LOW, codes)
        codes = np.where(rated, codes, 0).astype(np.int8)
        tick = _Tick(clocks, codes, next_id=self._next_id)
        self._pending = tick
        extremes = np.flatnonzero(codes & 3).tolist()
        if extremes:
            self._scan(tick, batch, rated, extremes)
        self._mark_members(tick, batch, scores)
        return scores

    def _scan(self, tick: _Tick, batch: Batch, rated: np.ndarray, extremes: list[int]) -> None:
        """Each extreme of the tick in order (``extremes``: positions) joins its item's
        open campaign or, at the exact extreme, tests the item's run, with the tick's
        earlier ratings of the item laid over its ring.

        Most tests end at the cheapest questions, asked before a rating is copied:
        whether the item's ring and the tick hold ``min_accounts`` ratings of that
        extreme at all (the ring keeps its counts), and whether the item is too busy to
        be a target (``_popular``)."""
        events = batch.events
        clocks, codes, ts = tick.clocks.tolist(), tick.codes.tolist(), batch.ts.tolist()
        wanted = {events[i].item_id for i in extremes}
        positions: dict[str, list[int]] = {}  # the tick's ratings of those items, in order
        for i in np.flatnonzero(rated).tolist():
            item_id = events[i].item_id
            if item_id in wanted:
                positions.setdefault(item_id, []).append(i)
        items = self._items._data
        for i in extremes:
            e = events[i]
            code, clock = codes[i], clocks[i]
            side = code & 3
            camp = None
            if tick.targets or self._targets:
                camp = self._target(tick, e.item_id, side)
            if camp is None and not code & _NEAR and clock >= self.warmup_events:
                mine = [j for j in positions[e.item_id] if j <= i]
                in_tick = sum(1 for j in mine if codes[j] == side)
                item = items.get(e.item_id)
                if self._too_few(item, side, in_tick):
                    continue
                if item is not None and self._popular(item, clock, len(mine)):
                    continue
                added = [(clocks[j], codes[j], events[j].account_id, True, ts[j]) for j in mine]
                camp = self._test(tick, batch, i, side, item, added)
            if camp is not None:
                self._join(tick, camp, batch, i, clock)

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        """Commit the tick: each rating into its item's ring (and, kept, its baseline),
        each event into its account's activity. ``LRUTable.get`` is written out: this
        loop runs for every event."""
        tick = self._pending
        if tick is None or len(tick.clocks) != len(batch):
            self.score_batch(batch)
            tick = self._pending
        assert tick is not None
        self._pending = None
        rated = _rated(batch)
        clocks, codes, ts = tick.clocks.tolist(), tick.codes.tolist(), batch.ts.tolist()
        kept_l, rated_l = keep.astype(bool).tolist(), rated.tolist()
        item_of, put_item = self._items._data, self._items.put
        account_of, put_account = self._accounts._data, self._accounts.put
        kept_side = self._kept_side
        for i, e in enumerate(batch.events):
            clock = clocks[i]
            if rated_l[i]:
                item_id, kept, side = e.item_id, kept_l[i], codes[i]
                item = item_of.pop(item_id, None)
                if item is None:
                    item = _Item(clock, self.ring_size)
                    put_item(item_id, item)
                else:
                    item_of[item_id] = item
                item.append((clock, side, e.account_id, kept, ts[i]))
                item.last_clock = clock
                if kept:
                    exact = _EXACT[side]
                    item.kept += 1
                    item.kept_side[exact] += 1
                    self._kept += 1
                    kept_side[exact] += 1
            account_id = e.account_id
            acc = account_of.pop(account_id, None)
            if acc is None:
                acc = _Account(ts[i], clock)
                put_account(account_id, acc)
            else:
                account_of[account_id] = acc
            acc.last_clock = clock
            acc.n += 1
            if e.account_created_at is not None:
                acc.created = float(e.account_created_at)
        self._clock += int(rated.sum())
        for cid, camp in tick.campaigns.items():
            if cid not in self._campaigns:
                self._opened_total += 1
            self._campaigns[cid] = camp
        for account_id, cid in tick.members.items():
            acc = self._accounts.get(account_id)
            if acc is not None:
                acc.campaign = cid
        self._targets.update(tick.targets)
        self._next_id = tick.next_id
        if self._clock - self._ceiling_clock >= _CEILING_EVERY:
            self._learn_norms()
        self._expire()

    def _learn_norms(self) -> None:
        """Learn what honest traffic looks like: how concentrated honest items get (a base
        where good items draw mostly 5s must not read each popular item's run of 5s as a
        push), and how busy a typical active account is (see ``_audience``)."""
        self._ceiling_clock = self._clock
        recent = islice(reversed(self._accounts._data.values()), _TYPICAL_SAMPLE)
        activity = np.fromiter((acc.n for acc in recent), np.int64)
        self._typical = float(np.median(activity)) if len(activity) else 0.0
        known = [it for it in self._items._data.values() if it.kept >= _CEILING_MIN_RATINGS]
        if len(known) < 20:
            return
        kept = np.array([it.kept for it in known], dtype=np.float64)
        for side in (_HIGH, _LOW):
            share = np.array([it.kept_side[side] for it in known], dtype=np.float64) / kept
            self._ceilings[side] = max(self.ceiling, float(np.quantile(share, 0.99)))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pending"] = None  # a checkpoint holds committed state only
        return state

    # ------------------------------------------------------------------ the test

    def _test(
        self,
        tick: _Tick,
        batch: Batch,
        i: int,
        side: int,
        item: _Item | None,
        added: list[_Rating],
    ) -> Campaign | None:
        """Is the run of this extreme on event ``i``'s item (``item``, None when new)
        surprising in some window? Opens a campaign on the best window that passes."""
        clock = int(tick.clocks[i])
        recent = list(item.recent) if item is not None else []
        recent += added  # in clock order, so each window is a tail
        born = item.born if item is not None else clock
        ts = float(batch.ts[i])
        best: tuple[float, float, int] | None = None
        # The questions in order of cost; a window must pass them all.
        for window in self.windows:
            inside = recent[bisect_right(recent, clock - window, key=_CLOCK) :]
            hits = sum(1 for r in inside if r[1] == side)
            if hits < self.min_accounts:
                continue  # fewer ratings than min_accounts, so fewer accounts too
            kept_inside = sum(1 for r in inside if r[3] and r[1] == side and r[0] < clock)
            all_kept_inside = sum(1 for r in inside if r[3] and r[0] < clock)
            base_k = (item.kept_side[side] if item is not None else 0) - kept_inside
            base_n = (item.kept if item is not None else 0) - all_kept_inside
            age = clock - born
            before = max(age - window, 0)
            if not (self._quiet(base_k, before, side) and self._quiet(base_n, before, 0)):
                continue  # an item popular (at this extreme) before the window: not a target
            extreme = {r[2] for r in inside if r[1] == side}
            k = len(extreme)
            if k < self.min_accounts:
                continue
            volume, concentration = self._nats(hits, len(inside), base_k, base_n, age, window, side)
            total = volume + concentration
            if concentration < self.min_concentration_nats or total < self.threshold_nats:
                continue
            times = sorted(r[4] for r in inside if r[1] == side)
            if 2 * _densest(times, self.min_span_hours * 3600.0) > hits:
                continue  # most of the run came within hours: the campaign detector's to judge
            if 2 * sum(1 for a in extreme if self._old(a, ts)) >= k:
                continue  # established users give much of it: enthusiasm, not sock puppets
            if best is None or total > best[0]:
                best = (total, concentration, window)
        if best is None:
            return None
        start = clock - best[2]
        group = list(dict.fromkeys(r[2] for r in recent if r[0] > start and r[1] & 3 == side))
        busy = float(np.median([self._activity(a) for a in group]))
        if self._audience(busy):
            return None
        return self._open(tick, batch, i, side, best, group, busy)

    def _too_few(self, item: _Item | None, side: int, in_tick: int) -> bool:
        """Do the item's ring and the tick (``in_tick``) hold fewer than ``min_accounts``
        ratings of this extreme? Then no window can pass the test (exact)."""
        return (item.in_ring[side] if item is not None else 0) + in_tick < self.min_accounts

    def _audience(self, busy: float) -> bool:
        """Is the run's typical rater (median events) busier than twice the stream's
        typical account (recently active ones, refreshed with the ceilings), and than
        ``_MIN_CAP``? Sock puppets are cheap; a group of long-standing heavy users is a
        film's audience (MovieLens: pushes' groups 4-40 events at a stream median of
        15-40, *The Two Towers*' fans 117-124)."""
        return busy > max(_MIN_CAP, 2.0 * self._typical)

    def _popular(self, item: _Item, clock: int, added: int) -> bool:
        """Would every window fail the test that the item was quiet before it? A shortcut
        for busy items, exact: the ratings before a window are at least those kept less
        the ring and the tick's own, and fewer ratings can only look quieter."""
        fewest = item.kept - len(item.recent) - added
        age = clock - item.born
        return not any(self._quiet(fewest, max(age - w, 0), 0) for w in self.windows)

    def _prior_rate(self, side: int) -> float:
        """The rate of this extreme (of any rating for side 0) per rated event on an average
        item."""
        side_rate = (self._kept_side[side] + 1.0) / (self._kept + 1.0) if side else 1.0
        return side_rate / max(len(self._items), 1)

    def _quiet(self, count: int, exposure: int, side: int) -> bool:
        """Was the item's rate of this extreme (side 0: of any rating), ``count`` kept over
        ``exposure`` rated events (Gamma posterior mean), at most ``_QUIET`` times an
        average item's?"""
        per_item = self._prior_rate(side)
        rate = (self.prior_shape + max(count, 0)) / (self.prior_shape / per_item + exposure)
        return rate <= _QUIET * per_item

    def _nats(
        self, hits: int, rated: int, base_k: int, base_n: int, age: int, window: int, side: int
    ) -> tuple[float, float]:
        """Volume and concentration surprise of ``hits`` extremes among ``rated``."""
        side_rate = (self._kept_side[side] + 1.0) / (self._kept + 1.0)  # per rated event
        per_item = self._prior_rate(side)
        shape = self.prior_shape + max(base_k, 0)
        before = max(age - window, 0)  # the item's exposure before the window
        rate = self.prior_shape / per_item + before
        volume = surprise(gamma_poisson_logsf(hits, shape, rate, min(window, age + 1)))
        ceiling = self._ceilings[side] * _CEILING_PRIOR
        share = (max(base_k, 0) + ceiling) / (max(base_n, 0) + _CEILING_PRIOR)
        concentration = surprise(binom_logsf(hits, rated, max(share, side_rate)))
        return volume, concentration

    # ------------------------------------------------------------------ campaigns

    def _open(
        self,
        tick: _Tick,
        batch: Batch,
        i: int,
        side: int,
        best: tuple[float, float, int],
        group: list[str],
        busy: float,
    ) -> Campaign:
        """Open a campaign on the best window; ``group`` are the accounts that gave its
        run (or one step off it), in order, and ``busy`` their median activity."""
        total, concentration, window = best
        e = batch.events[i]
        clock, ts = int(tick.clocks[i]), float(batch.ts[i])
        cid = f"slow-{tick.next_id}"
        tick.next_id += 1
        score = 1.0 - 0.5 * math.exp(-(total - self.threshold_nats) / self.threshold_nats)
        camp = Campaign(
            cid,
            self.name,
            _SIDE_NAME[side],
            {e.item_id: ts},
            {},
            ts,
            ts,
            ts,
            score,
            {"nats": total, "concentration_nats": concentration, "window_events": window},
            start_clock=clock - window,
            last_clock=clock,
        )
        item = self._items._data.get(e.item_id)
        camp.target_baselines[e.item_id] = (clock, float(item.kept_side[side] if item else 0))
        tick.campaigns[cid] = camp
        tick.targets[(e.item_id, side)] = cid
        # Sock puppets are small: an account far busier than the group's typical one is a
        # real user who happened to rate the target, not a member.
        camp.evidence["member_cap"] = max(3.0 * busy, _MIN_CAP)
        for account_id in group:
            self._add_member(tick, camp, account_id, ts)
        return camp

    def _old(self, account_id: str, ts: float) -> bool:
        """Is the account old by its creation date (known from an earlier tick)?"""
        acc = self._accounts._data.get(account_id)
        return acc is not None and ts - acc.created > self.fresh_age  # False for NaN

    def _activity(self, account_id: str) -> int:
        acc = self._accounts._data.get(account_id)
        return acc.n if acc is not None else 0

    def _join(self, tick: _Tick, camp: Campaign, batch: Batch, i: int, clock: int) -> None:
        """An extreme (or next to it) on an open campaign's target: the account joins."""
        e = batch.events[i]
        if tick.campaigns.get(camp.id) is not camp:
            camp = camp.copy()
            tick.campaigns[camp.id] = camp
        opened, kept_then = camp.target_baselines[e.item_id]
        item = self._items._data.get(e.item_id)
        kept_since = (item.kept_side[int(tick.codes[i]) & 3] if item else 0) - kept_then
        if not self._quiet(int(kept_since), clock - opened, int(tick.codes[i]) & 3):
            return  # honest raters keep the extreme on the target: nobody joins any more
        camp.last_ts = max(camp.last_ts, float(batch.ts[i]))
        camp.last_clock = clock
        if e.account_id not in camp.members:
            self._add_member(tick, camp, e.account_id, float(batch.ts[i]), e.account_created_at)

    def _add_member(
        self,
        tick: _Tick,
        camp: Campaign,
        account_id: str,
        ts: float,
        created: float | None = None,
    ) -> None:
        acc = self._accounts._data.get(account_id)
        if (acc.n if acc is not None else 0) > camp.evidence["member_cap"]:
            return
        if created is None and acc is not None and not math.isnan(acc.created):
            created = acc.created
        if created is not None and ts - created > self.fresh_age:
            return  # old by its creation date: a real user, not a sock puppet
        camp.members[account_id] = ts
        tick.members[account_id] = camp.id

    def _mark_members(self, tick: _Tick, batch: Batch, scores: Scores) -> None:
        """Quarantine every event of the tick from members of open campaigns and flag the
        tick's new members so that their earlier releases are revoked."""
        assert scores.campaign_ids is not None
        if not tick.members and not self._campaigns:
            return  # only a campaign opened in this tick could hold anyone, through members
        seen: dict[str, int] = {}
        for i, e in enumerate(batch.events):
            seen[e.account_id] = seen.get(e.account_id, 0) + 1
            cid = tick.members.get(e.account_id)
            if cid is None:
                acc = self._accounts._data.get(e.account_id)
                cid = acc.campaign if acc is not None and acc.campaign else None
            camp = None
            if cid is not None:
                camp = tick.campaigns.get(cid) or self._campaigns.get(cid)
            busy = self._activity(e.account_id) + seen[e.account_id]
            if camp is None or busy > camp.evidence["member_cap"]:
                continue
            scores.scores[i] = camp.score
            scores.details[i] = f"member of {camp.summary()}"
            scores.campaign_ids[i] = camp.id
        for account_id, cid in tick.members.items():
            camp = tick.campaigns[cid]
            acc = self._accounts._data.get(account_id)
            since = acc.first_ts if acc is not None else float("-inf")
            detail = f"slow push member, {camp.summary()}"
            scores.flagged_accounts.append(Flag(account_id, cid, detail, camp.score, since))

    def _target(self, tick: _Tick, item_id: str, side: int) -> Campaign | None:
        cid = tick.targets.get((item_id, side)) or self._targets.get((item_id, side))
        if cid is None:
            return None
        return tick.campaigns.get(cid) or self._campaigns.get(cid)

    def _expire(self) -> None:
        horizon = self._clock - self.ttl_events
        self._items.expire(lambda it: it.last_clock < horizon)
        self._accounts.expire(lambda acc: acc.last_clock < horizon)
        hold = self._clock - self.hold_events
        for cid in [c for c, camp in self._campaigns.items() if camp.last_clock < hold]:
            camp = self._campaigns.pop(cid)
            camp.closed = True
            self._closed.append(camp)
            for key in [k for k, v in self._targets.items() if v == cid]:
                del self._targets[key]


def _rated(batch: Batch) -> np.ndarray:
    """Which events are ratings or reviews with a rating: the ones on the stream clock."""
    return (batch.kind <= _RATED) & ~np.isnan(batch.rating)


def _densest(times: list[float], span: float) -> int:
    """The most of the sorted ``times`` that fall within one stretch of ``span``."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best
