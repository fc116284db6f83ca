"""Lockstep evidence: how surprising is a group of accounts acting alike on one item?

A shilling campaign leaves one unmistakable trace whatever its filler looks like: many
accounts give the *same extreme* value to the *same item* within a short stretch of the
stream (CopyCatch and SynchroTrap call it lockstep). Natural traffic does that too, on
popular items and on launches, so the trace only counts when it is surprising against
the item's own history. Three independent questions make the surprise, each a tail
probability turned into nats (-log p):

- **volume** (the DenseAlert/MIDAS question): so many extreme ratings on this item in a
  window this long, when its past share of the stream predicts few? The item's rate is a
  Gamma posterior (prior: an average item), so an item seen three times is not "known"
  to be quiet, and the predictive count is negative binomial, not Poisson.
- **concentration**: so many at one extreme out of all ratings the item got in the
  window, when its past share at that extreme predicts fewer? Items with little history
  are judged against a *high* natural ceiling, so a launch that pulls a natural spread
  of ratings from many people is not concentrated.
- **freshness**: so many new accounts (young by their creation date, or in their first
  sitting when the date is unknown) among the group, when new accounts usually give a
  small share of extreme ratings?

Time is counted in rated events seen by the detector (the *stream clock*), not seconds:
a window of 500 events means the same thing on a busy marketplace and on MovieLens,
whose 22 years hold 100k ratings. Daily cycles vanish from the clock too.

The functions here are pure; :class:`SideGroup` is the small per-item memory they read.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

NATS_CAP = 700.0  # -log of the smallest positive double: the surprise of "impossible"

# Side codes: what extreme a rating was, and whether its account was new.
MIDDLE, HIGH, LOW = 0, 1, 2
FRESH = 4  # bit or-ed into the code
NEAR = 8  # one step off the extreme (a sloppy attacker's 4 or 2)


def binom_logsf(k: int, n: int, p: float, stop_above: float = math.inf) -> float:
    """log P(X >= k) for X ~ Binomial(n, p).

    Above the mean, when log P(X = k) alone exceeds ``stop_above``, that lower bound is
    returned without summing the tail: a caller asking "is the tail below
    exp(stop_above)?" has its answer (no), and most windows scanned are far from it.
    """
    if k <= 0:
        return 0.0
    if k > n or p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    if k <= n * p:  # the bulk: the tail is large, add up the head instead
        head = sum(math.exp(_log_choose(n, x) + x * log_p + (n - x) * log_q) for x in range(k))
        return math.log(max(1.0 - head, 1e-300))
    first = _log_choose(n, k) + k * log_p + (n - k) * log_q
    if first > stop_above:
        return first
    total, term, odds = 1.0, 1.0, p / (1.0 - p)
    for x in range(k, n):
        term *= (n - x) / (x + 1) * odds
        total += term
        if term < 1e-16 * total:
            break
    return first + math.log(total)


def gamma_poisson_logsf(k: int, shape: float, rate: float, exposure: float) -> float:
    """log P(X >= k) when X ~ Poisson(lam * exposure) and lam ~ Gamma(shape, rate).

    The marginal is negative binomial with success odds q = exposure / (rate + exposure).
    """
    if k <= 0:
        return 0.0
    q = exposure / (rate + exposure)
    if q <= 0.0:
        return -math.inf
    log_q, log_1q = math.log(q), math.log1p(-q)
    mean = shape * q / (1.0 - q)
    if k <= mean:
        head = sum(math.exp(_log_nb(x, shape, log_q, log_1q)) for x in range(k))
        return math.log(max(1.0 - head, 1e-300))
    first = _log_nb(k, shape, log_q, log_1q)
    total, term = 1.0, 1.0
    x = k
    while True:
        term *= (shape + x) / (x + 1) * q
        total += term
        x += 1
        if term < 1e-16 * total or x > k + 100_000:
            break
    return first + math.log(total)


def narrowed_steps(
    steps: tuple[float, float], rating: np.ndarray, low: float, high: float
) -> tuple[float, float]:
    """One step off each extreme on the stream's own scale: ``steps`` (below the top,
    above the bottom; start at 1.0) narrowed to the nearest values ``rating`` used (NaN:
    no rating). Read as a whole unit, a half-star stream's 4s, its commonest rating,
    would count as a sloppy fake's 4.5s."""
    below = rating[rating < high]  # NaN compares false both ways
    above = rating[rating > low]
    step_high, step_low = steps
    if len(below):
        step_high = min(step_high, high - float(below.max()))
    if len(above):
        step_low = min(step_low, float(above.min()) - low)
    return step_high, step_low


def surprise(logsf: float) -> float:
    """Nats of surprise, capped so that 'impossible' stays a finite number."""
    return min(-logsf, NATS_CAP)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_nb(x: int, shape: float, log_q: float, log_1q: float) -> float:
    return (
        math.lgamma(shape + x) - math.lgamma(shape) - math.lgamma(x + 1)
        + shape * log_1q + x * log_q
    )  # fmt: skip


class SideGroup:
    """The accounts that recently gave one item one extreme, oldest first, one per account.

    Columns (stream clock, event time, new-account flag, account id) rather than tuples
    keep an entry near 25 bytes; the account id is the string the account table holds.
    An account that gives the same extreme again keeps its first entry. The flags are 0 or
    1 (other uses pack more bits), so ``fresh.count(1, lo, hi)`` counts new accounts.
    """

    __slots__ = ("clock", "ts", "fresh", "who")

    def __init__(self) -> None:
        self.clock = array("q")
        self.ts = array("d")
        self.fresh = bytearray()
        self.who: list[str] = []

    def push(self, clock: int, ts: float, fresh: int, who: str) -> None:
        if who in self.who:
            return
        self.clock.append(clock)
        self.ts.append(ts)
        self.fresh.append(fresh)
        self.who.append(who)

    def remove(self, accounts: set[str]) -> None:
        """Forget these accounts (members of a campaign: already accounted for)."""
        if any(a in accounts for a in self.who):
            kept = self.without(accounts)
            self.clock, self.ts, self.fresh, self.who = kept.clock, kept.ts, kept.fresh, kept.who

    def without(self, accounts: set[str]) -> SideGroup:
        """A copy without these accounts."""
        keep = [k for k, a in enumerate(self.who) if a not in accounts]
        out = SideGroup()
        out.clock = array("q", (self.clock[k] for k in keep))
        out.ts = array("d", (self.ts[k] for k in keep))
        out.fresh = bytearray(self.fresh[k] for k in keep)
        out.who = [self.who[k] for k in keep]
        return out

    def truncate(self, n: int) -> None:
        """Forget entries from position ``n`` on (undo of an uncommitted tick)."""
        del self.clock[n:], self.ts[n:], self.fresh[n:], self.who[n:]

    def trim(self, first_clock: int, size: int) -> None:
        """Drop entries older than ``first_clock`` and keep at most ``size``."""
        cut = max(bisect_left(self.clock, first_clock), len(self.who) - size)
        if cut > 0:
            del self.clock[:cut], self.ts[:cut], self.fresh[:cut], self.who[:cut]

    def __len__(self) -> int:
        return len(self.who)
