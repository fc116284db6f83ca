"""Detectors that plan a tick when scoring it and commit the plan when learning.

The content detectors replay a tick event by event against copy-on-write views of their
state: ``score_batch`` builds the plan (scores plus the state changes), ``learn_batch``
commits it. The plan is reused when ``learn_batch`` gets the same batch with no commit in
between, and rebuilt otherwise, so scoring never changes state and a checkpoint never
holds a half-applied tick. This module holds that protocol once.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, Self, TypeVar

import numpy as np
from pydantic import BaseModel

from streamguard.detectors.base import Batch, Scores


class Plan(Protocol):
    """What a planned tick must expose: its batch, the state version it read, its scores."""

    batch: Batch
    version: int
    scores: Scores


P = TypeVar("P", bound=Plan)
S = TypeVar("S", bound=BaseModel)


class PlannedDetector(Generic[P, S]):
    """Base of the planned detectors: subclasses write ``_setup``, ``_run`` and ``_commit``.

    A detector is built from its settings object (``settings_type``), keyword overrides,
    or both: ``Detector(bits=16)``, ``Detector(settings)``, ``Detector.from_settings(...)``.
    The validated settings are ``self.cfg``; every knob is declared once, in the settings.
    ``_commit`` must bump ``self._version``.
    """

    settings_type: type[S]

    def __init__(
        self,
        settings: S | None = None,
        /,
        *,
        rating_low: float = 1.0,
        rating_high: float = 5.0,
        **knobs: Any,
    ) -> None:
        self.cfg: S = settle(self.settings_type, settings, knobs)
        self.positive_rating, self.negative_rating = rating_sides(self.cfg, rating_low, rating_high)
        self._version = 0
        self._pending: P | None = None
        self._setup()

    def _setup(self) -> None:
        """Check the settings together and build the initial state."""
        raise NotImplementedError

    def _run(self, batch: Batch) -> P:
        raise NotImplementedError

    def _commit(self, tick: P, keep: np.ndarray) -> None:
        raise NotImplementedError

    def score_batch(self, batch: Batch) -> Scores:
        tick = self._run(batch)
        self._pending = tick
        return tick.scores

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        tick = self._pending
        if tick is None or tick.batch is not batch or tick.version != self._version:
            tick = self._run(batch)
        self._pending = None
        self._commit(tick, np.asarray(keep, dtype=bool))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pending"] = None  # a checkpoint holds committed state only
        return state

    @classmethod
    def from_settings(cls, settings: S, rating_low: float = 1.0, rating_high: float = 5.0) -> Self:
        """The detector the settings describe, on the pipeline's rating scale."""
        return cls(settings, rating_low=rating_low, rating_high=rating_high)


def settle(kind: type[S], settings: S | None, knobs: dict[str, Any]) -> S:
    """``settings`` (default: ``kind()``) with ``knobs`` laid over them, validated.

    Detectors take their settings object, keyword overrides, or both; one place checks
    every value, so a bad one raises the same error (a ``ValueError``) whatever the way.
    """
    base = settings.model_dump() if settings is not None else {}
    return kind.model_validate(base | knobs)


def rating_sides(settings: BaseModel, rating_low: float, rating_high: float) -> tuple[float, float]:
    """The ratings at or above which a review reads positive, at or below which negative.

    Unset sides (None) are the top and bottom quarters of the scale (4 and 2 on 1..5).
    """
    span = rating_high - rating_low
    positive = getattr(settings, "positive_rating", None)
    negative = getattr(settings, "negative_rating", None)
    return (
        rating_low + 0.75 * span if positive is None else float(positive),
        rating_low + 0.25 * span if negative is None else float(negative),
    )
