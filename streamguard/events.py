"""The event contract (DESIGN.md section 2) and the verdicts StreamGuard gives.

Parsing never raises: :func:`parse_event` turns any raw message value into either a
validated :class:`FeedbackEvent` or an :class:`InvalidEvent` whose ``error`` says what is
wrong, so the dead-letter path is an ordinary value, not an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

MAX_TEXT_CHARS = 20_000
MAX_ID_CHARS = 128
# Event times before 1990 or after 2200 are almost surely unit mistakes (ms instead of s).
MIN_EPOCH = 631_152_000.0
MAX_EPOCH = 7_258_118_400.0

Kind = Literal["rating", "review", "label", "vote"]


def to_epoch(value: Any) -> float:
    """RFC 3339 string or epoch seconds to epoch seconds; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be RFC 3339 or epoch seconds, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp {value[:40]!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {value[:40]!r} has no time zone offset")
        seconds = parsed.timestamp()
    else:
        raise ValueError("timestamp must be RFC 3339 or epoch seconds")
    if not math.isfinite(seconds) or not MIN_EPOCH <= seconds <= MAX_EPOCH:
        raise ValueError(f"timestamp {seconds!r} is outside 1990..2200 (epoch seconds expected)")
    return seconds


Id = Annotated[str, Field(strict=True, min_length=1, max_length=256)]


@pydantic_dataclass(slots=True, frozen=True, config=ConfigDict(extra="ignore", allow_inf_nan=False))
class FeedbackEvent:
    """One feedback event, validated.

    Types are checked by pydantic-core itself (strict strings and numbers: no coercion
    of 42 to "42" or of true to 1), so validation stays in Rust; only timestamps, which
    take two forms, and the fields each kind requires run Python.

    Unknown fields are accepted and passed through: every topic StreamGuard writes carries
    the event's raw bytes, not this object, which keeps none of them (nothing reads them).
    A slotted dataclass rather than a ``BaseModel`` because every detector reads these
    fields event by event: a slot is read in about 15 ns, a model's attribute in 40, and
    that was 8% of the detector core (BENCHMARKS.md, profile).
    """

    event_id: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_ID_CHARS)]
    ts: float
    kind: Kind
    account_id: Id
    item_id: Id
    rating: Annotated[float, Field(strict=True)] | None = None
    text: Annotated[str, Field(strict=True, max_length=MAX_TEXT_CHARS)] | None = None
    label: Id | None = None
    account_created_at: float | None = None
    ip: Annotated[str, Field(strict=True)] | None = None
    device_id: Annotated[str, Field(strict=True)] | None = None
    attrs: dict[str, Any] | None = None

    @field_validator("ts", "account_created_at", mode="before")
    @classmethod
    def _epoch(cls, value: Any) -> Any:
        if type(value) is float and MIN_EPOCH <= value <= MAX_EPOCH:
            return value  # the common case, without the checks to_epoch makes
        return None if value is None else to_epoch(value)

    @model_validator(mode="after")
    def _required_by_kind(self) -> FeedbackEvent:
        if self.kind in ("rating", "review") and self.rating is None:
            raise ValueError(f"a {self.kind} event needs 'rating'")
        if self.kind == "review" and not self.text:
            raise ValueError("a review event needs non-empty 'text'")
        if self.kind in ("label", "vote") and self.label is None:
            raise ValueError(f"a {self.kind} event needs 'label'")
        return self


_ADAPTER: TypeAdapter[FeedbackEvent] = TypeAdapter(FeedbackEvent)
# pydantic-core's validator itself: TypeAdapter.validate_json's Python wrapper costs an
# eighth of a valid event's parse (0.2 of 2.0 us; BaseModel.model_validate_json's cost 0.4),
# and the result and errors are the same.
event_from_json: Callable[[bytes], FeedbackEvent] = _ADAPTER.validator.validate_json


def event_from_dict(obj: Any) -> FeedbackEvent:
    """Validate an already-decoded event (raises pydantic's ValidationError)."""
    return _ADAPTER.validate_python(obj)


@dataclass(frozen=True, slots=True)
class RatingScale:
    """The configured rating scale; ratings outside it are contract violations."""

    low: float = 1.0
    high: float = 5.0

    def check(self, event: FeedbackEvent) -> str | None:
        if event.rating is not None and not self.low <= event.rating <= self.high:
            return f"rating {event.rating} is outside the scale {self.low:g}..{self.high:g}"
        return None


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """A message that failed the contract; ``error`` is meant for a person to read."""

    error: str
    error_class: str
    event_id: str | None = None


def parse_event(
    raw: bytes | None, scale: RatingScale = RatingScale()
) -> FeedbackEvent | InvalidEvent:
    """Validate one raw message value; never raises."""
    return parse_events((raw,), scale)[0]


def parse_events(
    raws: Iterable[bytes | None], scale: RatingScale = RatingScale()
) -> list[FeedbackEvent | InvalidEvent]:
    """:func:`parse_event` for each raw value, in order. A tick's worth in one call, with
    the scale check written out: a valid event then costs the validator and no Python
    call of its own (2.6 -> 2.3 us an event in ``profile_core.py --stages``)."""
    low, high = scale.low, scale.high
    parsed: list[FeedbackEvent | InvalidEvent] = []
    for raw in raws:
        if raw is None:
            parsed.append(InvalidEvent("message has no value (null)", "empty"))
            continue
        try:  # the common case in one pass through pydantic-core's own JSON parser
            event = event_from_json(raw)
        except (ValidationError, ValueError, TypeError, RecursionError):
            parsed.append(_parse_slowly(raw, scale))
            continue
        rating = event.rating
        parsed.append(event if rating is None or low <= rating <= high else _in_scale(event, scale))
    return parsed


def _parse_slowly(raw: bytes, scale: RatingScale) -> FeedbackEvent | InvalidEvent:
    """Tell apart what is wrong (bad JSON, not an object, the contract) for the DLQ."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InvalidEvent(f"not valid UTF-8 JSON: {exc}", "json")
    if not isinstance(obj, dict):
        return InvalidEvent(f"expected a JSON object, got {type(obj).__name__}", "json")
    event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    try:
        event = event_from_dict(obj)
    except ValidationError as exc:
        return InvalidEvent(_describe(exc), "contract", event_id)
    except (ValueError, TypeError, RecursionError) as exc:  # pragma: no cover - defensive
        return InvalidEvent(f"invalid event: {exc}", "contract", event_id)
    return _in_scale(event, scale)


def _in_scale(event: FeedbackEvent, scale: RatingScale) -> FeedbackEvent | InvalidEvent:
    problem = scale.check(event)
    return InvalidEvent(problem, "range", event.event_id) if problem else event


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class Action(StrEnum):
    CLEAN = "clean"
    QUARANTINE = "quarantine"
    DLQ = "dlq"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a detector found an event suspicious, in words a reviewer can act on."""

    detector: str
    score: float
    detail: str
    threshold: float | None = None
    campaign_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "detector": self.detector,
            "score": round(self.score, 6),
            "detail": self.detail,
        }
        if self.threshold is not None:
            out["threshold"] = round(self.threshold, 6)
        if self.campaign_id is not None:
            out["campaign_id"] = self.campaign_id
        return out


@dataclass(slots=True)
class Verdict:
    """The decision for one event: the action, a suspicion score in [0, 1], the reasons.

    Treated as immutable but not frozen: one is made per event, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) costs three times as much.
    """

    action: Action
    score: float
    reasons: tuple[Reason, ...] = ()
    retroactive: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "score": round(self.score, 6),
            "reasons": [r.to_dict() for r in self.reasons],
            "retroactive": self.retroactive,
        }
