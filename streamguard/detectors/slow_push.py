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
  extreme, when its history predicts less? The share predicted is the largest the
  history leaves plausible (short histories prove little), never above a high natural
  ceiling, which is also a new item's. A new release or a viral item draws many ratings
  of mixed values: it fails here.

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
itself keeps accumulating evidence while it is quarantined. ``score_batch`` never changes
committed state (a tick's own ratings are laid over it), so scoring is repeatable;
``learn_batch`` commits.

Cost. The detector learns from every event, so its state is numpy columns, not Python
objects: items and accounts are rows (:class:`_Rows`), the stream's last ratings (as many
as the longest window) one ring of columns (:class:`_Ring`), and a tick is learnt in a
handful of array operations. Each item's count of each extreme per window, kept as the
ring moves, rules out most extremes for the whole tick at once (``_may_pass``, exact);
only the rest are tested one by one, over the item's last ``ring_size`` ratings. State is
bounded: every ``_SWEEP_EVERY`` events the items idle for ``ttl_events`` rated events
and the accounts idle for ``account_ttl_events`` are
forgotten, then the least recent beyond ``max_items`` and ``max_accounts``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import betaincinv

from streamguard.campaigns import Campaign
from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.detectors.lockstep import (
    binom_logsf,
    gamma_poisson_logsf,
    narrowed_steps,
    surprise,
)

DAY = 86400.0
_RATED = 1  # KIND_CODES of rating (0) and review (1) are <= this
_HIGH, _LOW = 1, 2
_SIDE_NAME = {_HIGH: "push", _LOW: "nuke"}
_NEAR = 4  # bit or-ed into a side code: one step off the extreme
# The exact extreme of a side code: 0 (middle) for a rating one step off.
_EXACT = np.array((0, _HIGH, _LOW, 0, 0, 0, 0, 0), dtype=np.int64)
_CLOCK = itemgetter(0)  # a rating's stream clock
_CEILING_PRIOR = 4.0  # pseudo-ratings behind the concentration ceiling
# How unlikely a share above the bound that an item's kept history leaves plausible
# (``_share_bound``): an honest item is tested in many windows, so the bound is wide.
_SHARE_BOUND_LEVEL = 0.001
# A target is quiet: its own past rate of the extreme (Gamma posterior mean) at most this many
# times an average item's. Pushes pick obscure items; popular ones draw honest extremes.
_QUIET = 4.0
_CEILING_MIN_RATINGS = 10  # items with this many kept ratings make the ceiling
_CEILING_EVERY = 2_000  # rated events between two updates of the ceilings and the typical
_TYPICAL_SAMPLE = 2_000  # most recently active accounts whose median activity is typical
_RECENT_EVENTS = 1 << 15  # events whose accounts are searched for the recently active
_SWEEP_EVERY = 2_000  # events between two sweeps of idle items and accounts
_NEVER = -(1 << 62)  # the last clock of a row not yet touched
_MIN_CAP = 20.0  # the smallest activity cap of members (events), whatever the group's median


class SlowPushSettings(BaseModel):
    """Settings of the slow-push detector (``detectors.slow_push`` in the config).

    Thresholds are in nats and were set on simulated benign, viral-launch and attack
    streams over both bases (synthetic and MovieLens), above the largest honest window
    seen after warm-up; windows and holds count rated events.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Off by default for issue 10's margins, no longer for a false positive (its
    # concentration test now reads a short history as an upper bound): with it on, a full
    # benchmark run read 1,038 bytes an account at 1,000,000 accounts against the 1 KiB
    # bar, and a sixth off the core's rating events/s (docs/DETECTORS.md). Turn it on where
    # drips over months matter; it runs in the second process with the campaign detector.
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
    # Accounts far outnumber items: past the longest window and a hold an account is in
    # no run, and it is kept about as long again so a returning account's activity counts.
    account_ttl_events: int = Field(50_000, ge=1)

    @model_validator(mode="after")
    def _windows_fit_in_memory(self) -> SlowPushSettings:
        _check_windows(
            self.windows_events,
            ttl_events=self.ttl_events,
            account_ttl_events=self.account_ttl_events,
            max_items=self.max_items,
        )
        return self


def _check_windows(windows: tuple[int, ...], **spans: int) -> None:
    """An item or account rated inside a window must still be known when the window is
    read (``spans``: the settings that bound how long, by name)."""
    if not windows or min(windows) < 1:
        raise ValueError(f"windows_events must be positive, got {windows}")
    short = {name: value for name, value in spans.items() if value < max(windows)}
    if short:
        named = " and ".join(f"{name} ({value})" for name, value in short.items())
        raise ValueError(f"{named} must be at least the longest window ({max(windows)})")


# One rating in an item's recent run: stream clock, side code (with the near bit), account,
# kept, event time.
_Rating = tuple[int, int, str, bool, float]
_ACCOUNT, _ITEM = attrgetter("account_id"), attrgetter("item_id")
_CREATED = attrgetter("account_created_at")


class _Rows:
    """Ids (items or accounts) mapped to rows of numpy columns.

    Why rows and columns: the detector learns from every event, and a tick's updates as
    array operations cost a fraction of a Python object per id (an LRU dict's pop and
    put alone cost more than the rest of the learning). Recency lives in the detector's
    own ``last`` columns, and :meth:`sweep` forgets by them; a forgotten id's row is
    reused for the next new one.
    """

    def __init__(self, max_size: int, columns: dict[str, tuple[Any, float, int]]) -> None:
        self.max_size = max_size
        self.index: dict[str, int] = {}
        self.ids: list[str] = []  # row -> id (stale for free rows)
        self.free: list[int] = []
        self._layout = columns  # name -> (dtype, initial value, width; 0 for a vector)
        self.cols = {name: self._column(spec, 64) for name, spec in columns.items()}
        self.alive = np.zeros(64, dtype=bool)  # rows that hold an id

    @staticmethod
    def _column(spec: tuple[Any, float, int], size: int) -> np.ndarray:
        dtype, fill, width = spec
        return np.full((size, width) if width else size, fill, dtype=dtype)

    def __len__(self) -> int:
        return len(self.index)

    def row(self, key: str) -> int:
        """The id's row, or -1 when it is not known."""
        return self.index.get(key, -1)

    def lookup(self, keys: list[str]) -> np.ndarray:
        """The rows of ``keys``, -1 where an id is not known."""
        return np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def rows_of(
        self, keys: list[str], rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """The rows of ``keys`` in order (``rows``: their :meth:`lookup` when already
        made), new ids given rows with reset columns; and the positions where a new id
        first appears."""
        if rows is None:
            rows = self.lookup(keys)
        missing = np.flatnonzero(rows < 0).tolist()
        if not missing:
            return rows, []
        index, ids, free = self.index, self.ids, self.free
        new: list[int] = []
        found: list[int] = []
        for pos in missing:
            key = keys[pos]
            row = index.get(key, -1)  # first seen earlier in this tick
            if row < 0:
                row = free.pop() if free else len(ids)
                if row == len(ids):
                    ids.append(key)
                else:
                    ids[row] = key
                index[key] = row
                new.append(pos)
            found.append(row)
        rows = rows.copy()
        rows[missing] = found
        self._reset(rows[new])
        return rows, new

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive)

    def sweep(self, last: np.ndarray, horizon: int) -> list[str]:
        """Forget the ids whose ``last`` value is below ``horizon``, then the oldest by it
        beyond ``max_size``; returns the forgotten ids."""
        live = self.live_rows()
        stale = last[live] < horizon
        gone = live[stale]
        kept = live[~stale]
        if len(kept) > self.max_size:
            oldest = np.argpartition(last[kept], len(kept) - self.max_size)
            gone = np.concatenate([gone, kept[oldest[: len(kept) - self.max_size]]])
        ids = [self.ids[row] for row in gone.tolist()]
        for key in ids:
            del self.index[key]
        self.free.extend(gone.tolist())
        self.alive[gone] = False
        return ids

    def _reset(self, rows: np.ndarray) -> None:
        size = len(next(iter(self.cols.values())))
        if len(self.ids) > size:
            grown = max(2 * size, len(self.ids))
            for name, spec in self._layout.items():
                column = self._column(spec, grown)
                column[:size] = self.cols[name]
                self.cols[name] = column
            alive = np.zeros(grown, dtype=bool)
            alive[:size] = self.alive
            self.alive = alive
        for name, (_, fill, _) in self._layout.items():
            self.cols[name][rows] = fill
        self.alive[rows] = True


class _Ring:
    """The last committed ratings of the stream, as many as the longest window, oldest
    first, as columns: every window of the test is a tail of it. Each item's count of
    each exact side inside each window is kept in the item table's ``in_window`` column
    (window ``w``, side ``s`` at ``3 * w + s``), for the exact shortcuts of ``_may_pass``."""

    def __init__(self, windows: tuple[int, ...]) -> None:
        self.windows = windows
        self.starts = [0] * len(windows)  # where each window begins
        self.end = 0
        cap = 2 * windows[-1] + 1024
        self.clock = np.zeros(cap, dtype=np.int64)
        self.item = np.zeros(cap, dtype=np.int64)  # item row
        self.code = np.zeros(cap, dtype=np.int8)
        self.account = np.empty(cap, dtype=object)
        self.kept = np.zeros(cap, dtype=bool)
        self.ts = np.zeros(cap, dtype=np.float64)

    _COLUMNS = ("clock", "item", "code", "account", "kept", "ts")

    def append(self, values: dict[str, Any], in_window: np.ndarray) -> None:
        """Append a tick's ratings (``values``: one array per column), and move each
        window's start past the ratings it no longer holds, keeping ``in_window``."""
        n = len(values["clock"])
        if self.end + n > len(self.clock):
            self._compact(n)
        for name in self._COLUMNS:
            getattr(self, name)[self.end : self.end + n] = values[name]
        exact = _EXACT[values["code"]]
        for w in range(len(self.windows)):
            np.add.at(in_window, (values["item"], 3 * w + exact), 1)
        self.end += n
        for w, size in enumerate(self.windows):
            if self.end - self.starts[w] > size:
                gone = slice(self.starts[w], self.end - size)
                column = 3 * w + _EXACT[self.code[gone]]
                np.subtract.at(in_window, (self.item[gone], column), 1)
                if w == len(self.windows) - 1:
                    self.account[gone] = None  # in no window any more
                self.starts[w] = self.end - size

    def _compact(self, incoming: int) -> None:
        """Move the longest window to the front, growing the columns if need be."""
        first = self.starts[-1]
        live = self.end - first
        cap = max(len(self.clock), 2 * (live + incoming))
        for name in self._COLUMNS:
            old = getattr(self, name)
            column = np.empty(cap, dtype=old.dtype) if cap > len(old) else old
            column[:live] = old[first : self.end]
            setattr(self, name, column)
        self.account[live:] = None
        self.starts = [start - first for start in self.starts]
        self.end = live

    def of_item(self, row: int, last: int) -> list[_Rating]:
        """The item's last ``last`` ratings in the ring, oldest first."""
        first = self.starts[-1]
        at = np.flatnonzero(self.item[first : self.end] == row)[-last:] + first
        return list(
            zip(
                self.clock[at].tolist(),
                self.code[at].tolist(),
                self.account[at].tolist(),
                self.kept[at].tolist(),
                self.ts[at].tolist(),
                strict=True,
            )
        )


@dataclass
class _Tick:
    """What scoring a tick decided, committed by ``learn_batch``."""

    clocks: np.ndarray  # stream clock of each event (rated events advance it)
    codes: np.ndarray  # side code per event (0 for middle or unrated)
    item_ids: list[str]
    item_rows: np.ndarray  # each event's item row before the tick (-1: not known)
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
    # The event attributes it reads: all it is sent in a second process (offload.py).
    EVENT_FIELDS = ("account_id", "item_id", "account_created_at")

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
        account_ttl_events: int = 50_000,
        rating_low: float = 1.0,
        rating_high: float = 5.0,
    ) -> None:
        _check_windows(
            windows_events,
            ttl_events=ttl_events,
            account_ttl_events=account_ttl_events,
            max_items=max_items,
        )
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
        self.account_ttl_events = account_ttl_events
        self.low, self.high = rating_low, rating_high
        # Items: kept ratings since first seen (total and per exact side: the baseline),
        # first and last clock, and ratings per exact side in each window of the ring.
        self._items = _Rows(
            max_items,
            {
                "kept": (np.int64, 0, 0),
                "kept_side": (np.int64, 0, 3),
                "born": (np.int64, 0, 0),
                "last": (np.int64, _NEVER, 0),
                "in_window": (np.int64, 0, 3 * len(self.windows)),
            },
        )
        # Accounts: events seen, first event time, creation date (NaN unknown), last clock,
        # and the number of their last event (recency).
        self._accounts = _Rows(
            max_accounts,
            {
                "n": (np.int64, 0, 0),
                "first_ts": (np.float64, 0.0, 0),
                "created": (np.float64, math.nan, 0),
                "last": (np.int64, _NEVER, 0),
                "seq": (np.int64, _NEVER, 0),
            },
        )
        self._member_of: dict[str, str] = {}  # account -> the campaign it was flagged in
        self._ring = _Ring(self.windows)
        # The account rows of the stream's last events, for the most recently active ones.
        self._recent_accounts = np.zeros(_RECENT_EVENTS, dtype=np.int64)
        self._seq = 0  # events seen
        self._swept = 0  # ``_seq`` at the last sweep of idle ids
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
        # One step off each extreme on the stream's own scale (``narrowed_steps``): on half
        # stars a 4, MovieLens's commonest rating, is two steps off 5, not a sloppy fake's.
        self._steps = (1.0, 1.0)  # below the top, above the bottom
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
        step_high, step_low = self._steps
        near_high = batch.rating >= self.high - step_high  # a sloppy fake's 4 (4.5 on half stars)
        near_low = batch.rating <= self.low + step_low
        codes = np.where(near_high, _HIGH | _NEAR, np.where(near_low, _LOW | _NEAR, 0))
        codes = np.where(batch.rating >= self.high, _HIGH, codes)
        codes = np.where(batch.rating <= self.low, _LOW, codes)
        codes = np.where(rated, codes, 0).astype(np.int8)
        item_ids = list(map(_ITEM, batch.events))
        tick = _Tick(clocks, codes, item_ids, self._items.lookup(item_ids), next_id=self._next_id)
        self._pending = tick
        extremes = np.flatnonzero(codes & 3)
        if len(extremes):
            self._scan(tick, batch, rated, extremes)
        self._mark_members(tick, batch, scores)
        return scores

    def _scan(self, tick: _Tick, batch: Batch, rated: np.ndarray, extremes: np.ndarray) -> None:
        """Each extreme of the tick in order (``extremes``: positions) joins its item's
        open campaign or, at the exact extreme, tests the item's run, with the tick's
        earlier ratings of the item laid over the ring.

        Most extremes are never tested: ``_may_pass`` rules them out for the whole tick
        at once, from counts alone."""
        item_ids = tick.item_ids
        clocks, codes = tick.clocks.tolist(), tick.codes.tolist()
        testable = extremes[
            (tick.codes[extremes] & _NEAR == 0) & (tick.clocks[extremes] >= self.warmup_events)
        ]
        candidates = set(testable[self._may_pass(tick, batch, rated, testable)].tolist())
        positions: dict[str, list[int]] | None = None
        # Without an open campaign only candidates matter, until one opens in this tick.
        everything = bool(self._targets)
        queue, at = (extremes.tolist() if everything else sorted(candidates)), 0
        while at < len(queue):
            i = queue[at]
            at += 1
            item_id = item_ids[i]
            code, clock = codes[i], clocks[i]
            side = code & 3
            camp = None
            if tick.targets or self._targets:
                camp = self._target(tick, item_id, side)
            if camp is None and i in candidates:
                if positions is None:
                    positions = _positions(item_ids, rated, {item_ids[j] for j in candidates})
                added = _added(tick, batch, positions[item_id], i)
                camp = self._test(tick, batch, i, side, int(tick.item_rows[i]), added)
            if camp is not None:
                self._join(tick, camp, batch, i, clock)
            if tick.targets and not everything:  # later extremes may join it
                everything = True
                queue, at = [j for j in extremes.tolist() if j > i], 0

    def _may_pass(self, tick: _Tick, batch: Batch, rated: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Could some window pass the test of the exact extremes at positions ``at``?
        False only where counts rule out every window, so skipping those is exact.

        Per window, from the ring's counts (``in_window``) and the whole tick's, which
        bound what the test will count: too few ratings of the extreme, or an item busy
        before the window even if every rating it could hold inside were kept there."""
        if not len(at):
            return np.zeros(0, dtype=bool)
        rated_at = np.flatnonzero(rated)
        keys = tick.item_rows[rated_at]  # the item of each rating: its row, or below 0 if new
        unknown = np.flatnonzero(keys < 0)
        if len(unknown):
            local: dict[str, int] = {}
            numbers = [local.setdefault(tick.item_ids[i], len(local)) for i in rated_at[unknown]]
            keys[unknown] = -1 - np.array(numbers, dtype=np.int64)
        _, of_rated = np.unique(keys, return_inverse=True)  # the tick's items, numbered
        exact = _EXACT[tick.codes[rated_at]]
        tick_all = np.bincount(of_rated)
        tick_side = np.zeros((len(tick_all), 3), dtype=np.int64)
        np.add.at(tick_side, (of_rated, exact), 1)
        index = np.full(len(batch), -1, dtype=np.int64)
        index[rated_at] = np.arange(len(rated_at))
        mine = of_rated[index[at]]  # each extreme's item, by its tick number
        rows = tick.item_rows[at]
        known = rows >= 0
        row = np.where(known, rows, 0)
        side = tick.codes[at].astype(np.int64)
        clock = tick.clocks[at]
        cols = self._items.cols
        kept_all = np.where(known, cols["kept"][row], 0)
        kept_side = np.where(known, cols["kept_side"][row, side], 0)
        age = clock - np.where(known, cols["born"][row], clock)
        added_all, added_side = tick_all[mine], tick_side[mine, side]
        rate = np.array([self._prior_rate(s) for s in range(3)])
        possible = np.zeros(len(at), dtype=bool)
        for w, window in enumerate(self.windows):
            counts = np.where(known[:, None], cols["in_window"][row, 3 * w : 3 * w + 3], 0)
            in_side = counts[np.arange(len(at)), side]
            before = np.maximum(age - window, 0)
            # Kept before the event: the event itself (one of the tick's) does not count.
            most_kept = np.minimum(counts.sum(axis=1), self.ring_size) + added_all - 1
            most_kept_side = np.minimum(in_side, self.ring_size) + added_side - 1
            possible |= (
                (in_side + added_side >= self.min_accounts)
                & _quiet_many(kept_side - most_kept_side, before, rate[side], self.prior_shape)
                & _quiet_many(kept_all - most_kept, before, rate[0], self.prior_shape)
            )
        return possible

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        """Commit the tick as array operations: each rating into the ring and its item's
        counts (kept ones into the baseline), each event into its account's activity."""
        tick = self._pending
        if tick is None or len(tick.clocks) != len(batch):
            self.score_batch(batch)
            tick = self._pending
        assert tick is not None
        self._pending = None
        accounts = list(map(_ACCOUNT, batch.events))
        self._learn_accounts(batch, tick, accounts)
        rated = np.flatnonzero(_rated(batch))
        if len(rated):
            self._learn_items(batch, tick, keep.astype(bool)[rated], rated, accounts)
        self._clock += len(rated)
        self._seq += len(batch)
        for cid, camp in tick.campaigns.items():
            if cid not in self._campaigns:
                self._opened_total += 1
            self._campaigns[cid] = camp
        for account_id, cid in tick.members.items():
            if self._accounts.row(account_id) >= 0:
                self._member_of[account_id] = cid
        self._targets.update(tick.targets)
        self._next_id = tick.next_id
        self._steps = narrowed_steps(self._steps, batch.rating, self.low, self.high)
        if self._clock - self._ceiling_clock >= _CEILING_EVERY:
            self._learn_norms()
        self._expire()

    def _learn_accounts(self, batch: Batch, tick: _Tick, accounts: list[str]) -> None:
        rows, new = self._accounts.rows_of(accounts)
        cols = self._accounts.cols
        if new:
            cols["first_ts"][rows[new]] = batch.ts[new]
        np.add.at(cols["n"], rows, 1)
        np.maximum.at(cols["last"], rows, tick.clocks)
        seqs = np.arange(self._seq, self._seq + len(rows))  # the events' numbers
        np.maximum.at(cols["seq"], rows, seqs)
        recent = self._recent_accounts  # a ring over events: event k at k % its size
        recent[seqs % len(recent)] = rows
        created = np.array(list(map(_CREATED, batch.events)), dtype=np.float64)  # None: NaN
        known = np.flatnonzero(~np.isnan(created))
        if len(known):  # an account's latest creation date wins
            latest = known[::-1]
            unique, first = np.unique(rows[latest], return_index=True)
            cols["created"][unique] = created[latest[first]]

    def _learn_items(
        self, batch: Batch, tick: _Tick, kept: np.ndarray, rated: np.ndarray, accounts: list[str]
    ) -> None:
        """``rated``: positions of the tick's ratings, ``kept`` whether each was kept."""
        at = rated.tolist()
        item_ids = tick.item_ids
        rows, new = self._items.rows_of([item_ids[i] for i in at], tick.item_rows[rated])
        cols = self._items.cols
        clocks, codes = tick.clocks[rated], tick.codes[rated]
        if new:
            cols["born"][rows[new]] = clocks[new]
        np.maximum.at(cols["last"], rows, clocks)
        exact = _EXACT[codes]
        np.add.at(cols["kept"], rows[kept], 1)
        np.add.at(cols["kept_side"], (rows[kept], exact[kept]), 1)
        self._kept += int(kept.sum())
        for side, count in enumerate(np.bincount(exact[kept], minlength=3).tolist()):
            self._kept_side[side] += count
        columns = {"clock": clocks, "item": rows, "code": codes, "kept": kept}
        columns |= {"account": [accounts[i] for i in at], "ts": batch.ts[rated]}
        self._ring.append(columns, cols["in_window"])

    def _learn_norms(self) -> None:
        """Learn what honest traffic looks like: how concentrated honest items get (a base
        where good items draw mostly 5s must not read each popular item's run of 5s as a
        push), and how busy a typical active account is (see ``_audience``)."""
        self._ceiling_clock = self._clock
        activity = self._accounts.cols["n"][self._recently_active()]
        self._typical = float(np.median(activity)) if len(activity) else 0.0
        live = self._items.live_rows()
        cols = self._items.cols
        known = live[cols["kept"][live] >= _CEILING_MIN_RATINGS]
        if len(known) < 20:
            return
        kept = cols["kept"][known].astype(np.float64)
        for side in (_HIGH, _LOW):
            share = cols["kept_side"][known, side] / kept
            self._ceilings[side] = max(self.ceiling, float(np.quantile(share, 0.99)))

    def _recently_active(self) -> np.ndarray:
        """The rows of the ``_TYPICAL_SAMPLE`` accounts whose last events are the latest.

        Walks back over the last events' accounts (a span doubled until it holds enough
        of them): an account's entry counts at its own last event only, so each is taken
        once, without a sort. When older events have left the ring, every known account
        is ordered by its last event instead."""
        recent, seq = self._recent_accounts, self._accounts.cols["seq"]
        held = min(self._seq, len(recent))
        span = min(held, 4 * _TYPICAL_SAMPLE)
        while True:
            events = np.arange(self._seq - span, self._seq)
            rows = recent[events % len(recent)]
            latest = rows[(seq[rows] == events) & self._accounts.alive[rows]]
            if len(latest) >= _TYPICAL_SAMPLE or span == held:
                break
            span = min(2 * span, held)
        if len(latest) < _TYPICAL_SAMPLE and held < self._seq:
            live = self._accounts.live_rows()
            latest = live[np.argsort(seq[live], kind="stable")]
        return latest[-_TYPICAL_SAMPLE:]

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
        row: int,
        added: list[_Rating],
    ) -> Campaign | None:
        """Is the run of this extreme on event ``i``'s item (its ``row``, -1 when new)
        surprising in some window? Opens a campaign on the best window that passes.
        ``added``: the tick's ratings of the item up to event ``i``."""
        clock = int(tick.clocks[i])
        recent, (born, kept_all, kept_side) = self._history(row, side, clock, added)
        age = clock - born
        ts = float(batch.ts[i])
        best: tuple[float, float, int] | None = None
        # The questions in order of cost; a window must pass them all.
        for window in self.windows:
            first = self._first_questions(recent, clock, window, side, age, kept_all, kept_side)
            if first is None:
                continue
            inside, hits, base_k, base_n = first
            extreme = {r[2] for r in inside if r[1] == side}
            k = len(extreme)
            if k < self.min_accounts:
                continue
            concentration = self._concentration(hits, len(inside), base_k, base_n, side)
            if concentration < self.min_concentration_nats:
                continue
            total = concentration + self._volume(hits, base_k, age, window, side)
            if total < self.threshold_nats:
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

    def _history(
        self, row: int, side: int, clock: int, added: list[_Rating]
    ) -> tuple[list[_Rating], tuple[int, int, int]]:
        """The item's last ``ring_size`` ratings from the ring with ``added`` after them,
        and its first clock and kept ratings (in all, and of this side) since then."""
        if row < 0:
            return list(added), (clock, 0, 0)
        cols = self._items.cols
        recent = self._ring.of_item(row, self.ring_size) + added  # a window is a tail
        return recent, (
            int(cols["born"][row]),
            int(cols["kept"][row]),
            int(cols["kept_side"][row, side]),
        )

    def _first_questions(
        self,
        recent: list[_Rating],
        clock: int,
        window: int,
        side: int,
        age: int,
        kept_all: int,
        kept_side: int,
    ) -> tuple[list[_Rating], int, int, int] | None:
        """The window's ratings, its count of the extreme (hits), and the item's kept
        ratings of the extreme and in all before it; None when the window fails the
        questions that counts answer (the ones ``_may_pass`` bounds): fewer hits than
        ``min_accounts``, or an item that was not quiet before the window."""
        inside = recent[bisect_right(recent, clock - window, key=_CLOCK) :]
        hits = sum(1 for r in inside if r[1] == side)
        if hits < self.min_accounts:
            return None  # fewer ratings than min_accounts, so fewer accounts too
        base_k = kept_side - sum(1 for r in inside if r[3] and r[1] == side and r[0] < clock)
        base_n = kept_all - sum(1 for r in inside if r[3] and r[0] < clock)
        before = max(age - window, 0)
        if not (self._quiet(base_k, before, side) and self._quiet(base_n, before, 0)):
            return None  # an item popular (at this extreme) before the window: not a target
        return inside, hits, base_k, base_n

    def _audience(self, busy: float) -> bool:
        """Is the run's typical rater (median events) busier than twice the stream's
        typical account (recently active ones, refreshed with the ceilings), and than
        ``_MIN_CAP``? Sock puppets are cheap; a group of long-standing heavy users is a
        film's audience (MovieLens: pushes' groups 4-40 events at a stream median of
        15-40, *The Two Towers*' fans 117-124)."""
        return busy > max(_MIN_CAP, 2.0 * self._typical)

    def _prior_rate(self, side: int) -> float:
        """The rate of this extreme (of any rating for side 0) per rated event on an average
        item."""
        side_rate = (self._kept_side[side] + 1.0) / (self._kept + 1.0) if side else 1.0
        return side_rate / max(len(self._items), 1)

    def _quiet(self, count: int, exposure: int, side: int) -> bool:
        """Was the item's rate of this extreme (side 0: of any rating), ``count`` kept over
        ``exposure`` rated events (Gamma posterior mean), at most ``_QUIET`` times an
        average item's?"""
        return bool(_quiet_many(count, exposure, self._prior_rate(side), self.prior_shape))

    def _concentration(self, hits: int, rated: int, base_k: int, base_n: int, side: int) -> float:
        """Nats of surprise of ``hits`` extremes among ``rated`` against the share of
        them the item's kept history before the window (``base_k`` of ``base_n``) leaves
        plausible, up to the ceiling; a new item gets the ceiling. Below
        ``min_concentration_nats`` the value is only a bound, which is all the caller
        needs: it rejects the window.

        Why a bound and not the history's mean: on a young catalogue a window covers most
        of an item's life, and a few dozen ratings before it can by chance show far
        fewer of an extreme than the item gives (0 of 36 for one that gives a 5 a fifth
        of the time). Read as the item's share, that history made a campaign of its
        honest raters (tests' 100-item benign stream, the detector alone: seven seeds of
        16 held 1,240-6,064 of 30,000 events)."""
        side_rate = (self._kept_side[side] + 1.0) / (self._kept + 1.0)  # per rated event
        k, n = max(base_k, 0), max(base_n, 0)
        ceiling = self._ceilings[side]
        share = (k + ceiling * _CEILING_PRIOR) / (n + _CEILING_PRIOR)
        share = max(share, min(ceiling, _share_bound(k, n)))
        stop = -self.min_concentration_nats
        return surprise(binom_logsf(hits, rated, max(share, side_rate), stop_above=stop))

    def _volume(self, hits: int, base_k: int, age: int, window: int, side: int) -> float:
        """Nats of surprise of ``hits`` extremes in the window against the item's own rate
        of them before it (a Gamma posterior whose prior is an average item)."""
        per_item = self._prior_rate(side)
        shape = self.prior_shape + max(base_k, 0)
        before = max(age - window, 0)  # the item's exposure before the window
        rate = self.prior_shape / per_item + before
        return surprise(gamma_poisson_logsf(hits, shape, rate, min(window, age + 1)))

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
        camp.target_baselines[e.item_id] = (clock, float(self._kept_of(e.item_id, side)))
        tick.campaigns[cid] = camp
        tick.targets[(e.item_id, side)] = cid
        # Sock puppets are small: an account far busier than the group's typical one is a
        # real user who happened to rate the target, not a member.
        camp.evidence["member_cap"] = max(3.0 * busy, _MIN_CAP)
        for account_id in group:
            self._add_member(tick, camp, account_id, ts)
        return camp

    def _kept_of(self, item_id: str, side: int) -> int:
        """The item's kept ratings of this side since it was first seen."""
        row = self._items.row(item_id)
        return int(self._items.cols["kept_side"][row, side]) if row >= 0 else 0

    def _created(self, account_id: str) -> float:
        """The account's creation date as known from earlier ticks (NaN: unknown)."""
        row = self._accounts.row(account_id)
        return float(self._accounts.cols["created"][row]) if row >= 0 else math.nan

    def _old(self, account_id: str, ts: float) -> bool:
        """Is the account old by its creation date (known from an earlier tick)?"""
        return ts - self._created(account_id) > self.fresh_age  # False for NaN

    def _activity(self, account_id: str) -> int:
        row = self._accounts.row(account_id)
        return int(self._accounts.cols["n"][row]) if row >= 0 else 0

    def _join(self, tick: _Tick, camp: Campaign, batch: Batch, i: int, clock: int) -> None:
        """An extreme (or next to it) on an open campaign's target: the account joins."""
        e = batch.events[i]
        if tick.campaigns.get(camp.id) is not camp:
            camp = camp.copy()
            tick.campaigns[camp.id] = camp
        opened, kept_then = camp.target_baselines[e.item_id]
        kept_since = self._kept_of(e.item_id, int(tick.codes[i]) & 3) - kept_then
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
        if self._activity(account_id) > camp.evidence["member_cap"]:
            return
        if created is None:
            known = self._created(account_id)
            created = None if math.isnan(known) else known
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
                cid = self._member_of.get(e.account_id)
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
            row = self._accounts.row(account_id)
            since = float(self._accounts.cols["first_ts"][row]) if row >= 0 else float("-inf")
            detail = f"slow push member, {camp.summary()}"
            scores.flagged_accounts.append(Flag(account_id, cid, detail, camp.score, since))

    def _target(self, tick: _Tick, item_id: str, side: int) -> Campaign | None:
        cid = tick.targets.get((item_id, side)) or self._targets.get((item_id, side))
        if cid is None:
            return None
        return tick.campaigns.get(cid) or self._campaigns.get(cid)

    def _expire(self) -> None:
        """Close campaigns idle for a hold; every ``_SWEEP_EVERY`` events, forget items and
        accounts idle for ``ttl_events`` and ``account_ttl_events`` (and the least recent
        beyond the size caps)."""
        if self._seq - self._swept >= _SWEEP_EVERY:
            self._swept = self._seq
            self._items.sweep(self._items.cols["last"], self._clock - self.ttl_events)
            horizon = self._clock - self.account_ttl_events
            for account_id in self._accounts.sweep(self._accounts.cols["last"], horizon):
                self._member_of.pop(account_id, None)
        hold = self._clock - self.hold_events
        for cid in [c for c, camp in self._campaigns.items() if camp.last_clock < hold]:
            camp = self._campaigns.pop(cid)
            camp.closed = True
            self._closed.append(camp)
            for key in [k for k, v in self._targets.items() if v == cid]:
                del self._targets[key]


def _share_bound(k: int, n: int) -> float:
    """The largest share of an extreme that ``k`` of ``n`` kept ratings leave plausible
    (one-sided Clopper-Pearson bound at ``_SHARE_BOUND_LEVEL``); 1 without a history."""
    if k >= n:
        return 1.0
    return float(betaincinv(k + 1.0, float(n - k), 1.0 - _SHARE_BOUND_LEVEL))


def _quiet_many(count: Any, exposure: Any, per_item: Any, shape: float) -> Any:
    """Was an item's rate of an extreme (``count`` kept over ``exposure`` rated events,
    Gamma posterior mean with ``shape``) at most ``_QUIET`` times an average item's
    (``per_item``)? Element-wise on arrays."""
    rate = (shape + np.maximum(count, 0)) / (shape / per_item + exposure)
    return rate <= _QUIET * per_item


def _rated(batch: Batch) -> np.ndarray:
    """Which events are ratings or reviews with a rating: the ones on the stream clock."""
    return (batch.kind <= _RATED) & ~np.isnan(batch.rating)


def _positions(item_ids: list[str], rated: np.ndarray, wanted: set[str]) -> dict[str, list[int]]:
    """The tick's ratings of the ``wanted`` items, positions in order, per item."""
    positions: dict[str, list[int]] = {}
    for i in np.flatnonzero(rated).tolist():
        item_id = item_ids[i]
        if item_id in wanted:
            positions.setdefault(item_id, []).append(i)
    return positions


def _added(tick: _Tick, batch: Batch, positions: list[int], i: int) -> list[_Rating]:
    """The tick's ratings of an item (at ``positions``) up to event ``i``, as ring entries
    (kept, since nothing in the tick is decided yet)."""
    ts = batch.ts
    return [
        (int(tick.clocks[j]), int(tick.codes[j]), batch.events[j].account_id, True, float(ts[j]))
        for j in positions
        if j <= i
    ]


def _densest(times: list[float], span: float) -> int:
    """The most of the sorted ``times`` that fall within one stretch of ``span``."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best
