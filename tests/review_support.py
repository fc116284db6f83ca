"""A quarantine store filled through the real pipeline's result types."""

from __future__ import annotations

from pathlib import Path

import orjson
from factories import event

from streamguard.events import Action, Reason, Verdict, event_from_json
from streamguard.pipeline import Outcome, SourceRecord, TickResult
from streamguard.quarantine.store import QuarantineStore


def held(i: int, campaign: str | None, detector: str = "campaign", score: float = 0.9, **fields):
    raw = orjson.dumps(event(i, **fields))
    ev = event_from_json(raw)
    reason = Reason(detector, score, f"{detector} says so", None, campaign)
    verdict = Verdict(Action.QUARANTINE, score, (reason,))
    return Outcome(SourceRecord(raw, "t", 0, i), Action.QUARANTINE, ev, verdict)


def filled_store(path: Path | str) -> QuarantineStore:
    store = QuarantineStore(path)
    outcomes = [held(i, "c1", account_id=f"fake{i}", item_id="target") for i in range(30)]
    outcomes += [held(100 + i, None, "anomaly", 0.6 + i / 100, item_id=f"i{i}") for i in range(10)]
    store.add_tick(TickResult(outcomes))
    return store
