"""Composition of the notification mails."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from ums.mailgate.mime import (
    Attachment,
    ComposeSettings,
    attachment_filename,
    caller_text,
    compose,
    compose_admin_report,
    compose_fax,
    compose_sms,
    compose_voicemail,
    format_duration,
)
from ums.store.models import MessageRecord, new_record

T0 = datetime(2024, 7, 1, 10, 15, 30, tzinfo=UTC)
SETTINGS = ComposeSettings(
    from_addr="voicemail@ums.example.com",
    from_name="Voicemail",
    reply_to="helpdesk@example.com",
    admin="admin@example.com",
    timezone="Europe/Berlin",
)


def record(**kw: Any) -> MessageRecord:
    base: dict[str, Any] = {
        "now": T0,
        "rng": random.Random(4),
        "domain": "ums.example.com",
        "mailbox": "100",
        "owner": "alice@example.com",
        "kind": "voice",
        "caller_number": "+49891234567",
        "caller_name": "Jane Doe",
        "duration": 42.4,
        "files": ("voice/x.wav",),
    }
    base.update(kw)
    return new_record(**base)


def parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(data)


def assert_wire_clean(data: bytes) -> None:
    assert data.isascii(), "7-bit clean: no 8BITMIME needed"
    assert b"\n" not in data.replace(b"\r\n", b""), "every line ends in CRLF"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998  # RFC 5322 §2.1.1


def test_voicemail_mail() -> None:
    r = record()
    name = attachment_filename(r, "wav", SETTINGS)
    assert name == "voicemail-20240701-121530-Jane Doe.wav"
    wav = b"RIFF" + bytes(range(256)) * 20
    data = compose_voicemail(r, wav, name, "audio/wav", SETTINGS)
    assert_wire_clean(data)
    msg = parse(data)
    assert msg["Subject"] == "Voicemail from Jane Doe (+49 89 1234567), 0:42"
    assert msg["From"] == "Voicemail <voicemail@ums.example.com>"
    assert msg["Reply-To"] == "helpdesk@example.com"
    assert msg["To"] == "alice@example.com"
    assert msg["Message-ID"] == r.message_id
    assert msg["Date"] == "Mon, 01 Jul 2024 12:15:30 +0200"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-UMS-Message-Id"] == r.id
    assert msg["X-UMS-Kind"] == "voice"
    assert msg.get_content_type() == "multipart/mixed"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    body = text.get_content()
    for expected in ("Jane Doe", "+49 89 1234567", "2024-07-01 12:15:30 CEST", "0:42", "Mailbox:  100"):
        assert expected in body
    assert "<td>+49 89 1234567</td>" in html.get_content()
    attachments = list(msg.iter_attachments())
    assert len(attachments) == 1
    att = attachments[0]
    assert att.get_content_type() == "audio/wav"
    assert att.get_filename() == name
    assert att.get_content() == wav


def test_same_record_gives_same_bytes() -> None:
    r = record()
    one = compose_voicemail(r, b"RIFF", "a.wav", "audio/wav", SETTINGS)
    two = compose_voicemail(r, b"RIFF", "a.wav", "audio/wav", SETTINGS)
    assert one == two
    other = compose_voicemail(record(rng=random.Random(5)), b"RIFF", "a.wav", "audio/wav", SETTINGS)
    assert parse(one)["Message-ID"] != parse(other)["Message-ID"]


def test_non_ascii_subject_and_filename_are_encoded() -> None:
    r = record(caller_name="Jürgen Müller")
    name = attachment_filename(r, "opus", SETTINGS)
    data = compose_voicemail(r, b"OggS", name, "audio/ogg", SETTINGS)
    assert_wire_clean(data)
    assert b"=?utf-8?" in data  # RFC 2047 encoded word
    assert b"filename*=utf-8''voicemail-20240701-121530-J%C3%BCrgen%20M%C3%BCller.opus" in data  # RFC 2231
    msg = parse(data)
    assert msg["Subject"] == "Voicemail from Jürgen Müller (+49 89 1234567), 0:42"
    assert next(iter(msg.iter_attachments())).get_filename() == name
    body = msg.get_body(("plain",))
    assert body is not None and "Jürgen Müller" in body.get_content()


def test_caller_descriptions() -> None:
    company = {"company": "ACME", "switchboard": "+49891234560"}
    assert caller_text(record()) == ("Jane Doe (+49 89 1234567)", "Jane Doe")
    assert caller_text(record(meta=company)) == (
        "Jane Doe (+49 89 1234567)",
        "Jane Doe (company: ACME, switchboard +49 89 1234560)",
    )
    assert caller_text(record(caller_name="", meta=company)) == (
        "+49 89 1234567 (ACME)",
        "company: ACME, switchboard +49 89 1234560",
    )
    assert caller_text(record(caller_name="")) == ("+49 89 1234567", "")
    assert caller_text(record(caller_name="", caller_number="")) == ("unknown caller", "")
    assert caller_text(record(caller_number="")) == ("Jane Doe", "Jane Doe")
    data = compose_voicemail(record(caller_name="", meta=company), b"x", "a.wav", "audio/wav", SETTINGS)
    msg = parse(data)
    assert msg["Subject"] == "Voicemail from +49 89 1234567 (ACME), 0:42"
    body = msg.get_body(("plain",))
    assert body is not None and "company: ACME, switchboard +49 89 1234560" in body.get_content()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (0.2, "0:00"), (0.5, "0:01"), (42.4, "0:42"), (61, "1:01"), (3725, "1:02:05")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_fax_mail() -> None:
    r = record(
        kind="fax", duration=None, pages=3, caller_name="", meta={"company": "ACME", "csid": "+49 89 1234560"}
    )
    pdf = b"%PDF-1.4\n" + b"x" * 500
    data = compose_fax(r, pdf, attachment_filename(r, "pdf", SETTINGS), "application/pdf", SETTINGS)
    assert_wire_clean(data)
    msg = parse(data)
    assert msg["Subject"] == "Fax from +49 89 1234567 (ACME), 3 pages"
    assert msg["X-UMS-Kind"] == "fax"
    body = msg.get_body(("plain",))
    assert body is not None and "Station ID:" in body.get_content() and "Pages:" in body.get_content()
    att = next(iter(msg.iter_attachments()))
    assert (att.get_content_type(), att.get_filename()) == (
        "application/pdf",
        "fax-20240701-121530-+49891234567.pdf",
    )
    assert att.get_content() == pdf
    one = compose_fax(r.with_changes(pages=1), pdf, "f.tif", "image/tiff", SETTINGS)
    assert parse(one)["Subject"].endswith(", 1 page")


def test_sms_mail_is_text_only() -> None:
    r = record(kind="sms", duration=None)
    data = compose_sms(r, "Call me back\nplease — thanks", ComposeSettings(html=False))
    assert_wire_clean(data)
    msg = parse(data)
    assert msg["Subject"] == "SMS from Jane Doe (+49 89 1234567)"
    assert msg.get_content_type() == "text/plain"
    assert msg["Reply-To"] is None
    content = msg.get_content().replace("\r\n", "\n")
    assert content.startswith("Call me back\nplease — thanks\n")


def test_sms_mail_with_a_long_ascii_line_keeps_wire_lines_short() -> None:
    text = "word " * 400  # one 2000-character ASCII line: 7bit would break RFC 5322's 998 limit
    data = compose_sms(record(kind="sms", duration=None), text, ComposeSettings(html=False))
    assert_wire_clean(data)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert parse(data).get_content().replace("\r\n", "\n").startswith(text.rstrip())


def test_generic_compose_without_attachments_has_html_alternative() -> None:
    data = compose(record(), [], "Hello", ["line one", "", "<b>not bold</b>"], SETTINGS, [("Key", "a & b")])
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    html = msg.get_body(("html",))
    assert html is not None
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html.get_content()
    assert "a &amp; b" in html.get_content()
    with pytest.raises(ValueError):
        compose(record(), [Attachment(b"x", "x", "nonsense")], "s", [], SETTINGS)


def test_admin_report() -> None:
    r1 = record().with_changes(attempts=17, last_error="451 4.3.0 mailbox busy")
    r2 = record(rng=random.Random(9), owner="bob@example.com", kind="fax", pages=2, duration=None)
    now = T0 + timedelta(days=5)
    data = compose_admin_report([r1, r2], SETTINGS, now, reason="gave up after 5 days")
    assert_wire_clean(data)
    msg = parse(data)
    assert msg["To"] == "admin@example.com"
    assert msg["Subject"] == "ums: 2 messages could not be delivered"
    assert re.fullmatch(r"<report-\d{14}-[0-9a-f]{16}@ums\.example\.com>", msg["Message-ID"])
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    for expected in (
        r1.id,
        r2.id,
        "451 4.3.0 mailbox busy",
        "bob@example.com",
        "voice/x.wav",
        "gave up after 5 days",
    ):
        assert expected in text
    assert data == compose_admin_report([r1, r2], SETTINGS, now, reason="gave up after 5 days")


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        ComposeSettings(from_addr="nobody")
    with pytest.raises(ValueError):
        ComposeSettings(timezone="Mars/Olympus_Mons")
    assert ComposeSettings(from_addr="a@mail.example.org").domain == "mail.example.org"
