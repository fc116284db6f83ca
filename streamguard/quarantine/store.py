"""The quarantine store: held events, reviewer decisions, the audit log and the release outbox.

SQLite is the embedded default, PostgreSQL the shared one (:mod:`.backends`). The audit
log is append-only in the database itself (triggers refuse UPDATE and DELETE), so no code
path, reviewer or admin can rewrite history. An approval writes the event to the outbox
in the same transaction as the decision; a publisher releases outbox rows to the clean
topic and marks them sent, so a double click or a retried request releases an event once.

Every query is parameterised; filter and sort names are checked against allow-lists.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from streamguard.events import to_epoch
from streamguard.pipeline import TickResult
from streamguard.quarantine.backends import Tx, connect

Role = Literal["reviewer", "admin"]
Decision = Literal["approve", "reject"]
SORTS = {"score": "score", "age": "received_at", "ts": "ts"}
STATUS = ("pending", "approved", "rejected")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class QueueFilter:
    status: str = "pending"
    detector: str | None = None
    item_id: str | None = None
    campaign_id: str | None = None
    min_score: float = 0.0
    sort: str = "score"
    descending: bool = True
    page: int = 1
    page_size: int = 50


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class QuarantineStore:
    """All review state in one database; safe to share between threads."""

    def __init__(self, where: Path | str) -> None:
        """``where``: a SQLite file path, or a ``sqlite:///`` / ``postgresql://`` URL."""
        url = where if isinstance(where, str) and "://" in where else f"sqlite:///{where}"
        self.backend = connect(url)
        self._tx = self.backend.transaction
        self._query = self.backend.query

    # -- filling ----------------------------------------------------------------------

    def add_tick(self, result: TickResult) -> None:
        """Store a tick's quarantines, revocations and dead letters in one transaction."""
        now = time.time()
        held = [
            (
                o.event.event_id,
                o.event.ts,
                o.event.account_id,
                o.event.item_id,
                o.record.value or b"",
                o.verdict.to_dict(),
            )
            for o in result.outcomes
            if o.verdict is not None and o.event is not None and o.verdict.reasons
        ]
        held += [
            (r.event_id, r.ts, r.account_id, r.item_id, r.value, r.verdict.to_dict())
            for r in result.revocations
        ]
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
        with self._tx() as db:
            for event_id, ts, account, item, value, verdict in held:
                self._upsert(db, event_id, ts, account, item, value, verdict, now)
            for row in dead:
                db.execute(
                    "INSERT INTO dead_letters (source, position, error_class, error, raw,"
                    " received_at) VALUES (?,?,?,?,?,?)",
                    row,
                )

    def add_quarantine_message(self, value: bytes) -> None:
        """Materialise one quarantine-topic message (``{"event", "verdict"}``)."""
        body = orjson.loads(value)
        event, verdict = body["event"], body["verdict"]
        try:
            ts = to_epoch(event.get("ts"))
        except ValueError:
            ts = 0.0
        with self._tx() as db:
            self._upsert(
                db,
                str(event["event_id"]),
                ts,
                str(event.get("account_id", "")),
                str(event.get("item_id", "")),
                orjson.dumps(event),
                verdict,
                time.time(),
            )

    @staticmethod
    def _upsert(
        db: Tx,
        event_id: str,
        ts: float,
        account: str,
        item: str,
        value: bytes,
        verdict: dict[str, Any],
        now: float,
    ) -> None:
        reasons = verdict["reasons"]
        detectors = ";".join(sorted({r["detector"] for r in reasons}))
        campaign = next((r["campaign_id"] for r in reasons if r.get("campaign_id")), None)
        # A later message for the same event (a retroactive revocation) refreshes the
        # verdict but never reopens a decision already taken.
        db.execute(
            "INSERT INTO quarantine (event_id, ts, account_id, item_id, score, detectors,"
            " campaign_id, retroactive, event, verdict, received_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(event_id) DO UPDATE SET score=excluded.score,"
            " detectors=excluded.detectors, campaign_id=excluded.campaign_id,"
            " verdict=excluded.verdict",
            (
                event_id,
                ts,
                account,
                item,
                verdict["score"],
                detectors,
                campaign,
                int(verdict.get("retroactive", False)),
                value.decode("utf-8", "replace"),
                orjson.dumps(verdict).decode(),
                now,
            ),
        )

    # -- reading ----------------------------------------------------------------------

    def queue(self, f: QueueFilter) -> tuple[int, list[dict[str, Any]]]:
        """One page of held events matching the filter, and the total count."""
        where: list[str] = ["status = ?"]
        params: list[Any] = [f.status]
        if f.detector:
            where.append("(';' || detectors || ';') LIKE ? ESCAPE '\\'")
            params.append(f"%;{_like_escape(f.detector)};%")
        if f.item_id:
            where.append("item_id = ?")
            params.append(f.item_id)
        if f.campaign_id:
            where.append("campaign_id = ?")
            params.append(f.campaign_id)
        if f.min_score:
            where.append("score >= ?")
            params.append(f.min_score)
        clause = " AND ".join(where)
        total = self._query(f"SELECT COUNT(*) AS n FROM quarantine WHERE {clause}", params)[0]["n"]
        order = f"{SORTS[f.sort]} {'DESC' if f.descending else 'ASC'}, event_id"
        rows = self._query(
            f"SELECT * FROM quarantine WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, f.page_size, (f.page - 1) * f.page_size],
        )
        return total, [_event_row(r) for r in rows]

    def event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM quarantine WHERE event_id = ?", (event_id,))
        return _event_row(rows[0]) if rows else None

    def campaigns(self, status: str = "pending") -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT campaign_id, COUNT(*) AS events, COUNT(DISTINCT account_id) AS accounts,"
            " COUNT(DISTINCT item_id) AS items, MIN(ts) AS first_ts, MAX(ts) AS last_ts,"
            " MAX(score) AS max_score"
            " FROM quarantine WHERE campaign_id IS NOT NULL AND status = ?"
            " GROUP BY campaign_id ORDER BY events DESC",
            (status,),
        )
        return [dict(r) for r in rows]

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT account_id, item_id, ts, status FROM quarantine WHERE campaign_id = ?",
            (campaign_id,),
        )
        if not rows:
            return None
        return {
            "campaign_id": campaign_id,
            "events": len(rows),
            "pending": sum(r["status"] == "pending" for r in rows),
            "accounts": sorted({r["account_id"] for r in rows}),
            "items": sorted({r["item_id"] for r in rows}),
            "first_ts": min(r["ts"] for r in rows),
            "last_ts": max(r["ts"] for r in rows),
        }

    def stats(self) -> dict[str, float]:
        """Queue depth, the oldest pending item's age and decisions so far (for metrics)."""
        row = self._query(
            "SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM quarantine"
            " WHERE status = 'pending'"
        )[0]
        decided: dict[str, int] = {
            r["status"]: r["n"]
            for r in self._query(
                "SELECT status, COUNT(*) AS n FROM quarantine WHERE status != 'pending'"
                " GROUP BY status"
            )
        }
        return {
            "pending": float(row["n"]),
            "oldest_age_seconds": time.time() - row["oldest"] if row["oldest"] is not None else 0.0,
            "approved": float(decided.get("approved", 0)),
            "rejected": float(decided.get("rejected", 0)),
        }

    def counts(self) -> dict[str, int]:
        q = self._query("SELECT COUNT(*) AS n, SUM(retroactive) AS r FROM quarantine")[0]
        d = self._query("SELECT COUNT(*) AS n FROM dead_letters")[0]["n"]
        return {"quarantined": q["n"], "retroactive": int(q["r"] or 0), "dead_letters": d}

    def top_reasons(self, limit: int = 5) -> list[tuple[str, int]]:
        rows = self._query(
            "SELECT detectors, COUNT(*) AS n FROM quarantine GROUP BY detectors"
            " ORDER BY n DESC LIMIT ?",
            (limit,),
        )
        return [(r["detectors"], r["n"]) for r in rows]

    # -- deciding ---------------------------------------------------------------------

    def decide(
        self, who: Principal, event_ids: Sequence[str], decision: Decision, note: str, target: str
    ) -> int:
        """Approve or reject pending events; returns how many changed. Idempotent: events
        already decided are left alone, so a retried request changes nothing twice."""
        status = "approved" if decision == "approve" else "rejected"
        now = time.time()
        with self._tx() as db:
            changed = 0
            for event_id in event_ids:
                updated = db.execute(
                    "UPDATE quarantine SET status = ?, decided_at = ?, decided_by = ?"
                    " WHERE event_id = ? AND status = 'pending' RETURNING event",
                    (status, now, who.name, event_id),
                )
                if not updated:
                    continue
                changed += 1
                if decision == "approve":
                    db.execute(
                        "INSERT INTO outbox (event_id, value, created_at) VALUES (?,?,?)"
                        " ON CONFLICT (event_id) DO NOTHING",
                        (event_id, updated[0]["event"], now),
                    )
            db.execute(
                "INSERT INTO audit (at, actor, role, action, target, count, note)"
                " VALUES (?,?,?,?,?,?,?)",
                (now, who.name, who.role, decision, target, changed, note),
            )
        return changed

    def pending_ids(self, campaign_id: str) -> list[str]:
        rows = self._query(
            "SELECT event_id FROM quarantine WHERE campaign_id = ? AND status = 'pending'",
            (campaign_id,),
        )
        return [r["event_id"] for r in rows]

    def audit(self, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT * FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before_id if before_id is not None else 2**62, limit),
        )
        return rows

    # -- releasing --------------------------------------------------------------------

    def unsent(self, limit: int = 500) -> list[tuple[str, bytes]]:
        rows = self._query(
            "SELECT event_id, value FROM outbox WHERE sent_at IS NULL ORDER BY created_at LIMIT ?",
            (limit,),
        )
        return [(r["event_id"], r["value"].encode()) for r in rows]

    def mark_attempt(self, event_ids: Sequence[str], end_offsets: bytes) -> None:
        """Remember where the clean topic ended before these rows were sent."""
        with self._tx() as db:
            for e in event_ids:
                db.execute(
                    "UPDATE outbox SET attempt = ? WHERE event_id = ? AND attempt IS NULL",
                    (end_offsets.decode(), e),
                )

    def attempted(self) -> list[tuple[str, str]]:
        rows = self._query(
            "SELECT event_id, attempt FROM outbox WHERE sent_at IS NULL AND attempt IS NOT NULL"
        )
        return [(r["event_id"], r["attempt"]) for r in rows]

    def mark_sent(self, event_ids: Sequence[str]) -> None:
        now = time.time()
        with self._tx() as db:
            for e in event_ids:
                db.execute("UPDATE outbox SET sent_at = ? WHERE event_id = ?", (now, e))

    # -- access -----------------------------------------------------------------------

    def add_token(self, name: str, role: Role) -> str:
        """Create an API token; only its hash is stored, the token is shown once."""
        if role not in ("reviewer", "admin"):
            raise ValueError(f"role must be 'reviewer' or 'admin', got {role!r}")
        token = secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (token_hash, name, role, created_at) VALUES (?,?,?,?)",
                (hash_token(token), name, role, time.time()),
            )
        return token

    def principal(self, token: str) -> Principal | None:
        rows = self._query(
            "SELECT name, role FROM tokens WHERE token_hash = ?", (hash_token(token),)
        )
        return Principal(rows[0]["name"], rows[0]["role"]) if rows else None

    def settings(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._query("SELECT key, value FROM review_settings")}

    def put_setting(self, who: Principal, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO review_settings (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            db.execute(
                "INSERT INTO audit (at, actor, role, action, target, count, note)"
                " VALUES (?,?,?,?,?,?,?)",
                (time.time(), who.name, who.role, "setting", key, 1, value),
            )

    def close(self) -> None:
        self.backend.close()


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _event_row(r: dict[str, Any]) -> dict[str, Any]:
    out = dict(r)
    out["event"] = orjson.loads(out["event"])
    out["verdict"] = orjson.loads(out["verdict"])
    out["retroactive"] = bool(out["retroactive"])
    return out
