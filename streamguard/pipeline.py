"""The core: one tick (a micro-batch of raw records) in, one outcome per record out.

No I/O happens here, so the same core runs from Kafka, from a file and from the built-in
simulator, and is tested without a broker. A tick is processed in six steps:

1. parse and validate every record; failures become dead-letter outcomes, never exceptions;
2. draw the shared features from streaming state (:mod:`streamguard.features`);
3. every detector scores the tick from its state as it was at the tick's start;
4. the policy turns scores into verdicts with reasons;
5. detectors, features and calibration learn from the kept events only;
6. accounts that a detector flagged as campaign members have their recent clean
   releases revoked (the Kafka edge publishes tombstones for them).

A detector that raises on some input does not stop the stream: the tick is re-scored one
event at a time for that detector and the events it cannot handle go to the dead-letter
topic as ``detector_error`` (a poison record must not block its partition).
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson

from streamguard.detectors.base import Batch, Detector, DetectorLost, Flag, Scores
from streamguard.detectors.offload import DetectorProcess, OffloadedDetector
from streamguard.events import (
    Action,
    FeedbackEvent,
    InvalidEvent,
    RatingScale,
    Reason,
    Verdict,
    event_from_json,
    parse_events,
)
from streamguard.features import FeatureState, LRUTable
from streamguard.policy import Decisions, Policy

log = logging.getLogger(__name__)


class SourceRecord(NamedTuple):
    """A raw input message and where it came from (Kafka coordinates or a file line).

    A tuple: one is made per consumed record, and a frozen dataclass's ``__init__`` cost
    4% of the service's time per event end to end."""

    value: bytes | None
    topic: str = ""
    partition: int = 0
    offset: int = -1


@dataclass(slots=True)
class Outcome:
    """The fate of one input record: exactly one of clean, quarantine or dlq."""

    record: SourceRecord
    action: Action
    event: FeedbackEvent | None = None
    verdict: Verdict | None = None
    error: InvalidEvent | None = None


@dataclass(frozen=True, slots=True)
class Revocation:
    """An event released clean earlier that a later finding pulled back."""

    event_id: str
    account_id: str
    item_id: str
    ts: float
    value: bytes
    verdict: Verdict


@dataclass(slots=True)
class TickResult:
    outcomes: list[Outcome]
    revocations: list[Revocation] = field(default_factory=list)
    # Each detector's raw score for each outcome, in outcome order, NaN where an outcome
    # has no verdict (a dead letter): columns, not a dict per event (a tick has thousands).
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def extend(self, other: TickResult) -> None:
        """Append the result of the records that follow in the same tick (another
        partition's, or the next micro-batch of a long one)."""
        mine, theirs = len(self.outcomes), len(other.outcomes)
        for name in self.scores.keys() | other.scores.keys():
            self.scores[name] = np.concatenate(
                [
                    self.scores.get(name, np.full(mine, np.nan)),
                    other.scores.get(name, np.full(theirs, np.nan)),
                ]
            )
        self.outcomes.extend(other.outcomes)
        self.revocations.extend(other.revocations)


# Releases kept revocable per account (`pipeline.revocable_releases_per_account`). A fake
# of a MovieLens-sized profile rates 30-50 items in its burst; with 32 a campaign found at
# its fifteenth account could revoke only the last 32 of each earlier member's events
# (MovieLens shilling, seed 5: recall 0.877 -> 1.0 with 64 over 8 seeds, at a cost of
# 0.81% -> 0.84% benign FPR on synthetic mixed from flagged honest heavy accounts).
RELEASES_PER_ACCOUNT = 64


class ReleaseLog:
    """Recent clean releases per account, so a late campaign finding can revoke them.

    Bounded three ways: accounts (LRU), releases per account, and age in event time. On a
    quiet stream, where the window holds fewer than ``keep_accounts`` accounts, the log
    keeps the most recently active ``keep_accounts`` whatever their age: a drip of a few
    fakes a week is found months in, and their releases are still there to take back
    (memory is that of ``keep_accounts`` logs, small beside a busy stream's window).
    An account holds one bytes object: its newest event time, how many values follow,
    then each raw value it released after its length. Ids and times are read back from a
    value on the rare revocation, so a release costs its bytes and four more, not a
    bytes object and tuple slots of its own (issue 10's memory target). The object is an
    exact-size copy: a serialiser's bytes may sit in a much larger allocation.
    """

    def __init__(
        self, max_accounts: int, per_account: int, window_seconds: float, keep_accounts: int = 0
    ) -> None:
        if per_account < 1:
            raise ValueError(f"per_account must be >= 1, got {per_account}")
        self.table: LRUTable[bytes] = LRUTable(max_accounts)
        self.per_account = per_account
        self.window_seconds = window_seconds
        self.keep_accounts = keep_accounts

    def record(self, event: FeedbackEvent, value: bytes) -> None:
        self.record_all(((event, value),))

    def record_all(self, releases: Iterable[tuple[FeedbackEvent, bytes]]) -> None:
        """Log each (event, raw value) released, in order. Every clean event passes here,
        so the lookups are hoisted out of the loop and the table's get and put written
        out (an account already logged is popped and put back: no eviction is due)."""
        data, put = self.table._data, self.table.put
        cap, head_size = self.per_account, _HEAD.size
        unpack_head, pack_head, pack_length, join = (
            _HEAD.unpack_from, _HEAD.pack, _LENGTH.pack, b"".join
        )  # fmt: skip
        for event, value in releases:
            account_id, ts = event.account_id, event.ts
            held = data.pop(account_id, None)
            if held is None:
                put(account_id, _pack(ts, (value,)))
                continue
            newest, count = unpack_head(held)
            start = head_size
            if count >= cap:  # room for the new one: drop the oldest
                start = _skip(held, count + 1 - cap)
                count = cap - 1
            # held[start:] copies, yet costs less than a memoryview for logs this short
            data[account_id] = join(
                (
                    pack_head(max(newest, ts), count + 1),
                    held[start:],
                    pack_length(len(value)),
                    value,
                )
            )

    def expire(self, now: float) -> None:
        """Forget accounts whose newest release left the window (least recently touched
        first), so the log holds a window of traffic, not every account ever seen; never
        fewer than ``keep_accounts``."""
        horizon = now - self.window_seconds
        if len(self.table) > self.keep_accounts:
            self.table.expire(
                lambda held: (
                    _HEAD.unpack_from(held)[0] < horizon and len(self.table) > self.keep_accounts
                )
            )

    def reach(self, now: float) -> float:
        """The oldest event time still revocable: the window's start on a busy stream;
        while the log holds no more than ``keep_accounts``, whatever it holds."""
        if len(self.table) > self.keep_accounts:
            return now - self.window_seconds
        return -math.inf

    def take(
        self,
        account_id: str,
        since_ts: float,
        now: float,
        kinds: frozenset[str] | None = None,
    ) -> list[tuple[FeedbackEvent, bytes]]:
        """Remove and return the account's releases since ``since_ts`` within the log's
        reach (of ``kinds`` only, when given: the others stay revocable). Past the
        window only for an account whose whole history the log still holds: a small
        account found late (a drip's) is taken back whole, while a busy one that filled
        its log loses no more than the window, as before the floor (MovieLens: an honest
        heavy rater flagged by mistake in `shilling_nuke` lost 64 old releases)."""
        reach = self.reach(now)  # before the pop, which can bring the log to its floor
        held = self.table.pop(account_id)
        if held is None:
            return []
        if _HEAD.unpack_from(held)[1] >= self.per_account:
            reach = max(reach, now - self.window_seconds)
        horizon = max(since_ts, reach)
        taken, kept = [], []
        for value in _unpack(held):
            event = event_from_json(value)
            if kinds is not None and event.kind not in kinds:
                kept.append(value)
            elif event.ts >= horizon:
                taken.append((event, value))
        if kept:
            self.table.put(account_id, _pack(_HEAD.unpack_from(held)[0], kept))
        return taken


_HEAD = struct.Struct("<dI")  # an account's newest release time and count of values
_LENGTH = struct.Struct("<I")  # the length of the raw value that follows


def _pack(newest: float, values: Sequence[bytes]) -> bytes:
    """An account's log: its newest release time and count, then each value after its
    length (:meth:`ReleaseLog.record` appends to one in place of repacking it)."""
    parts = [_HEAD.pack(newest, len(values))]
    for value in values:
        parts += (_LENGTH.pack(len(value)), value)
    return b"".join(parts)


def _skip(held: bytes, values: int) -> int:
    """Where the value after the first ``values`` ones starts."""
    offset = _HEAD.size
    for _ in range(values):
        offset += _LENGTH.size + _LENGTH.unpack_from(held, offset)[0]
    return offset


def _unpack(held: bytes) -> Iterator[bytes]:
    """The raw values of an account's log (see :func:`_pack`), oldest first."""
    offset = _HEAD.size
    while offset < len(held):
        (length,) = _LENGTH.unpack_from(held, offset)
        offset += _LENGTH.size
        yield held[offset : offset + length]
        offset += length


class Pipeline:
    """Feedback events in, verdicts out, one micro-batch at a time."""

    def __init__(
        self,
        detectors: Sequence[Detector],
        policy: Policy,
        features: FeatureState | None = None,
        scale: RatingScale = RatingScale(),
        releases: ReleaseLog | None = None,
        micro_batch: int = 500,
    ) -> None:
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        self.detectors = list(detectors)
        self.policy = policy
        self.features = features or FeatureState()
        self.scale = scale
        self.releases = releases or ReleaseLog(200_000, RELEASES_PER_ACCOUNT, 30 * 86400.0)
        self.micro_batch = micro_batch
        self.events_seen = 0

    def start(self) -> None:
        """Start the second process of the detectors that run there and wait until it
        answers (otherwise the first tick starts it)."""
        for process in self.detector_processes():
            process.start()

    def close(self) -> None:
        """Stop that process; the pipeline starts it again if it is used again."""
        for process in self.detector_processes():
            process.close()

    def detector_processes(self) -> list[DetectorProcess]:
        """The second processes of this pipeline's detectors (one, or none)."""
        found = (d.process for d in self.detectors if isinstance(d, OffloadedDetector))
        return list(dict.fromkeys(found))

    def process(self, records: Sequence[SourceRecord]) -> TickResult:
        """Score, decide and learn a tick, in micro-batches of at most ``micro_batch``
        records, each learned before the next is scored (so verdicts depend on the
        micro-batches, not on how many records a poll happened to bring)."""
        size = self.micro_batch
        if len(records) <= size:
            return self._process(records)
        result = TickResult([])
        for start in range(0, len(records), size):
            result.extend(self._process(records[start : start + size]))
        return result

    def _process(self, records: Sequence[SourceRecord]) -> TickResult:
        values = [r.value for r in records]
        parsed = parse_events(values, self.scale)
        if InvalidEvent in set(map(type, parsed)):
            valid: Sequence[int] = [i for i, p in enumerate(parsed) if isinstance(p, FeedbackEvent)]
            events: list[FeedbackEvent] = [parsed[i] for i in valid]  # type: ignore[misc]
        else:  # the usual tick: every record valid, in one pass in C
            valid, events = range(len(parsed)), parsed  # type: ignore[assignment]
        batch = Batch.of(events)
        for detector in self.detectors:  # those in a second process start scoring now
            if isinstance(detector, OffloadedDetector):
                detector.begin_score(batch)
        self.features.extract(batch)
        outputs, broken = self._score(batch)
        decisions = self.policy.decide(outputs, len(batch))
        keep = ~broken
        keep[decisions.held] = False
        self._learn(batch, keep, outputs, decisions)
        outcomes = self._outcomes(records, parsed, valid, decisions, broken, outputs)
        self.events_seen += len(records)
        revocations = self._revoke(outputs, batch)
        self._record_releases(events, values, valid, keep)
        scores = _score_columns(len(records), valid, broken, outputs)
        return TickResult(outcomes, revocations, scores)

    def _score(self, batch: Batch) -> tuple[dict[str, Scores], np.ndarray]:
        broken = np.zeros(len(batch), dtype=bool)
        detectors = self.detectors
        # Those in a second process (begun in _process) are read last: they score while
        # this process extracts features and scores the rest.
        order = sorted(detectors, key=lambda d: isinstance(d, OffloadedDetector))
        found = {d.name: self._score_one_detector(d, batch, broken) for d in order}
        return {d.name: found[d.name] for d in detectors}, broken  # in the detectors' order

    def _score_one_detector(self, detector: Detector, batch: Batch, broken: np.ndarray) -> Scores:
        try:
            return detector.score_batch(batch)
        except DetectorLost:
            raise
        except Exception:
            log.exception(
                "detector %s failed on a batch; isolating the poison record", detector.name
            )
            return self._score_one_by_one(detector, batch, broken)

    def _score_one_by_one(self, detector: Detector, batch: Batch, broken: np.ndarray) -> Scores:
        result = Scores.quiet(len(batch))
        for i in range(len(batch)):
            single = _slice(batch, i)
            try:
                one = detector.score_batch(single)
            except DetectorLost:
                raise
            except Exception:
                broken[i] = True
                continue
            result.scores[i] = one.scores[0]
            result.details[i] = one.details[0]
        return result

    def _learn(
        self, batch: Batch, keep: np.ndarray, outputs: dict[str, Scores], decisions: Decisions
    ) -> None:
        self.features.learn(batch, keep)
        for detector in self.detectors:
            try:
                detector.learn_batch(batch, keep)
            except DetectorLost:
                raise
            except Exception:
                log.exception(
                    "detector %s failed to learn; skipping this tick for it", detector.name
                )
        self.policy.learn(outputs, decisions)

    def _outcomes(
        self,
        records: Sequence[SourceRecord],
        parsed: list[FeedbackEvent | InvalidEvent],
        valid: Sequence[int],
        decisions: Decisions,
        broken: np.ndarray,
        outputs: dict[str, Scores],
    ) -> list[Outcome]:
        verdicts = decisions.verdicts
        if len(valid) == len(records) and not broken.any():  # the usual tick: all valid
            actions = [Action.CLEAN] * len(records)
            for i in decisions.held:
                actions[i] = Action.QUARANTINE
            return list(map(Outcome, records, actions, parsed, verdicts))  # type: ignore[arg-type]
        position = {record_index: j for j, record_index in enumerate(valid)}
        outcomes = []
        for i, (record, result) in enumerate(zip(records, parsed, strict=True)):
            if isinstance(result, InvalidEvent):
                outcomes.append(Outcome(record, Action.DLQ, error=result))
                continue
            j = position[i]
            if broken[j]:
                failed = [name for name in outputs]  # the detector set that could not score it
                error = InvalidEvent(
                    f"a detector failed on this event ({', '.join(failed)})",
                    "detector_error",
                    result.event_id,
                )
                outcomes.append(Outcome(record, Action.DLQ, event=result, error=error))
                continue
            outcomes.append(Outcome(record, verdicts[j].action, result, verdicts[j]))
        return outcomes

    def _revoke(self, outputs: dict[str, Scores], batch: Batch) -> list[Revocation]:
        flags: list[tuple[str, Flag]] = [
            (name, flag) for name, out in outputs.items() for flag in out.flagged_accounts
        ]
        # The window counts back from the tick's first event: the finding may come anywhere
        # in the tick, and on a slow stream one tick can span weeks.
        now = float(batch.ts.min()) if len(batch) else self.features.watermark
        revocations = []
        for name, flag in flags:
            reason = Reason(name, flag.score, f"retroactive: {flag.detail}", None, flag.campaign_id)
            verdict = Verdict(Action.QUARANTINE, flag.score, (reason,), retroactive=True)
            for event, value in self.releases.take(flag.account_id, flag.since_ts, now, flag.kinds):
                revocations.append(
                    Revocation(
                        event.event_id, flag.account_id, event.item_id, event.ts, value, verdict
                    )
                )
        return revocations

    def _record_releases(
        self,
        events: Sequence[FeedbackEvent],
        values: Sequence[bytes | None],
        valid: Sequence[int],
        kept: np.ndarray,
    ) -> None:
        """Log the tick's clean events (``kept``, over ``events``) with their raw values
        (``values[valid[j]]`` is event j's)."""
        clean = np.flatnonzero(kept).tolist()
        released = map(events.__getitem__, clean)
        raw = map(values.__getitem__, map(valid.__getitem__, clean))
        self.releases.record_all(zip(released, raw, strict=True))  # type: ignore[arg-type]
        self.releases.expire(self.features.watermark)


def _score_columns(
    n: int, valid: Sequence[int], broken: np.ndarray, outputs: dict[str, Scores]
) -> dict[str, np.ndarray]:
    """Each detector's scores laid out over a tick's ``n`` records (see TickResult)."""
    scored = ~broken
    at = np.asarray(valid, dtype=np.int64)[scored]
    columns = {}
    for name, out in outputs.items():
        column = np.full(n, np.nan)
        column[at] = out.scores[scored]
        columns[name] = column
    return columns


def _slice(batch: Batch, i: int) -> Batch:
    return Batch(
        events=[batch.events[i]],
        ts=batch.ts[i : i + 1],
        rating=batch.rating[i : i + 1],
        kind=batch.kind[i : i + 1],
        features={k: v[i : i + 1] for k, v in batch.features.items()},
    )


def quarantine_message(event_value: bytes, verdict: Verdict) -> bytes:
    """The quarantine topic's value: the original event, unchanged, and the verdict."""
    return orjson.dumps({"event": orjson.Fragment(event_value), "verdict": verdict.to_dict()})


def dlq_message(record: SourceRecord, error: InvalidEvent) -> bytes:
    """The dead-letter value: the raw input (nothing is lost), the reason and its origin."""
    raw = record.value or b""
    body: dict[str, Any] = {
        "raw": raw.decode("utf-8", errors="replace"),
        "error": error.error,
        "error_class": error.error_class,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
    if record.value is None:
        body["raw"] = None
    elif body["raw"].encode("utf-8") != raw:
        import base64

        body["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return orjson.dumps(body)
