"""The one small protocol every detector follows.

A detector sees a micro-batch (one tick of the pipeline) twice:

1. ``score_batch(batch)`` returns a suspicion score in [0, 1] per event, computed from
   the detector's state as it was at the start of the tick, plus a human-readable detail
   for the events it finds suspicious. It must not change state that later scores read.
2. ``learn_batch(batch, keep)`` updates state, learning only from events with
   ``keep[i]`` true: StreamGuard never learns from what it quarantines, so a burst of
   poison cannot become the new normal (River's ``protect_anomaly_detector`` idea).

Detectors that find groups (campaigns) also return ``flagged_accounts``: accounts whose
earlier events already released to the clean topic must be revoked.

A detector may run in a process of its own (:mod:`streamguard.detectors.offload`): the
pipeline starts its scoring before it scores the others, so the two overlap.

State must be picklable (checkpoints) and bounded (expiry), and the batch path must give
the same result as feeding the same ticks one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol, runtime_checkable

import numpy as np

from streamguard.events import FeedbackEvent

KIND_CODES = {"rating": 0, "review": 1, "label": 2, "vote": 3}


@dataclass(slots=True)
class Batch:
    """The valid events of one tick, with the columns detectors share.

    ``features`` holds named float64 columns drawn from streaming state *before* this
    tick's learning (see :mod:`streamguard.features`); NaN means unknown.
    """

    events: Sequence[FeedbackEvent]
    ts: np.ndarray
    rating: np.ndarray  # NaN where the event has no rating
    kind: np.ndarray  # int8 codes from KIND_CODES
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events)

    @classmethod
    def of(cls, events: Sequence[FeedbackEvent]) -> Batch:
        """The columns, read by ``map`` and ``attrgetter``, which run in C: a generator
        expression per column resumed a Python frame for every event and column."""
        n = len(events)
        ts = np.fromiter(map(_TS, events), dtype=np.float64, count=n)
        rating = np.array(list(map(_RATING, events)), dtype=np.float64)  # None -> NaN
        kind = np.fromiter(map(KIND_CODES.__getitem__, map(_KIND, events)), dtype=np.int8, count=n)
        return cls(events=events, ts=ts, rating=rating, kind=kind)


_TS, _RATING, _KIND = attrgetter("ts"), attrgetter("rating"), attrgetter("kind")


@dataclass(frozen=True, slots=True)
class Flag:
    """A group finding: this account belongs to a campaign; revoke its recent releases."""

    account_id: str
    campaign_id: str
    detail: str
    score: float = 1.0
    since_ts: float = float("-inf")
    # Only releases of these event kinds are revoked (None: every kind), for a finding
    # that says nothing about the account's other kinds of feedback.
    kinds: frozenset[str] | None = None


@dataclass(slots=True)
class Scores:
    """What a detector says about a batch."""

    scores: np.ndarray  # float64 in [0, 1], one per event
    details: list[str | None]  # why, for events worth explaining; None elsewhere
    campaign_ids: list[str | None] | None = None
    flagged_accounts: list[Flag] = field(default_factory=list)
    # Optional lazy explanation for event i, asked only for events that are quarantined:
    # cheaper than writing a detail for every event that might be.
    explain: Callable[[int], str] | None = None
    # True while the detector cannot score yet (a half-space forest in its first window
    # gives every event 0): the policy sets no threshold from such a tick.
    warming: bool = False

    def detail(self, i: int) -> str | None:
        if self.details[i]:
            return self.details[i]
        return self.explain(i) if self.explain is not None else None

    @classmethod
    def quiet(cls, n: int) -> Scores:
        return cls(np.zeros(n), [None] * n)


class DetectorLost(RuntimeError):
    """A detector's state is gone (its process died): scoring on without it would pass
    what it exists to hold, so the pipeline lets this through and the service stops."""


@runtime_checkable
class Detector(Protocol):
    """Anything with a name that scores a batch and learns from the kept part of it."""

    name: str

    def score_batch(self, batch: Batch) -> Scores: ...

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None: ...


def squash(x: np.ndarray, scale: float) -> np.ndarray:
    """Map a non-negative evidence measure to [0, 1) smoothly: 1 - exp(-x / scale)."""
    return -np.expm1(-np.maximum(x, 0.0) / scale)
