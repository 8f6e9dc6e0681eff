"""Delivery through a smarthost (an aiosmtpd sink): accepted, sink down, 550, giving up."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from tests.unit.pipeline.helpers import Sink, free_port, setup_env
from ums.pipeline.tasks import process_message, run_deliver, sweep


def test_delivered_to_the_smarthost(tmp_path: Path, sink: Sink) -> None:
    env = setup_env(tmp_path, smarthost=f"127.0.0.1:{sink.port}")
    rec = env.store()
    process_message(rec.id).apply_async()
    [(mail_from, rcpts, data)] = sink.received
    assert (mail_from, rcpts) == ("vm@ums.example.com", ["alice@example.com"])
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Message-ID"] == rec.message_id
    assert msg["Subject"] == "Voicemail from Jane Doe (+49 89 1234567), 0:02"
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.delivery == "delivered"
    assert env.maildir("alice@example.com") == []


def test_sink_down_waits_and_delivers_when_it_returns(tmp_path: Path) -> None:
    port = free_port()
    env = setup_env(tmp_path, smarthost=f"127.0.0.1:{port}")
    rec = env.store()
    process_message(rec.id).apply_async()

    stored = env.ctx.index.get(rec.id)
    assert stored is not None
    assert (stored.delivery, stored.attempts) == ("pending", 1)
    assert stored.next_attempt_at is not None
    wait = (stored.next_attempt_at - env.clock()).total_seconds()
    assert 54 <= wait <= 66  # retry_first = 60 s, +-10 % jitter
    assert "temporary" in stored.last_error
    assert sweep() == 0  # not due yet

    # the second failure waits twice as long
    env.clock.advance(wait)
    assert sweep() == 1
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.attempts == 2
    assert stored.next_attempt_at is not None
    assert 108 <= (stored.next_attempt_at - env.clock()).total_seconds() <= 132

    sink = Sink(port).start()
    try:
        env.clock.now = stored.next_attempt_at
        assert sweep() == 1
        [(_, _, data)] = sink.received
    finally:
        sink.stop()
    assert email.message_from_bytes(data)["Message-ID"] == rec.message_id
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and (stored.delivery, stored.attempts) == ("delivered", 3)


def test_permanent_refusal_fails_and_reports_to_the_admin(tmp_path: Path, sink: Sink) -> None:
    env = setup_env(tmp_path, smarthost=f"127.0.0.1:{sink.port}")
    sink.handler.refuse = {"alice@example.com"}
    rec = env.store()
    process_message(rec.id).apply_async()

    stored = env.ctx.index.get(rec.id)
    assert stored is not None
    assert stored.delivery == "failed" and "550" in stored.last_error and stored.attempts == 1
    assert env.ctx.spool.exists(rec.files[0])  # kept
    [(_, rcpts, data)] = sink.received
    assert rcpts == ["admin@example.com"]
    report = email.message_from_bytes(data, policy=email.policy.default)
    assert report["Subject"] == "ums: 1 message could not be delivered"
    body = report.get_body(preferencelist=("plain",))
    assert body is not None and rec.id in body.get_content() and rec.message_id in body.get_content()

    # nothing more happens for a failed message
    assert run_deliver(env.ctx, rec.id).result == "skip"
    assert sweep() == 0
    assert len(sink.received) == 1


def test_report_goes_to_the_admins_maildir_when_the_smarthost_refuses_it(tmp_path: Path, sink: Sink) -> None:
    env = setup_env(tmp_path, smarthost=f"127.0.0.1:{sink.port}")
    sink.handler.refuse = {"*"}
    rec = env.store()
    process_message(rec.id).apply_async()
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.delivery == "failed"
    assert sink.received == []
    [path] = env.maildir("admin@example.com")
    report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert report["Subject"] == "ums: 1 message could not be delivered"


def test_maildir_mode_reports_into_the_admins_maildir(tmp_path: Path) -> None:
    env = setup_env(tmp_path)
    rec = env.store()
    # a Maildir that cannot be created: the owner's folder name is taken by a file
    env.ctx.maildir_root.mkdir(parents=True)
    (env.ctx.maildir_root / "alice@example.com").write_text("in the way")
    process_message(rec.id).apply_async()
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.delivery == "pending" and "maildir" in stored.last_error

    env.clock.advance(2 * 86400)  # past give_up_days = 1
    assert sweep() == 1
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.delivery == "failed" and stored.attempts == 2
    [path] = env.maildir("admin@example.com")
    report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    body = report.get_body(preferencelist=("plain",))
    assert body is not None and "within 1 days" in body.get_content()


def test_gives_up_after_give_up_days(tmp_path: Path) -> None:
    port = free_port()
    env = setup_env(tmp_path, smarthost=f"127.0.0.1:{port}")
    rec = env.store()
    process_message(rec.id).apply_async()
    env.clock.advance(86400 + 1)
    assert sweep() == 1
    stored = env.ctx.index.get(rec.id)
    assert stored is not None and stored.delivery == "failed" and stored.attempts == 2
    # the smarthost is down for the report too: it lands in the admin's local Maildir
    assert len(env.maildir("admin@example.com")) == 1
    assert sweep() == 0
