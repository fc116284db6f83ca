"""When people act: daily and weekly cycles, and sessions of several events in a row.

Both benign users and attackers are timed through here, so neither side can be told
apart by the shape of its inter-event gaps alone; attackers differ by *where* their
sessions fall (all inside a few hours, or spread thinly), which is the signal to find.
"""

from __future__ import annotations

import numpy as np

from streamguard.simulate.world import DAY, HOUR

# Relative activity by hour of day (UTC): quiet nights, a lunch bump, an evening peak.
_HOURS = np.arange(24) + 0.5
HOURLY = (
    0.12 + np.exp(-(((_HOURS - 20.5) / 3.2) ** 2)) + 0.45 * np.exp(-(((_HOURS - 12.5) / 2.0) ** 2))
)
HOURLY = HOURLY / HOURLY.max()
# Monday..Sunday (1970-01-01 was a Thursday, so epoch day d is weekday (d + 3) % 7).
WEEKLY = np.array([0.93, 0.92, 0.94, 0.96, 1.0, 1.12, 1.1])
WEEKLY = WEEKLY / WEEKLY.max()


def activity(ts: np.ndarray) -> np.ndarray:
    """Relative activity level (0..1] at the given epoch seconds."""
    hour = ((ts % DAY) // HOUR).astype(np.int64)
    weekday = ((ts // DAY).astype(np.int64) + 3) % 7
    return HOURLY[hour] * WEEKLY[weekday]


def diurnal(rng: np.random.Generator, n: int, t0: float, t1: float) -> np.ndarray:
    """``n`` times in [t0, t1) following the daily and weekly cycle (rejection sampling).

    Windows shorter than a few hours are sampled uniformly: the cycle does not matter
    there and rejection would only waste draws.
    """
    if n <= 0:
        return np.empty(0)
    if t1 - t0 < 3 * HOUR:
        return rng.uniform(t0, t1, n)
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        draw = rng.uniform(t0, t1, int((n - have) * 2.2) + 16)
        keep = draw[rng.random(len(draw)) < activity(draw)]
        out.append(keep)
        have += len(keep)
    return np.concatenate(out)[:n]


def gaps(rng: np.random.Generator, n: int, median: float = 25.0) -> np.ndarray:
    """Seconds between consecutive events in one sitting: lognormal, a few s to minutes."""
    return np.exp(rng.normal(np.log(median), 0.9, n)) + 1.0


def session_times(
    rng: np.random.Generator,
    starts: np.ndarray,
    lengths: np.ndarray,
    t1: float,
    median: float = 25.0,
) -> np.ndarray:
    """Times of every event of every session, flattened session by session.

    A session that would run past ``t1`` is moved earlier so that it ends inside the span.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0)
    step = gaps(rng, total, median)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    first = np.cumsum(lengths) - lengths
    step[first] = 0.0  # the first event of a session happens at its start
    offset = np.cumsum(step)
    offset -= np.repeat(offset[first], lengths)
    duration = np.zeros(len(lengths))
    np.maximum.at(duration, owner, offset)
    starts = np.asarray(starts, dtype=float)
    late = starts > t1 - duration - 1.0
    # Move late sittings back by a random amount so they do not pile up on one second.
    starts = np.where(late, t1 - duration - rng.uniform(1.0, 1_800.0, len(starts)), starts)
    return np.repeat(starts, lengths) + offset
