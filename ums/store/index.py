"""The message index: one SQLite table of message records.

What it does
------------
:class:`MessageIndex` stores :class:`~ums.store.models.MessageRecord` rows and
answers what the rest of the server asks: the messages of a mailbox, the new
and old counts for the MWI lamp, which deliveries are due, and which record an
e-mail Message-ID belongs to (to turn ``\\Seen`` in IMAP into "read").

How it works
------------
stdlib ``sqlite3`` in WAL mode with ``synchronous=FULL``: a committed change is
on disk before the call returns, and readers in other processes (a Celery
worker, the ``ums mailbox`` command) do not block the writer.  Every change is
one statement or one ``BEGIN IMMEDIATE`` transaction.  One connection serves
all threads of a process, guarded by a lock (enough for Celery's solo and
threads pools); several processes share the file through SQLite's own locking
with a busy timeout.

Times are stored as integer microseconds since the Unix epoch (UTC), lists and
dicts as JSON text.  ``schema_version`` holds the number of migrations applied;
:data:`MIGRATIONS` is the hook: append a tuple of statements to change the
schema, and opening an older file applies the missing ones in order.

Delivery bookkeeping: a worker ``claim``s a record for a time-limited lease
before it sends.  ``due_deliveries(now)`` returns pending records whose next
attempt is due and that nobody holds, plus records whose lease ran out — the
ones a crashed worker left "in flight".  ``release_claims()`` at start-up hands
back every lease at once when this process is the only worker.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from ums.store.models import KINDS, STATES, Delivery, Kind, MessageRecord, State

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "IndexSchemaError", "MessageIndex"]

#: Schema changes, oldest first; entry i takes the schema from version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            mailbox TEXT NOT NULL,
            owner TEXT NOT NULL,
            kind TEXT NOT NULL,
            caller_number TEXT NOT NULL,
            caller_name TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            duration REAL,
            pages INTEGER,
            state TEXT NOT NULL,
            delivery TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER,
            last_error TEXT NOT NULL DEFAULT '',
            message_id TEXT NOT NULL UNIQUE,
            files TEXT NOT NULL,
            meta TEXT NOT NULL,
            lease_until INTEGER
        )""",
        "CREATE INDEX messages_mailbox ON messages (mailbox, kind, state)",
        "CREATE INDEX messages_due ON messages (delivery, next_attempt_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = (
    "id, mailbox, owner, kind, caller_number, caller_name, received_at, duration, pages, state, "
    "delivery, attempts, next_attempt_at, last_error, message_id, files, meta"
)


class IndexSchemaError(RuntimeError):
    """The index file cannot be used (newer schema, corrupt)."""


def _us(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _row_to_record(row: sqlite3.Row | tuple[Any, ...]) -> MessageRecord:
    (
        ident,
        mailbox,
        owner,
        kind,
        caller_number,
        caller_name,
        received_at,
        duration,
        pages,
        state,
        delivery,
        attempts,
        next_attempt_at,
        last_error,
        message_id,
        files,
        meta,
    ) = tuple(row)
    return MessageRecord(
        id=ident,
        mailbox=mailbox,
        owner=owner,
        kind=cast(Kind, kind),
        received_at=_dt(received_at),
        message_id=message_id,
        caller_number=caller_number,
        caller_name=caller_name,
        duration=duration,
        pages=pages,
        state=cast(State, state),
        delivery=cast(Delivery, delivery),
        attempts=attempts,
        next_attempt_at=None if next_attempt_at is None else _dt(next_attempt_at),
        last_error=last_error,
        files=tuple(json.loads(files)),
        meta=json.loads(meta),
    )


class MessageIndex:
    """Message records in one SQLite file (created on first open)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
            if version > SCHEMA_VERSION:
                raise IndexSchemaError(
                    f"{self.path}: schema version {version} is newer than this program ({SCHEMA_VERSION})"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> MessageIndex:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _select(self, where: str, params: Sequence[Any], order: str = "id") -> list[MessageRecord]:
        sql = f"SELECT {_COLUMNS} FROM messages"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order}"
        with self._lock:
            rows = self._db.execute(sql, tuple(params)).fetchall()
        return [_row_to_record(r) for r in rows]

    def _update(self, ident: str, assignments: str, params: Sequence[Any]) -> MessageRecord:
        with self._write() as db:
            cur = db.execute(f"UPDATE messages SET {assignments} WHERE id = ?", (*params, ident))
            if cur.rowcount != 1:
                raise KeyError(ident)
            row = db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (ident,)).fetchone()
        return _row_to_record(row)

    # -- records ------------------------------------------------------------------------------

    def add(self, record: MessageRecord) -> bool:
        """Store a new record; False (and no change) when a record with this id exists already.

        A different record reusing an existing Message-ID raises ``sqlite3.IntegrityError``.
        """
        values = (
            record.id,
            record.mailbox,
            record.owner,
            record.kind,
            record.caller_number,
            record.caller_name,
            _us(record.received_at),
            record.duration,
            record.pages,
            record.state,
            record.delivery,
            record.attempts,
            None if record.next_attempt_at is None else _us(record.next_attempt_at),
            record.last_error,
            record.message_id,
            json.dumps(list(record.files)),
            json.dumps(record.meta, sort_keys=True),
        )
        with self._write() as db:
            if db.execute("SELECT 1 FROM messages WHERE id = ?", (record.id,)).fetchone():
                return False
            db.execute(f"INSERT INTO messages ({_COLUMNS}) VALUES ({', '.join('?' * len(values))})", values)
        return True

    def get(self, ident: str) -> MessageRecord | None:
        found = self._select("id = ?", (ident,))
        return found[0] if found else None

    def find_by_message_id(self, message_id: str) -> MessageRecord | None:
        """The record whose e-mail carries this Message-ID (with or without the angle brackets)."""
        mid = message_id.strip()
        if not mid.startswith("<"):
            mid = f"<{mid}>"
        found = self._select("message_id = ?", (mid,))
        return found[0] if found else None

    def list(
        self,
        mailbox: str | None = None,
        state: State | None = None,
        kind: Kind | None = None,
        delivery: Delivery | None = None,
    ) -> list[MessageRecord]:
        """Records matching all the given filters, oldest first."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("mailbox", mailbox), ("state", state), ("kind", kind), ("delivery", delivery)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return self._select(" AND ".join(clauses), params)

    def remove(self, ident: str) -> bool:
        """Forget a record (the spool files are the caller's business)."""
        with self._write() as db:
            return db.execute("DELETE FROM messages WHERE id = ?", (ident,)).rowcount == 1

    # -- read state ---------------------------------------------------------------------------

    def set_state(self, ident: str, state: State) -> bool:
        """Mark a message new or read; True when the state changed. KeyError when unknown."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        with self._write() as db:
            row = db.execute("SELECT state FROM messages WHERE id = ?", (ident,)).fetchone()
            if row is None:
                raise KeyError(ident)
            if row[0] == state:
                return False
            db.execute("UPDATE messages SET state = ? WHERE id = ?", (state, ident))
            return True

    def counts(self, mailbox: str, kinds: Sequence[Kind] = ("voice",)) -> tuple[int, int]:
        """``(new, old)`` message counts of a mailbox, as RFC 3842 reports them."""
        kinds = tuple(kinds)
        for k in kinds:
            if k not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}, got {k!r}")
        if not kinds:
            return (0, 0)
        marks = ", ".join("?" * len(kinds))
        with self._lock:
            rows = self._db.execute(
                f"SELECT state, COUNT(*) FROM messages WHERE mailbox = ? AND kind IN ({marks}) "
                "GROUP BY state",
                (mailbox, *kinds),
            ).fetchall()
        by_state = {s: int(n) for s, n in rows}
        return by_state.get("new", 0), by_state.get("read", 0)

    def all_counts(self, kinds: Sequence[Kind] = ("voice",)) -> dict[str, tuple[int, int]]:
        """``{mailbox: (new, old)}`` for every mailbox with messages of these kinds."""
        kinds = tuple(kinds)
        if not kinds:
            return {}
        marks = ", ".join("?" * len(kinds))
        with self._lock:
            rows = self._db.execute(
                f"SELECT mailbox, state, COUNT(*) FROM messages WHERE kind IN ({marks}) "
                "GROUP BY mailbox, state ORDER BY mailbox",
                kinds,
            ).fetchall()
        out: dict[str, tuple[int, int]] = {}
        for mailbox, state, n in rows:
            new, old = out.get(mailbox, (0, 0))
            out[mailbox] = (new + int(n), old) if state == "new" else (new, old + int(n))
        return out

    # -- delivery -----------------------------------------------------------------------------

    def due_deliveries(self, now: datetime, limit: int | None = None) -> builtins.list[MessageRecord]:
        """Pending records due at ``now`` and not held by a live lease, plus expired leases.

        Ordered by due time, then id (arrival).
        """
        t = _us(now)
        where = (
            "delivery = 'pending' AND ((lease_until IS NULL AND COALESCE(next_attempt_at, 0) <= ?) "
            "OR lease_until <= ?)"
        )
        order = "COALESCE(next_attempt_at, 0), id"
        if limit is not None:
            order += f" LIMIT {int(limit)}"
        return self._select(where, (t, t), order)

    def claim(self, ident: str, now: datetime, lease: timedelta) -> bool:
        """Take a pending record for one delivery attempt until ``now + lease``.

        False when it is not pending or another worker holds a lease that has not run out.
        """
        with self._write() as db:
            cur = db.execute(
                "UPDATE messages SET lease_until = ? WHERE id = ? AND delivery = 'pending' "
                "AND (lease_until IS NULL OR lease_until <= ?)",
                (_us(now + lease), ident, _us(now)),
            )
            return cur.rowcount == 1

    def release_claims(self) -> int:
        """Drop every lease (start-up of the only worker: whatever was in flight died with it)."""
        with self._write() as db:
            return db.execute("UPDATE messages SET lease_until = NULL WHERE lease_until IS NOT NULL").rowcount

    def record_attempt(
        self, ident: str, ok: bool, error: str = "", next_attempt_at: datetime | None = None
    ) -> MessageRecord:
        """Count one delivery attempt and release the lease.

        ``ok`` marks the record delivered; otherwise ``error`` and ``next_attempt_at`` (required)
        are stored and the record stays pending.
        """
        if ok:
            return self._update(
                ident,
                "attempts = attempts + 1, delivery = 'delivered', next_attempt_at = NULL, "
                "last_error = '', lease_until = NULL",
                (),
            )
        if next_attempt_at is None:
            raise ValueError("a failed attempt needs next_attempt_at")
        return self._update(
            ident,
            "attempts = attempts + 1, next_attempt_at = ?, last_error = ?, lease_until = NULL",
            (_us(next_attempt_at), error),
        )

    def mark_delivered(self, ident: str) -> MessageRecord:
        return self._update(
            ident, "delivery = 'delivered', next_attempt_at = NULL, last_error = '', lease_until = NULL", ()
        )

    def mark_failed(self, ident: str, error: str) -> MessageRecord:
        """Stop trying (permanent error or given up). The record and its files are kept."""
        return self._update(
            ident, "delivery = 'failed', next_attempt_at = NULL, last_error = ?, lease_until = NULL", (error,)
        )

    def requeue(self, ident: str, now: datetime) -> MessageRecord:
        """Make a failed (or delivered) record pending again, due at ``now`` (operator command)."""
        return self._update(
            ident, "delivery = 'pending', next_attempt_at = ?, lease_until = NULL", (_us(now),)
        )
