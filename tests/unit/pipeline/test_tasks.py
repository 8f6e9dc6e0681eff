"""The pipeline run eagerly: stored voicemail -> one e-mail in the owner's Maildir."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.unit.pipeline.helpers import Env, setup_env
from ums.pipeline import deliver as deliver_mod
from ums.pipeline.deliver import ensure_composed, send_mail
from ums.pipeline.tasks import process_chain, process_message, run_deliver, run_process, sweep


def read(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def attachments(msg: EmailMessage) -> list[tuple[str, str, bytes]]:
    out = []
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        out.append((part.get_filename() or "", part.get_content_type(), data))
    return out


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return setup_env(tmp_path)


def test_voicemail_lands_in_the_owners_maildir(env: Env) -> None:
    rec = env.store(seconds=2.0)
    process_message(rec.id).apply_async()

    files = env.maildir("alice@example.com")
    assert len(files) == 1
    msg = read(files[0])
    assert msg["Message-ID"] == rec.message_id
    assert msg["To"] == "alice@example.com"
    # no name in the record: the directory supplies it
    assert msg["Subject"] == "Voicemail from Jane Doe (+49 89 1234567), 0:02"
    [(name, ctype, data)] = attachments(msg)
    assert ctype == "audio/wav"
    assert name.endswith("Jane Doe.wav")
    assert data == env.ctx.spool.read(rec.files[0])

    stored = env.ctx.index.get(rec.id)
    assert stored is not None
    assert (stored.delivery, stored.attempts, stored.next_attempt_at) == ("delivered", 1, None)
    assert not env.ctx.spool.exists(f"mail/{rec.id}.eml")  # the composed copy is not kept
    assert env.ctx.spool.exists(rec.files[0])  # the recording is


def test_running_twice_delivers_once(env: Env) -> None:
    rec = env.store()
    process_message(rec.id).apply_async()
    process_message(rec.id).apply_async()
    assert run_deliver(env.ctx, rec.id).result == "skip"
    assert len(env.maildir("alice@example.com")) == 1
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.attempts == 1


def test_crash_between_delivery_and_bookkeeping_gives_one_copy(env: Env) -> None:
    rec = env.store()
    # the previous run handed the mail over and died before mark_delivered
    data, _ = ensure_composed(env.ctx, rec)
    assert send_mail(env.ctx, rec.owner, data) is False
    process_message(rec.id).apply_async()
    assert len(env.maildir("alice@example.com")) == 1
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.delivery == "delivered"


@pytest.mark.parametrize(
    ("mailbox", "owner", "ext", "ctype", "magic"),
    [
        ("101", "bob@example.com", "mp3", "audio/mpeg", (b"ID3", b"\xff")),
        ("102", "carol@example.com", "opus", "audio/ogg", (b"OggS",)),
    ],
)
def test_attachment_format_per_mailbox(
    env: Env, mailbox: str, owner: str, ext: str, ctype: str, magic: tuple[bytes, ...]
) -> None:
    rec = env.store(mailbox, caller_name="Max Muster", seconds=1.0)
    process_message(rec.id).apply_async()
    [path] = env.maildir(owner)
    msg = read(path)
    assert msg["Subject"] == "Voicemail from Max Muster (+49 89 1234567), 0:01"
    [(name, got_type, data)] = attachments(msg)
    assert (got_type, Path(name).suffix) == (ctype, f".{ext}")
    assert data == env.ctx.spool.read(f"voice/{rec.id}.{ext}")
    assert data.startswith(magic)


def test_encoder_failure_falls_back_to_wav(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> tuple[bytes, str, str]:
        raise RuntimeError("no encoder")

    monkeypatch.setattr(deliver_mod, "encode_audio", broken)
    rec = env.store("101")
    process_message(rec.id).apply_async()
    [path] = env.maildir("bob@example.com")
    [(name, ctype, _)] = attachments(read(path))
    assert (ctype, Path(name).suffix) == ("audio/wav", ".wav")


def test_company_match_in_subject(env: Env) -> None:
    rec = env.store(caller_number="+49891234500", meta={"company": "ACME", "switchboard": "+49891234500"})
    process_message(rec.id).apply_async()
    [path] = env.maildir("alice@example.com")
    assert read(path)["Subject"] == "Voicemail from +49 89 1234500 (ACME), 0:02"


def test_missing_recording_is_retried_not_lost(env: Env) -> None:
    rec = env.store()
    env.ctx.spool.remove(rec.files[0])
    process_message(rec.id).apply_async()
    stored = env.ctx.index.get(rec.id)
    assert stored is not None
    assert stored.delivery == "pending" and stored.attempts == 1
    assert "compose" in stored.last_error
    assert stored.next_attempt_at is not None and stored.next_attempt_at > env.clock()


def test_unknown_id_does_nothing(env: Env) -> None:
    process_message("0" * 32).apply_async()
    assert env.maildir("alice@example.com") == []


def test_sweep_resubmits_due_deliveries_only(env: Env) -> None:
    due = env.store()
    later = env.store()
    done = env.store()
    env.ctx.index.record_attempt(later.id, False, "451 later", env.clock.now.replace(year=2030))
    process_message(done.id).apply_async()
    assert len(env.maildir("alice@example.com")) == 1

    assert sweep() == 1
    ids = {read(p)["X-UMS-Message-Id"] for p in env.maildir("alice@example.com")}
    assert ids == {due.id, done.id}
    stored = env.ctx.index.get(later.id)
    assert stored is not None and stored.delivery == "pending"
    assert sweep() == 0


def test_sweep_min_age_leaves_fresh_messages_to_their_chain(env: Env) -> None:
    rec = env.store()
    assert sweep(min_age=60.0) == 0
    env.clock.advance(61)
    assert sweep(min_age=60.0) == 1
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.delivery == "delivered"


def test_the_single_task_and_the_old_chain_deliver_the_same_way(env: Env) -> None:
    one, two = env.store(), env.store()
    process_message(one.id).apply_async()  # one queue trip: all four steps in one invocation
    process_chain(two.id).apply_async()  # a message queued by an older version: four trips
    assert len(env.maildir("alice@example.com")) == 2
    for rec in (one, two):
        stored = env.ctx.index.get(rec.id)
        assert stored is not None and (stored.delivery, stored.attempts) == ("delivered", 1)
    assert run_process(env.ctx, one.id).result == "skip"  # again: nothing to do
    assert len(env.maildir("alice@example.com")) == 2
