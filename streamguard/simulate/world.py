"""The simulated world: accounts, items, the time span, and events held as columns.

Events are built as numpy columns (a :class:`Frame`) and only turned into contract dicts
once, at the end, so that a million events stay cheap. Benign traffic and every attack
write into the same account and item tables, which is what keeps attacker accounts from
differing from real ones by anything but their behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamguard.simulate.text import TextBank

KINDS = ("rating", "review", "label", "vote")
RATING, REVIEW, LABEL, VOTE = range(4)
DAY = 86_400.0
HOUR = 3_600.0


@dataclass
class Frame:
    """A batch of events as columns. ``campaign`` is -1 for benign events."""

    ts: np.ndarray
    kind: np.ndarray
    account: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    text: np.ndarray
    label: np.ndarray
    campaign: np.ndarray

    @classmethod
    def build(
        cls,
        ts: Any,
        kind: Any,
        account: Any,
        item: Any,
        rating: Any = None,
        text: Any = None,
        label: Any = None,
        campaign: int = -1,
    ) -> Frame:
        ts = np.asarray(ts, dtype=np.float64)
        n = len(ts)
        return cls(
            ts=ts,
            kind=np.broadcast_to(np.asarray(kind, dtype=np.int8), (n,)).copy(),
            account=np.asarray(account, dtype=np.int64),
            item=np.asarray(item, dtype=np.int64),
            rating=np.full(n, np.nan) if rating is None else np.asarray(rating, dtype=np.float64),
            text=_objects(text, n),
            label=_objects(label, n),
            campaign=np.full(n, campaign, dtype=np.int32),
        )

    @classmethod
    def empty(cls) -> Frame:
        return cls.build([], RATING, [], [])

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def concat(cls, frames: list[Frame]) -> Frame:
        frames = [f for f in frames if len(f)] or [cls.empty()]
        return cls(
            *(
                np.concatenate([getattr(f, name) for f in frames])
                for name in ("ts", "kind", "account", "item", "rating", "text", "label", "campaign")
            )
        )

    def take(self, order: np.ndarray) -> Frame:
        return Frame(
            self.ts[order],
            self.kind[order],
            self.account[order],
            self.item[order],
            self.rating[order],
            self.text[order],
            self.label[order],
            self.campaign[order],
        )


def _objects(values: Any, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    if values is not None:
        out[:] = list(values) if not isinstance(values, str) else [values] * n
    return out


@dataclass
class Accounts:
    """Every account of the run, benign or attacker, in one table.

    ``name`` is filled for real accounts (MovieLens); the others get random ids from one
    shared id space at the end, so an id never tells which side an account is on.
    ``created_at`` is NaN where the account's age is unknown; ``ip``/``device`` None where
    the account sends none.
    """

    name: list[str | None] = field(default_factory=list)
    created_at: list[float] = field(default_factory=list)
    ip: list[str | None] = field(default_factory=list)
    device: list[str | None] = field(default_factory=list)

    def add(
        self,
        n: int,
        created_at: Any = None,
        ip: Any = None,
        device: Any = None,
        name: Any = None,
    ) -> np.ndarray:
        start = len(self.name)
        self.name.extend(list(name) if name is not None else [None] * n)
        self.created_at.extend(
            np.asarray(created_at, dtype=float).tolist() if created_at is not None else [np.nan] * n
        )
        self.ip.extend(list(ip) if ip is not None else [None] * n)
        self.device.extend(list(device) if device is not None else [None] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.name)


@dataclass
class Items:
    """The catalogue: ids, popularity weights, latent quality, category and launch time."""

    ids: np.ndarray
    popularity: np.ndarray
    quality: np.ndarray
    spread: np.ndarray
    category: np.ndarray
    launch: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ItemStats:
    """What an attacker can observe about items: counts, means and spreads of ratings."""

    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    global_mean: float
    global_std: float

    @classmethod
    def observe(cls, frame: Frame, n_items: int) -> ItemStats:
        has = ~np.isnan(frame.rating)
        items = frame.item[has]
        ratings = frame.rating[has]
        count = np.bincount(items, minlength=n_items).astype(float)
        total = np.bincount(items, weights=ratings, minlength=n_items)
        squares = np.bincount(items, weights=ratings**2, minlength=n_items)
        g_mean = float(ratings.mean()) if len(ratings) else 3.5
        g_std = float(ratings.std()) if len(ratings) > 1 else 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / count, g_mean)
            var = np.where(count > 1, squares / count - mean**2, g_std**2)
        # Items with few ratings: shrink toward the global view, as a careful attacker would.
        weight = count / (count + 3.0)
        mean = weight * mean + (1 - weight) * g_mean
        std = np.sqrt(np.clip(weight * var + (1 - weight) * g_std**2, 0.05, None))
        return cls(count, mean, std, g_mean, g_std)


@dataclass
class World:
    """Everything generators share: the span, the tables, the text bank, the base's habits.

    ``integer_ts`` and ``half_stars`` copy the base data's habits (MovieLens has whole
    seconds and half stars) so injected events do not stand out by their formatting.
    """

    base: str
    t0: float
    t1: float
    n_events: int
    accounts: Accounts
    items: Items
    bank: TextBank
    integer_ts: bool = False
    half_stars: bool = False
    has_text: bool = True
    has_metadata: bool = True
    stats: ItemStats | None = None
    benign: Frame | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def item_stats(self) -> ItemStats:
        """The attacker's view of items; set once benign traffic exists."""
        if self.stats is None:
            raise RuntimeError("item statistics are read before benign traffic exists")
        return self.stats

    @property
    def span(self) -> float:
        return self.t1 - self.t0

    def stars(self, values: np.ndarray) -> np.ndarray:
        """Round raw scores onto the base's rating grid (1..5 whole or half stars)."""
        step = 0.5 if self.half_stars else 1.0
        return np.clip(np.round(np.asarray(values, dtype=float) / step) * step, 1.0, 5.0)
