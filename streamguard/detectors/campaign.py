"""Coordinated campaigns: fake accounts pushing or nuking items in lockstep, found as groups.

What a campaign looks like, and what does not. A shilling campaign (random, average or
bandwagon attack models, push to 5 or nuke to 1) hides each fake account behind filler
ratings that look normal one by one, but every fake account gives the *same extreme* to
the *same target*, within hours (a burst) or weeks (a slow drip). A launch or a viral
item also draws many ratings at once, but from established accounts with a natural spread
of values. So for each extreme rating the detector asks whether the accounts that recently
gave this item this extreme form a group that is surprising (see
:mod:`streamguard.detectors.lockstep`; time is counted in rated events, so the same
settings hold for a marketplace and for MovieLens' 22 years):

- **volume**: more such ratings than the item's own history predicts (DenseAlert/MIDAS);
- **concentration**: a larger share at this extreme than the item's history (or, for an
  item with little history, a high natural ceiling) allows: a launch's spread fails here;
- **newness**: more new accounts (young by creation date, or in their first sitting when
  the date is unknown) than items as popular usually get: rallied real users fail here;
- **shared IPs or devices** inside the group, when events carry them. Nothing needs
  metadata.

A group opens a campaign when its total surprise reaches ``threshold_nats``, with at least
``min_concentration_nats`` of concentration and ``min_group_nats`` from the three questions
other than volume (volume alone is what a viral item has), or ``undated_group_nats`` when
fewer than half its accounts are established by their creation dates (see :meth:`_dated`).
Accounts already found in a campaign, open or closed, are left out first: bandwagon fakes
also 5-star popular items, and those traces must not become campaigns of their own.

A finding opens a :class:`~streamguard.campaigns.Campaign` (decisive: its events are
quarantined outright) that then grows:

- members are the group's new accounts and, when their age is unknown, accounts no busier
  than the group's typical new account (``member_cap``, three times its median activity):
  sock puppets are small; a real MovieLens user in a 300-film sitting is not;
- every later event of a member within that cap is quarantined while the campaign is
  active (``hold_hours`` of event time or ``hold_events`` rated events since its last
  activity: its opening, a further target, or a join at the burst's pace or by an
  account new by its creation date; a straggler's join does not count), with the
  campaign id in the reason;
- a new account that rates a quiet target (one honest rating at that extreme expected
  over a hold, at most, or one step off it one rating of any value; or, while the burst
  goes on, one the campaign rates far faster than honest users do, unless established
  raters have since made it popular) at or one step off the campaign's extreme joins, as
  do such accounts seen one step off in the opening window; on a busier
  target (fewer than three expected from established accounts: one made busy by the
  push itself) only accounts whose creation date says they are new (one step off the
  extreme, after the burst, only if established accounts seldom rate it at any value);
  on a popular item nobody joins, the campaign keeps its opening group. "One step off"
  is a step of the stream's own scale: the nearest value to the extreme it has used
  (4 on whole stars, 4.5 on half stars). An account whose creation date says
  it is old joins only with the exact extreme on a quiet target and in its first sitting
  in the stream (a dormant account woken for the cause, as rallied bombers are); one the
  stream already knew may be a real user who agrees: its exact extreme on a quiet target
  is quarantined, the rest of its history is not;
- members' earlier events, already released to the clean topic, are revoked through
  ``Scores.flagged_accounts`` (members: everything since they appeared; established
  accounts of the opening group: from their target rating on).

Batch semantics: ``score_batch`` replays the tick event by event, changing the touched
accounts and items in place with undo records and holding new entries and campaigns aside
(so an attack packed inside one tick is seen in order); ``learn_batch`` commits, a second
``score_batch`` of an uncommitted tick rolls back first, and a checkpoint (pickle) holds
committed state only. Events of the tick from accounts that joined later in the same tick
are quarantined too (the pipeline revokes only releases of earlier ticks). The events that
end up out of the clean set do not depend on how ticks are cut, up to the odd honest
rating at the edge of a group window: baselines learn from the per-tick ``keep`` mask.

State is bounded: accounts and items are LRU tables with size caps, idle entries expire
after ``ttl_days`` of event time *and* ``ttl_events`` rated events (so a slow stream keeps
its memory), each item keeps its last ``ring_size`` rating clocks and extreme groups, and
closed campaigns are kept for review up to ``max_closed``.
"""

from __future__ import annotations

import functools
import math
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamguard.campaigns import Campaign
from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.detectors.lockstep import (
    FRESH,
    HIGH,
    LOW,
    MIDDLE,
    NEAR,
    SideGroup,
    binom_logsf,
    gamma_poisson_logsf,
    narrowed_steps,
    surprise,
)
from streamguard.features import LRUTable

DAY = 86400.0
_RATED = (0, 1)  # KIND_CODES of rating and review
_SIDE_NAME = {HIGH: "push", LOW: "nuke"}
_BANDS = 16  # item popularity bands for the new-account share
# Honest extreme ratings expected on a target over a hold. Below _QUIET (counting everyone)
# any new or small account may join through it; below _BUSY (counting established accounts
# only, which a push by new accounts cannot inflate) only accounts young by creation date.
_QUIET = 1.0
_BUSY = 3.0
_ODDS = 4.0
_GAPS = 10.0  # a burst goes on while the next account comes within this many typical gaps


class CampaignSettings(BaseModel):
    """Settings of the campaign detector (``detectors.campaign`` in the config).

    Thresholds are in nats (-log of a tail probability) and were set on simulated benign,
    viral-launch and attack streams over both bases (synthetic and MovieLens), with margin
    above the largest benign group seen; windows, holds and baselines count rated events
    (the stream clock) so that they mean the same at any traffic rate.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    min_accounts: int = Field(3, ge=2, le=64)
    threshold_nats: float = Field(40.0, gt=0)
    min_concentration_nats: float = Field(3.0, ge=0)
    min_group_nats: float = Field(12.0, ge=0)
    undated_group_nats: float = Field(8.0, ge=0)
    ring_size: int = Field(64, ge=8, le=1024)
    fresh_age_days: float = Field(180.0, ge=0)
    fresh_history: int = Field(2, ge=0)
    sitting_gap_minutes: float = Field(30.0, gt=0)
    hold_hours: float = Field(24.0, ge=0)
    hold_events: int = Field(5_000, ge=0)
    baseline_halflife_events: int = Field(1_000_000, ge=1_000)
    warmup_events: int = Field(2_000, ge=0)
    max_accounts: int = Field(1_000_000, ge=1)
    max_items: int = Field(200_000, ge=1)
    ttl_days: float = Field(30.0, gt=0)
    ttl_events: int = Field(200_000, ge=0)


class _Account:
    """What the detector knows of one account: enough to say whether it is new."""

    __slots__ = ("id", "first_ts", "last_ts", "last_clock", "n", "sitting_ts", "before",
                 "created", "ip", "device", "campaign")  # fmt: skip

    def __init__(self, account_id: str, ts: float, clock: int) -> None:
        self.id = account_id
        self.first_ts = ts
        self.last_ts = ts
        self.last_clock = clock
        self.n = 0  # events seen
        self.sitting_ts = ts  # start of the current sitting
        self.before = 0  # events before the current sitting
        self.created = math.nan
        self.ip = 0  # crc32 of the last ip / device seen (0: none)
        self.device = 0
        self.campaign = ""  # the campaign it was found in, if any (kept after it closes)

    def save(self, log: list[Any]) -> None:
        """Append what a tick may change to the tick's undo log: one flat list rather than
        a tuple per account, so fewer objects for the garbage collector to track."""
        log += _saved_account_fields(self)

    def restore(self, saved: Iterator[Any]) -> None:
        """Read back what :meth:`save` appended."""
        for name in _SAVED_ACCOUNT_FIELDS:
            setattr(self, name, next(saved))


_SAVED_ACCOUNT_FIELDS = ("last_ts", "last_clock", "n", "sitting_ts", "before", "created", "ip",
                         "device")  # fmt: skip
_saved_account_fields = attrgetter(*_SAVED_ACCOUNT_FIELDS)


class _Item:
    """One item: the clocks of its recent ratings, its extreme groups, its kept baseline."""

    __slots__ = ("clock", "high", "low", "near", "born", "base_clock", "c_all", "c_high", "c_low",
                 "e_all", "e_high", "e_low", "last_ts", "last_clock")  # fmt: skip

    def __init__(self, clock: int, ts: float) -> None:
        self.clock = array("q")  # stream clocks of the last ``ring_size`` rated events
        # The groups at each extreme, made on use (many items never get a 1).
        self.high: SideGroup | None = None
        self.low: SideGroup | None = None
        # Ratings one step off an extreme (a sloppy fake's 4 or 2), side in the flag's bit 1:
        # never evidence, but the accounts join a campaign opened on the item. Made on use.
        self.near: SideGroup | None = None
        self.born = clock  # stream clock when first seen: the start of its exposure
        self.base_clock = clock  # stream clock of the baseline counts below
        self.c_all = 0.0  # decayed counts of kept rated events
        self.c_high = 0.0
        self.c_low = 0.0
        self.e_all = 0.0  # the same, from established (not new) accounts only: a share that
        self.e_high = 0.0  # a push by new accounts cannot move
        self.e_low = 0.0
        self.last_ts = ts
        self.last_clock = clock

    def groups(self) -> tuple[SideGroup | None, SideGroup | None, SideGroup | None]:
        return self.high, self.low, self.near

    def group(self, side: int) -> SideGroup:
        """The group at this extreme, made on first use."""
        if side == HIGH:
            if self.high is None:
                self.high = SideGroup()
            return self.high
        if self.low is None:
            self.low = SideGroup()
        return self.low

    def save(self, log: list[Any]) -> None:
        """Append what a tick may change to a flat undo log (see :meth:`_Account.save`).

        The ring and the groups need no record: a tick only appends to them, so its
        entries are those after the tick's first clock.
        """
        log += (self.last_ts, self.last_clock)

    def restore(self, saved: Iterator[Any], clock: int) -> None:
        """Read back what :meth:`save` appended; drop entries after stream clock ``clock``
        (a group made since is left empty)."""
        del self.clock[bisect_right(self.clock, clock) :]
        for group in self.groups():
            if group is not None:
                group.truncate(bisect_right(group.clock, clock))
        self.last_ts = next(saved)
        self.last_clock = next(saved)


@dataclass
class _Tick:
    """One tick's tentative changes: new entries, undo records, campaigns, scores.

    ``score_batch`` applies the tick to touched accounts and items in place (undo records
    kept here) and holds new accounts, items and changed campaigns aside; ``learn_batch``
    commits, a repeated ``score_batch`` rolls back first. Scoring is thus repeatable and
    leaves the state as it found it, without copying every touched item.
    """

    batch: Batch
    scores: Scores
    new_accounts: dict[str, _Account] = field(default_factory=dict)
    new_items: dict[str, _Item] = field(default_factory=dict)
    # Entries changed in place, and their saved fields in order (see _Account.save).
    undo_accounts: dict[str, _Account] = field(default_factory=dict)
    undo_items: dict[str, _Item] = field(default_factory=dict)
    account_log: list[Any] = field(default_factory=list)
    item_log: list[Any] = field(default_factory=list)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    targets: dict[tuple[str, int], str] = field(default_factory=dict)
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    counts: list[int] = field(default_factory=list)  # the account's events so far, per event
    clock: int = 0
    next_id: int = 0


class CampaignDetector:
    """Streaming lockstep detector: finds, grows and explains fake-account campaigns.

    Parameters (those of :class:`CampaignSettings`, plus the rating scale):

    - ``min_accounts``: the smallest group that can open a campaign;
    - ``threshold_nats``, ``min_concentration_nats``, ``min_group_nats``: the surprise a
      group needs in total, from concentration, and from everything but volume;
    - ``undated_group_nats``: the last, for a group mostly without creation dates;
    - ``ring_size``: ratings per item the group windows can reach back over;
    - ``fresh_age_days``, ``fresh_history``: an account is new when younger than this by
      its creation date or, without one, when it had at most this many events before its
      current sitting (sittings split at ``sitting_gap_minutes``);
    - ``hold_hours``, ``hold_events``: how long a campaign stays open after its last
      activity (whichever is longer);
    - ``baseline_halflife_events``: memory of the item baselines, in rated events;
    - ``warmup_events``: kept ratings learned before any campaign may open;
    - ``max_accounts``, ``max_items``, ``ttl_days``, ``ttl_events``: the state bounds;
    - ``rating_low``, ``rating_high``: the scale whose ends are the extremes;
    - ``max_closed``: closed campaigns kept for :meth:`campaigns`.

    >>> det = CampaignDetector(warmup_events=0)
    >>> det.open_campaigns
    0
    """

    name = "campaign"
    # The event attributes it reads: all it is sent in a second process (offload.py).
    EVENT_FIELDS = ("account_id", "item_id", "ts", "ip", "device_id", "account_created_at")

    def __init__(
        self,
        min_accounts: int = 3,
        threshold_nats: float = 40.0,
        min_concentration_nats: float = 3.0,
        min_group_nats: float = 12.0,
        undated_group_nats: float = 8.0,
        ring_size: int = 64,
        fresh_age_days: float = 180.0,
        fresh_history: int = 2,
        sitting_gap_minutes: float = 30.0,
        hold_hours: float = 24.0,
        hold_events: int = 5_000,
        baseline_halflife_events: int = 1_000_000,
        warmup_events: int = 2_000,
        max_accounts: int = 1_000_000,
        max_items: int = 200_000,
        ttl_days: float = 30.0,
        ttl_events: int = 200_000,
        rating_low: float = 1.0,
        rating_high: float = 5.0,
        max_closed: int = 1_000,
    ) -> None:
        if min_accounts < 2:
            raise ValueError(f"min_accounts must be >= 2, got {min_accounts}")
        minimums = (min_concentration_nats, min_group_nats, undated_group_nats)
        if threshold_nats <= 0 or min(minimums) < 0:
            raise ValueError("threshold_nats must be > 0, the other minimums >= 0")
        if ring_size < max(8, min_accounts):
            raise ValueError(f"ring_size must be >= max(8, min_accounts), got {ring_size}")
        if rating_low >= rating_high:
            raise ValueError("rating_low must be below rating_high")
        if min(fresh_age_days, fresh_history, hold_hours, hold_events, warmup_events) < 0:
            raise ValueError("ages, holds and warm-up must be >= 0")
        if sitting_gap_minutes <= 0 or ttl_days <= 0 or baseline_halflife_events < 1:
            raise ValueError("sitting_gap_minutes, ttl_days and the half-life must be > 0")
        if max_accounts < 1 or max_items < 1 or max_closed < 0 or ttl_events < 0:
            raise ValueError("table sizes must be >= 1 and ttl_events >= 0")
        self.min_accounts = min_accounts
        self.threshold_nats = threshold_nats
        self.min_concentration_nats = min_concentration_nats
        self.min_group_nats = min_group_nats
        self.undated_group_nats = undated_group_nats
        self.ring_size = ring_size
        self.fresh_age_days = fresh_age_days
        self.fresh_history = fresh_history
        self.sitting_gap_minutes = sitting_gap_minutes
        self.hold_hours = hold_hours
        self.hold_events = hold_events
        self.baseline_halflife_events = baseline_halflife_events
        self.warmup_events = warmup_events
        self.max_accounts = max_accounts
        self.max_items = max_items
        self.ttl_days = ttl_days
        self.ttl_events = ttl_events
        self.rating_low = rating_low
        self.rating_high = rating_high
        self.max_closed = max_closed

        self._tau = baseline_halflife_events / math.log(2.0)
        self._accounts: LRUTable[_Account] = LRUTable(max_accounts)
        self._items: LRUTable[_Item] = LRUTable(max_items)
        self._campaigns: dict[str, Campaign] = {}  # open ones
        self._closed: deque[Campaign] = deque(maxlen=max_closed)
        self._member_of: dict[str, str] = {}
        self._targets: dict[tuple[str, int], str] = {}
        self._clock = 0  # rated events seen (the stream clock)
        # One step off each extreme on the stream's own scale (``narrowed_steps``): 1 on
        # whole stars, 0.5 on half stars.
        self._steps = (1.0, 1.0)  # below the top, above the bottom
        self._learned = 0  # kept rated events learned
        self._next_id = 1
        self._opened_total = 0
        self._watermark = -math.inf
        # Global kept-only shares, exponentially weighted over rated events.
        self._g_side = [0.0, 0.2, 0.05]  # share of rated events at each side
        self._g_fresh = [0.0, 0.5, 0.5]  # share of side ratings given by new accounts
        # ... per item popularity band (log2 of its kept ratings): newcomers rate popular
        # items more (MovieLens asks new users to rate them), so "many new accounts" is
        # judged against items alike. Counts [side][band] of (new, all), halved when large.
        self._band_fresh = [[[0.0, 0.0] for _ in range(_BANDS)] for _ in range(3)]
        self._pending: _Tick | None = None
        self.trace: list[dict[str, Any]] | None = None  # set to a list to record evaluations

    # ------------------------------------------------------------------ public views

    @property
    def open_campaigns(self) -> int:
        return len(self._campaigns)

    def campaigns(self, include_closed: bool = True) -> list[Campaign]:
        """Open campaigns (and recently closed ones), oldest first, as copies."""
        out = [c.copy() for c in self._campaigns.values()]
        if include_closed:
            out = [c.copy() for c in self._closed] + out
        return out

    def stats(self) -> dict[str, float]:
        """Numbers for the metrics collector (see :mod:`streamguard.metrics`)."""
        return {
            "open_campaigns": float(len(self._campaigns)),
            "campaigns_total": float(self._opened_total),
            "members": float(len(self._member_of)),
            "state_entries": float(len(self._accounts) + len(self._items)),
        }

    def __getstate__(self) -> dict[str, Any]:
        self._rollback()  # a checkpoint holds committed state only
        state = self.__dict__.copy()
        state["trace"] = None
        return state

    # ------------------------------------------------------------------ protocol

    def score_batch(self, batch: Batch) -> Scores:
        self._rollback()
        tick = self._run(batch)
        self._pending = tick
        return tick.scores

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        tick = self._pending
        if tick is None or tick.batch is not batch:
            self._rollback()
            tick = self._run(batch)
        self._pending = None
        self._commit(tick)
        self._learn(batch, keep, tick)
        self._steps = narrowed_steps(self._steps, batch.rating, self.rating_low, self.rating_high)
        if len(batch):
            self._expire(float(batch.ts.max()))

    # ------------------------------------------------------------------ the tick

    def _run(self, batch: Batch) -> _Tick:
        """Replay the tick event by event (the hot loop: kept flat on purpose)."""
        n = len(batch)
        cids: list[str | None] = [None] * n
        tick = _Tick(batch, Scores(np.zeros(n), [None] * n, cids), clock=self._clock,
                     next_id=self._next_id)  # fmt: skip
        codes = [0] * n
        counts = tick.counts
        flags: dict[str, Flag] = {}
        gap = self.sitting_gap_minutes * 60.0
        fresh_age = self.fresh_age_days * DAY
        fresh_history = self.fresh_history
        high, low = self.rating_high, self.rating_low
        step_high, step_low = self._steps
        ring_size, min_accounts = self.ring_size, self.min_accounts
        armed = self._learned >= self.warmup_events
        rating = batch.rating.tolist()
        kinds = batch.kind.tolist()
        member_of, tick_members = self._member_of, tick.members
        targets, tick_targets = self._targets, tick.targets
        accounts, new_accounts = self._accounts._data, tick.new_accounts
        items, new_items = self._items._data, tick.new_items
        undo_accounts, undo_items = tick.undo_accounts, tick.undo_items
        account_log, item_log = tick.account_log, tick.item_log
        clock = tick.clock
        for i, e in enumerate(batch.events):
            ts = e.ts  # the event's own float, shared with the other tables' copies
            account_id = e.account_id
            # The account, changed in place (its undo record kept first) or new.
            acc = undo_accounts.get(account_id)
            if acc is None:
                acc = new_accounts.get(account_id)
                if acc is None:
                    acc = accounts.get(account_id)  # a read: the LRU touch waits for commit
                    if acc is None:
                        acc = _Account(account_id, ts, clock)
                        new_accounts[account_id] = acc
                    else:
                        undo_accounts[account_id] = acc
                        acc.save(account_log)
                        # The string the commit keys the table by, as the other tables
                        # do: the first event's equal copy can then be freed.
                        acc.id = account_id
            if ts - acc.last_ts > gap:
                acc.before = acc.n
                acc.sitting_ts = ts
            acc.n += 1
            counts.append(acc.n)
            if ts > acc.last_ts:
                acc.last_ts = ts
            acc.last_clock = clock
            if e.account_created_at is not None:
                acc.created = e.account_created_at
            if e.ip:
                acc.ip = zlib.crc32(e.ip.encode())
            if e.device_id:
                acc.device = zlib.crc32(e.device_id.encode())
            if member_of or tick_members:
                cid = tick_members.get(account_id) or member_of.get(account_id)
                if cid is not None:
                    camp = self._campaign(tick, cid)
                    if (
                        camp is not None
                        and acc.n <= camp.evidence.get("member_cap", math.inf)
                        and self._active(camp, ts, clock)
                    ):
                        self._mark(tick, i, camp, f"member of {camp.summary()}")
            r = rating[i]
            if kinds[i] > 1 or r != r:  # only ratings and reviews carry a rating
                continue
            clock += 1
            if r >= high:
                side, near = HIGH, False
            elif r <= low:
                side, near = LOW, False
            elif r >= high - step_high:
                side, near = HIGH, True
            elif r <= low + step_low:
                side, near = LOW, True
            else:
                side, near = MIDDLE, False
            created = acc.created  # new: young by creation date, or else in its first sitting
            fresh = ts - created <= fresh_age if created == created else acc.before <= fresh_history
            codes[i] = side | (NEAR if near else 0) | (FRESH if fresh else 0)
            item_id = e.item_id
            item = undo_items.get(item_id)
            if item is None:
                item = new_items.get(item_id)
                if item is None:
                    item = items.get(item_id)
                    if item is None:
                        item = _Item(clock, ts)
                        new_items[item_id] = item
                    else:
                        undo_items[item_id] = item
                        item.save(item_log)
            item.clock.append(clock)
            if ts > item.last_ts:
                item.last_ts = ts
            item.last_clock = clock
            if side == MIDDLE:
                continue
            if not near:
                group = item.high if side == HIGH else item.low
                if group is None:
                    group = item.group(side)
                group.push(clock, ts, fresh, acc.id)
            else:
                group = item.near
                if group is None:
                    group = item.near = SideGroup()
                group.push(clock, ts, fresh | (side << 1), acc.id)
            if targets or tick_targets:
                target = tick_targets.get((item_id, side)) or targets.get((item_id, side))
                camp = self._campaign(tick, target) if target else None
                if camp is not None and self._active(camp, ts, clock):
                    tick.clock = clock
                    self._grow(tick, i, camp, item_id, item, side, acc, fresh, near, ts, flags)
                    continue
            if armed and not near and len(group.who) >= min_accounts:
                first = item.clock[-ring_size] if len(item.clock) >= ring_size else 0
                tick.clock = clock
                found = self._scan(tick, item, group, side, first)
                if found is not None:
                    self._detect(tick, i, item_id, item, group, side, first, found, ts, flags)
        tick.clock = clock
        tick.codes = np.array(codes, dtype=np.int8)
        self._sweep(tick)
        tick.scores.flagged_accounts = list(flags.values())
        return tick

    def _grow(self, tick: _Tick, i: int, camp: Campaign, item_id: str, item: _Item,
              side: int, acc: _Account, fresh: bool, near: bool, ts: float,
              flags: dict[str, Flag]) -> None:  # fmt: skip
        """A side rating on an active campaign's target: join, or quarantine the rating."""
        if acc.id in camp.members:
            return
        capped = acc.n <= camp.evidence.get("member_cap", math.inf)  # as busy as the group
        unknown = acc.created != acc.created  # no creation date: maybe a new account
        natural = camp.target_rates.get(item_id, math.inf)
        # While the burst goes on (the next account comes within _GAPS of its typical
        # gaps), its pace (members per rated event) against the target's honest pace at
        # this extreme (or, one step off, at any value): at _ODDS to one, a new account
        # rating the target is far likelier a fake than not. After the burst the pace
        # proves nothing: the item may have grown popular.
        lasted = max(camp.last_clock - camp.start_clock, 1)
        members = max(len(camp.members), 1)
        # One step off the extreme, both the pace and the quiet test below are judged
        # against the target's ratings of any value: a 4 on an item rated 3 and 4 all day
        # proves nothing, however seldom it gets a 5.
        honest = camp.target_all_rates.get(item_id, math.inf) if near else natural
        burst = tick.clock - camp.last_clock <= _GAPS * lasted / members
        pacing = burst and members >= _ODDS * honest * lasted
        quiet = (honest * self.hold_events < _QUIET or pacing) and not self._grew_popular(
            camp, item_id, item, side, tick.clock
        )
        settled = camp.target_established_rates.get(item_id, math.inf) * self.hold_events
        young = acc.created == acc.created and fresh  # new by its creation date
        # One step off the extreme on a target established users rate often at any value,
        # a young account is a sloppy fake only while the burst goes on; after it, an
        # honest newcomer's 4 (and such a join holds nothing open).
        busy_any = camp.target_established_all_rates.get(item_id, math.inf) * self.hold_events
        plain = near and busy_any >= _BUSY
        # Through a quiet target join new accounts (also one step off the extreme: sloppy
        # fakes) and small ones with the exact extreme, of unknown age or old but woken for
        # the cause (see _woken); through a target that only looks busy because of new
        # accounts, only accounts whose creation date says they are new. An old account the
        # stream already knew never joins: it may be a real user who agrees, and only its
        # rating of the target is quarantined.
        if capped and (
            (quiet and (fresh or (not near and (unknown or self._woken(acc)))))
            or (young and settled < _BUSY and (burst or not plain))
        ):
            camp = self._writable(tick, camp)
            if pacing or (young and not plain):
                # Only a join at the burst's pace, or by an account new by its creation
                # date, keeps the campaign active: a straggler on a target that only looks
                # quiet (an honest fan of a film pushed long ago) joins but must not hold
                # the campaign open for the next one.
                camp.last_ts = max(camp.last_ts, ts)
                camp.last_clock = tick.clock
            camp.members[acc.id] = ts
            tick.members[acc.id] = camp.id
            flags[acc.id] = self._flag(camp, acc, member=True, ts=ts)
            self._mark(tick, i, camp, f"joined {camp.summary()}")
        elif quiet and not near:  # an established account's push on a quiet target
            camp = self._writable(tick, camp)
            camp.established += 1
            self._mark(tick, i, camp, f"rated a target of {camp.summary()}")

    def _grew_popular(self, camp: Campaign, item_id: str, item: _Item, side: int,
                      clock: int) -> bool:  # fmt: skip
        """Have established raters (whom a push by new accounts cannot fake) given the target
        this extreme far more often since it became one than its rate then predicted? A
        launch that was quiet when pushed may since have become popular."""
        since, before = camp.target_baselines.get(item_id, (clock, 0.0))
        expected = camp.target_established_rates.get(item_id, 0.0) * (clock - since)
        seen = (item.e_high if side == HIGH else item.e_low) - before
        return seen > expected + 2.0 * math.sqrt(expected) + 2.0

    def _detect(self, tick: _Tick, i: int, item_id: str, item: _Item, group: SideGroup,
                side: int, first: int, found: tuple[int, float, dict[str, float]], ts: float,
                flags: dict[str, Flag]) -> None:  # fmt: skip
        """The group of accounts that gave this item this extreme is surprising (``found``,
        from :meth:`_scan`): open a campaign, or add a target to one, unless it is made of
        accounts already dealt with.

        ``first`` is the stream clock of the oldest rating still in the item's ring (older
        group entries are out of reach).
        """
        # Accounts already found in a campaign (open or closed) were dealt with: a group is
        # only new if it still stands without them (bandwagon fakes leave traces on the
        # popular items they also rated, which must not become campaigns of their own).
        known = [k for k, a in enumerate(group.who) if self._known_member(tick, a)]
        if known:
            group = group.without(set(group.who[k] for k in known))
            again = self._scan(tick, item, group, side, first)
            if again is None:
                return
            found = again
        j, nats, evidence = found
        lo = len(group) - j
        members = group.who[lo:]
        natural = evidence["natural_rate"]
        established = evidence["established_rate"]
        any_value = evidence.pop("any_rate")
        established_any = evidence.pop("established_any_rate")
        e_side = item.e_high if side == HIGH else item.e_low
        overlap = self._overlapping(tick, members, side)
        if overlap is not None:
            # The same accounts on another item: a further target only if it is at least as
            # quiet as the campaign's quietest (bandwagon camouflage on popular items is not).
            # Otherwise the group is already this campaign's; its new accounts join it.
            if natural > min(overlap.target_rates.values(), default=math.inf):
                return
            camp = self._writable(tick, overlap)
            camp.targets.setdefault(item_id, ts)
            camp.target_rates[item_id] = natural
            camp.target_established_rates[item_id] = established
            camp.target_baselines[item_id] = (tick.clock, e_side)
            camp.target_all_rates[item_id] = any_value
            camp.target_established_all_rates[item_id] = established_any
        else:
            camp = Campaign(
                id=f"lockstep-{tick.next_id}",
                detector=self.name,
                side=_SIDE_NAME[side],
                targets={item_id: ts},
                members={},
                start_ts=group.ts[lo],
                last_ts=ts,
                opened_ts=ts,
                score=_score(nats, self.threshold_nats),
                evidence=evidence,
                start_clock=group.clock[lo],
                last_clock=tick.clock,
                target_rates={item_id: natural},
                target_established_rates={item_id: established},
                target_baselines={item_id: (tick.clock, e_side)},
                target_all_rates={item_id: any_value},
                target_established_all_rates={item_id: established_any},
            )
            tick.next_id += 1
            tick.campaigns[camp.id] = camp
        tick.targets[(item_id, side)] = camp.id
        camp.start_ts = min(camp.start_ts, group.ts[lo])
        camp.last_ts = max(camp.last_ts, ts)
        camp.last_clock = tick.clock
        # Accounts just before the window belong to the push too (the window is its most
        # surprising stretch, not its start): on a quiet item new and small accounts as far
        # back again as the window is long, on a busier one those still at the burst's
        # pace (each within _GAPS of its typical gaps of the next: a push found late may
        # leave its first account out of its densest stretch); anywhere, accounts young
        # by their creation date.
        quiet = natural * self.hold_events < _QUIET
        first_k = bisect_left(group.clock, first)
        reach: float
        if quiet:
            reach = group.clock[lo] - (tick.clock - group.clock[lo])
        else:
            gap = _GAPS * (tick.clock - group.clock[lo]) / max(len(group) - lo, 1)
            back = lo
            while back > first_k and group.clock[back] - group.clock[back - 1] <= gap:
                back -= 1
            reach = group.clock[back] if back < lo else math.inf
        views = [self._account_view(tick, a) for a in group.who]
        # New members act like the group's typical new account: at most three times as much.
        sizes = [a.n for a, f in zip(views[lo:], group.fresh[lo:], strict=True) if a and f]
        cap = max(20.0, 3.0 * float(np.median(sizes))) if sizes else 20.0
        camp.evidence.setdefault("member_cap", cap)
        for k in range(first_k, len(group)):
            acc = views[k]
            account = group.who[k]
            if acc is None or account in camp.members:
                continue
            fresh = bool(group.fresh[k])
            young = fresh and acc.created == acc.created
            # Members: new, of unknown age or woken on a quiet target (see _grow), and no
            # busier than the group.
            member = acc.n <= cap and (
                fresh or acc.created != acc.created or (quiet and self._woken(acc))
            )
            if k < lo and not (young or (group.clock[k] >= reach and member)):
                continue
            if member:
                camp.members[account] = group.ts[k]
                tick.members[account] = camp.id
            else:
                camp.established += 1
            flags[account] = self._flag(camp, acc, member=member, ts=group.ts[k])
        self._near_members(tick, item, side, camp, cap, max(reach, first), flags)
        camp.evidence["fresh_members"] = float(len(camp.members))
        self._mark(tick, i, camp, f"opened {camp.summary()}")

    def _near_members(self, tick: _Tick, item: _Item, side: int, camp: Campaign, cap: float,
                      reach: float, flags: dict[str, Flag]) -> None:  # fmt: skip
        """New accounts that gave the target one step off the extreme within reach (or
        anywhere, when young by creation date) join the campaign it opened."""
        near = item.near
        if near is None:
            return
        for k, account in enumerate(near.who):
            code = near.fresh[k]
            if code >> 1 != side or not code & 1 or account in camp.members:
                continue
            acc = self._account_view(tick, account)
            if acc is None or acc.n > cap:
                continue
            if near.clock[k] >= reach or acc.created == acc.created:
                camp.members[account] = near.ts[k]
                tick.members[account] = camp.id
                flags[account] = self._flag(camp, acc, member=True, ts=near.ts[k])

    def _scan(self, tick: _Tick, item: _Item, group: SideGroup, side: int,
              first: int) -> tuple[int, float, dict[str, float]] | None:  # fmt: skip
        """Of the windows (the newest ``j`` distinct accounts) that pass, the most
        surprising: its size, nats and evidence; None when none passes.

        A gate comes first, before the real work (most groups, on busy items, fail it;
        tracing sees only the windows that pass it): no window can be concentrated beyond
        its item's share, and undecayed counts give a lower bound of the share (decay
        pulls it to the ceiling). New accounts' ratings in the group, learned while nobody
        suspected them, are not the item's history (see below): at most all reachable
        ones come off both counts. ``first`` is the stream clock of the oldest rating
        still in the item's ring.
        """
        end = len(group.who)
        group_clocks = group.clock
        size = end - bisect_left(group_clocks, first)
        min_accounts = self.min_accounts
        if size < min_accounts:
            return None
        g_side = max(self._g_side[side], 1e-4)
        ceiling = min(0.95, math.sqrt(g_side))  # natural share at one extreme, when unknown
        learned_group = bisect_right(group_clocks, self._clock)  # entries already learned
        fresh = group.fresh
        own_all = fresh.count(1, end - size, learned_group)
        raw_side = max((item.c_high if side == HIGH else item.c_low) - own_all, 0.0)
        raw = (raw_side + 10.0 * ceiling) / (max(item.c_all - own_all, raw_side) + 10.0)
        raw_established = ((item.e_high if side == HIGH else item.e_low) + 10.0 * ceiling) / (
            item.e_all + 10.0
        )
        low_share = min(max(raw, raw_established), ceiling)
        # P(X >= k) >= share**k, so a window needs k * -log(share) nats to be concentrated.
        k_min = max(min_accounts - 1, self.min_concentration_nats / -math.log(low_share))
        if size - 1 < k_min:  # not even the widest window
            return None
        clocks = item.clock
        n_ring = len(clocks)
        best: tuple[int, float, dict[str, float]] | None = None
        ready = False
        for j in _windows(min_accounts, size):
            if j - 1 < k_min:
                continue
            lo = end - j
            start = group_clocks[lo]
            n_all = n_ring - bisect_left(clocks, start)
            if j - 1 <= low_share * (n_all - 1) + 1.0:
                continue
            if not ready:  # the first window past the gate: the real work's setup
                ready = True
                now = tick.clock
                tau = self._tau
                decay = math.exp(-(now - item.base_clock) / tau)
                c_side = (item.c_high if side == HIGH else item.c_low) * decay
                c_all = item.c_all * decay
                exposure = tau * -math.expm1(-(now - item.born) / tau)
                # The prior: an average item, half an event.
                prior_rate = 0.5 * max(len(self._items), 1) / g_side
                rate = prior_rate + exposure
                e_side = (item.e_high if side == HIGH else item.e_low) * decay
                share_established = (e_side + 10.0 * ceiling) / (item.e_all * decay + 10.0)
                # New accounts' usual share at this extreme on items as popular as this one.
                new, seen = self._band_fresh[side][_band(c_all)]
                q_fresh = min(max((new + 10.0 * self._g_fresh[side]) / (seen + 10.0), 0.01), 0.99)
                log_q = -math.log(q_fresh)
                half = 0.5 * self.threshold_nats
                probe = self.trace is not None  # tracing evaluates every window, for analysis
                # Below this log-tail a window is concentrated; binom_logsf stops early above it.
                conc_log_tail = math.inf if probe else -self.min_concentration_nats
            span = max(now - start, 1)
            # The item's history without the group's new accounts (learned before the group
            # looked suspicious): a push by new accounts must not make itself look normal.
            # Its share at this extreme is also read from established raters alone, which
            # such a push cannot move (and which keep a good item's enthusiasm its own).
            own = fresh.count(1, lo, learned_group)
            side_before = max(c_side - own, 0.0)
            shape = 0.5 + side_before
            mean = shape / rate
            share = max(
                (side_before + 10.0 * ceiling) / (max(c_all - own, side_before) + 10.0),
                share_established,
            )
            # Cheap bounds first: most groups on busy items are neither dense nor concentrated.
            if j - 1 <= share * (n_all - 1) + 1.0 and not probe:
                continue
            n_fresh = fresh.count(1, lo, end)
            room = n_fresh * log_q + 2.0 * min(j, 20)  # the most fresh and shared could add
            if j - 1 <= 2.0 * mean * span + 2.0 and room < half and not probe:
                continue  # not dense, and no group evidence that could make up for it
            s_conc = surprise(binom_logsf(j - 1, n_all - 1, share, conc_log_tail))
            if s_conc < self.min_concentration_nats and not probe:
                continue
            s_rate = surprise(gamma_poisson_logsf(j - 1, shape, rate, span))
            if s_rate + s_conc + room < self.threshold_nats and not probe:
                continue
            s_fresh = surprise(binom_logsf(n_fresh, j, q_fresh))
            s_shared = self._shared(tick, group.who[lo:end])
            nats = s_rate + s_conc + s_fresh + s_shared
            beyond = nats - s_rate
            ok = (
                nats >= self.threshold_nats
                and s_conc >= self.min_concentration_nats
                and beyond >= self.undated_group_nats
                and (beyond >= self.min_group_nats or not self._dated(tick, group.who[lo:end]))
            )
            if self.trace is not None:
                self.trace.append(dict(clock=now, j=j, span=span, n=n_all, rate=s_rate,
                                       conc=s_conc, fresh=s_fresh, shared=s_shared,
                                       f=n_fresh, nats=nats, ok=ok, share=share,
                                       c_side=c_side, ts=group.ts[-1],
                                       who=group.who[-1]))  # fmt: skip
            if ok and (best is None or nats > best[1]):
                # How often honest accounts give this item this extreme (see _grow): the
                # decayed count without the window's own ratings (learned while nobody
                # suspected them) over the item's exposure; once from every account, once
                # from established accounts only, which a push by new accounts cannot move.
                # Posterior means (the volume question's Gamma prior): an item seen for a
                # short while is not known to be busy.
                settled = max(learned_group - lo - fresh.count(1, lo, learned_group), 0)
                established = (0.5 + max(e_side - settled, 0.0)) / rate
                established_any = (0.5 + max(item.e_all * decay - settled, 0.0)) / rate
                everyone = shape / rate
                any_value = (0.5 + max(c_all - learned_group + lo, 0.0)) / rate
                best = (j, nats, {
                    "accounts": float(j), "window_events": float(span),
                    "item_ratings": float(n_all), "fresh": float(n_fresh),
                    "expected": shape / rate * span, "volume_nats": s_rate,
                    "concentration_nats": s_conc, "fresh_nats": s_fresh,
                    "shared_nats": s_shared, "nats": nats,
                    "natural_rate": max(everyone, established),
                    "established_rate": established, "any_rate": any_value,
                    "established_any_rate": established_any,
                })  # fmt: skip
        return best

    def _shared(self, tick: _Tick, accounts: list[str]) -> float:
        """Nats for accounts in the group that share an IP or a device with another."""
        ips: dict[int, int] = {}
        devices: dict[int, int] = {}
        views = [self._account_view(tick, a) for a in accounts]
        for acc in views:
            if acc is None:
                continue
            if acc.ip:
                ips[acc.ip] = ips.get(acc.ip, 0) + 1
            if acc.device:
                devices[acc.device] = devices.get(acc.device, 0) + 1
        sharing = sum(
            1
            for acc in views
            if acc is not None
            and ((acc.ip and ips[acc.ip] > 1) or (acc.device and devices[acc.device] > 1))
        )
        return 2.0 * min(sharing, 20)

    def _sweep(self, tick: _Tick) -> None:
        """Second pass: earlier events of this tick by accounts that joined later in it."""
        if not tick.members and not tick.targets:
            return
        batch = tick.batch
        for i, e in enumerate(batch.events):
            if tick.scores.scores[i] >= 0.5:
                continue
            cid = tick.members.get(e.account_id)
            camp = tick.campaigns.get(cid) if cid else None
            if camp is not None:  # a new account: what it did in this tick belongs to the push
                if tick.counts[i] <= camp.evidence.get("member_cap", math.inf):
                    self._mark(tick, i, camp, f"member of {camp.summary()}")
                continue
            code = int(tick.codes[i])
            side = code & 3
            if side == MIDDLE or code & NEAR:
                continue
            target = tick.targets.get((e.item_id, side))
            camp = tick.campaigns.get(target) if target else None
            if camp is not None and batch.ts[i] >= camp.start_ts:
                self._mark(tick, i, camp, f"rated a target of {camp.summary()}")

    # ------------------------------------------------------------------ helpers

    def _mark(self, tick: _Tick, i: int, camp: Campaign, detail: str) -> None:
        if tick.scores.scores[i] >= camp.score:
            return
        if tick.scores.scores[i] < 0.5:
            self._writable(tick, camp).events += 1
        tick.scores.scores[i] = camp.score
        tick.scores.details[i] = detail
        assert tick.scores.campaign_ids is not None
        tick.scores.campaign_ids[i] = camp.id

    def _flag(self, camp: Campaign, acc: _Account, member: bool, ts: float) -> Flag:
        """A member's releases are revoked since it appeared (new, of unknown age, or
        woken for the campaign); an established account's from its target rating on."""
        if member:
            camp.revoked_accounts += 1
            detail = f"member account of {camp.summary()}"
            return Flag(acc.id, camp.id, detail, camp.score, acc.first_ts)
        detail = f"established account rated a target of {camp.summary()}"
        return Flag(acc.id, camp.id, detail, camp.score, ts)

    @staticmethod
    def _woken(acc: _Account) -> bool:
        """Has the stream seen this account (old by its creation date) only in its current
        sitting? Then it is a dormant account woken for a campaign, as rallied bombers are;
        an honest user who agrees has usually been seen before (no ``fresh_history`` slack)."""
        return acc.before == 0

    def _active(self, camp: Campaign, ts: float, clock: int) -> bool:
        """Open while the push goes on: for ``hold_hours`` of event time or
        ``hold_events`` rated events after its last activity, whichever is longer (not
        longer for having lasted: a target that grew popular must not keep it open; nor
        do stragglers, see :meth:`_grow`)."""
        return (
            ts - camp.last_ts <= self.hold_hours * 3600.0
            or clock - camp.last_clock <= self.hold_events
        )

    def _known_member(self, tick: _Tick, account_id: str) -> bool:
        if account_id in tick.members:
            return True
        acc = self._account_view(tick, account_id)
        return acc is not None and bool(acc.campaign)

    def _dated(self, tick: _Tick, accounts: list[str]) -> bool:
        """Do at least half of these accounts say by their creation date that they are
        established? Such a crowd (a launch, a viral item) must show ``min_group_nats``
        beyond volume; without dates newness shows only as a first sitting, which honest
        users of a base like MovieLens share, so ``undated_group_nats`` is asked."""
        old = 0
        fresh_age = self.fresh_age_days * DAY
        for account in accounts:
            acc = self._account_view(tick, account)
            if acc is not None and acc.created == acc.created:
                old += acc.last_ts - acc.created > fresh_age
        return 2 * old >= len(accounts)

    def _account_view(self, tick: _Tick, account_id: str) -> _Account | None:
        acc = tick.new_accounts.get(account_id)
        return acc if acc is not None else self._accounts._data.get(account_id)

    def _rollback(self) -> None:
        """Undo the in-place changes of a tick that was scored but not learned."""
        tick = self._pending
        self._pending = None
        if tick is None:
            return
        saved = iter(tick.account_log)
        for acc in tick.undo_accounts.values():
            acc.restore(saved)
        saved = iter(tick.item_log)
        for item in tick.undo_items.values():
            item.restore(saved, self._clock)

    def _campaign(self, tick: _Tick, cid: str) -> Campaign | None:
        camp = tick.campaigns.get(cid)
        return camp if camp is not None else self._campaigns.get(cid)

    def _writable(self, tick: _Tick, camp: Campaign) -> Campaign:
        if camp.id not in tick.campaigns:
            camp = camp.copy()
            tick.campaigns[camp.id] = camp
        return tick.campaigns[camp.id]

    def _overlapping(self, tick: _Tick, members: list[str], side: int) -> Campaign | None:
        """An open campaign on the same side holding at least a third of this group."""
        counts: dict[str, int] = {}
        for a in members:
            cid = tick.members.get(a) or self._member_of.get(a)
            if cid is not None:
                counts[cid] = counts.get(cid, 0) + 1
        for cid, k in sorted(counts.items(), key=lambda kv: -kv[1]):
            camp = self._campaign(tick, cid)
            same = camp is not None and not camp.closed and camp.side == _SIDE_NAME[side]
            if same and 3 * k >= len(members):
                return camp
        return None

    # ------------------------------------------------------------------ commit and learn

    def _commit(self, tick: _Tick) -> None:
        self._accounts.put_all(tick.undo_accounts.items())  # LRU touch
        self._accounts.put_all(tick.new_accounts.items())
        ring_size = self.ring_size
        for items in (tick.undo_items, tick.new_items):
            for item in items.values():
                clocks = item.clock
                if len(clocks) < ring_size:  # nothing fell out of the ring
                    continue
                del clocks[: len(clocks) - ring_size]
                first = clocks[0]
                for group in item.groups():
                    if group is not None and group.who and group.clock[0] < first:
                        group.trim(first, ring_size)
            self._items.put_all(items.items())
        for cid, camp in tick.campaigns.items():
            if cid not in self._campaigns:
                self._opened_total += 1
            self._campaigns[cid] = camp
        self._member_of.update(tick.members)
        for account_id, cid in tick.members.items():
            member = self._accounts._data.get(account_id)
            if member is not None:
                member.campaign = cid
        self._targets.update(tick.targets)
        self._forget_members(tick)
        self._clock = tick.clock
        self._next_id = tick.next_id

    def _forget_members(self, tick: _Tick) -> None:
        """Take new members out of their targets' groups: a later group on the same item
        must be found anew, not re-made from accounts already dealt with."""
        joined: dict[str, set[str]] = {}
        for account, cid in tick.members.items():
            joined.setdefault(cid, set()).add(account)
        for cid, accounts in joined.items():
            camp = tick.campaigns[cid]
            for item_id in camp.targets:
                item = self._items._data.get(item_id)
                if item is None:
                    continue
                for group in item.groups():
                    if group is not None:
                        group.remove(accounts)

    def _learn(self, batch: Batch, keep: np.ndarray, tick: _Tick) -> None:
        """Item baselines and global shares, from kept rated events only."""
        rated = (batch.kind <= 1) & ~np.isnan(batch.rating) & keep
        idx = np.flatnonzero(rated)
        if not len(idx):
            return
        codes = tick.codes[idx]
        side = codes & 3
        exact = (codes & NEAR) == 0
        fresh = (codes & FRESH) != 0
        self._learned += len(idx)
        w = min(1.0, len(idx) / min(self._learned, 20_000))
        for s in (HIGH, LOW):
            on = (side == s) & exact
            # shares as count / size: what .mean() gives on booleans, without its overhead
            n_on = int(np.count_nonzero(on))
            self._g_side[s] += (n_on / len(on) - self._g_side[s]) * w
            if n_on:
                wf = min(1.0, 20.0 * n_on / min(self._learned, 20_000))
                fresh_on = int(np.count_nonzero(fresh & on)) / n_on
                self._g_fresh[s] += (fresh_on - self._g_fresh[s]) * wf
        clock = self._clock
        tau = self._tau
        items = self._items._data
        events = batch.events
        bands = self._band_fresh
        log2 = math.log2
        top = _BANDS - 1
        for i, code in zip(idx.tolist(), codes.tolist(), strict=True):
            item = items.get(events[i].item_id)
            if item is None:
                continue
            if item.base_clock != clock:
                decay = math.exp(-(clock - item.base_clock) / tau)
                item.c_all *= decay
                item.c_high *= decay
                item.c_low *= decay
                item.e_all *= decay
                item.e_high *= decay
                item.e_low *= decay
                item.base_clock = clock
            new = code & FRESH
            item.c_all += 1.0
            if not new:
                item.e_all += 1.0
            s = code & 3
            if s == MIDDLE or code & NEAR:
                continue
            cell = bands[s][min(int(log2(item.c_all)), top)]  # the band before this one
            cell[0] += bool(new)
            cell[1] += 1.0
            if cell[1] > 20_000:
                cell[0] *= 0.5
                cell[1] *= 0.5
            if s == HIGH:
                item.c_high += 1.0
                if not new:
                    item.e_high += 1.0
            else:
                item.c_low += 1.0
                if not new:
                    item.e_low += 1.0

    def _expire(self, now: float) -> None:
        self._watermark = max(self._watermark, now)
        horizon = self._watermark - self.ttl_days * DAY
        clock_horizon = self._clock - self.ttl_events
        self._accounts.expire(lambda a: a.last_ts < horizon and a.last_clock < clock_horizon)
        self._items.expire(lambda it: it.last_ts < horizon and it.last_clock < clock_horizon)
        for cid in [c for c, camp in self._campaigns.items()
                    if not self._active(camp, self._watermark, self._clock)]:  # fmt: skip
            camp = self._campaigns.pop(cid)
            camp.closed = True
            self._closed.append(camp)
            for account in camp.members:
                if self._member_of.get(account) == cid:
                    del self._member_of[account]
            for item_id in camp.targets:
                for side in (HIGH, LOW):
                    if self._targets.get((item_id, side)) == cid:
                        del self._targets[(item_id, side)]


def _score(nats: float, threshold: float) -> float:
    """Decision score of a campaign's events: 0.5 at the threshold, towards 1 above it."""
    return 1.0 - 0.5 * math.exp(-max(nats - threshold, 0.0) / threshold)


@functools.lru_cache(maxsize=4096)
def _windows(smallest: int, size: int) -> tuple[int, ...]:
    """Group sizes to test: from ``smallest`` up to ``size``, growing by about a third."""
    out = []
    j = smallest
    while j < size:
        out.append(j)
        j = max(j + 1, (j * 4) // 3)
    out.append(size)
    return tuple(out)


def _band(count: float) -> int:
    """Popularity band of an item from its (decayed) count of kept ratings."""
    return min(int(math.log2(1.0 + count)), _BANDS - 1)
