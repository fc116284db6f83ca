"""The two databases the quarantine store runs on: SQLite (embedded default) and
PostgreSQL (a shared deployment, several review replicas on one queue).

The store writes portable SQL with ``?`` placeholders; a backend owns what differs:
connection, placeholder style, column types, the append-only triggers and how a write
transaction starts. Rows come back as plain dicts.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

TABLES = """
CREATE TABLE IF NOT EXISTS quarantine (
    event_id     TEXT PRIMARY KEY,
    ts           {real} NOT NULL,
    account_id   TEXT NOT NULL,
    item_id      TEXT NOT NULL,
    score        {real} NOT NULL,
    detectors    TEXT NOT NULL,
    campaign_id  TEXT,
    retroactive  INTEGER NOT NULL DEFAULT 0,
    event        TEXT NOT NULL,
    verdict      TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    received_at  {real} NOT NULL,
    decided_at   {real},
    decided_by   TEXT
);
CREATE INDEX IF NOT EXISTS quarantine_status ON quarantine(status, score);
CREATE INDEX IF NOT EXISTS quarantine_campaign ON quarantine(campaign_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id           {serial},
    source       TEXT NOT NULL,
    position     BIGINT NOT NULL,
    error_class  TEXT NOT NULL,
    error        TEXT NOT NULL,
    raw          {blob},
    received_at  {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id           {serial},
    at           {real} NOT NULL,
    actor        TEXT NOT NULL,
    role         TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    count        INTEGER NOT NULL,
    note         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash   TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    event_id     TEXT PRIMARY KEY,
    value        TEXT NOT NULL,
    created_at   {real} NOT NULL,
    attempt      TEXT,
    sent_at      {real}
);
CREATE TABLE IF NOT EXISTS review_settings (
    key          TEXT PRIMARY KEY,
    value        TEXT NOT NULL
);
"""

SQLITE_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

POSTGRES_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION streamguard_audit_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END; $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_append_only ON audit;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION streamguard_audit_append_only();
"""


class Backend(Protocol):
    """What the store needs from a database."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def transaction(self) -> Any: ...

    def close(self) -> None: ...


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


class SQLiteBackend:
    """One connection shared by threads under a lock; WAL so readers do not block."""

    def __init__(self, path: str) -> None:
        self._lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        ddl = TABLES.format(real="REAL", blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT")
        self.db.executescript(ddl + SQLITE_APPEND_ONLY)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.db.execute(sql, params).fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, params).fetchall()]

    def close(self) -> None:
        with self._lock:
            self.db.close()


class PostgresBackend:
    """psycopg 3; ``?`` placeholders become ``%s``; one connection under a lock."""

    def __init__(self, dsn: str) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self._lock = threading.RLock()
        self.db = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
        ddl = TABLES.format(
            real="DOUBLE PRECISION",
            blob="BYTEA",
            serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        )
        with self._lock, self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(4242)")  # replicas start together
            for statement in ddl.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(POSTGRES_APPEND_ONLY)

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.db.execute(self._sql(sql), list(params))
            return list(cur.fetchall()) if cur.description else []

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock, self.db.transaction():
            yield self

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.db.execute(self._sql(sql), list(params))
        return list(cur.fetchall()) if cur.description else []

    def close(self) -> None:
        with self._lock:
            self.db.close()


def connect(url: str) -> SQLiteBackend | PostgresBackend:
    """``sqlite:///path.db``, ``sqlite:////abs/path.db`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        return SQLiteBackend(url[len("sqlite:///") :])
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    raise ValueError(f"store url must be sqlite:///PATH or postgresql://..., got {url!r}")
