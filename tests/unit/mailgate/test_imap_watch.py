"""Read state from IMAP: the FETCH parser, the per-UID cache, the decision and the wire helpers."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from ums.mailgate.imap_service import _LineReader
from ums.mailgate.imap_watch import (
    FolderCache,
    FolderEntry,
    MessageIds,
    Observation,
    ReadStateTracker,
    StateChange,
    idle_event,
    normalize_message_id,
    parse_fetch,
    parse_ids,
    quote_mailbox,
    retry_delay,
    uid_sets,
)
from ums.store.models import MessageRecord, new_record

T0 = datetime(2024, 7, 1, 10, 15, 30, tzinfo=UTC)
SEEN = frozenset({"\\seen"})
UNSEEN: frozenset[str] = frozenset()
DELETED = frozenset({"\\deleted"})


def rec(n: int, state: str = "new", delivery: str = "delivered") -> MessageRecord:
    r = new_record(
        now=T0, rng=random.Random(n), domain="ums.example.com", mailbox="100", owner="bob@x", kind="voice"
    )
    return r.with_changes(state=state, delivery=delivery)


def entry(uid: int, r: MessageRecord, flags: frozenset[str], by: str = "ums") -> FolderEntry:
    ids = MessageIds(r.id, r.message_id) if by == "ums" else MessageIds("", r.message_id)
    return FolderEntry(uid, ids, flags)


def obs(*entries: FolderEntry, uidvalidity: int = 7) -> Observation:
    return Observation(uidvalidity, tuple(entries))


def apply(records: Sequence[MessageRecord], changes: Sequence[StateChange]) -> list[MessageRecord]:
    wanted = dict(changes)
    return [r.with_changes(state=wanted.get(r.id, r.state)) for r in records]


# -- the decision -----------------------------------------------------------------------------


def test_seen_is_read_and_unseen_is_new() -> None:
    a, b = rec(1), rec(2)
    t = ReadStateTracker()
    assert t.observe([a, b], obs(entry(1, a, UNSEEN), entry(2, b, UNSEEN)), 0.0) == []
    assert t.observe([a, b], obs(entry(1, a, SEEN), entry(2, b, UNSEEN)), 1.0) == [StateChange(a.id, "read")]
    a = a.with_changes(state="read")
    # marked unread again in the mail client: the lamp comes back
    assert t.observe([a, b], obs(entry(1, a, UNSEEN), entry(2, b, UNSEEN)), 2.0) == [StateChange(a.id, "new")]


def test_first_observation_syncs_the_index() -> None:
    a, b = rec(1, state="new"), rec(2, state="read")
    changes = ReadStateTracker().observe([a, b], obs(entry(1, a, SEEN), entry(2, b, UNSEEN)), 0.0)
    assert changes == [StateChange(a.id, "read"), StateChange(b.id, "new")]


def test_outage_gives_no_changes() -> None:
    a = rec(1)
    t = ReadStateTracker(missing_grace=0.0)
    assert t.observe([a], obs(entry(1, a, UNSEEN)), 0.0) == []
    # failed or incomplete looks: nothing at all, however long they last
    for now in (1.0, 100.0, 10_000.0):
        assert t.observe([a], None, now) == []
    assert t.observe([a], obs(entry(1, a, UNSEEN)), 10_001.0) == []


def test_deleted_after_being_seen_in_the_folder_is_read() -> None:
    a, b = rec(1), rec(2)
    t = ReadStateTracker()
    t.observe([a, b], obs(entry(1, a, UNSEEN), entry(2, b, UNSEEN)), 0.0)
    assert t.observe([a, b], obs(entry(2, b, UNSEEN)), 1.0) == [StateChange(a.id, "read")]


def test_deleted_flag_counts_as_read() -> None:
    a = rec(1)
    assert ReadStateTracker().observe([a], obs(entry(1, a, DELETED)), 0.0) == [StateChange(a.id, "read")]


def test_never_seen_delivered_message_is_read_after_the_grace() -> None:
    a = rec(1)
    t = ReadStateTracker(missing_grace=600.0)
    assert t.observe([a], obs(), 1000.0) == []
    assert t.observe([a], obs(), 1599.0) == []
    assert t.observe([a], obs(), 1600.0) == [StateChange(a.id, "read")]


def test_grace_restarts_when_the_message_shows_up() -> None:
    a = rec(1)
    t = ReadStateTracker(missing_grace=600.0)
    t.observe([a], obs(), 0.0)
    assert t.observe([a], obs(entry(1, a, UNSEEN)), 500.0) == []
    # present once: from now on missing means deleted, no grace
    assert t.observe([a], obs(), 501.0) == [StateChange(a.id, "read")]


@pytest.mark.parametrize("delivery", ["pending", "failed"])
def test_undelivered_missing_message_is_left_alone(delivery: str) -> None:
    a = rec(1, delivery=delivery)
    t = ReadStateTracker(missing_grace=0.0)
    assert t.observe([a], obs(), 0.0) == []
    assert t.observe([a], obs(), 1e6) == []


def test_pending_record_found_in_the_folder_is_applied() -> None:
    a = rec(1, delivery="pending")
    assert ReadStateTracker().observe([a], obs(entry(1, a, SEEN)), 0.0) == [StateChange(a.id, "read")]


def test_match_by_message_id_when_our_header_is_gone() -> None:
    a = rec(1)
    assert ReadStateTracker().observe([a], obs(entry(5, a, SEEN, by="mid")), 0.0) == [
        StateChange(a.id, "read")
    ]


def test_foreign_mail_and_other_mailboxes_are_ignored() -> None:
    a = rec(1)
    other = rec(9)
    stranger = FolderEntry(3, MessageIds("", "<someone@else>"), SEEN)
    t = ReadStateTracker()
    assert t.observe([a], obs(entry(1, a, UNSEEN), entry(2, other, SEEN), stranger), 0.0) == []


def test_duplicates_are_read_only_when_every_copy_is() -> None:
    a = rec(1)
    t = ReadStateTracker()
    assert t.observe([a], obs(entry(1, a, SEEN), entry(2, a, UNSEEN)), 0.0) == []
    assert t.observe([a], obs(entry(1, a, SEEN), entry(2, a, DELETED)), 1.0) == [StateChange(a.id, "read")]


def test_operator_override_stands_until_the_folder_changes() -> None:
    a = rec(1)
    t = ReadStateTracker()
    t.observe([a], obs(entry(1, a, UNSEEN)), 0.0)
    # `ums mailbox mark-read` in another process; the mail is still unread in the folder
    a = a.with_changes(state="read")
    assert t.observe([a], obs(entry(1, a, UNSEEN)), 1.0) == []
    # the owner reads and unreads it: the folder speaks again
    assert t.observe([a], obs(entry(1, a, SEEN)), 2.0) == []
    assert t.observe([a], obs(entry(1, a, UNSEEN)), 3.0) == [StateChange(a.id, "new")]


def test_resync_applies_the_next_observation_in_full() -> None:
    a = rec(1)
    t = ReadStateTracker()
    assert t.observe([a], obs(entry(1, a, SEEN)), 0.0) == [StateChange(a.id, "read")]
    # applying failed: the index still says new
    assert t.observe([a], obs(entry(1, a, SEEN)), 1.0) == []
    t.resync()
    assert t.observe([a], obs(entry(1, a, SEEN)), 2.0) == [StateChange(a.id, "read")]


def test_new_uidvalidity_forgets_what_was_present() -> None:
    a = rec(1)
    t = ReadStateTracker(missing_grace=600.0)
    t.observe([a], obs(entry(1, a, UNSEEN), uidvalidity=7), 0.0)
    # the folder was re-created empty: not taken as "deleted" at once
    assert t.observe([a], obs(uidvalidity=8), 1.0) == []
    assert t.observe([a], obs(uidvalidity=8), 601.0) == [StateChange(a.id, "read")]


def test_forgotten_records_are_dropped() -> None:
    a, b = rec(1), rec(2)
    t = ReadStateTracker()
    t.observe([a, b], obs(entry(1, a, UNSEEN), entry(2, b, UNSEEN)), 0.0)
    t.observe([b], obs(entry(2, b, UNSEEN)), 1.0)
    assert a.id not in t._asked and a.id not in t._present


def test_a_sequence_of_owner_actions() -> None:
    """new, read, unread, deleted: the index follows the folder."""
    a, b = rec(1), rec(2)
    t = ReadStateTracker()
    records = [a, b]
    looks = [
        (obs(entry(1, a, UNSEEN), entry(2, b, UNSEEN)), ["new", "new"]),
        (obs(entry(1, a, SEEN), entry(2, b, UNSEEN)), ["read", "new"]),
        (obs(entry(1, a, SEEN), entry(2, b, SEEN)), ["read", "read"]),
        (None, ["read", "read"]),
        (obs(entry(1, a, UNSEEN), entry(2, b, SEEN)), ["new", "read"]),
        (obs(entry(2, b, UNSEEN)), ["read", "new"]),
    ]
    for i, (look, states) in enumerate(looks):
        records = apply(records, t.observe(records, look, float(i)))
        assert [r.state for r in records] == states, i


# -- the FETCH parser -------------------------------------------------------------------------

HEADER = b"Message-ID: <abc@ums.example.com>\r\nX-UMS-Message-Id: abc\r\n\r\n"


def test_parse_flags_only() -> None:
    data: list[bytes | tuple[bytes, bytes] | None] = [
        b"1 (UID 4 FLAGS (\\Seen))",
        b"2 (FLAGS () UID 9)",
        b"3 (UID 10 FLAGS (\\Seen \\Deleted $Forwarded))",
    ]
    got = parse_fetch(data)
    assert [(m.seq, m.uid, m.flags) for m in got] == [
        (1, 4, frozenset({"\\seen"})),
        (2, 9, frozenset()),
        (3, 10, frozenset({"\\seen", "\\deleted", "$forwarded"})),
    ]
    assert all(m.header is None for m in got)


def test_parse_headers_with_literals_and_items_after_them() -> None:
    data: list[bytes | tuple[bytes, bytes] | None] = [
        (b"1 (UID 4 BODY[HEADER.FIELDS (MESSAGE-ID X-UMS-MESSAGE-ID)] {%d}" % len(HEADER), HEADER),
        b")",
        (b"2 (UID 5 BODY[HEADER.FIELDS (MESSAGE-ID X-UMS-MESSAGE-ID)] {2}", b"\r\n"),
        b" FLAGS (\\Seen))",
        b"3 (FLAGS (\\Seen))",  # unsolicited flag update: no UID
        b'4 (UID 6 BODY[HEADER.FIELDS (MESSAGE-ID)] "")',
        b"5 (UID 7 BODY[HEADER.FIELDS (MESSAGE-ID)] NIL)",
        None,
    ]
    got = parse_fetch(data)
    assert [(m.seq, m.uid) for m in got] == [(1, 4), (2, 5), (3, None), (4, 6), (5, 7)]
    assert got[0].header == HEADER
    assert got[1].header == b"\r\n" and got[1].flags == frozenset({"\\seen"})
    assert got[2].flags == frozenset({"\\seen"})
    assert got[3].header == b"" and got[4].header == b""


def test_parse_header_literal_with_parens_and_quotes_inside() -> None:
    lit = b'Message-ID: <a(b)"c@d>\r\n\r\n'
    got = parse_fetch([(b"7 (UID 70 FLAGS () BODY[HEADER.FIELDS (MESSAGE-ID)] {%d}" % len(lit), lit), b")"])
    assert got[0].uid == 70 and got[0].header == lit


@pytest.mark.parametrize(
    "data",
    [[b"1 (UID 4 FLAGS (\\Seen)"], [b"1 UID 4)"], [b"x (UID 4)"]],
)
def test_parse_rejects_garbage(data: list[bytes | tuple[bytes, bytes] | None]) -> None:
    with pytest.raises(ValueError):
        parse_fetch(data)


def test_parse_ids() -> None:
    assert parse_ids(HEADER) == MessageIds("abc", "<abc@ums.example.com>")
    folded = b"Message-Id:\r\n <x@y>\r\nx-ums-message-id:  \r\n  0123\r\n\r\n"
    assert parse_ids(folded) == MessageIds("0123", "<x@y>")
    assert parse_ids(b"\r\n") == MessageIds("", "")
    assert normalize_message_id(" x@y ") == "<x@y>"


# -- the cache --------------------------------------------------------------------------------


def test_cache_fetches_headers_once_per_uidvalidity() -> None:
    c = FolderCache()
    assert c.plan(7, [1, 2, 3]) == [1, 2, 3]
    assert c.observation({1: SEEN}) is None  # headers not known yet
    c.learn(1, HEADER)
    c.learn(2, b"Message-ID: <other@x>\r\n\r\n")
    c.learn(3, b"Subject: no ids\r\n\r\n")
    got = c.observation({1: SEEN, 2: UNSEEN, 3: UNSEEN})
    assert got == Observation(
        7,
        (
            FolderEntry(1, MessageIds("abc", "<abc@ums.example.com>"), SEEN),
            FolderEntry(2, MessageIds("", "<other@x>"), UNSEEN),
        ),
    )
    assert c.plan(7, [1, 3, 4]) == [4]  # 2 expunged and forgotten, 4 is new
    assert len(c) == 2
    assert c.plan(8, [1, 3, 4]) == [1, 3, 4]  # new UIDVALIDITY: start over
    assert c.observation({}) == Observation(8, ())


# -- wire helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", '"INBOX"'),
        ("Voice Mail", '"Voice Mail"'),
        ("Entwürfe", '"Entw&APw-rfe"'),
        ("R&D", '"R&-D"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        # RFC 3501 §5.1.3 example
        ("~peter/mail/台北/日本語", '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'),
    ],
)
def test_quote_mailbox(name: str, wire: str) -> None:
    assert quote_mailbox(name) == wire


def test_uid_sets() -> None:
    assert uid_sets([]) == []
    assert uid_sets([7, 1, 2, 3, 3]) == ["1:3,7"]
    assert uid_sets([1, 3, 5]) == ["1,3,5"]
    assert uid_sets(range(1, 8), chunk=3) == ["1:3", "4:6", "7"]


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"* 3 EXISTS\r\n", "change"),
        (b"* 2 EXPUNGE\r\n", "change"),
        (b"* 1 FETCH (FLAGS (\\Seen))\r\n", "change"),
        (b"* VANISHED 4\r\n", "change"),
        (b"* 1 RECENT\r\n", ""),
        (b"* OK Still here\r\n", ""),
        (b"* BYE Server shutting down.\r\n", "bye"),
        (b"+ idling\r\n", ""),
    ],
)
def test_idle_event(line: bytes, event: str) -> None:
    assert idle_event(line) == event


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 1.0, 10.0) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert retry_delay(10_000, 1.0, 60.0) == 60.0


# -- the I/O shell's line reader: a timeout loses nothing ----------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5.0)
    yield a, b
    a.close()
    b.close()


def test_reader_keeps_partial_lines_across_timeouts(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r = _LineReader(lambda: a)
    assert r.wait_line(0.01) is None
    b.sendall(b"* 3 EXI")
    assert r.wait_line(0.01) is None
    assert a.gettimeout() == 5.0  # restored
    b.sendall(b"STS\r\n* 1 FETCH {3}\r\nabc)\r\n")
    assert r.wait_line(0.5) == b"* 3 EXISTS\r\n"
    assert r.readline() == b"* 1 FETCH {3}\r\n"
    assert r.read(3) == b"abc"
    assert r.readline() == b")\r\n"


def test_reader_reports_a_closed_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    import imaplib

    a, b = pair
    r = _LineReader(lambda: a)
    b.sendall(b"* BYE")
    b.close()
    with pytest.raises(imaplib.IMAP4.abort):
        r.readline()
