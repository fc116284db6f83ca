"""Synthetic benign traffic that looks like a real product's feedback stream.

Why each ingredient is here: detectors must not learn that "heavy user", "new account",
"many ratings in one sitting" or "shared IP" mean attack, because real traffic has all of
them. So accounts have heavy-tailed activity and ages from days to years (some sign up
during the stream), a few share a household or NAT address, users rate in sessions of
one to dozens of items, and activity follows the day and the week. Items have skewed
popularity, their own latent quality and spread, a category, and some launch mid-stream.
"""

from __future__ import annotations

import numpy as np

from streamguard.simulate import clock
from streamguard.simulate.text import TextBank, review_texts, snippets
from streamguard.simulate.world import (
    DAY,
    HOUR,
    LABEL,
    RATING,
    REVIEW,
    VOTE,
    Accounts,
    Frame,
    Items,
    World,
)

START = 1_704_067_200.0  # 2024-01-01T00:00:00Z; fixed so runs are reproducible
EVENTS_PER_DAY = 5_000
CATEGORIES = (
    "books",
    "electronics",
    "home",
    "toys",
    "beauty",
    "sports",
    "grocery",
    "garden",
    "music",
    "movies",
    "games",
    "fashion",
    "health",
    "auto",
    "office",
    "pets",
)
KIND_SHARES = {RATING: 0.74, REVIEW: 0.12, LABEL: 0.09, VOTE: 0.05}
LABEL_NOISE = 0.03  # honest users mislabel a few texts; label-flip detection must cope
HELPFUL_SHARE = 0.72

# Share of accounts that send each piece of metadata. Attackers with metadata get the
# same shares, so the presence of a field is never itself a tell.
P_KNOWN_AGE = 0.92
P_IP = 0.78
P_DEVICE = 0.70


def synthetic_world(n_events: int, rng: np.random.Generator, bank: TextBank) -> World:
    """Accounts, items and span sized for ``n_events`` (about 5,000 events a day)."""
    days = max(1.0, n_events / EVENTS_PER_DAY)
    t0, t1 = START, START + days * DAY
    items = _items(rng, int(np.clip(n_events // 40, 40, 50_000)), t0, t1)
    accounts = Accounts()
    n_acc = max(40, n_events // 12)
    activity = np.exp(rng.normal(0.0, 1.4, n_acc))
    # 90 % existed before the stream (ages lognormal around a year), 10 % sign up during it.
    established = rng.random(n_acc) < 0.9
    age_days = np.clip(np.exp(rng.normal(np.log(400.0), 1.0, n_acc)), 2.0, 4_500.0)
    signup = rng.uniform(t0, t0 + 0.8 * (t1 - t0), n_acc)
    created = np.where(established, t0 - age_days * DAY, signup)
    created = np.round(created)
    shown = np.where(rng.random(n_acc) < P_KNOWN_AGE, created, np.nan)
    ips = household_ips(rng, n_acc)
    devices = household_devices(rng, n_acc)
    idx = accounts.add(n_acc, shown, ips, devices)
    world = World("synthetic", t0, t1, n_events, accounts, items, bank)
    world.extra.update(
        benign_accounts=idx,
        activity=activity,
        true_created=created,
        bias=rng.normal(0.0, 0.45, n_acc),
    )
    return world


def _items(rng: np.random.Generator, n: int, t0: float, t1: float) -> Items:
    ranks = rng.permutation(n)
    popularity = 1.0 / (ranks + 8.0) ** 1.05
    quality = np.clip(rng.normal(3.75, 0.55, n), 1.6, 4.8)
    spread = rng.uniform(0.6, 1.15, n)
    shares = rng.dirichlet(np.full(len(CATEGORIES), 1.5))
    category = rng.choice(len(CATEGORIES), n, p=shares)
    launches = rng.random(n) < 0.12
    launch = np.where(launches, rng.uniform(t0, t1 - HOUR, n), -np.inf)
    ids = np.array([f"p{k:07d}" for k in unique_ints(rng, n, 1_000_000, 9_999_999)], dtype=object)
    return Items(ids, popularity, quality, spread, category, launch)


def unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> list[int]:
    """``n`` distinct random integers in [low, high), in random order."""
    if n > (high - low) // 2:
        raise ValueError("id space too small")
    values = rng.integers(low, high, n)
    while True:
        _, first = np.unique(values, return_index=True)
        if len(first) == n:
            return values.tolist()
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        values[dup] = rng.integers(low, high, int(dup.sum()))


def random_ips(rng: np.random.Generator, n: int) -> list[str]:
    """Public-looking IPv4 addresses."""
    first = rng.choice(np.r_[11:127, 128:169, 170:172, 173:192, 193:223], n)
    rest = rng.integers(0, 256, (n, 2))
    last = rng.integers(1, 255, n)
    return [
        f"{a}.{b}.{c}.{d}"
        for a, (b, c), d in zip(first.tolist(), rest.tolist(), last.tolist(), strict=True)
    ]


def random_devices(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{v:016x}" for v in rng.integers(0, 2**63, n).tolist()]


def household_ips(rng: np.random.Generator, n: int) -> list[str | None]:
    """Own IPs for most accounts; 7 % sit behind a shared NAT or household address."""
    own = random_ips(rng, n)
    pool = random_ips(rng, max(1, n // 60))
    shared = rng.random(n) < 0.07
    pick = rng.integers(0, len(pool), n)
    has = rng.random(n) < P_IP
    return [
        (pool[p] if s else o) if h else None
        for o, s, p, h in zip(own, shared.tolist(), pick.tolist(), has.tolist(), strict=True)
    ]


def household_devices(rng: np.random.Generator, n: int) -> list[str | None]:
    """Own devices for most accounts; 4 % share one (family tablet, shared laptop)."""
    own = random_devices(rng, n)
    pool = random_devices(rng, max(1, n // 80))
    shared = rng.random(n) < 0.04
    pick = rng.integers(0, len(pool), n)
    has = rng.random(n) < P_DEVICE
    return [
        (pool[p] if s else o) if h else None
        for o, s, p, h in zip(own, shared.tolist(), pick.tolist(), has.tolist(), strict=True)
    ]


def session_lengths(rng: np.random.Generator, n_events: int) -> np.ndarray:
    """Sitting sizes summing to ``n_events``: mostly one event, a tail of binges of dozens."""
    out: list[np.ndarray] = []
    total = 0
    while total < n_events:
        m = max(16, (n_events - total) // 2)
        k = np.where(
            rng.random(m) < 0.62, 1, 1 + np.floor(np.exp(rng.normal(0.9, 1.05, m))).astype(int)
        )
        k = np.minimum(k, 150)
        out.append(k)
        total += int(k.sum())
    lengths = np.concatenate(out)
    cut = int(np.searchsorted(np.cumsum(lengths), n_events))
    lengths = lengths[: cut + 1].copy()
    lengths[-1] -= int(lengths.sum()) - n_events
    return lengths[lengths > 0]


def benign_traffic(world: World, rng: np.random.Generator, n: int) -> Frame:
    """``n`` benign events over the world's span."""
    if n <= 0:
        return Frame.empty()
    accounts = world.extra["benign_accounts"]
    activity = world.extra["activity"]
    created = world.extra["true_created"]
    items = world.items
    lengths = session_lengths(rng, n)
    who = rng.choice(len(accounts), len(lengths), p=activity / activity.sum())
    starts = clock.diurnal(rng, len(lengths), world.t0, world.t1)
    # Accounts that sign up during the stream only act after signing up.
    early = starts < created[who] + 60.0
    starts[early] = rng.uniform(created[who][early] + 60.0, world.t1)
    ts = clock.session_times(rng, starts, lengths, world.t1)
    acct = np.repeat(who, lengths)
    ts = np.maximum(ts, created[acct] + 1.0)  # a sitting never predates its account

    kind = rng.choice(list(KIND_SHARES), n, p=list(KIND_SHARES.values())).astype(np.int8)
    item = pick_items(rng, items, ts, n)
    item = _dedupe(rng, items, ts, acct, item, kind)

    raw = (
        items.quality[item]
        + world.extra["bias"][acct]
        + items.spread[item] * rng.standard_normal(n)
    )
    # J-shaped tails: some people only ever give extremes.
    extreme = rng.random(n) < 0.06
    raw = np.where(extreme, np.where(raw >= 3.0, 5.0, 1.0), raw)
    stars = world.stars(raw)
    rating = np.where((kind == RATING) | (kind == REVIEW), stars, np.nan)

    text = np.empty(n, dtype=object)
    label = np.empty(n, dtype=object)
    rev = np.flatnonzero(kind == REVIEW)
    text[rev] = review_texts(world.bank, rng, stars[rev])
    lab = np.flatnonzero(kind == LABEL)
    positive = rng.random(len(lab)) < np.clip((items.quality[item[lab]] - 1.0) / 4.0, 0.1, 0.9)
    text[lab] = snippets(world.bank, rng, positive)
    said = positive ^ (rng.random(len(lab)) < LABEL_NOISE)
    label[lab] = np.where(said, "positive", "negative")
    vote = np.flatnonzero(kind == VOTE)
    label[vote] = np.where(rng.random(len(vote)) < HELPFUL_SHARE, "helpful", "unhelpful")
    return Frame.build(ts, kind, accounts[acct], item, rating, text, label)


def pick_items(rng: np.random.Generator, items: Items, ts: np.ndarray, n: int) -> np.ndarray:
    """Items by popularity, redrawn from the launch catalogue where not yet launched."""
    item = rng.choice(len(items), n, p=items.popularity / items.popularity.sum())
    catalogue = np.flatnonzero(items.launch <= ts.min()) if n else np.empty(0, np.int64)
    if len(catalogue) == 0:
        catalogue = np.array([int(np.argmin(items.launch))])
    p = items.popularity[catalogue] / items.popularity[catalogue].sum()
    for _ in range(3):
        late = np.flatnonzero(items.launch[item] > ts)
        if not len(late):
            break
        item[late] = rng.choice(len(items), len(late), p=items.popularity / items.popularity.sum())
    late = np.flatnonzero(items.launch[item] > ts)
    item[late] = catalogue[rng.choice(len(catalogue), len(late), p=p)]
    return item


def _dedupe(
    rng: np.random.Generator,
    items: Items,
    ts: np.ndarray,
    acct: np.ndarray,
    item: np.ndarray,
    kind: np.ndarray,
) -> np.ndarray:
    """One rating or review per (account, item), as products enforce; a few redraws."""
    rated = np.flatnonzero((kind == RATING) | (kind == REVIEW))
    for _ in range(4):
        key = acct[rated] * len(items) + item[rated]
        _, first = np.unique(key, return_index=True)
        dup = np.ones(len(rated), dtype=bool)
        dup[first] = False
        if not dup.any():
            break
        where = rated[dup]
        item[where] = pick_items(rng, items, ts[where], len(where))
    return item
