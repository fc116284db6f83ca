"""Drift detectors: rating bombing, pushes and label brigades as shifts of a key's stream.

Three families of signal, each with the change detector that fits it (docs/DETECTORS.md
says why at length):

- **per item, ratings**: a two-sided Page-Hinkley test (River's, reproduced exactly over a
  keyed table, :mod:`streamguard.detectors.drift_item`) on each item's centred ratings. An
  attack is a step change, the CUSUM family detects steps with the least delay for a
  given false-alarm rate, and its tolerance ``delta`` ignores slow organic drift; the
  state is a handful of floats, so 200,000 items fit in tens of megabytes.
- **per item, label mix**: the same test on each item's share of positive labels and of
  helpful votes (:mod:`streamguard.detectors.drift_labels` maps labels to 1/0).
- **global mix**: River's ``ADWIN`` on the whole stream's shares (kinds, 1- and 5-star
  ratings, positive labels), fed per block of events. Few keys, no assumption about the
  size of the change, and a bound on false alarms; a global shift is an alert and a
  ranking hint, never a quarantine reason on its own (``global_max_score`` < 0.5).

An alarm opens a drift window on the key. Inside it only the events that *drive* the
shift are suspicious: their value sits on the side the key moved to and is in excess over
the key's kept baseline, and the account looks like a driver (new, or with little history;
established accounts need overwhelming excess). Drivers' other events within
``follow_hours`` (the filler a bombing account adds elsewhere) are held too, and their
earlier releases are revoked through :class:`~streamguard.detectors.base.Flag`.

The detector is **decisive**: a score >= 0.5 is a quarantine decision. An online quantile
threshold would cap what it quarantines at a fixed share of traffic, exactly what an
attack of 1-5 % of traffic exceeds; the Page-Hinkley threshold controls false alarms and
the excess probability controls who, inside a window, is blamed.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamguard.detectors.base import KIND_CODES, Batch, Flag, Scores
from streamguard.detectors.drift_item import DriftWindow, Driver, KeyedDrift, SignalPlan
from streamguard.detectors.drift_labels import (
    DEFAULT_POSITIVE_LABELS,
    label_key,
    polarity,
    positive_set,
    split_key,
)

HOUR = 3600.0
DAY = 86400.0
RATING_KINDS = (0, 1)  # base.KIND_CODES: rating, review
LABEL_KINDS = (2, 3)  # label, vote
# Indexed by kind code: a lookup is some twenty times cheaper than np.isin on a tick.
_IS_RATING_KIND = np.isin(np.arange(len(KIND_CODES)), RATING_KINDS)
_IS_LABEL_KIND = np.isin(np.arange(len(KIND_CODES)), LABEL_KINDS)
KIND_NAMES = ("rating", "review", "label", "vote")


class DriftSettings(BaseModel):
    """Settings of :class:`DriftDetector` (``detectors.drift`` in the config file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    rating_delta: float = Field(0.5, ge=0)
    rating_threshold: float = Field(12.0, gt=0)
    label_delta: float = Field(0.5, ge=0)
    label_threshold: float = Field(12.0, gt=0)
    alpha: float = Field(0.9999, gt=0, le=1)
    min_instances: int = Field(30, ge=1)
    center_events: int = Field(100, ge=2)
    recent_events: int = Field(30, ge=2)
    baseline_events: int = Field(500, ge=2)
    min_weight: float = Field(0.55, ge=0, le=1)
    side_margin: float = Field(0.0, ge=0)
    min_excess: float = Field(0.75, ge=0, le=1)
    label_min_excess: float = Field(0.6, ge=0, le=1)
    close_excess: float = Field(0.2, ge=0, lt=1)
    quiet_hours: float = Field(6.0, gt=0)
    max_window_hours: float = Field(72.0, gt=0)
    onset_hours: float = Field(48.0, gt=0)
    min_drivers: int = Field(5, ge=1)
    prime_events: int = Field(200, ge=0)
    follow_hours: float = Field(3.0, ge=0)
    follow_min_share: float = Field(0.4, ge=0, le=1)
    # Only drivers this suspicious (excess x newness) have their other events held and
    # their releases revoked: an account established in the stream (weight 0.55) that
    # joins a shift keeps the rest of its history; its driving rating is still held.
    follow_min_score: float = Field(0.7, ge=0, le=1)
    buffer_size: int = Field(64, ge=1)
    global_delta: float = Field(0.002, gt=0, lt=1)
    global_block: int = Field(50, ge=10)
    global_max_score: float = Field(0.45, ge=0, le=1)
    positive_labels: tuple[str, ...] = DEFAULT_POSITIVE_LABELS
    max_keys: int = Field(200_000, ge=1)
    max_accounts: int = Field(100_000, ge=1)
    ttl_days: float = Field(365.0, gt=0)


@dataclass(frozen=True, slots=True)
class Follow:
    """An account that drove a shift: its events around that moment are held too."""

    campaign_id: str
    ts: float
    score: float
    detail: str


@dataclass(slots=True)
class GlobalWindow:
    signal: str
    direction: int
    before: float
    after: float
    onset_ts: float
    opened_ts: float
    blocks: int = 0


class GlobalMix:
    """ADWIN on the shares of the whole stream, one value per block of events.

    Blocks are counted in events, not ticks, so the same stream gives the same alarms
    whatever the tick size; the block mean is one ADWIN input, which keeps the cost a
    fraction of a microsecond per event.
    """

    SIGNALS = (
        "share of ratings",
        "share of reviews",
        "share of labels",
        "share of votes",
        "share of 1-star ratings",
        "share of 5-star ratings",
        "share of positive labels",
    )

    def __init__(self, delta: float, block: int, window_blocks: int = 40) -> None:
        self.delta = delta
        self.block = block
        self.window_blocks = window_blocks
        from river.drift import ADWIN  # here: importing river costs half a second

        self.adwins: list[Any] = [ADWIN(delta=delta, clock=1) for _ in self.SIGNALS]
        # the latest block values per signal: the level a window reports as "after"
        self.latest: list[deque[float]] = [deque(maxlen=10) for _ in self.SIGNALS]
        self.num = np.zeros(len(self.SIGNALS))
        self.den = np.zeros(len(self.SIGNALS))
        self.filled = 0
        self.block_ts: deque[float] = deque(maxlen=4096)
        self.windows: dict[int, GlobalWindow] = {}
        self.alarms_total = 0

    @staticmethod
    def indicators(
        kind: np.ndarray, low: np.ndarray, high: np.ndarray, pos: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per event and signal: numerator and denominator indicators (n x signals)."""
        n = len(kind)
        num = np.zeros((n, len(GlobalMix.SIGNALS)))
        den = np.zeros_like(num)
        for k in range(4):
            num[:, k] = kind == k
            den[:, k] = 1.0
        rated = (kind == 0) | (kind == 1)
        num[:, 4], num[:, 5] = low & rated, high & rated
        den[:, 4] = den[:, 5] = rated
        labelled = (kind == 2) | (kind == 3)
        num[:, 6], den[:, 6] = pos & labelled, labelled
        return num, den

    def score(
        self, num: np.ndarray, weights: np.ndarray, cap: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sub-decision scores for events that carry an open window's rising share."""
        best = np.zeros(len(weights))
        which = np.full(len(weights), -1)
        for k, window in self.windows.items():
            if window.direction <= 0 or window.after <= 0:
                continue
            excess = max(0.0, 1.0 - window.before / window.after)
            s = np.where(num[:, k] > 0, np.minimum(cap, excess * weights), 0.0)
            better = s > best
            best[better] = s[better]
            which[better] = k
        return best, which

    def learn(self, num: np.ndarray, den: np.ndarray, ts: np.ndarray) -> int:
        """Add the tick's events block by block; returns alarms raised."""
        n = len(ts)
        need = self.block - self.filled  # events that complete the open block
        if n < need:
            self.num += num.sum(axis=0)
            self.den += den.sum(axis=0)
            self.filled += n
            return 0
        ends = np.arange(need, n + 1, self.block)
        starts = np.r_[0, ends[:-1]]
        num_sums = np.add.reduceat(num, starts, axis=0)
        den_sums = np.add.reduceat(den, starts, axis=0)
        if ends[-1] < n:  # reduceat's last segment runs to the end: split off the tail
            num_sums[-1] -= num[ends[-1] :].sum(axis=0)
            den_sums[-1] -= den[ends[-1] :].sum(axis=0)
        alarms = 0
        for k, end in enumerate(ends.tolist()):
            self.num += num_sums[k]
            self.den += den_sums[k]
            alarms += self._close_block(float(ts[end - 1]))
        self.num += num[ends[-1] :].sum(axis=0)
        self.den += den[ends[-1] :].sum(axis=0)
        self.filled = n - int(ends[-1])
        self.alarms_total += alarms
        return alarms

    def _close_block(self, ts: float) -> int:
        self.block_ts.append(ts)
        alarms = 0
        for k, adwin in enumerate(self.adwins):
            if self.den[k] < 5:
                continue
            value = self.num[k] / self.den[k]
            self.latest[k].append(value)
            width, total = adwin.width, adwin.total
            adwin.update(value)
            if adwin.drift_detected:
                alarms += 1
                # ADWIN drops the oldest blocks: their mean is the level before; the
                # latest blocks tell the level now
                dropped = width + 1 - adwin.width
                before = (total + value - adwin.total) / dropped if dropped > 0 else value
                after = sum(self.latest[k]) / len(self.latest[k])
                back = min(int(adwin.width), len(self.block_ts))
                self.windows[k] = GlobalWindow(
                    self.SIGNALS[k], 1 if after > before else -1, before, after,
                    self.block_ts[-back], ts,
                )  # fmt: skip
        for k in list(self.windows):
            window = self.windows[k]
            window.blocks += 1
            if window.blocks > self.window_blocks:
                del self.windows[k]
        self.num[:] = 0.0
        self.den[:] = 0.0
        return alarms


class DriftDetector:
    """Per-item rating and label-mix drift, plus the global mix; see the module doc.

    >>> detector = DriftDetector()
    >>> detector.name, detector.alarms_total, detector.open_windows
    ('drift', 0, 0)
    """

    name = "drift"

    def __init__(
        self,
        rating_delta: float = 0.5,
        rating_threshold: float = 12.0,
        label_delta: float = 0.5,
        label_threshold: float = 12.0,
        alpha: float = 0.9999,
        min_instances: int = 30,
        center_events: int = 100,
        recent_events: int = 30,
        baseline_events: int = 500,
        min_weight: float = 0.55,
        side_margin: float = 0.0,
        min_excess: float = 0.75,
        label_min_excess: float = 0.6,
        close_excess: float = 0.2,
        quiet_hours: float = 6.0,
        max_window_hours: float = 72.0,
        onset_hours: float = 48.0,
        min_drivers: int = 5,
        prime_events: int = 200,
        follow_hours: float = 3.0,
        follow_min_share: float = 0.4,
        follow_min_score: float = 0.7,
        buffer_size: int = 64,
        global_delta: float = 0.002,
        global_block: int = 50,
        global_max_score: float = 0.45,
        positive_labels: Sequence[str] = DEFAULT_POSITIVE_LABELS,
        max_keys: int = 200_000,
        max_accounts: int = 100_000,
        ttl_days: float = 365.0,
        rating_low: float = 1.0,
        rating_high: float = 5.0,
    ) -> None:
        self.rating_delta = rating_delta
        self.rating_threshold = rating_threshold
        self.label_delta = label_delta
        self.label_threshold = label_threshold
        self.alpha = alpha
        self.min_instances = min_instances
        self.center_events = center_events
        self.recent_events = recent_events
        self.baseline_events = baseline_events
        self.min_weight = min_weight
        self.side_margin = side_margin
        self.min_excess = min_excess
        self.label_min_excess = label_min_excess
        self.close_excess = close_excess
        self.quiet_hours = quiet_hours
        self.max_window_hours = max_window_hours
        self.onset_hours = onset_hours
        self.min_drivers = min_drivers
        self.prime_events = prime_events
        self.follow_hours = follow_hours
        self.follow_min_share = follow_min_share
        self.follow_min_score = follow_min_score
        self.buffer_size = buffer_size
        self.global_delta = global_delta
        self.global_block = global_block
        self.global_max_score = global_max_score
        self.positive_labels = tuple(positive_labels)
        self.max_keys = max_keys
        self.max_accounts = max_accounts
        self.ttl_days = ttl_days
        self.rating_low = rating_low
        self.rating_high = rating_high
        self._check()
        self._positive = positive_set(self.positive_labels)
        self._centers = np.linspace(rating_low, rating_high, 5)
        common: dict[str, Any] = dict(
            alpha=alpha,
            min_instances=min_instances,
            center_events=center_events,
            recent_events=recent_events,
            baseline_events=baseline_events,
            close_excess=close_excess,
            quiet_seconds=quiet_hours * HOUR,
            max_window_seconds=max_window_hours * HOUR,
            onset_seconds=onset_hours * HOUR,
            min_drivers=min_drivers,
            follow_min_share=follow_min_share,
            prime_events=prime_events,
            buffer_size=buffer_size,
            max_keys=max_keys,
        )
        step = (rating_high - rating_low) / 4
        self.ratings = KeyedDrift(
            "rating", self._centers.tolist(), rating_delta, rating_threshold,
            scale_floor=0.5 * step, side_margin=self.side_margin * step,
            min_excess=min_excess, **common,
        )  # fmt: skip
        self.labels = KeyedDrift(
            "label", [0.0, 1.0], label_delta, label_threshold,
            scale_floor=0.25, side_margin=0.0, min_excess=label_min_excess, **common,
        )  # fmt: skip
        self.mix = GlobalMix(global_delta, global_block)
        self.followed: dict[str, Follow] = {}
        self.watermark = -math.inf
        self._next_expiry = -math.inf
        self._pending: tuple[Batch, _TickPlan] | None = None

    def _check(self) -> None:
        positive = {
            "rating_threshold": self.rating_threshold,
            "label_threshold": self.label_threshold,
            "alpha": self.alpha,
            "quiet_hours": self.quiet_hours,
            "max_window_hours": self.max_window_hours,
            "onset_hours": self.onset_hours,
            "ttl_days": self.ttl_days,
            "global_delta": self.global_delta,
        }
        for field, value in positive.items():
            if not value > 0:
                raise ValueError(f"{field} must be > 0, got {value}")
        if self.alpha > 1 or self.global_delta >= 1:
            raise ValueError("alpha must be in (0, 1] and global_delta in (0, 1)")
        for field, value in {"rating_delta": self.rating_delta, "label_delta": self.label_delta,
                             "follow_hours": self.follow_hours}.items():  # fmt: skip
            if value < 0:
                raise ValueError(f"{field} must be >= 0, got {value}")
        for field, low, value in (
            ("min_instances", 1, self.min_instances),
            ("center_events", 2, self.center_events),
            ("recent_events", 2, self.recent_events),
            ("baseline_events", 2, self.baseline_events),
            ("buffer_size", 1, self.buffer_size),
            ("min_drivers", 1, self.min_drivers),
            ("prime_events", 0, self.prime_events),
            ("global_block", 10, self.global_block),
            ("max_keys", 1, self.max_keys),
            ("max_accounts", 1, self.max_accounts),
        ):
            if value < low:
                raise ValueError(f"{field} must be >= {low}, got {value}")
        for field, value in (
            ("min_weight", self.min_weight),
            ("follow_min_share", self.follow_min_share),
            ("follow_min_score", self.follow_min_score),
            ("min_excess", self.min_excess),
            ("label_min_excess", self.label_min_excess),
            ("global_max_score", self.global_max_score),
        ):
            if not 0 <= value <= 1:
                raise ValueError(f"{field} must be in [0, 1], got {value}")
        if not 0 <= self.close_excess < 1:
            raise ValueError(f"close_excess must be in [0, 1), got {self.close_excess}")
        if self.rating_low >= self.rating_high:
            raise ValueError("rating_low must be below rating_high")

    def __getstate__(self) -> dict[str, Any]:
        """Checkpoint state: everything but the plan cached between score and learn."""
        state = self.__dict__.copy()
        state["_pending"] = None
        return state

    # --- metrics --------------------------------------------------------------------------
    @property
    def alarms_total(self) -> int:
        """Change-detector alarms so far, all signals (a counter for metrics)."""
        return self.ratings.alarms_total + self.labels.alarms_total + self.mix.alarms_total

    @property
    def alarms_by_signal(self) -> dict[str, int]:
        return {
            "item_rating": self.ratings.alarms_total,
            "item_label": self.labels.alarms_total,
            "global_mix": self.mix.alarms_total,
        }

    @property
    def open_windows(self) -> int:
        """Drift windows open now, all signals (a gauge for metrics)."""
        return len(self.ratings.windows) + len(self.labels.windows) + len(self.mix.windows)

    def stats(self) -> dict[str, float]:
        """Numbers for Prometheus (see streamguard.metrics): alarms and open windows."""
        return {
            "drift_alarms_total": float(self.alarms_total),
            "open_windows": float(self.open_windows),
        }

    def open_window_list(self) -> list[dict[str, Any]]:
        """The open windows, for a status page: key, direction, levels, onset."""
        out: list[dict[str, Any]] = []
        for signal in (self.ratings, self.labels):
            for key, w in signal.windows.items():
                out.append(
                    {"signal": signal.name, "key": key, "campaign_id": w.campaign_id,
                     "direction": w.direction, "before": w.before, "after": w.after,
                     "onset_ts": w.onset_ts, "drivers": w.drivers}
                )  # fmt: skip
        for g in self.mix.windows.values():
            out.append(
                {"signal": "global", "key": g.signal, "campaign_id": None,
                 "direction": g.direction, "before": g.before, "after": g.after,
                 "onset_ts": g.onset_ts, "drivers": 0}
            )  # fmt: skip
        return out

    # --- the detector protocol ------------------------------------------------------------
    def score_batch(self, batch: Batch) -> Scores:
        plan = self._plan(batch)
        self._pending = (batch, plan)
        return plan.scores

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        if self._pending is not None and self._pending[0] is batch:
            plan = self._pending[1]
        else:
            plan = self._plan(batch)
        self._pending = None
        keep = np.asarray(keep, dtype=bool)
        self.ratings.commit(plan.rating, plan.rating_bins, keep[plan.rating_idx].tolist())
        self.labels.commit(plan.label, plan.label_bins, keep[plan.label_idx].tolist())
        for account, follow in plan.follows.items():
            self.followed.pop(account, None)
            self.followed[account] = follow
        while len(self.followed) > self.max_accounts:
            del self.followed[next(iter(self.followed))]
        self.mix.learn(plan.mix_num, plan.mix_den, batch.ts)
        if len(batch):
            self._expire(float(batch.ts.max()))

    def _expire(self, now: float) -> None:
        self.watermark = max(self.watermark, now)
        if self.watermark < self._next_expiry:
            return
        self._next_expiry = self.watermark + min(DAY, self.ttl_days * DAY / 10)
        ttl = self.ttl_days * DAY
        self.ratings.expire(self.watermark, ttl)
        self.labels.expire(self.watermark, ttl)
        horizon = self.watermark - self.follow_hours * HOUR
        for account in [a for a, f in self.followed.items() if f.ts < horizon]:
            del self.followed[account]

    # --- one tick -------------------------------------------------------------------------
    def _plan(self, batch: Batch) -> _TickPlan:
        n = len(batch)
        events = batch.events
        weights = account_weight(batch, self.min_weight)
        kind = batch.kind
        rating = batch.rating
        rated = np.flatnonzero(_IS_RATING_KIND[kind] & ~np.isnan(rating))
        r_bins = self._rating_bins(rating[rated])
        r_keys = [events[i].item_id for i in rated.tolist()]
        r_plan = self.ratings.plan(
            r_keys, rating[rated].tolist(), r_bins, batch.ts[rated].tolist(),
            weights[rated].tolist(), [events[i].account_id for i in rated.tolist()],
        )  # fmt: skip
        labelled = [i for i in np.flatnonzero(_IS_LABEL_KIND[kind]).tolist()
                    if events[i].label is not None]  # fmt: skip
        l_idx = np.asarray(labelled, dtype=np.int64)
        l_bins = [polarity(events[i].label or "", self._positive) for i in labelled]
        l_keys = [label_key(KIND_NAMES[kind[i]], events[i].item_id) for i in labelled]
        l_plan = self.labels.plan(
            l_keys, [float(b) for b in l_bins], l_bins, batch.ts[l_idx].tolist(),
            weights[l_idx].tolist(), [events[i].account_id for i in labelled],
        )  # fmt: skip

        scores = np.zeros(n)
        details: list[str | None] = [None] * n
        campaigns: list[str | None] = [None] * n
        self._window_scores(
            batch, r_plan, rated, r_keys, "rating", weights, scores, details, campaigns
        )
        self._window_scores(
            batch, l_plan, l_idx, l_keys, "label", weights, scores, details, campaigns
        )
        low = np.zeros(n, dtype=bool)
        high = np.zeros(n, dtype=bool)
        if len(rated):
            low[rated] = np.asarray(r_bins) == 0
            high[rated] = np.asarray(r_bins) == 4
        pos = np.zeros(n, dtype=bool)
        if labelled:
            pos[l_idx] = np.asarray(l_bins) == 1
        mix_num, mix_den = GlobalMix.indicators(kind, low, high, pos)
        self._global_scores(mix_num, weights, scores, details)
        drivers = [(d, rated) for d in r_plan.drivers] + [(d, l_idx) for d in l_plan.drivers]
        flags, follows = self._follow(batch, drivers, scores, details, campaigns, weights)
        return _TickPlan(
            Scores(scores, details, campaigns, flags),
            r_plan, r_bins, r_keys, rated,
            l_plan, l_bins, l_keys, l_idx,
            follows, mix_num, mix_den,
        )  # fmt: skip

    def _rating_bins(self, ratings: np.ndarray) -> list[int]:
        pos = (ratings - self.rating_low) / (self.rating_high - self.rating_low) * 4 + 0.5
        return np.clip(np.floor(pos), 0, 4).astype(np.int64).tolist()

    def _window_scores(
        self,
        batch: Batch,
        plan: SignalPlan,
        index: np.ndarray,
        keys: list[str],
        signal: str,
        weights: np.ndarray,
        scores: np.ndarray,
        details: list[str | None],
        campaigns: list[str | None],
    ) -> None:
        if not len(index):
            return
        idx = index.tolist()
        for j in np.flatnonzero(plan.scores > 0).tolist():
            i = idx[j]
            if plan.scores[j] <= scores[i]:
                continue
            scores[i] = plan.scores[j]
            window = plan.window_of[j]
            if window is None or plan.scores[j] < 0.25:
                continue
            details[i] = self._describe(batch, i, keys[j], signal, window, plan, j)
            if plan.scores[j] >= 0.5:
                campaigns[i] = window.campaign_id

    def _describe(
        self, batch: Batch, i: int, key: str, signal: str, w: DriftWindow, plan: SignalPlan, j: int
    ) -> str:
        event = batch.events[i]
        who = describe_account(batch, i)
        since = _clock(w.onset_ts)
        moved = "rose" if w.direction > 0 else "fell"
        if signal == "rating":
            b = self._rating_bins(np.array([event.rating or 0.0]))[0]
            before = w.baseline[b]
            return (
                f"item {key} mean rating {moved} {w.before:.1f} -> {w.after:.1f} since {since} "
                f"(Page-Hinkley alarm); this {event.rating:g}-star {event.kind} from {who} "
                f"drives it ({plan.excess[j]:.0%} of such ratings now are in excess of the "
                f"{before:.0%} usual share)"
            )
        kind, item = split_key(key)
        return (
            f"item {item} share of positive {kind}s {moved} {w.before:.0%} -> {w.after:.0%} "
            f"since {since} (Page-Hinkley alarm); this '{event.label}' {kind} from {who} "
            f"drives it ({plan.excess[j]:.0%} of such {kind}s now are in excess)"
        )

    def _global_scores(
        self, num: np.ndarray, weights: np.ndarray, scores: np.ndarray, details: list[str | None]
    ) -> None:
        if not self.mix.windows:
            return
        g, which = self.mix.score(num, weights, self.global_max_score)
        for i in np.flatnonzero(g > scores).tolist():
            scores[i] = g[i]
            w = self.mix.windows[int(which[i])]
            details[i] = (
                f"global {w.signal} rose {w.before:.1%} -> {w.after:.1%} since "
                f"{_clock(w.onset_ts)} (ADWIN alarm); this event is of the rising kind"
            )

    def _follow(
        self,
        batch: Batch,
        drivers: list[tuple[Driver, np.ndarray]],
        scores: np.ndarray,
        details: list[str | None],
        campaigns: list[str | None],
        weights: np.ndarray,
    ) -> tuple[list[Flag], dict[str, Follow]]:
        """Hold drivers' other events near their driving one; flag them for revocation."""
        span = self.follow_hours * HOUR
        follows: dict[str, Follow] = {}
        flags: dict[str, Flag] = {}
        for d, index in drivers:
            ts = d.ts
            detail = (
                f"account {d.account} drove the drift on {d.key} at {_clock(ts)} "
                f"({d.campaign_id}); its events within {self.follow_hours:g} h of that are held"
            )
            if d.score >= self.follow_min_score:
                old = follows.get(d.account)
                if old is None or d.score > old.score:
                    follows[d.account] = Follow(d.campaign_id, ts, d.score, detail)
                flag = flags.get(d.account)
                if flag is None or d.score > flag.score:
                    flags[d.account] = Flag(d.account, d.campaign_id, detail, d.score, ts - span)
            if d.index >= 0:
                i = int(index[d.index])
                if d.score > scores[i]:
                    scores[i] = d.score
                    details[i] = detail
                campaigns[i] = d.campaign_id
        events = batch.events
        if not (self.followed or follows):
            return list(flags.values()), follows
        for i, event in enumerate(events):
            f = follows.get(event.account_id) or self.followed.get(event.account_id)
            if f is None or abs(float(batch.ts[i]) - f.ts) > span or scores[i] >= f.score:
                continue
            scores[i] = f.score
            details[i] = f.detail
            campaigns[i] = f.campaign_id
        return list(flags.values()), follows


@dataclass(slots=True)
class _TickPlan:
    scores: Scores
    rating: SignalPlan
    rating_bins: list[int]
    rating_keys: list[str]
    rating_idx: np.ndarray
    label: SignalPlan
    label_bins: list[int]
    label_keys: list[str]
    label_idx: np.ndarray
    follows: dict[str, Follow]
    mix_num: np.ndarray
    mix_den: np.ndarray


def account_weight(batch: Batch, min_weight: float) -> np.ndarray:
    """How much each event's account looks like a shift's driver, in [min_weight, 1].

    Newness where the account's age is known (3 days old: 1, two months: 0), otherwise
    how little the stream has seen of it (3 events: 1, 50 events: 0); an old account new
    to the stream counts for part of the latter. Established accounts keep ``min_weight``,
    so only an overwhelming excess blames them.
    """
    n = len(batch)
    f = batch.features
    age = f.get("account_age_days", np.full(n, np.nan))
    count_log = f.get("account_count_log", np.full(n, np.nan))
    count = np.where(np.isnan(count_log), 1.0, np.expm1(count_log))
    fresh = np.clip((math.log(50.0) - np.log(np.maximum(count, 1.0))) / math.log(50.0 / 3.0), 0, 1)
    young = np.clip((60.0 - age) / 57.0, 0.0, 1.0)
    e = np.where(np.isnan(age), fresh, np.maximum(young, 0.6 * fresh))
    return min_weight + (1.0 - min_weight) * e


def describe_account(batch: Batch, i: int) -> str:
    f = batch.features
    age = f.get("account_age_days")
    if age is not None and not math.isnan(age[i]):
        days = float(age[i])
        if days < 2:
            return f"a {days * 24:.0f}-hour-old account"
        if days < 365:
            return f"a {days:.0f}-day-old account"
        return f"a {days / 365:.1f}-year-old account"
    count_log = f.get("account_count_log")
    if count_log is not None and not math.isnan(count_log[i]):
        return f"an account with {round(math.expm1(count_log[i]))} events so far"
    return "an account"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
