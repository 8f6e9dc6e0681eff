"""Message ids, Message-IDs and record validation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ums.store.models import MessageRecord, id_time, new_id, new_record, rfc5322_message_id

T0 = datetime(2024, 5, 17, 9, 30, 0, 123000, tzinfo=UTC)


def test_ids_sort_by_time_and_are_unique() -> None:
    rng = random.Random(7)
    ids = [new_id(T0 + timedelta(milliseconds=i // 3), rng) for i in range(300)]
    assert len(set(ids)) == 300
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    by_time = [i for _, i in sorted((id_time(i), i) for i in ids)]
    assert [id_time(i) for i in by_time] == sorted(id_time(i) for i in ids)
    # text order follows time order
    assert [id_time(i) for i in sorted(ids)] == sorted(id_time(i) for i in ids)


def test_id_time_round_trip_in_ms() -> None:
    ident = new_id(T0, random.Random(1))
    assert id_time(ident) == T0.replace(microsecond=123000)
    with pytest.raises(ValueError):
        id_time("xyz")


def test_message_id_is_deterministic() -> None:
    assert rfc5322_message_id("0abc", "ums.example.com") == "<0abc@ums.example.com>"
    assert rfc5322_message_id("0abc", "ums.example.com") == rfc5322_message_id("0abc", "ums.example.com")
    for bad_domain in ("", "a b", "x@y", "-x"):
        with pytest.raises(ValueError):
            rfc5322_message_id("0abc", bad_domain)
    with pytest.raises(ValueError):
        rfc5322_message_id("a>b", "example.com")


def test_new_record_defaults() -> None:
    local = T0.astimezone(timezone(timedelta(hours=2)))
    r = new_record(
        now=local,
        rng=random.Random(3),
        domain="example.com",
        mailbox="100",
        owner="alice@example.com",
        kind="voice",
        duration=4.5,
    )
    assert r.message_id == f"<{r.id}@example.com>"
    assert r.received_at == T0 and r.received_at.tzinfo is UTC
    assert (r.state, r.delivery, r.attempts, r.next_attempt_at) == ("new", "pending", 0, T0)


def test_record_validation() -> None:
    r = new_record(
        now=T0, rng=random.Random(3), domain="example.com", mailbox="1", owner="a@b", kind="fax", pages=2
    )
    with pytest.raises(ValueError):
        r.with_changes(kind="video")
    with pytest.raises(ValueError):
        r.with_changes(state="deleted")
    with pytest.raises(ValueError):
        r.with_changes(received_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        MessageRecord(
            id="x",
            mailbox="1",
            owner="a@b",
            kind="sms",
            received_at=T0,
            message_id="<x@b>",
            delivery="lost",  # type: ignore[arg-type]
        )
    assert r.with_changes(state="read").state == "read"
