"""The MovieLens base: real ratings replayed in time order, attacks injected on top.

Choices, and why:

* The replay is the LAST ``n`` ratings in time order (ties kept in file order): one
  contiguous slice, so the real bursts (users rating dozens of films in one sitting) and
  the real quiet stretches stay as they were. With more events asked for than the file
  holds, the whole file is replayed and the run is shorter than asked.
* Ratings of 0.5 become 1.0 because the contract scale is 1..5; other half stars stay,
  and injected ratings use half stars too so they do not stand out by their grid.
* Accounts are ``ml-u<userId>``, items ``ml-m<movieId>``; the data has no account
  metadata, so no event has any, injected ones included (a lone ``ip`` would be a tell).
  Attacker accounts are new users with ids above the file's largest; detectors should
  not key on id values.
* Timestamps are whole seconds, like the file's.
* The file has no text. Scenarios with text attacks add benign "companion" events: for
  a share of the replayed ratings, the same user on the same film also writes a review
  (same rating, text that fits it), labels a short text, or votes, seconds to minutes
  after the rating. Without them every text event would be an attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from streamguard.simulate.text import TextBank, review_texts, snippets
from streamguard.simulate.world import LABEL, REVIEW, VOTE, Accounts, Frame, Items, World

RATINGS = Path(__file__).parent.parent / "data" / "movielens" / "ratings.csv"


@dataclass(frozen=True)
class Ratings:
    """The whole file sorted by time (stable, so same-second rows keep file order)."""

    user: np.ndarray
    movie: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    row: np.ndarray  # 0-based data row in the file


@lru_cache(maxsize=1)
def load_ratings() -> Ratings:
    data = np.loadtxt(RATINGS, delimiter=",", skiprows=1)
    order = np.argsort(data[:, 3], kind="stable")
    data = data[order]
    rating = np.maximum(data[:, 2], 1.0)  # 0.5 -> 1.0: the contract scale is 1..5
    return Ratings(
        data[:, 0].astype(np.int64),
        data[:, 1].astype(np.int64),
        rating,
        data[:, 3],
        order.astype(np.int64),
    )


def movielens_world(n_events: int, bank: TextBank) -> World:
    """Every MovieLens user and film as accounts and items; span set by :func:`replay`."""
    r = load_ratings()
    users = np.unique(r.user)
    movies, movie_idx, counts = np.unique(r.movie, return_inverse=True, return_counts=True)
    sums = np.bincount(movie_idx, weights=r.rating)
    squares = np.bincount(movie_idx, weights=r.rating**2)
    mean = sums / counts
    spread = np.sqrt(np.clip(squares / counts - mean**2, 0.25, None))
    first = np.full(len(movies), np.inf)
    np.minimum.at(first, movie_idx, r.ts)
    items = Items(
        ids=np.array([f"ml-m{m}" for m in movies.tolist()], dtype=object),
        popularity=counts.astype(float),
        quality=mean,
        spread=spread,
        category=np.zeros(len(movies), dtype=np.int64),
        launch=first,
    )
    accounts = Accounts()
    accounts.add(len(users), name=[f"ml-u{u}" for u in users.tolist()])
    world = World(
        "movielens",
        float(r.ts[0]),
        float(r.ts[-1]),
        n_events,
        accounts,
        items,
        bank,
        integer_ts=True,
        half_stars=True,
        has_text=False,
        has_metadata=False,
    )
    world.extra.update(
        user_ids=users,
        max_user_id=int(users.max()),
        user_index=np.searchsorted(users, r.user),
        movie_index=movie_idx,
    )
    return world


def replay(world: World, n: int) -> Frame:
    """The last ``n`` ratings (all if fewer) as benign events; sets the world's span."""
    r = load_ratings()
    n = max(0, min(n, len(r.ts)))
    sl = slice(len(r.ts) - n, len(r.ts))
    if n:
        world.t0, world.t1 = float(r.ts[sl][0]), float(r.ts[sl][-1])
    return Frame.build(
        r.ts[sl],
        0,
        world.extra["user_index"][sl],
        world.extra["movie_index"][sl],
        r.rating[sl],
    )


def companions(world: World, rng: np.random.Generator, rows: Frame, n: int) -> Frame:
    """``n`` benign text events by real users on films they just rated (see module doc)."""
    n = min(n, len(rows))
    if n <= 0:
        return Frame.empty()
    pick = np.sort(rng.choice(len(rows), n, replace=False))
    ts = np.round(rows.ts[pick] + np.exp(rng.normal(np.log(90.0), 1.0, n)))
    stars = rows.rating[pick]
    kind = rng.choice([REVIEW, LABEL, VOTE], n, p=[0.6, 0.3, 0.1]).astype(np.int8)
    text = np.empty(n, dtype=object)
    label = np.empty(n, dtype=object)
    rating = np.where(kind == REVIEW, stars, np.nan)
    rev = np.flatnonzero(kind == REVIEW)
    text[rev] = review_texts(world.bank, rng, stars[rev])
    lab = np.flatnonzero(kind == LABEL)
    positive = np.where(
        stars[lab] >= 3.5, True, np.where(stars[lab] <= 2.5, False, rng.random(len(lab)) < 0.5)
    )
    text[lab] = snippets(world.bank, rng, positive)
    said = positive ^ (rng.random(len(lab)) < 0.03)
    label[lab] = np.where(said, "positive", "negative")
    vote = np.flatnonzero(kind == VOTE)
    label[vote] = np.where(rng.random(len(vote)) < 0.72, "helpful", "unhelpful")
    return Frame.build(ts, kind, rows.account[pick], rows.item[pick], rating, text, label)
