"""Replay a recorded stream through the real pipeline and collect one row per input line.

In-process replay feeds the lines to :class:`~streamguard.pipeline.Pipeline` in ticks of
``batch_size``; the Kafka replay (:mod:`streamguard.evaluate.through_kafka`) sends them
through a real broker and the real service loop and records the same rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

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
            )
            if o.action is Action.CLEAN and o.event:
                self.line_of_event[o.event.event_id] = line
        for rev in result.revocations:
            line_no = self.line_of_event.pop(rev.event_id, None)
            if line_no is None:
                continue
            old = self.rows[line_no]
            reasons = old.reasons + tuple(r.detector for r in rev.verdict.reasons)
            self.rows[line_no] = VerdictRow(
                old.line,
                old.event_id,
                old.first_action,
                Action.QUARANTINE.value,
                old.score,
                reasons,
                old.ts,
                old.detector_scores,
                last_line,
                last_ts,
            )

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
    started = time.perf_counter()
    for start in range(0, len(lines), batch_size):
        chunk = lines[start : start + batch_size]
        records = [SourceRecord(v, source, 0, start + i) for i, v in enumerate(chunk)]
        collector.add(pipeline.process(records))
        bar.update(len(chunk))
    elapsed = time.perf_counter() - started
    bar.close()
    return collector.ordered(), elapsed
