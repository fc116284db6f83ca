"""The quarantine store: every quarantined (or revoked) event with its verdict, in SQLite.

One row per event id; a revocation of an event first released clean upserts it with the
retroactive verdict. Dead-lettered records are kept in their own table so the demo can
show them; in the Kafka service they live in the dead-letter topic.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from streamguard.pipeline import TickResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    event_id     TEXT PRIMARY KEY,
    ts           REAL NOT NULL,
    account_id   TEXT NOT NULL,
    item_id      TEXT NOT NULL,
    score        REAL NOT NULL,
    detectors    TEXT NOT NULL,
    campaign_id  TEXT,
    retroactive  INTEGER NOT NULL DEFAULT 0,
    event        BLOB NOT NULL,
    verdict      BLOB NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    received_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_status ON quarantine(status, score);
CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT NOT NULL,
    position     INTEGER NOT NULL,
    error_class  TEXT NOT NULL,
    error        TEXT NOT NULL,
    raw          BLOB,
    received_at  REAL NOT NULL
);
"""


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db`` to a path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"store url must start with {prefix!r}, got {url!r}")
    return Path(url[len(prefix) :])


class QuarantineStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def add_tick(self, result: TickResult) -> None:
        """Store the tick's quarantines, revocations and dead letters in one transaction."""
        now = time.time()
        rows: list[tuple[Any, ...]] = []
        for o in result.outcomes:
            if o.verdict is not None and o.event is not None and o.verdict.reasons:
                rows.append(
                    _row(
                        o.event.event_id,
                        o.event.ts,
                        o.event.account_id,
                        o.event.item_id,
                        o.record.value or b"",
                        o.verdict.to_dict(),
                        now,
                    )
                )
        for rev in result.revocations:
            rows.append(
                _row(
                    rev.event_id,
                    rev.ts,
                    rev.account_id,
                    rev.item_id,
                    rev.value,
                    rev.verdict.to_dict(),
                    now,
                )
            )
        dead = [
            (
                o.record.topic,
                o.record.offset,
                o.error.error_class,
                o.error.error,
                o.record.value,
                now,
            )
            for o in result.outcomes
            if o.error is not None
        ]
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO quarantine (event_id, ts, account_id, item_id, score,"
                " detectors, campaign_id, retroactive, event, verdict, received_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self.db.executemany(
                "INSERT INTO dead_letters (source, position, error_class, error, raw, received_at)"
                " VALUES (?,?,?,?,?,?)",
                dead,
            )

    def counts(self) -> dict[str, int]:
        q = self.db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        r = self.db.execute("SELECT COUNT(*) FROM quarantine WHERE retroactive=1").fetchone()[0]
        d = self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        return {"quarantined": q, "retroactive": r, "dead_letters": d}

    def top_reasons(self, limit: int = 5) -> Iterable[tuple[str, int]]:
        return self.db.execute(
            "SELECT detectors, COUNT(*) FROM quarantine GROUP BY detectors ORDER BY 2 DESC LIMIT ?",
            (limit,),
        ).fetchall()

    def close(self) -> None:
        self.db.close()


def _row(
    event_id: str,
    ts: float,
    account: str,
    item: str,
    event: bytes,
    verdict: dict[str, Any],
    now: float,
) -> tuple[Any, ...]:
    reasons = verdict["reasons"]
    detectors = ";".join(sorted({r["detector"] for r in reasons}))
    campaign = next((r["campaign_id"] for r in reasons if r.get("campaign_id")), None)
    return (
        event_id,
        ts,
        account,
        item,
        verdict["score"],
        detectors,
        campaign,
        int(verdict["retroactive"]),
        event,
        orjson.dumps(verdict),
        now,
    )
