"""Per-key change detection: a keyed Page-Hinkley test and the drift windows it opens.

One :class:`KeyedDrift` watches one signal on many keys (an item's ratings, an item's
label share). Per key it keeps a fixed row of floats in one numpy matrix, so 200,000 keys
cost about 60 MB and a checkpoint is a few arrays, not 200,000 River objects:

- a two-sided Page-Hinkley test (the CUSUM of River's ``drift.PageHinkley``, reproduced
  float for float by :func:`ph_update`; ``tests/test_drift.py`` checks it against River on
  the same stream), fed with the key's value centred and scaled by its own recent history,
  so one threshold fits calm and divisive items alike;
- a short exponentially weighted histogram of what the key receives now (``p1``), and a
  long one learned only from kept events (``p0``, the baseline poison cannot move).

An alarm opens a :class:`DriftWindow`. Inside it an event *drives* the shift when its value
sits on the side the key moved to and that value is over-represented now: the share of
such values that is excess over the baseline, ``1 - p0[b] / p1[b]``, is the probability
that this event belongs to the shift rather than to the key's usual traffic. The caller
multiplies it by what it knows of the account. Events of the same value just before the
alarm are kept in a small per-key buffer, so the shift's first drivers are found too.

Why the observed stream feeds the test: the shift an attack causes is exactly what the
test must see, even where another detector already quarantined part of it; only the
baseline the window compares against is restricted to kept events.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# --- the row layout ----------------------------------------------------------------------
# Page-Hinkley, exactly River's state (N, MEAN, SUM_INC, SUM_DEC, MIN_INC, MAX_DEC, PENDING)
N, MEAN, SUM_INC, SUM_DEC, MIN_INC, MAX_DEC, PENDING = range(7)
# where each one-sided statistic last touched its extreme: the change-point estimate
INC_SEQ, INC_TS, INC_SUM, INC_CNT, DEC_SEQ, DEC_TS, DEC_SUM, DEC_CNT = range(7, 15)
PH_WIDTH = 15
# per-key observed history: event count, last event time, EW mean/variance for centring
SEQ, LAST_TS, EW_N, EW_MEAN, EW_VAR = range(15, 20)
# the same evidence as the test, decayed in event time: how much of it is recent
RISE_TS, RISE_INC, RISE_DEC = range(20, 23)
# the centring level when each one-sided sum last touched its extreme: the level before
# the change point, which a shift is measured against while that side is elevated
SNAP_UP, SNAP_DOWN = 23, 24
# 1 when the last alarm opened no window: the test then restarts primed (see ``plan``)
REPRIME = 25
# then, per value bin, five count vectors (offsets in ``KeyedDrift``): the values since
# each side's change point, what the key receives now (p1) and what it received and kept
# (p0); the last two with their totals, halved when they fill up
SINCE = 26

WARMUP_EVENTS = 5.0  # a key is tested from its 5th value on
PRIOR_EVENTS = 5.0  # weight of all keys' level and spread in a new key's centring
MAX_EARLY = 256  # drivers a window holds back before it is confirmed
GLOBAL_EVENTS = 20_000.0  # memory of all keys' observed level and spread
WEAK_HISTORY = 20.0  # fewer kept values before a change point: a weak baseline
BASELINE_Z = 2.0  # standard errors on top of a baseline share before excess is blamed
# after it: KEPT_N, then the long EW histogram of kept values (p0)


def ph_initial_row() -> list[float]:
    """A fresh Page-Hinkley state, as River's ``PageHinkley._reset`` leaves it."""
    row = [0.0] * PH_WIDTH
    row[MIN_INC] = math.inf
    row[MAX_DEC] = -1.0
    return row


def ph_update(
    s: list[float],
    v: float,
    x: float,
    seq: float,
    ts: float,
    delta: float,
    threshold: float,
    alpha: float,
    min_instances: int,
) -> int:
    """One Page-Hinkley step on row ``s`` (in place); +1/-1 on an upward/downward alarm.

    The arithmetic is River's ``PageHinkley.update`` (mode "both") in the same order, so
    the alarms are identical on the same input ``v``. Beyond River, the row remembers when
    each one-sided sum last reached its extreme (``seq``), when the first value after it
    came (``ts``) and the raw values ``x`` seen since: the change point, the onset time
    and the level after it, for the alarm's explanation.
    """
    if s[PENDING]:
        s[N] = 0.0
        s[MEAN] = 0.0
        s[SUM_INC] = 0.0
        s[SUM_DEC] = 0.0
        s[MIN_INC] = math.inf
        s[MAX_DEC] = -1.0
        s[PENDING] = 0.0
        s[DEC_SEQ] = seq
        s[DEC_SUM] = 0.0
        s[DEC_CNT] = 0.0
    n = s[N] + 1.0
    s[N] = n
    mean = s[MEAN]
    mean += (1.0 / n) * (v - mean)
    s[MEAN] = mean
    dev = v - mean
    inc = alpha * s[SUM_INC] + dev - delta
    dec = alpha * s[SUM_DEC] + dev + delta
    s[SUM_INC] = inc
    s[SUM_DEC] = dec
    if inc < s[MIN_INC]:
        s[MIN_INC] = inc
        s[INC_SEQ] = seq
        s[INC_SUM] = 0.0
        s[INC_CNT] = 0.0
    else:
        if not s[INC_CNT]:
            s[INC_TS] = ts  # the first value after the change point
        s[INC_SUM] += x
        s[INC_CNT] += 1.0
    if dec > s[MAX_DEC]:
        s[MAX_DEC] = dec
        s[DEC_SEQ] = seq
        s[DEC_SUM] = 0.0
        s[DEC_CNT] = 0.0
    else:
        if not s[DEC_CNT]:
            s[DEC_TS] = ts
        s[DEC_SUM] += x
        s[DEC_CNT] += 1.0
    if n >= min_instances:
        up = inc - s[MIN_INC]
        down = s[MAX_DEC] - dec
        if up > threshold or down > threshold:
            s[PENDING] = 1.0
            return 1 if up >= down else -1
    return 0


class RowTable:
    """Keys to rows of one float64 matrix, bounded by a size cap and event-time expiry.

    Least recently active keys (by the event time in column ``last_ts_col``) are evicted
    in bulk when the table is full, and keys idle past ``ttl_seconds`` are dropped by
    :meth:`expire`; the caller is told which keys went, to drop what hangs off them.
    """

    def __init__(
        self, width: int, initial: Sequence[float], max_keys: int, last_ts_col: int
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.width = width
        self.initial = list(initial)
        self.max_keys = max_keys
        self.last_ts_col = last_ts_col
        self.row_of: dict[str, int] = {}
        self.key_of: list[str | None] = []
        self.data = np.zeros((0, width))
        self.free: list[int] = []

    def __len__(self) -> int:
        return len(self.row_of)

    def gather(self, keys: Sequence[str]) -> tuple[list[int], list[list[float]]]:
        """Rows (-1 for unknown keys) and a Python copy of each key's state."""
        rows = [self.row_of.get(k, -1) for k in keys]
        known = [r for r in rows if r >= 0]
        values = iter(self.data[known].tolist() if known else [])
        return rows, [next(values) if r >= 0 else list(self.initial) for r in rows]

    def store(self, keys: Sequence[str], rows: list[int], values: list[list[float]]) -> None:
        """Write the states back, giving new keys rows (``rows`` is updated in place)."""
        for i, r in enumerate(rows):
            if r < 0:
                rows[i] = self._allocate(keys[i])
        if rows:
            self.data[rows] = values

    def rows_of(self, keys: Sequence[str]) -> list[int]:
        return [self.row_of.get(k, -1) for k in keys]

    def expire(self, horizon: float) -> list[str]:
        """Drop keys whose last event is older than ``horizon``."""
        if not self.row_of:
            return []
        used = np.fromiter(self.row_of.values(), dtype=np.int64, count=len(self.row_of))
        stale = used[self.data[used, self.last_ts_col] < horizon]
        return self._drop(stale.tolist())

    def evict_over_cap(self) -> list[str]:
        """Enforce the size cap; returns the keys evicted."""
        excess = len(self.row_of) - self.max_keys
        if excess <= 0:
            return []
        # Evict in bulk (a 64th of the table at least) so a full table is not scanned
        # for every new key; least recent event time first.
        count = min(len(self.row_of), max(excess, self.max_keys // 64))
        used = np.fromiter(self.row_of.values(), dtype=np.int64, count=len(self.row_of))
        last = self.data[used, self.last_ts_col]
        oldest = used[np.argpartition(last, count - 1)[:count]] if count < len(used) else used
        return self._drop(oldest.tolist())

    def _drop(self, rows: list[int]) -> list[str]:
        gone = []
        for r in rows:
            key = self.key_of[r]
            if key is None:
                continue
            del self.row_of[key]
            self.key_of[r] = None
            self.free.append(r)
            gone.append(key)
        return gone

    def _allocate(self, key: str) -> int:
        if not self.free:
            old = len(self.key_of)
            grow = min(max(64, old), max(self.max_keys + 64 - old, 64))
            self.data = np.concatenate([self.data, np.zeros((grow, self.width))])
            self.key_of.extend([None] * grow)
            self.free.extend(range(old + grow - 1, old - 1, -1))
        row = self.free.pop()
        self.row_of[key] = row
        self.key_of[row] = key
        return row


class PageHinkleyTable:
    """River's ``PageHinkley`` (mode "both") for many keys at once, in bounded memory.

    >>> table = PageHinkleyTable(threshold=5.0, min_instances=10)
    >>> stream = [("a", 0.0)] * 20 + [("b", 0.0)] * 20 + [("a", 3.0)] * 5
    >>> alarms = table.update_many([k for k, _ in stream], [x for _, x in stream])
    >>> [(i, int(a)) for i, a in enumerate(alarms) if a]
    [(41, 1)]
    """

    def __init__(
        self,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        min_instances: int = 30,
        max_keys: int = 200_000,
    ) -> None:
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.min_instances = min_instances
        self.max_keys = max_keys
        self.table = RowTable(PH_WIDTH + 1, ph_initial_row() + [0.0], max_keys, PH_WIDTH)

    def update_many(self, keys: Sequence[str], values: Sequence[float]) -> np.ndarray:
        """Feed the values in order; returns +1/-1/0 per value (alarm direction)."""
        slots: dict[str, int] = {}
        order = [slots.setdefault(k, len(slots)) for k in keys]
        uniq = list(slots)
        rows, states = self.table.gather(uniq)
        out = np.zeros(len(keys), dtype=np.int8)
        for i, (j, x) in enumerate(zip(order, values, strict=True)):
            s = states[j]
            s[PH_WIDTH] += 1.0
            out[i] = ph_update(
                s, float(x), float(x), s[PH_WIDTH], s[PH_WIDTH], self.delta,
                self.threshold, self.alpha, self.min_instances,
            )  # fmt: skip
        self.table.store(uniq, rows, states)
        self.table.evict_over_cap()
        return out


@dataclass(slots=True)
class Driver:
    """An event (or a buffered earlier one) that drives a window's shift."""

    index: int  # event index in the tick, -1 for an event of an earlier tick
    account: str
    ts: float
    value_bin: int
    score: float
    campaign_id: str
    key: str
    share: float  # the shift's share of the key's traffic when the driver was found


@dataclass(slots=True)
class DriftWindow:
    """An open drift window on one key: which way it moved, since when, against what."""

    campaign_id: str
    direction: int  # +1 the key's values rose, -1 they fell
    onset_ts: float
    opened_ts: float
    before: float  # baseline level (mean of p0) when the alarm fired
    after: float  # mean of the values since the change point, at the alarm
    baseline: list[float]  # p0, frozen at the alarm
    ceiling: list[float]  # its upper confidence bound, what excess is measured over
    side: list[bool]  # which values lie on the side the key moved to
    last_driver_ts: float
    alarm_events: int  # events between change point and alarm
    history: float  # kept values before the change point behind the baseline
    drivers: int = 0
    events: int = 0
    # Drivers found before the window was confirmed as a campaign (see ``_blame``): their
    # other events are neither held nor revoked until then.
    confirmed: bool = False
    early: list[Driver] = field(default_factory=list)


# A value seen while a key's test is half way to an alarm:
# (seq, ts, account, bin, account weight, index in the tick or -1 once committed)
Buffered = tuple[float, float, str, int, float, int]


@dataclass(slots=True)
class SignalPlan:
    """What scoring one tick found, ready to commit unchanged if the tick is learned."""

    keys: list[str]  # the distinct keys of the tick
    rows: list[int]
    states: list[list[float]]
    windows: dict[str, DriftWindow | None]  # changed windows (None: closed)
    buffers: dict[str, list[Buffered]]  # changed buffers
    scores: np.ndarray
    excess: np.ndarray  # P(event drives an open shift), before the account weight
    window_of: list[DriftWindow | None]
    provisional: np.ndarray  # counted as kept while simulating the tick
    event_keys: list[str] = field(default_factory=list)  # the key of each event
    seqs: list[float] = field(default_factory=list)  # each event's number on its key
    drivers: list[Driver] = field(default_factory=list)
    alarms: list[tuple[str, DriftWindow]] = field(default_factory=list)  # windows opened
    alarm_count: int = 0  # Page-Hinkley alarms, re-alarms on an open window included
    alarm_list: list[tuple[str, float, int]] = field(default_factory=list)
    observed: tuple[float, float, float] = (0.0, 0.0, 0.0)


class KeyedDrift:
    """One drift signal (values in ``bins`` categories) over many keys; see module doc.

    Parameters are the knobs of :class:`streamguard.detectors.drift.DriftDetector` for
    this signal; ``centers`` are the numeric values of the bins (stars, or 0/1 for a label
    share), ``scale_floor`` the smallest spread the centring divides by.
    """

    def __init__(
        self,
        name: str,
        centers: Sequence[float],
        delta: float,
        threshold: float,
        alpha: float,
        min_instances: int,
        center_events: int,
        recent_events: int,
        baseline_events: int,
        scale_floor: float,
        side_margin: float,
        close_excess: float,
        quiet_seconds: float,
        max_window_seconds: float,
        onset_seconds: float,
        min_drivers: int,
        follow_min_share: float,
        min_excess: float,
        prime_events: int,
        buffer_size: int,
        max_keys: int,
    ) -> None:
        self.name = name
        self.centers = list(centers)
        self.bins = len(self.centers)
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.min_instances = min_instances
        self.center_events = center_events
        self.recent_events = recent_events
        self.baseline_events = baseline_events
        self.scale_floor = scale_floor
        self.side_margin = side_margin
        self.close_excess = close_excess
        self.quiet_seconds = quiet_seconds
        self.max_window_seconds = max_window_seconds
        self.onset_seconds = onset_seconds
        self.min_drivers = min_drivers
        self.follow_min_share = follow_min_share
        self.min_excess = min_excess
        self.prime_events = prime_events
        self._primed = ph_initial_row()
        for _ in range(prime_events):  # the same steps, so the state is float-exact
            ph_update(self._primed, 0.0, 0.0, 0.0, 0.0, delta, threshold, alpha, 1)
        self.buffer_size = buffer_size
        self.since_up = SINCE
        self.since_down = SINCE + self.bins
        self.recent_n = SINCE + 2 * self.bins
        self.kept_n = self.recent_n + 1 + self.bins
        width = self.kept_n + 1 + self.bins
        initial = ph_initial_row() + [0.0] * (width - PH_WIDTH)
        self.table = RowTable(width, initial, max_keys, LAST_TS)
        self.windows: dict[str, DriftWindow] = {}
        # Recent values of keys whose test is half way to an alarm: (seq, ts, account,
        # bin, weight). Bounded per key and in number of keys.
        self.buffers: dict[str, list[Buffered]] = {}
        self.max_buffers = max(1_000, max_keys // 10)
        self.prior = [1.0 / self.bins] * self.bins  # kept histogram over all keys
        self.prior_n = 0
        # all keys' observed values: count (capped), mean and variance
        mid = sum(self.centers) / self.bins
        self.observed = (0.0, mid, sum((c - mid) ** 2 for c in self.centers) / self.bins)
        self.alarms_total = 0
        self.windows_opened = 0
        # the latest alarms, (key, event time, direction): the eval replay reads the new
        # ones after each tick to time each campaign's first alarm (evaluate/runner.py)
        self.alarm_log: deque[tuple[str, float, int]] = deque(maxlen=256)
        # set to a list to record, per tested value, (key, test input, alarm direction,
        # whether the test was primed just before it)
        self.trace: list[tuple[str, float, int, bool]] | None = None

    # --- scoring: a pure simulation of the tick ------------------------------------------
    def plan(
        self,
        keys: list[str],
        values: Sequence[float],
        bins: Sequence[int],
        ts: Sequence[float],
        weights: Sequence[float],
        accounts: Sequence[str],
    ) -> SignalPlan:
        """Run the tick's events through the keys in order without touching state.

        ``weights`` (in [0, 1]) say how much the account itself looks like a shift's
        driver; the event's score is the excess probability times that weight. The loop
        is the hot path (a few microseconds an event), hence the local names.
        """
        slots: dict[str, int] = {}
        order = [slots.setdefault(k, len(slots)) for k in keys]
        uniq = list(slots)
        rows, states = self.table.gather(uniq)
        m = len(keys)
        plan = SignalPlan(
            uniq, rows, states, {}, {}, np.zeros(m), np.zeros(m), [None] * m,
            np.zeros(m, dtype=bool), keys,
        )  # fmt: skip
        windows, changed = self.windows, plan.windows
        buffers, buffered = self.buffers, plan.buffers
        delta, threshold, alpha = self.delta, self.threshold, self.alpha
        min_instances, primed = self.min_instances, self._primed
        fresh, trace = ph_initial_row(), self.trace
        elevated = threshold * 0.25
        floor, floor2 = self.scale_floor, self.scale_floor**2
        tau, slow, limit = self.onset_seconds, 1.0 / self.center_events, self.center_events
        full, recent, kept = 2.0 * self.recent_events, self.recent_n + 1, self.kept_n
        recent_n, since_up, since_down, bins_n = self.recent_n, SINCE, SINCE + self.bins, self.bins
        g_n, g_mean, g_var = self.observed
        zeros = [0.0] * self.bins
        provisional: list[bool] = []
        seqs: list[float] = []  # each event's sequence number on its key
        for i in range(m):
            key = keys[i]
            s = states[order[i]]
            x = values[i]
            b = bins[i]
            t = ts[i]
            seq = s[SEQ] + 1.0
            s[SEQ] = seq
            if t > s[LAST_TS]:
                s[LAST_TS] = t
            # all keys' observed level and spread, in stream order: a new key's start
            g_n = g_n + 1.0 if g_n < GLOBAL_EVENTS else g_n
            g_diff = x - g_mean
            g_incr = g_diff / g_n
            g_mean += g_incr
            g_var = (1.0 - 1.0 / g_n) * (g_var + g_diff * g_incr)
            if seq == 1.0:
                # worth ``PRIOR_EVENTS`` values, so a handful of ratings cannot fake a
                # tiny spread
                s[EW_N], s[EW_MEAN], s[EW_VAR] = PRIOR_EVENTS, g_mean, max(g_var, floor2)
            window = changed[key] if key in changed else windows.get(key)
            if window is not None and self._stale(window, s, t):
                changed[key] = window = None
            direction = 0
            hot = False
            if seq >= WARMUP_EVENTS:
                if seq == WARMUP_EVENTS:
                    # Prime the test with the reference level itself: River's PageHinkley
                    # on the key's stream preceded by ``prime_events`` zeros. Without it
                    # the test's own running mean, built from a few ratings, would follow
                    # a shift on a key with little history instead of measuring it.
                    s[:PH_WIDTH] = primed
                    s[INC_SEQ] = s[DEC_SEQ] = seq
                    s[SNAP_UP] = s[SNAP_DOWN] = s[EW_MEAN]
                var = s[EW_VAR]
                if s[SUM_INC] - s[MIN_INC] >= elevated:
                    center = s[SNAP_UP]
                elif s[MAX_DEC] - s[SUM_DEC] >= elevated:
                    center = s[SNAP_DOWN]
                else:
                    center = s[EW_MEAN]
                v = (x - center) / (math.sqrt(var) if var > floor2 else floor)
                # ph_update, inlined: the same arithmetic in the same order (the tests
                # check the alarms against River's PageHinkley through ``trace``)
                primed_now = seq == WARMUP_EVENTS
                if s[PENDING]:
                    if s[REPRIME]:
                        # The alarm opened no window (slow evidence): restart primed at
                        # the reference level, so a sudden shift right behind it is
                        # measured afresh instead of being learned by a fresh test.
                        s[:PH_WIDTH] = primed
                        s[INC_SEQ] = s[DEC_SEQ] = seq
                        s[SNAP_UP] = s[SNAP_DOWN] = s[EW_MEAN]
                        s[REPRIME] = 0.0
                        primed_now = True
                    else:
                        s[:PH_WIDTH] = fresh
                        s[DEC_SEQ] = seq
                n = s[N] + 1.0
                s[N] = n
                mean = s[MEAN]
                mean += (1.0 / n) * (v - mean)
                s[MEAN] = mean
                dev = v - mean
                inc = alpha * s[SUM_INC] + dev - delta
                dec = alpha * s[SUM_DEC] + dev + delta
                s[SUM_INC] = inc
                s[SUM_DEC] = dec
                if inc < s[MIN_INC]:
                    s[MIN_INC] = inc
                    s[INC_SEQ] = seq
                    s[INC_SUM] = s[INC_CNT] = 0.0
                else:
                    if not s[INC_CNT]:
                        s[INC_TS] = t
                    s[INC_SUM] += x
                    s[INC_CNT] += 1.0
                if dec > s[MAX_DEC]:
                    s[MAX_DEC] = dec
                    s[DEC_SEQ] = seq
                    s[DEC_SUM] = s[DEC_CNT] = 0.0
                else:
                    if not s[DEC_CNT]:
                        s[DEC_TS] = t
                    s[DEC_SUM] += x
                    s[DEC_CNT] += 1.0
                up = inc - s[MIN_INC]
                down = s[MAX_DEC] - dec
                if n >= min_instances and (up > threshold or down > threshold):
                    s[PENDING] = 1.0
                    direction = 1 if up >= down else -1
                if trace is not None:
                    trace.append((key, v, direction, primed_now))
                rise_up, rise_down = s[RISE_INC], s[RISE_DEC]
                gap = t - s[RISE_TS]
                if gap > 0.0:
                    decay = math.exp(-gap / tau)
                    rise_up *= decay
                    rise_down *= decay
                    s[RISE_TS] = t
                rise_up += dev - delta
                rise_down -= dev + delta
                s[RISE_INC] = rise_up if rise_up > 0.0 else 0.0
                s[RISE_DEC] = rise_down if rise_down > 0.0 else 0.0
                hot = direction != 0 or up >= elevated or down >= elevated
            if not hot:
                # The centring level and spread learn only while nothing is going on, so
                # a shift does not teach the test its own new level: a running mean (with
                # the prior) up to ``center_events`` values, exponential after that.
                ew_n = s[EW_N] + 1.0
                s[EW_N] = ew_n
                a = 1.0 / ew_n if ew_n < limit else slow
                diff = x - s[EW_MEAN]
                incr = a * diff
                s[EW_MEAN] += incr
                s[EW_VAR] = (1.0 - a) * (s[EW_VAR] + diff * incr)
            if seq >= WARMUP_EVENTS:
                # the level at each side's change point; the kept values since are
                # counted below, with the kept counts
                if s[INC_SEQ] == seq:
                    s[SNAP_UP] = s[EW_MEAN]
                    s[since_up : since_up + bins_n] = zeros
                if s[DEC_SEQ] == seq:
                    s[SNAP_DOWN] = s[EW_MEAN]
                    s[since_down : since_down + bins_n] = zeros
            # what the key receives now, shift or not
            s[recent + b] += 1.0
            n_recent = s[recent_n] + 1.0
            if n_recent >= full:
                n_recent *= 0.5
                for k in range(recent, recent + self.bins):
                    s[k] *= 0.5
            s[recent_n] = n_recent

            if direction:
                # A re-alarm while a window is open changes nothing: after its reset the
                # test adapts to the shifted level, so a counter alarm usually means the
                # key is returning to normal, which the window's closing rule sees.
                plan.alarm_count += 1
                plan.alarm_list.append((key, t, direction))
                rise = s[RISE_INC] if direction > 0 else s[RISE_DEC]
                # an unconfirmed window the other way was a fluctuation: this one wins
                free = window is None or (window.direction != direction and not window.confirmed)
                if free and rise >= 0.5 * threshold:
                    window = self._open(plan, key, s, direction, t)
                elif window is None:
                    s[REPRIME] = 1.0
                # else: evidence that built up over much longer than ``onset_seconds``
                # is slow, organic drift (or a sparse key's long history), not a
                # campaign: the alarm is counted, nobody is blamed
            if window is not None:
                blamed = self._score(plan, i, key, s, window, b, t, weights[i], accounts[i])
            else:
                blamed = False
                if hot or key in buffered or key in buffers:
                    self._buffer(plan, i, key, s, seq, t, accounts[i], b, weights[i], hot)
            if not blamed:
                # Counted as kept until the policy says otherwise (corrected at commit),
                # so a key whose history arrives within one tick has a baseline too; so
                # are the kept values since each side's change point, which the baseline
                # takes out of the kept counts.
                s[kept] += 1.0
                s[kept + 1 + b] += 1.0
                if seq > s[INC_SEQ]:
                    s[since_up + b] += 1.0
                if seq > s[DEC_SEQ]:
                    s[since_down + b] += 1.0
            provisional.append(not blamed)
            seqs.append(seq)
        plan.provisional = np.array(provisional, dtype=bool)
        plan.seqs = seqs
        plan.observed = (g_n, g_mean, g_var)
        return plan

    def _score(
        self,
        plan: SignalPlan,
        i: int,
        key: str,
        s: list[float],
        window: DriftWindow,
        b: int,
        ts: float,
        weight: float,
        account: str,
    ) -> bool:
        """An event on a key with an open window: how much it drives the shift (its
        score, in ``plan.scores``); True when it is blamed."""
        if key not in plan.windows:
            window = plan.windows[key] = _copy_window(window)
        window.events += 1
        pi = self._share(window, s)
        excess = self._excess(window, s, b, pi)
        plan.excess[i] = excess
        plan.window_of[i] = window
        score = self._blame_score(excess, weight)
        plan.scores[i] = score
        if excess >= 0.5:
            window.last_driver_ts = max(window.last_driver_ts, ts)
        if score >= 0.5:
            driver = Driver(i, account, ts, b, score, window.campaign_id, key, pi)
            self._blame(plan, window, driver)
            return True
        return False

    def _blame_score(self, excess: float, weight: float) -> float:
        """Excess probability times the account's weight; below ``min_excess`` the value
        is not over-represented enough to blame anyone, and the score only ranks."""
        score = excess * weight
        return score if excess >= self.min_excess else min(score, 0.49)

    def _blame(self, plan: SignalPlan, window: DriftWindow, driver: Driver) -> None:
        """Count a driver; pass drivers on for holding and revocation once confirmed.

        A window is confirmed as a campaign once it has ``min_drivers`` drivers and the
        shift has reached ``follow_min_share`` of the key's traffic: one blamed account,
        or a mild fluctuation, is not a group whose other events should be held.
        """
        window.drivers += 1
        if not window.confirmed:
            # over a baseline of few kept values, "before" is mostly the prior: only a
            # crowd makes it a campaign
            needed = self.min_drivers if window.history >= WEAK_HISTORY else 4 * self.min_drivers
            if window.drivers < needed or driver.share < self.follow_min_share:
                if len(window.early) >= MAX_EARLY:
                    del window.early[0]
                window.early.append(driver)
                return
            window.confirmed = True
            plan.drivers.extend(window.early)
            window.early = []
        plan.drivers.append(driver)

    def _share(self, window: DriftWindow, s: list[float]) -> float:
        """A lower bound on the share of the key's traffic that belongs to the shift now.

        What the key receives now is a mixture ``p1 = (1 - pi) p0 + pi q`` of its usual
        traffic and the shift's; ``p1 - p0 = pi (q - p0)``, so the total variation
        distance between p1 and p0 is at most ``pi``.
        """
        base = window.baseline
        total = s[self.recent_n]
        if total <= 0.0:
            return 0.0
        pi = 0.0
        for k in range(self.bins):
            gap = s[self.recent_n + 1 + k] / total - base[k]
            if gap > 0.0:
                pi += gap
        return min(pi, 1.0)

    def _excess(self, window: DriftWindow, s: list[float], b: int, pi: float) -> float:
        """P(an event of value ``b`` belongs to the shift): Bayes on the mixture, 0 off
        the shift's side. With ``pi`` a lower bound, it errs toward the usual traffic."""
        if not window.side[b]:
            return 0.0
        count = s[self.recent_n + 1 + b]
        if count <= 0.0:
            return 0.0
        return max(0.0, 1.0 - (1.0 - pi) * window.ceiling[b] * s[self.recent_n] / count)

    def _stale(self, window: DriftWindow, s: list[float], ts: float) -> bool:
        """Close when the shift is over: quiet for a while, or no value is in excess."""
        if ts - window.last_driver_ts > self.quiet_seconds:
            return True
        if ts - window.opened_ts > self.max_window_seconds:
            return True  # a change this lasting is the key's new level, not a campaign
        if window.events < self.recent_events:
            return False
        pi = self._share(window, s)
        top = max(
            (self._excess(window, s, b, pi) for b in range(self.bins) if window.side[b]),
            default=0.0,
        )
        return top < self.close_excess

    def _open(
        self, plan: SignalPlan, key: str, s: list[float], direction: int, ts: float
    ) -> DriftWindow:
        first = self.since_up if direction > 0 else self.since_down
        baseline, ceiling, history = self.baseline(s, s[first : first + self.bins])
        before = sum(p * c for p, c in zip(baseline, self.centers, strict=True))
        if direction > 0:
            onset, total, count = s[INC_TS], s[INC_SUM], s[INC_CNT]
        else:
            onset, total, count = s[DEC_TS], s[DEC_SUM], s[DEC_CNT]
        after = total / count if count else before
        side = [(c - before) * direction >= self.side_margin for c in self.centers]
        window = DriftWindow(
            campaign_id=f"drift-{self.name}-{key}-{int(onset)}",
            direction=direction,
            onset_ts=onset,
            opened_ts=ts,
            before=before,
            after=after,
            baseline=baseline,
            ceiling=ceiling,
            side=side,
            last_driver_ts=ts,
            alarm_events=int(count),
            history=history,
        )
        plan.windows[key] = window
        plan.alarms.append((key, window))
        # The shift's first drivers arrived before the alarm: find them in the buffer.
        buffered = plan.buffers[key] if key in plan.buffers else self.buffers.get(key, [])
        onset_seq = s[INC_SEQ] if direction > 0 else s[DEC_SEQ]
        pi = self._share(window, s)
        for seq, bts, account, b, weight, index in buffered:
            if seq <= onset_seq:
                continue
            score = self._blame_score(self._excess(window, s, b, pi), weight)
            if score >= 0.5:
                driver = Driver(index, account, bts, b, score, window.campaign_id, key, pi)
                self._blame(plan, window, driver)
        plan.buffers[key] = []
        return window

    def _buffer(
        self,
        plan: SignalPlan,
        i: int,
        key: str,
        s: list[float],
        seq: float,
        ts: float,
        account: str,
        b: int,
        weight: float,
        hot: bool,
    ) -> None:
        """Remember this event while the key's test is elevated, forget it otherwise."""
        if not hot:
            plan.buffers[key] = []
            return
        if key in plan.buffers:
            buf = plan.buffers[key]
        else:
            buf = plan.buffers[key] = list(self.buffers.get(key, []))
        since = min(s[INC_SEQ], s[DEC_SEQ])
        if buf and buf[0][0] <= since:
            buf[:] = [e for e in buf if e[0] > since]
        if len(buf) >= self.buffer_size:
            del buf[0]
        buf.append((seq, ts, account, b, weight, i))

    def baseline(
        self, s: list[float], since: Sequence[float] = ()
    ) -> tuple[list[float], list[float], float]:
        """p0, an upper confidence bound of each of its shares, and the kept values behind.

        p0 is what the key received and kept before the change point (``since``: the
        values kept after it, taken out; values another detector held were never in the
        kept counts, so they must not come out of them), shrunk toward all keys' for
        short histories.
        A share known from fifteen values is uncertain, so an event is blamed only for
        excess over what the baseline could plausibly be (``BASELINE_Z`` standard errors).
        """
        first = self.kept_n + 1
        counts = [max(0.0, s[first + b] - (since[b] if since else 0.0)) for b in range(self.bins)]
        history = sum(counts)
        n = history + PRIOR_EVENTS
        p0 = [(c + PRIOR_EVENTS * p) / n for c, p in zip(counts, self.prior, strict=True)]
        ceiling = [min(1.0, p + BASELINE_Z * math.sqrt(p * (1.0 - p) / n)) for p in p0]
        return p0, ceiling, history

    # --- learning: commit the plan, then the kept baseline --------------------------------
    def commit(self, plan: SignalPlan, bins: Sequence[int], kept: Sequence[bool]) -> list[str]:
        """Store the simulated states and windows; learn the kept values' baseline."""
        self.table.store(plan.keys, plan.rows, plan.states)
        self.observed = plan.observed
        self._learn_kept(plan, bins, kept)
        evicted = self.table.evict_over_cap()
        self._learn_prior(bins, kept)
        for key, window in plan.windows.items():
            if window is None:
                self.windows.pop(key, None)
            else:
                for d in window.early:
                    d.index = -1
                self.windows[key] = window
        for key, buf in plan.buffers.items():
            if buf:
                self.buffers[key] = [(q, t, a, b, w, -1) for q, t, a, b, w, _ in buf]
            else:
                self.buffers.pop(key, None)
        while len(self.buffers) > self.max_buffers:
            del self.buffers[next(iter(self.buffers))]
        self.alarms_total += plan.alarm_count
        self.windows_opened += len(plan.alarms)
        self.alarm_log.extend(plan.alarm_list)
        self.forget(evicted)
        return evicted

    def _learn_kept(self, plan: SignalPlan, bins: Sequence[int], kept: Sequence[bool]) -> None:
        """Correct the provisional kept counts (and kept values since the change points)
        to the policy's decision (vectorised), and halve a key's counts when they fill up."""
        delta = np.asarray(kept, dtype=np.float64) - plan.provisional
        fix = np.flatnonzero(delta)
        row_of = dict(zip(plan.keys, plan.rows, strict=True))
        data = self.table.data
        if len(fix):
            rows = np.array([row_of[plan.event_keys[i]] for i in fix.tolist()], dtype=np.int64)
            b = np.asarray(bins, dtype=np.int64)[fix]
            d = delta[fix]
            np.add.at(data, (rows, self.kept_n + 1 + b), d)
            np.add.at(data[:, self.kept_n], rows, d)
            # Values since a change point are kept values too: the baseline takes them out
            # of the kept counts, so a quarantined push must not take honest values out.
            seq = np.asarray(plan.seqs)[fix]
            for first, change in ((self.since_up, INC_SEQ), (self.since_down, DEC_SEQ)):
                after = seq > data[rows, change]
                np.add.at(data, (rows[after], first + b[after]), d[after])
        touched = np.asarray(plan.rows, dtype=np.int64)
        full = touched[data[touched, self.kept_n] >= 2.0 * self.baseline_events]
        if len(full):
            data[full, self.kept_n : self.kept_n + 1 + self.bins] *= 0.5
            data[full, SINCE : SINCE + 2 * self.bins] *= 0.5  # kept values too: same scale

    def _learn_prior(self, bins: Sequence[int], kept: Sequence[bool]) -> None:
        counts = np.bincount(
            np.asarray(bins, dtype=np.int64)[np.asarray(kept, dtype=bool)], minlength=self.bins
        )
        total = int(counts.sum())
        if total:
            self.prior_n += total
            a = total / min(self.prior_n, 20_000)
            fresh = (counts / total).tolist()
            self.prior = [(1 - a) * p + a * c for p, c in zip(self.prior, fresh, strict=True)]

    def forget(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.windows.pop(key, None)
            self.buffers.pop(key, None)

    def expire(self, now: float, ttl_seconds: float) -> None:
        """Drop idle keys, and close windows that went quiet (no event came to close them)."""
        self.forget(self.table.expire(now - ttl_seconds))
        quiet = [
            k
            for k, w in self.windows.items()
            if now - w.last_driver_ts > self.quiet_seconds
            or now - w.opened_ts > self.max_window_seconds
        ]
        for key in quiet:
            del self.windows[key]


def _copy_window(w: DriftWindow) -> DriftWindow:
    return DriftWindow(
        w.campaign_id, w.direction, w.onset_ts, w.opened_ts, w.before, w.after,
        w.baseline, w.ceiling, w.side, w.last_driver_ts, w.alarm_events, w.history,
        w.drivers, w.events,
        w.confirmed, list(w.early),
    )  # fmt: skip
