"""Replay a recorded stream through the real pipeline and collect one row per input line.

In-process replay feeds the lines to :class:`~streamguard.pipeline.Pipeline` in ticks of
``batch_size``; the Kafka replay (:mod:`streamguard.evaluate.through_kafka`) sends them
through a real broker and the real service loop and records the same rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from streamguard.detectors.drift import DriftDetector
from streamguard.detectors.drift_item import KeyedDrift
from streamguard.detectors.drift_labels import label_key
from streamguard.evaluate.metrics import VerdictRow
from streamguard.events import Action
from streamguard.pipeline import Pipeline, SourceRecord, TickResult


def read_lines(path: Path) -> list[bytes]:
    """The stream's lines, raw: malformed lines are part of the test, not an error here."""
    with path.open("rb") as f:
        return [line.rstrip(b"\r\n") for line in f]


@dataclass
class RowCollector:
    """Turns tick results into :class:`VerdictRow` values, revocations included."""

    rows: dict[int, VerdictRow] = field(default_factory=dict)
    line_of_event: dict[str, int] = field(default_factory=dict)

    def add(self, result: TickResult) -> None:
        last_line = max((o.record.offset for o in result.outcomes), default=-1)
        last_ts = max((o.event.ts for o in result.outcomes if o.event), default=None)
        columns = {name: column.tolist() for name, column in result.scores.items()}
        for k, o in enumerate(result.outcomes):
            line = o.record.offset
            verdict = o.verdict
            action = o.action.value
            event_id = o.event.event_id if o.event else (o.error.event_id or "" if o.error else "")
            quarantined = o.action is Action.QUARANTINE
            self.rows[line] = VerdictRow(
                line=line,
                event_id=event_id,
                first_action=action,
                final_action=action,
                score=verdict.score if verdict else 1.0,
                reasons=tuple(r.detector for r in verdict.reasons) if verdict else (),
                ts=o.event.ts if o.event else None,
                detector_scores={
                    name: column[k] for name, column in columns.items() if column[k] == column[k]
                },
                left_clean_at=line if quarantined else None,
                left_clean_ts=o.event.ts if quarantined and o.event else None,
                item_id=o.event.item_id if o.event else "",
                account_id=o.event.account_id if o.event else "",
            )
            if o.action is Action.CLEAN and o.event:
                self.line_of_event[o.event.event_id] = line
        for rev in result.revocations:
            line_no = self.line_of_event.pop(rev.event_id, None)
            if line_no is None:
                continue
            old = self.rows[line_no]
            self.rows[line_no] = replace(
                old,
                final_action=Action.QUARANTINE.value,
                reasons=old.reasons + tuple(r.detector for r in rev.verdict.reasons),
                left_clean_at=last_line,
                left_clean_ts=last_ts,
            )

    def mark_alarms(self, result: TickResult, alarms: Sequence[tuple[str, float, int]]) -> None:
        """Mark the lines on which the drift detector raised its alarms (key, event time,
        direction): the event of that time on that key (an item, or a kind's label mix
        of an item; the tick's last such event when several share the time)."""
        at: dict[tuple[str, float], int] = {}
        for o in result.outcomes:
            if o.event is not None:
                at[(o.event.item_id, o.event.ts)] = o.record.offset
                at[(label_key(o.event.kind, o.event.item_id), o.event.ts)] = o.record.offset
        for key, ts, _ in alarms:
            line = at.get((key, ts))
            if line is not None:
                self.rows[line] = replace(self.rows[line], drift_alarm=True)

    def ordered(self) -> list[VerdictRow]:
        return [self.rows[i] for i in sorted(self.rows)]


def replay(
    pipeline: Pipeline,
    lines: Sequence[bytes],
    batch_size: int = 500,
    source: str = "replay",
    progress: bool = True,
) -> tuple[list[VerdictRow], float]:
    """Run every line through the pipeline; returns the rows and the elapsed seconds."""
    collector = RowCollector()
    bar = tqdm(
        total=len(lines), unit="ev", file=sys.stderr, disable=not progress or None, desc="eval"
    )
    signals = _drift_signals(pipeline)
    started = time.perf_counter()
    for start in range(0, len(lines), batch_size):
        chunk = lines[start : start + batch_size]
        records = [SourceRecord(v, source, 0, start + i) for i, v in enumerate(chunk)]
        before = [signal.alarms_total for signal in signals]
        result = pipeline.process(records)
        collector.add(result)
        alarms = [a for s, n in zip(signals, before, strict=True) for a in _since(s, n)]
        if alarms:
            collector.mark_alarms(result, alarms)
        bar.update(len(chunk))
    elapsed = time.perf_counter() - started
    bar.close()
    return collector.ordered(), elapsed


def _drift_signals(pipeline: Pipeline) -> list[KeyedDrift]:
    """The drift detector's per-key signals (item ratings, item label mixes), if it runs."""
    for detector in pipeline.detectors:
        if isinstance(detector, DriftDetector):
            return [detector.ratings, detector.labels]
    return []


def _since(signal: KeyedDrift, before: int) -> list[tuple[str, float, int]]:
    """The alarms the signal raised since its count was ``before``; a tick that raised
    more than its log holds loses its first ones."""
    new = signal.alarms_total - before
    return list(signal.alarm_log)[-new:] if new > 0 else []
