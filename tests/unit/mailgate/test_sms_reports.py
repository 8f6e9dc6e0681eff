"""Report mails for texts mailed to the SMS gateway: subjects, threading, both alternatives, the quote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from ums.mailgate.mime import ComposeSettings
from ums.mailgate.sms_reports import (
    QUOTE_WIDTH,
    SmsReport,
    compose_sms_report,
    report_message_id,
    report_subject,
)

T0 = datetime(2026, 11, 26, 13, 0, 0, tzinfo=UTC)
SETTINGS = ComposeSettings(from_addr="sms@ums.example.com", from_name="SMS Gateway", timezone="Europe/Berlin")
TEXT = "Hallo Jörg,\nbin um 5 in der Straße 🙂\n\nGrüße"


def report(**kw: Any) -> SmsReport:
    base: dict[str, Any] = {
        "kind": "delivered",
        "job_id": "20261126-130000-000-0000abcd",
        "recipient": "alice@example.com",
        "number": "+491512345678",
        "text": TEXT,
        "date": T0 + timedelta(minutes=2),
        "original_subject": "Treffen März",
        "original_message_id": "<CAF1234@mail.example.com>",
        "receipt": "DELIVRD",
        "tries": 1,
        "queued": T0,
        "submitted": T0 + timedelta(seconds=3),
        "finished": T0 + timedelta(seconds=40),
    }
    base.update(kw)
    return SmsReport(**base)


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    # a quoted-printable part decodes with the CRLF line ends of the wire
    return plain.get_content().replace("\r\n", "\n"), rich.get_content().replace("\r\n", "\n")


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("delivered", "SMS to +49 151 2345678: delivered"),
        ("sent", "SMS to +49 151 2345678: sent"),
        ("failed", "SMS to +49 151 2345678: not delivered"),
    ],
)
def test_subject_and_headers(kind: str, subject: str) -> None:
    r = report(kind=kind)
    assert report_subject(r) == subject
    msg = parse(compose_sms_report(r, SETTINGS))
    assert msg["Subject"] == subject
    assert msg["To"] == "alice@example.com"
    assert msg["From"] == "SMS Gateway <sms@ums.example.com>"
    assert msg["In-Reply-To"] == "<CAF1234@mail.example.com>"
    assert msg["References"] == "<CAF1234@mail.example.com>"
    assert msg["Message-ID"] == f"<sms-20261126-130000-000-0000abcd-{kind}@ums.example.com>"
    assert msg["Message-ID"] == report_message_id(r, SETTINGS)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-UMS-Kind"] == "sms-report"
    assert msg["X-UMS-SMS-Job"] == "20261126-130000-000-0000abcd"
    assert msg["X-UMS-SMS-Result"] == kind
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_quoted_text_survives_in_both_alternatives() -> None:
    msg = parse(compose_sms_report(report(), SETTINGS))
    plain, rich = bodies(msg)
    assert "> Hallo Jörg,\n> bin um 5 in der Straße 🙂\n>\n> Grüße\n" in plain
    assert TEXT in rich
    assert 'Your SMS ("Treffen März") to +49 151 2345678 was delivered.' in plain
    assert "Delivered:" in plain and "2026-11-26 14:00:40 CET" in plain
    assert "Receipt:" in plain and "DELIVRD" in plain


def test_html_escapes_the_text() -> None:
    msg = parse(compose_sms_report(report(text='<b>1 < 2 & "x"</b>'), SETTINGS))
    plain, rich = bodies(msg)
    assert '> <b>1 < 2 & "x"</b>' in plain
    assert "&lt;b&gt;1 &lt; 2 &amp; &quot;x&quot;&lt;/b&gt;" in rich
    assert "<b>1" not in rich


def test_failed_receipt_in_a_plain_sentence() -> None:
    r = report(kind="failed", receipt="EXPIRED", reason="not delivered: EXPIRED err 027")
    plain, rich = bodies(parse(compose_sms_report(r, SETTINGS)))
    assert (
        "could not be delivered: the phone could not be reached before the mobile network gave up." in plain
    )
    assert "It will not be tried again" in plain
    assert "Result:    not delivered: EXPIRED err 027\n" in plain  # the technical reason in the table
    assert "the phone could not be reached" in rich


def test_failed_refusal_uses_the_reason() -> None:
    r = report(
        kind="failed",
        receipt="",
        submitted=None,
        finished=T0,
        tries=8,
        reason="not sent after 8 tries: the SMS network refused it (ESME_RTHROTTLED)",
    )
    plain, _ = bodies(parse(compose_sms_report(r, SETTINGS)))
    assert "could not be sent: not sent after 8 tries: the SMS network refused it (ESME_RTHROTTLED)." in plain
    assert "Tries:" in plain and "Finished:" in plain and "Accepted:" not in plain


def test_sent_says_delivery_is_unknown() -> None:
    r = report(kind="sent", receipt="", reason="no delivery receipt within 48 hours")
    plain, _ = bodies(parse(compose_sms_report(r, SETTINGS)))
    assert "was accepted by the SMS network." in plain
    assert "Whether it reached the phone is not known: no delivery receipt within 48 hours." in plain
    assert "Result:    sent: no delivery receipt within 48 hours\n" in plain


def test_same_report_same_bytes() -> None:
    assert compose_sms_report(report(), SETTINGS) == compose_sms_report(report(), SETTINGS)
    assert compose_sms_report(report(), SETTINGS) != compose_sms_report(report(kind="sent"), SETTINGS)


def test_long_text_is_wrapped_in_the_quote() -> None:
    long_text = " ".join(["Wort"] * 400) + " " + "x" * 300  # one line of 2300 characters, ASCII
    data = compose_sms_report(report(text=long_text), SETTINGS)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    plain, rich = bodies(parse(data))
    quoted = [line for line in plain.splitlines() if line.startswith(">")]
    assert all(len(line) <= QUOTE_WIDTH for line in quoted)
    assert " ".join(line[2:] for line in quoted).replace(" x", "x").startswith("Wort Wort")
    assert "".join(line[2:] for line in quoted).count("x") == 300
    assert long_text in rich


def test_without_html() -> None:
    settings = ComposeSettings(from_addr="sms@ums.example.com", html=False)
    msg = parse(compose_sms_report(report(), settings))
    assert msg.get_content_type() == "text/plain"
    assert "🙂" in msg.get_content()


def test_unusable_original_message_id_is_left_out() -> None:
    msg = parse(compose_sms_report(report(original_message_id="no id here"), SETTINGS))
    assert msg["In-Reply-To"] is None and msg["References"] is None
    msg = parse(compose_sms_report(report(original_message_id="abc@example.com"), SETTINGS))
    assert msg["In-Reply-To"] == "<abc@example.com>"


def test_number_as_written_is_kept_when_not_e164() -> None:
    assert report_subject(report(number="0151 2345678")) == "SMS to 0151 2345678: delivered"
    assert report_subject(report(number="")) == "SMS to an unknown number: delivered"


def test_control_characters_do_not_break_the_mail() -> None:
    r = report(text="a\x00b\x1bc\r\nd", original_subject="x\r\nBcc: evil@example.com")
    msg = parse(compose_sms_report(r, SETTINGS))
    assert msg["Bcc"] is None
    plain, _ = bodies(msg)
    assert "> a b c\n> d\n" in plain


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kind": "maybe"}, "unknown SMS report kind"),
        ({"recipient": "alice"}, "e-mail address"),
        ({"job_id": "///"}, "job_id"),
        ({"tries": -1}, "tries"),
        ({"parts": 0}, "parts"),
        ({"date": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"finished": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_reports_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        report(**kw)


def test_unusable_recipient_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a usable e-mail address"):
        compose_sms_report(report(recipient="a b@@example.com"), SETTINGS)
