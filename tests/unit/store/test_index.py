"""The SQLite message index: records, counts, due deliveries, leases, reopening."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ums.store.index import SCHEMA_VERSION, IndexSchemaError, MessageIndex
from ums.store.models import Kind, MessageRecord, new_record

T0 = datetime(2024, 3, 1, 8, 0, 0, tzinfo=UTC)


def rec(
    rng: random.Random, i: int, mailbox: str = "100", kind: Kind = "voice", **kw: object
) -> MessageRecord:
    r = new_record(
        now=T0 + timedelta(seconds=i),
        rng=rng,
        domain="ums.example.com",
        mailbox=mailbox,
        owner=f"owner{mailbox}@example.com",
        kind=kind,
        caller_number="+49891234567",
        caller_name="Jane Doe",
        duration=12.25 if kind == "voice" else None,
        pages=3 if kind == "fax" else None,
        files=(f"{kind}/{i}.wav",),
        meta={"call_id": f"c{i}", "digits": "1#"},
    )
    return r.with_changes(**kw) if kw else r


@pytest.fixture
def index(tmp_path: Path) -> Iterator[MessageIndex]:
    ix = MessageIndex(tmp_path / "db" / "index.sqlite")
    yield ix
    ix.close()


def test_add_get_round_trip(index: MessageIndex) -> None:
    r = rec(random.Random(1), 0, next_attempt_at=T0 + timedelta(microseconds=7), last_error="x")
    assert index.add(r) is True
    assert index.get(r.id) == r
    assert index.add(r) is False  # idempotent per id
    assert index.get("nope") is None
    assert index.find_by_message_id(r.message_id) == r
    assert index.find_by_message_id(r.message_id.strip("<>")) == r
    assert index.find_by_message_id("<other@x>") is None
    with pytest.raises(sqlite3.IntegrityError):  # another record reusing the Message-ID
        index.add(rec(random.Random(2), 1, message_id=r.message_id))


def test_pragmas_and_schema(index: MessageIndex) -> None:
    db = sqlite3.connect(index.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert index.schema_version() == SCHEMA_VERSION
    assert index._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ix.sqlite"
    MessageIndex(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(IndexSchemaError):
        MessageIndex(path)


def test_list_filters_and_order(index: MessageIndex) -> None:
    rng = random.Random(5)
    records = [
        rec(rng, 3, "100"),
        rec(rng, 1, "100", "fax"),
        rec(rng, 2, "200"),
        rec(rng, 0, "100", state="read"),
    ]
    for r in records:
        index.add(r)
    assert [r.received_at for r in index.list()] == sorted(r.received_at for r in records)
    assert {r.id for r in index.list(mailbox="100")} == {records[0].id, records[1].id, records[3].id}
    assert [r.id for r in index.list(mailbox="100", state="new", kind="voice")] == [records[0].id]
    assert [r.id for r in index.list(kind="fax")] == [records[1].id]
    assert index.list(delivery="failed") == []


def test_counts_and_set_state(index: MessageIndex) -> None:
    rng = random.Random(9)
    voice = [rec(rng, i) for i in range(3)]
    for r in [*voice, rec(rng, 10, kind="fax"), rec(rng, 11, mailbox="200")]:
        index.add(r)
    assert index.counts("100") == (3, 0)
    assert index.counts("100", kinds=("voice", "fax")) == (4, 0)
    assert index.counts("999") == (0, 0)
    assert index.set_state(voice[0].id, "read") is True
    assert index.set_state(voice[0].id, "read") is False  # no change: no MWI update needed
    assert index.counts("100") == (2, 1)
    assert index.set_state(voice[0].id, "new") is True
    assert index.counts("100") == (3, 0)
    assert index.all_counts() == {"100": (3, 0), "200": (1, 0)}
    with pytest.raises(KeyError):
        index.set_state("missing", "read")
    with pytest.raises(ValueError):
        index.set_state(voice[0].id, "gone")  # type: ignore[arg-type]
    assert index.remove(voice[1].id) is True
    assert index.counts("100") == (2, 0)


def test_due_deliveries_order_and_attempts(index: MessageIndex) -> None:
    rng = random.Random(11)
    a = rec(rng, 0, next_attempt_at=T0 + timedelta(minutes=5))
    b = rec(rng, 1, next_attempt_at=T0 + timedelta(minutes=1))
    c = rec(rng, 2, next_attempt_at=T0 + timedelta(minutes=1))
    d = rec(rng, 3, delivery="delivered")
    for r in (a, b, c, d):
        index.add(r)
    assert [r.id for r in index.due_deliveries(T0)] == []
    assert [r.id for r in index.due_deliveries(T0 + timedelta(minutes=1))] == [b.id, c.id]
    assert [r.id for r in index.due_deliveries(T0 + timedelta(hours=1))] == [b.id, c.id, a.id]
    assert [r.id for r in index.due_deliveries(T0 + timedelta(hours=1), limit=1)] == [b.id]

    later = T0 + timedelta(minutes=3)
    r = index.record_attempt(b.id, ok=False, error="451 try later", next_attempt_at=later)
    assert (r.attempts, r.last_error, r.next_attempt_at, r.delivery) == (1, "451 try later", later, "pending")
    assert [x.id for x in index.due_deliveries(T0 + timedelta(minutes=2))] == [c.id]
    r = index.record_attempt(c.id, ok=True)
    assert (r.attempts, r.delivery, r.next_attempt_at) == (1, "delivered", None)
    r = index.mark_failed(a.id, "550 no such user")
    assert (r.delivery, r.last_error) == ("failed", "550 no such user")
    assert [x.id for x in index.due_deliveries(T0 + timedelta(days=1))] == [b.id]
    assert index.mark_delivered(b.id).delivery == "delivered"
    assert index.due_deliveries(T0 + timedelta(days=1)) == []
    again = index.requeue(a.id, T0 + timedelta(days=2))
    assert again.delivery == "pending"
    assert [x.id for x in index.due_deliveries(T0 + timedelta(days=2))] == [a.id]
    with pytest.raises(ValueError):
        index.record_attempt(a.id, ok=False, error="x")
    with pytest.raises(KeyError):
        index.mark_delivered("missing")


def test_leases_and_crash_recovery(index: MessageIndex) -> None:
    rng = random.Random(13)
    r = rec(rng, 0)
    index.add(r)
    lease = timedelta(minutes=10)
    assert index.claim(r.id, T0, lease) is True
    assert index.claim(r.id, T0 + timedelta(minutes=1), lease) is False  # held by a live worker
    assert index.due_deliveries(T0 + timedelta(minutes=9)) == []  # in flight, not due twice
    # the worker dies; once the lease runs out the record is due again
    assert [x.id for x in index.due_deliveries(T0 + timedelta(minutes=10))] == [r.id]
    assert index.claim(r.id, T0 + timedelta(minutes=10), lease) is True
    # or, at start-up of the only worker, all leases are handed back at once
    assert index.release_claims() == 1
    assert [x.id for x in index.due_deliveries(T0 + timedelta(minutes=11))] == [r.id]
    assert index.claim(r.id, T0, lease) is True
    index.record_attempt(r.id, ok=True)
    assert index.claim(r.id, T0 + timedelta(hours=1), lease) is False  # delivered: nothing to claim


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ix.sqlite"
    rng = random.Random(17)
    records = [rec(rng, i) for i in range(5)]
    with MessageIndex(path) as ix:
        for r in records:
            ix.add(r)
        ix.set_state(records[0].id, "read")
        ix.claim(records[1].id, T0, timedelta(hours=1))
    with MessageIndex(path) as ix:
        assert ix.schema_version() == SCHEMA_VERSION
        assert ix.get(records[2].id) == records[2]
        assert ix.counts("100") == (4, 1)
        ix.release_claims()
        assert len(ix.due_deliveries(T0 + timedelta(minutes=1))) == 5


def test_uncommitted_transaction_is_not_visible(tmp_path: Path) -> None:
    path = tmp_path / "ix.sqlite"
    rng = random.Random(19)
    with MessageIndex(path) as ix:
        ix.add(rec(rng, 0))
        # a writer that dies in the middle of a transaction
        ix._db.execute("BEGIN IMMEDIATE")
        ix._db.execute("UPDATE messages SET state = 'read'")
        ix._db.execute("ROLLBACK")
        assert ix.counts("100") == (1, 0)


def test_two_connections_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "ix.sqlite"
    rng = random.Random(23)
    with MessageIndex(path) as writer, MessageIndex(path) as reader:
        r = rec(rng, 0)
        writer.add(r)
        assert reader.get(r.id) == r
        assert reader.claim(r.id, T0, timedelta(minutes=1)) is True
        assert writer.claim(r.id, T0, timedelta(minutes=1)) is False


def test_threads_share_one_index(index: MessageIndex) -> None:
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for i in range(20):
                r = rec(rng, i, mailbox=str(seed))
                index.add(r)
                index.set_state(r.id, "read")
                index.counts(str(seed))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert index.all_counts() == {str(s): (0, 20) for s in range(4)}
