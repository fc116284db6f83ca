"""Natural bursts: a launch or a viral item draws a surge of honest ratings within hours.

These are the false alarms waiting to happen. They differ from a campaign in who takes
part (established accounts of all ages, their own IPs and devices, their usual activity
level), in what they give (a natural spread of ratings around the item's quality, some
reviews) and in shape (a fast rise, then a tail over days).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamguard.simulate import clock
from streamguard.simulate.text import review_texts
from streamguard.simulate.world import DAY, HOUR, RATING, REVIEW, Frame, Items, World


@dataclass(frozen=True)
class Burst:
    """Knobs of one natural burst.

    accounts: how many users join (None: enough for ``share`` of the run's events).
    hours: length of the surge; ``tail_days``/``tail_share``: the slower tail after it.
    extra_p: chance a participant also rates 1-3 other popular items in the same sitting.
    launch: a brand-new item (synthetic base) rather than an existing popular one.
    start: where in the span the surge begins, as a fraction (None: random in 0.25-0.7).
    """

    accounts: int | None = None
    share: float = 0.015
    hours: float = 4.0
    tail_days: float = 3.0
    tail_share: float = 0.25
    extra_p: float = 0.3
    review_share: float = 0.1
    launch: bool = True
    quality: tuple[float, float] = (3.9, 4.6)
    start: float | None = None


@dataclass
class BurstPlan:
    knobs: Burst
    extras: np.ndarray  # extra ratings per participant
    start_frac: float
    item: int = -1

    @property
    def events(self) -> int:
        return int(len(self.extras) + self.extras.sum())


@dataclass(frozen=True)
class BurstInfo:
    """What a natural burst did, for reports (its events are benign in the truth file)."""

    item_id: str
    start_ts: float
    end_ts: float
    events: int
    accounts: int


def plan(knobs: Burst, world: World, rng: np.random.Generator, budget: int) -> BurstPlan:
    mean_events = 1 + knobs.extra_p * 2
    n = knobs.accounts
    if n is None:
        n = int(round(knobs.share * world.n_events / mean_events))
    if world.base == "synthetic":
        n = min(n, len(world.extra["benign_accounts"]) // 3)
    extras = np.where(rng.random(n) < knobs.extra_p, rng.integers(1, 4, n), 0)
    keep = int(np.searchsorted(np.cumsum(extras + 1), budget, side="right"))
    start = knobs.start if knobs.start is not None else float(rng.uniform(0.25, 0.7))
    return BurstPlan(knobs, extras[:keep], start)


def prepare(p: BurstPlan, world: World, rng: np.random.Generator) -> None:
    """Before benign traffic: add the launch item, so honest traffic continues after it."""
    if not (p.knobs.launch and world.base == "synthetic"):
        return
    items = world.items
    start = world.t0 + p.start_frac * world.span
    quality = rng.uniform(*p.knobs.quality)
    top = float(np.quantile(items.popularity, 0.98))
    category = int(rng.integers(0, int(items.category.max()) + 1))
    used = set(items.ids.tolist())
    while True:
        new_id = f"p{int(rng.integers(1_000_000, 9_999_999)):07d}"
        if new_id not in used:
            break
    world.items = Items(
        np.append(items.ids, np.array([new_id], dtype=object)),
        np.append(items.popularity, top),
        np.append(items.quality, quality),
        np.append(items.spread, rng.uniform(0.7, 1.0)),
        np.append(items.category, category),
        np.append(items.launch, start),
    )
    p.item = len(world.items) - 1


def generate(p: BurstPlan, world: World, rng: np.random.Generator) -> tuple[Frame, BurstInfo]:
    """The burst's events; on MovieLens it may be smaller than planned (few real users)."""
    knobs = p.knobs
    start = world.t0 + p.start_frac * world.span
    if not len(p.extras):
        return Frame.empty(), BurstInfo("", start, start, 0, 0)
    item = p.item if p.item >= 0 else _popular_item(world, rng, start)
    pool, weight = _participants(world, start, item)
    n = min(len(p.extras), len(pool))
    if n == 0:
        return Frame.empty(), BurstInfo(str(world.items.ids[item]), start, start, 0, 0)
    who = pool[rng.choice(len(pool), n, replace=False, p=weight / weight.sum())]
    extras = p.extras[:n]
    # Fast rise and decay inside the surge, then a thinner tail over the next days.
    in_tail = rng.random(n) < knobs.tail_share
    offset = np.where(
        in_tail,
        knobs.hours * HOUR + rng.exponential(knobs.tail_days * DAY / 3, n),
        knobs.hours * HOUR * rng.beta(1.3, 2.6, n),
    )
    # Near the end of the span, fold what would fall after it back inside (no pile-up).
    room = max(1.0, world.t1 - 60.0 - start)
    offset = np.where(offset > room, rng.uniform(0.0, room, n), offset)
    starts = start + offset
    lengths = extras + 1
    ts = clock.session_times(rng, starts, lengths, world.t1)
    acct = np.repeat(who, lengths)
    first = np.cumsum(lengths) - lengths
    items = np.empty(int(lengths.sum()), dtype=np.int64)
    items[first] = item
    rest = np.ones(len(items), dtype=bool)
    rest[first] = False
    items[rest] = _others(world, rng, int(rest.sum()), item)
    quality = world.items.quality[item]
    spread = world.items.spread[item]
    raw = np.where(
        rest,
        world.items.quality[items] + world.items.spread[items] * rng.standard_normal(len(items)),
        quality + spread * rng.standard_normal(len(items)),
    )
    stars = world.stars(raw)
    kind = np.full(len(items), RATING, dtype=np.int8)
    if world.has_text:
        kind[first[rng.random(n) < knobs.review_share]] = REVIEW
    text = np.empty(len(items), dtype=object)
    rev = np.flatnonzero(kind == REVIEW)
    text[rev] = review_texts(world.bank, rng, stars[rev])
    if world.integer_ts:
        ts = np.round(ts)
    frame = Frame.build(ts, kind, acct, items, stars, text)
    info = BurstInfo(
        str(world.items.ids[item]), float(ts.min()), float(ts.max()), len(frame), int(n)
    )
    return frame, info


def _popular_item(world: World, rng: np.random.Generator, start: float) -> int:
    count = world.stats.count if world.stats is not None else world.items.popularity
    ok = np.flatnonzero((world.items.launch < start) & (count > 0))
    if not len(ok):
        ok = np.flatnonzero(count == count.max())
    top = ok[np.argsort(-count[ok], kind="stable")[: max(1, len(ok) // 50)]]
    return int(top[rng.integers(0, len(top))])


def _participants(world: World, start: float, item: int) -> tuple[np.ndarray, np.ndarray]:
    """Established accounts: older than a month (synthetic) or already active (MovieLens)."""
    benign = world.benign
    assert benign is not None
    rated = np.unique(benign.account[benign.item == item])
    if world.base == "synthetic":
        idx = world.extra["benign_accounts"]
        ok = (world.extra["true_created"] < start - 30 * DAY) & ~np.isin(idx, rated)
        return idx[ok], world.extra["activity"][ok]
    before = benign.ts < start
    counts = np.bincount(benign.account[before], minlength=len(world.accounts))
    counts[rated] = 0
    pool = np.flatnonzero(counts > 0)
    return pool, np.sqrt(counts[pool].astype(float))


def _others(world: World, rng: np.random.Generator, n: int, avoid: int) -> np.ndarray:
    count = world.stats.count.copy() if world.stats is not None else world.items.popularity.copy()
    count[avoid] = 0
    return rng.choice(len(count), n, p=count / count.sum())
