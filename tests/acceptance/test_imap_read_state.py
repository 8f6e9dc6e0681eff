"""Read state from a real IMAP server: ``\\Seen`` in Dovecot turns a voicemail read in the index.

A private Dovecot (Debian ``dovecot-imapd``) runs on loopback with one user; the
test APPENDs two composed voicemail mails (and one foreign mail) to its INBOX,
points an :class:`~ums.mailgate.imap_service.ImapWatcher` at it and then acts as
the owner in a mail client: marks a message read and unread, deletes one, and
stops and restarts the server.  Every wait is bounded and waits on the
watcher's own events.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.acceptance.conftest import require
from tests.peers.dovecot import Dovecot, MailUser
from ums.config import ImapSettings, Mailbox
from ums.mailgate.imap_service import ImapWatcher, stop_watchers, watchers_for
from ums.mailgate.mime import ComposeSettings, compose_voicemail
from ums.store.index import MessageIndex
from ums.store.models import MessageRecord, new_record

pytestmark = pytest.mark.acceptance

WAIT = 5.0
COMPOSE = ComposeSettings(from_addr="voicemail@ums.test", from_name="Voicemail")


class Changes:
    """``on_change`` target: counts calls, thread-safe."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, mailbox: str) -> None:
        with self._lock:
            self.calls.append(mailbox)

    def count(self) -> int:
        with self._lock:
            return len(self.calls)


def fake_wav() -> bytes:
    samples = bytes(1600)
    header = b"RIFF" + (36 + len(samples)).to_bytes(4, "little") + b"WAVEfmt "
    header += (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    header += (8000).to_bytes(4, "little") + (16000).to_bytes(4, "little")
    header += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return header + b"data" + len(samples).to_bytes(4, "little") + samples


def deliver_two(index: MessageIndex, user: MailUser, seed: int) -> tuple[MessageRecord, MessageRecord]:
    rng = random.Random(seed)
    out = []
    for n, (number, name) in enumerate((("+498912345", "Jane Doe"), ("+493055555", "John Roe"))):
        rec = new_record(
            now=datetime(2024, 7, 1, 10, 0, n, tzinfo=UTC),
            rng=rng,
            domain="ums.test",
            mailbox="100",
            owner="bob@ums.test",
            kind="voice",
            caller_number=number,
            caller_name=name,
            duration=0.1,
        )
        index.add(rec)
        index.mark_delivered(rec.id)
        user.append(compose_voicemail(rec, fake_wav(), "voicemail.wav", "audio/wav", COMPOSE))
        out.append(rec)
    foreign = EmailMessage()
    foreign["From"] = "friend@example.com"
    foreign["To"] = "bob@ums.test"
    foreign["Subject"] = "lunch?"
    foreign["Message-ID"] = "<lunch-1@example.com>"
    foreign.set_content("see you at noon")
    user.append(bytes(foreign))
    return out[0], out[1]


def state(index: MessageIndex, rec: MessageRecord) -> str:
    got = index.get(rec.id)
    assert got is not None
    return got.state


@pytest.fixture
def dovecot(run_dir: Path, dump_logs_on_failure: None) -> Iterator[Dovecot]:
    require("dovecot")
    with Dovecot(run_dir) as server:
        yield server


@pytest.fixture
def index(run_dir: Path) -> Iterator[MessageIndex]:
    with MessageIndex(run_dir / "index.sqlite") as idx:
        yield idx


def make_watcher(
    dovecot: Dovecot, index: MessageIndex, changes: Changes, poll_interval: float, **kw: object
) -> ImapWatcher:
    settings = ImapSettings(
        host=dovecot.host,
        user=dovecot.user,
        password=dovecot.password,
        port=dovecot.port,
        tls="none",
        poll_interval=poll_interval,
    )
    return ImapWatcher("100", settings, index, changes, **kw)  # type: ignore[arg-type]


def test_idle_seen_unseen_and_deleted(dovecot: Dovecot, index: MessageIndex) -> None:
    user = dovecot.mail_user()
    a, b = deliver_two(index, user, seed=1)
    changes = Changes()
    # a long poll interval: within WAIT only IDLE can bring the news
    watcher = make_watcher(dovecot, index, changes, poll_interval=60.0)
    watcher.start()
    try:
        assert watcher.wait(lambda w: w.rounds >= 1, WAIT), watcher.last_error
        assert watcher.idle, "Dovecot offers IDLE; the watcher should use it"
        assert (state(index, a), state(index, b)) == ("new", "new")
        assert changes.count() == 0

        user.set_seen(a.id)
        assert watcher.wait(lambda w: state(index, a) == "read", WAIT), "\\Seen did not arrive through IDLE"
        assert watcher.wait(lambda w: changes.count() == 1, WAIT)
        assert changes.calls == ["100"]
        assert state(index, b) == "new"

        user.set_seen(a.id, seen=False)
        assert watcher.wait(lambda w: state(index, a) == "new", WAIT)
        assert watcher.wait(lambda w: changes.count() == 2, WAIT)

        user.delete(b.id)
        assert watcher.wait(lambda w: state(index, b) == "read", WAIT), (
            "a deleted voicemail keeps the lamp on"
        )
        assert state(index, a) == "new"
        assert watcher.connects == 1 and watcher.failures == 0
    finally:
        watcher.stop()
    # the watcher only looked: it never changed a flag on the server
    flags = user.flags()
    assert len(flags) == 2 and not any("\\Seen" in f for f in flags.values())


def test_polling_without_idle(dovecot: Dovecot, index: MessageIndex) -> None:
    user = dovecot.mail_user()
    a, b = deliver_two(index, user, seed=2)
    changes = Changes()
    watcher = make_watcher(dovecot, index, changes, poll_interval=1.0, use_idle=False)
    watcher.start()
    try:
        assert watcher.wait(lambda w: w.rounds >= 1, WAIT), watcher.last_error
        assert not watcher.idle
        start = watcher.rounds
        user.set_seen(b.id)
        assert watcher.wait(lambda w: state(index, b) == "read", WAIT)
        assert watcher.rounds > start
        assert state(index, a) == "new"
        assert changes.calls == ["100"]
    finally:
        watcher.stop()


def test_outage_changes_nothing_and_the_watcher_reconnects(dovecot: Dovecot, index: MessageIndex) -> None:
    user = dovecot.mail_user()
    a, b = deliver_two(index, user, seed=3)
    user.set_seen(a.id)
    changes = Changes()
    watcher = make_watcher(dovecot, index, changes, poll_interval=60.0, retry_first=0.2, retry_max=0.5)
    watcher.start()
    try:
        assert watcher.wait(lambda w: w.rounds >= 1, WAIT), watcher.last_error
        assert (state(index, a), state(index, b)) == ("read", "new")
        assert changes.count() == 1
        rounds = watcher.rounds

        dovecot.stop()
        assert watcher.wait(lambda w: w.failures >= 3, WAIT), "the watcher did not retry"
        assert not watcher.connected
        assert watcher.last_error
        assert (state(index, a), state(index, b)) == ("read", "new")
        assert changes.count() == 1, "an IMAP outage must not change any state"
        assert watcher.rounds == rounds

        dovecot.start()
        assert watcher.wait(lambda w: w.connects >= 2 and w.rounds > rounds, WAIT), watcher.last_error
        assert (state(index, a), state(index, b)) == ("read", "new")
        assert changes.count() == 1

        user.set_seen(b.id)
        assert watcher.wait(lambda w: state(index, b) == "read", WAIT)
        assert changes.count() == 2
    finally:
        watcher.stop()
    assert watcher.wait(lambda w: not w.connected, WAIT)


def test_stop_is_prompt_in_every_phase(dovecot: Dovecot, index: MessageIndex) -> None:
    """stop() returns quickly while in IDLE, while polling and while waiting to reconnect."""
    changes = Changes()
    for kw in ({"use_idle": True}, {"use_idle": False}):
        watcher = make_watcher(dovecot, index, changes, poll_interval=60.0, **kw)
        watcher.start()
        assert watcher.wait(lambda w: w.rounds >= 1, WAIT), watcher.last_error
        t0 = time.monotonic()
        watcher.stop()
        assert time.monotonic() - t0 < 2.0
        assert watcher._thread is not None and not watcher._thread.is_alive()
    dovecot.stop()
    watcher = make_watcher(dovecot, index, changes, poll_interval=60.0, retry_first=30.0, retry_max=30.0)
    watcher.start()
    assert watcher.wait(lambda w: w.failures >= 1, WAIT)
    t0 = time.monotonic()
    watcher.stop()
    assert time.monotonic() - t0 < 2.0
    assert watcher._thread is not None and not watcher._thread.is_alive()


def test_one_watcher_per_mailbox_with_imap(dovecot: Dovecot, index: MessageIndex) -> None:
    """How the server runs them: ``watchers_for(config.mailboxes, ...)``, ``stop_watchers(...)``."""
    user = dovecot.mail_user()
    a, _ = deliver_two(index, user, seed=4)
    imap = ImapSettings(
        host=dovecot.host, user=dovecot.user, password=dovecot.password, port=dovecot.port, tls="none"
    )
    mailboxes = [Mailbox("100", "bob@ums.test", imap=imap), Mailbox("200", "carol@ums.test")]
    changes = Changes()
    watchers = watchers_for(mailboxes, index, changes)
    assert [w.mailbox for w in watchers] == ["100"]
    for w in watchers:
        w.start()
    try:
        user.set_seen(a.id)
        assert watchers[0].wait(lambda w: state(index, a) == "read", WAIT), watchers[0].last_error
        assert changes.calls == ["100"]
    finally:
        stop_watchers(watchers)
    assert all(w.join(0.0) for w in watchers)


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls(run_dir: Path, index: MessageIndex, dump_logs_on_failure: None, tls: str) -> None:
    """Implicit TLS (IMAP4_SSL) and STARTTLS, with certificate checking against a private CA."""
    require("dovecot", "openssl")
    with Dovecot(run_dir, tls=True) as server:
        user = server.mail_user()
        a, _ = deliver_two(index, user, seed=5)
        settings = ImapSettings(
            host=server.host,
            user=server.user,
            password=server.password,
            port=server.tls_port if tls == "implicit" else server.port,
            tls=tls,  # type: ignore[arg-type]
            poll_interval=60.0,
        )
        changes = Changes()
        watcher = ImapWatcher("100", settings, index, changes, ssl_context=server.ssl_context())
        watcher.start()
        try:
            assert watcher.wait(lambda w: w.rounds >= 1, WAIT), watcher.last_error
            assert watcher.idle
            user.set_seen(a.id)
            assert watcher.wait(lambda w: state(index, a) == "read", WAIT), watcher.last_error
            assert changes.calls == ["100"]
        finally:
            watcher.stop()

        # an untrusted certificate is a failure (retried), never a state change
        watcher = ImapWatcher("100", settings, index, changes, retry_first=0.2, retry_max=0.2)
        watcher.start()
        try:
            assert watcher.wait(lambda w: w.failures >= 2, WAIT)
            assert "CERTIFICATE_VERIFY_FAILED" in watcher.last_error
            assert watcher.connects == 0 and changes.calls == ["100"]
        finally:
            watcher.stop()
