"""Per-account and per-item streaming state, and the features detectors read from it.

Two kinds of state, on purpose:

- *Observed* state (what an account did, how often an item is touched) counts every valid
  event, quarantined or not: an attacker's activity is exactly what it must describe.
- *Learned* baselines (an item's rating mean and spread) only learn from kept events, so
  poison cannot move the baseline it is measured against.

State is bounded: both tables are LRU maps with a size cap, and entries idle for longer
than ``ttl_seconds`` of event time are expired, so memory stays flat as accounts grow.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Generic, TypeVar

import numpy as np

from streamguard.detectors.base import Batch

FEATURE_NAMES = (
    "rating_dev",
    "item_count_log",
    "item_gap_log",
    "account_age_days",
    "account_count_log",
    "account_rate_1h",
    "account_extreme_share",
    "account_entropy",
    "text_len_log",
)
_HOUR = 3600.0
_MIN_ITEM_HISTORY = 5
# LRUTable compaction: only tables this large are worth copying (a smaller one wastes at
# most a few MB), and a copy costs at most this many keys per expiry.
_COMPACT_FROM_KEYS = 1 << 16
_COPY_KEYS_PER_EXPIRY = 4096


V = TypeVar("V")


class LRUTable(Generic[V]):
    """A dict with a size cap: touching moves a key to the back, the front is evicted.

    Every touch re-inserts its key, so CPython's dict keeps running out of entry slots
    and regrows to three times its live keys: a table of a million accounts would sit in
    a dict sized for four million. :meth:`expire` (once per tick) swaps such a dict for a
    compact copy, about half the size (issue 10's memory target).
    """

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._data: dict[str, V] = {}
        self._bytes = sys.getsizeof(self._data)  # the dict's size when last compacted
        self._expiries = 0  # calls of expire since the last copy

    def get(self, key: str) -> V | None:
        value = self._data.pop(key, None)
        if value is not None:
            self._data[key] = value
        return value

    def pop(self, key: str) -> V | None:
        return self._data.pop(key, None)

    def put(self, key: str, value: V) -> None:
        self._data.pop(key, None)
        self._data[key] = value
        if len(self._data) > self.max_size:
            del self._data[next(iter(self._data))]

    def put_all(self, entries: Iterable[tuple[str, V]]) -> None:
        """:meth:`put` for each entry in order, with the lookups hoisted out of the loop
        (a tick's commit puts thousands)."""
        data, max_size = self._data, self.max_size
        pop = data.pop
        for key, value in entries:
            pop(key, None)
            data[key] = value
            if len(data) > max_size:
                del data[next(iter(data))]

    def expire(self, is_stale: Callable[[V], bool]) -> int:
        """Drop entries from the front (least recently used) while ``is_stale(value)``."""
        dropped = 0
        while self._data:
            key = next(iter(self._data))
            if not is_stale(self._data[key]):
                break
            del self._data[key]
            dropped += 1
        self._compact()
        return dropped

    def _compact(self) -> None:
        """Copy the dict when it has grown since the last look: ``dict(d)`` sizes the copy
        for the live keys (in order), dropping the room churn made; keep the smaller.

        A copy can leave little room, and the dict regrows soon after: copies are spaced
        one per ``len / _COPY_KEYS_PER_EXPIRY`` expiries, so a tick never pays for more."""
        self._expiries += 1
        size = len(self._data)
        if size < _COMPACT_FROM_KEYS or self._expiries * _COPY_KEYS_PER_EXPIRY < size:
            return
        grown = sys.getsizeof(self._data)
        if grown <= self._bytes:
            return
        self._expiries = 0
        compact = dict(self._data)
        if sys.getsizeof(compact) < grown:
            self._data = compact
        self._bytes = sys.getsizeof(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def items(self) -> Iterator[tuple[str, V]]:
        return iter(self._data.items())


# The account's rating histogram over the scale, one slot per bin: a list of five ints
# costs some 60 bytes more per account.
_HISTOGRAM_BINS = ("n_lowest", "n_low", "n_middle", "n_high", "n_highest")
_histogram = attrgetter(*_HISTOGRAM_BINS)


class AccountState:
    __slots__ = ("count", "created", "last_ts", "rate", "n_rated", *_HISTOGRAM_BINS)

    def __init__(self, created: float | None, ts: float) -> None:
        self.count = 0
        self.created = created
        self.last_ts = ts
        self.rate = 0.0  # events in the last hour, exponentially decayed
        self.n_rated = 0
        self.n_lowest = self.n_low = self.n_middle = self.n_high = self.n_highest = 0


class ItemState:
    __slots__ = ("count", "last_ts", "n", "mean", "m2")

    def __init__(self, ts: float) -> None:
        self.count = 0
        self.last_ts = ts
        self.n = 0  # learned (kept) ratings
        self.mean = 0.0
        self.m2 = 0.0


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    rating_low: float = 1.0
    rating_high: float = 5.0
    max_accounts: int = 1_000_000
    max_items: int = 200_000
    ttl_seconds: float = 30 * 86400.0


class FeatureState:
    """Streaming state behind the shared feature columns of a :class:`Batch`."""

    def __init__(self, config: FeatureConfig = FeatureConfig()) -> None:
        self.config = config
        self.accounts: LRUTable[AccountState] = LRUTable(config.max_accounts)
        self.items: LRUTable[ItemState] = LRUTable(config.max_items)
        self.watermark = float("-inf")

    def extract(self, batch: Batch) -> None:
        """Fill ``batch.features`` and update the observed state, event by event.

        The loop is the hot path (a few microseconds an event): the tables' lookups and
        the feature columns are local names, the body is inlined, not a method call, and
        ``max`` of two floats is a conditional that returns what ``max`` returns, NaN
        included (the builtin costs some 70 ns more a call).
        """
        n = len(batch)
        cols = {name: np.full(n, np.nan) for name in FEATURE_NAMES}
        rating_dev, item_count_log, item_gap_log = (
            cols["rating_dev"], cols["item_count_log"], cols["item_gap_log"]
        )  # fmt: skip
        age_days, count_log, rate_1h = (
            cols["account_age_days"], cols["account_count_log"], cols["account_rate_1h"]
        )  # fmt: skip
        extreme_share, entropy, text_len_log = (
            cols["account_extreme_share"], cols["account_entropy"], cols["text_len_log"]
        )  # fmt: skip
        # LRUTable.get inlined (pop, then re-insert at the back); a new key goes through
        # put, which keeps the cap. The dicts stay the same objects until _expire.
        account_of, put_account = self.accounts._data, self.accounts.put
        item_of, put_item = self.items._data, self.items.put
        log, log1p, sqrt, exp = math.log, math.log1p, math.sqrt, math.exp
        bins = self._bins(batch.rating).tolist()
        for i, e in enumerate(batch.events):
            ts = e.ts
            account_id, item_id = e.account_id, e.item_id
            acc = account_of.pop(account_id, None)
            if acc is None:
                acc = AccountState(e.account_created_at, ts)
                put_account(account_id, acc)
            else:
                account_of[account_id] = acc
            item = item_of.pop(item_id, None)
            if item is None:
                item = ItemState(ts)
                put_item(item_id, item)
            else:
                item_of[item_id] = item
                gap = ts - item.last_ts
                item_gap_log[i] = log1p(0.0 if gap < 0.0 else gap)
            rating = e.rating
            if rating is not None and item.n >= _MIN_ITEM_HISTORY:
                std = sqrt(item.m2 / (item.n - 1))
                rating_dev[i] = (rating - item.mean) / (0.5 if std < 0.5 else std)
            item_count_log[i] = log1p(item.count)
            item.count += 1
            if ts > item.last_ts:
                item.last_ts = ts

            created = acc.created if acc.created is not None else e.account_created_at
            acc.created = created
            if created is not None:
                age = ts - created
                age_days[i] = (0.0 if age < 0.0 else age) / 86400.0
            dt = ts - acc.last_ts
            dt = 0.0 if dt < 0.0 else dt
            acc.rate = acc.rate * exp(-dt / _HOUR) + 1.0
            if ts > acc.last_ts:
                acc.last_ts = ts
            acc.count += 1
            if rating is not None:
                name = _HISTOGRAM_BINS[bins[i]]
                setattr(acc, name, getattr(acc, name) + 1)
                acc.n_rated += 1
            count_log[i] = log1p(acc.count)
            rate_1h[i] = acc.rate
            n_rated = acc.n_rated
            if n_rated:
                extreme_share[i] = (acc.n_lowest + acc.n_highest) / n_rated
                h = 0.0  # the histogram's entropy, inlined
                for c in _histogram(acc):
                    if c:
                        p = c / n_rated
                        h -= p * log(p)
                entropy[i] = h
            text = e.text
            if text:
                text_len_log[i] = log1p(len(text))
        batch.features.update(cols)
        self._expire(float(batch.ts.max()) if n else self.watermark)

    def _bins(self, ratings: np.ndarray) -> np.ndarray:
        """Each rating's histogram bin, in one numpy pass (NaN, no rating: 0, unused)."""
        low, high = self.config.rating_low, self.config.rating_high
        if high <= low:
            return np.zeros(len(ratings), dtype=np.int64)
        position = (ratings - low) / (high - low) * 5
        return np.clip(np.nan_to_num(position), 0, 4).astype(np.int64)

    def learn(self, batch: Batch, keep: np.ndarray) -> None:
        """Update the learned item baselines from kept rated events (Welford).

        Per event, so :meth:`LRUTable.get` is written out and ``keep`` read as a list."""
        item_of = self.items._data
        for event, kept in zip(batch.events, keep.tolist(), strict=True):
            rating = event.rating
            if not kept or rating is None:
                continue
            item_id = event.item_id
            item = item_of.pop(item_id, None)
            if item is None:
                continue
            item_of[item_id] = item
            item.n += 1
            delta = rating - item.mean
            item.mean += delta / item.n
            item.m2 += delta * (rating - item.mean)

    def _expire(self, now: float) -> None:
        self.watermark = max(self.watermark, now)
        horizon = self.watermark - self.config.ttl_seconds
        self.accounts.expire(lambda a: a.last_ts < horizon)
        self.items.expire(lambda it: it.last_ts < horizon)
