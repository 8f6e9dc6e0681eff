"""Delivery reports for faxes mailed to the gateway: subjects, fields, threading, attachments, bytes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from ums.mailgate.fax_reports import (
    FaxAttempt,
    FaxReport,
    compose_fax_report,
    report_message_id,
    report_subject,
    stopped_reason,
)
from ums.mailgate.mime import ComposeSettings

T0 = datetime(2026, 11, 26, 13, 0, 0, tzinfo=UTC)
SETTINGS = ComposeSettings(from_addr="fax@ums.example.com", from_name="Fax Gateway", timezone="Europe/Berlin")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
PDF = b"%PDF-1.4\n" + b"x" * 200


def report(**kw: Any) -> FaxReport:
    base: dict[str, Any] = {
        "kind": "success",
        "job_id": "job-0042",
        "sender": "alice@example.com",
        "destination": "+49 30 123456",
        "date": T0 + timedelta(minutes=12),
        "original_subject": "Bestellung März",
        "original_message_id": "<CAF1234@mail.example.com>",
        "pages_sent": 3,
        "pages_total": 3,
        "duration": 95.4,
        "rate": 14400,
        "ecm": True,
        "resolution": "fine",
        "remote_csid": "+49 30 123450",
        "tries": 2,
        "max_tries": 3,
        "attempts": (
            FaxAttempt(T0, "busy"),
            FaxAttempt(T0 + timedelta(minutes=10), "sent", 3),
        ),
    }
    base.update(kw)
    return FaxReport(**base)


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def text_of(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_success_report_headers_and_fields() -> None:
    data = compose_fax_report(report(), SETTINGS)
    assert all(line.endswith(b"\r") for line in data.split(b"\n")[:-1])  # CRLF everywhere
    assert data.isascii()
    msg = parse(data)
    assert msg["Subject"] == "Fax to +49 30 123456 sent: 3 pages"
    assert msg["From"] == "Fax Gateway <fax@ums.example.com>"
    assert msg["To"] == "alice@example.com"
    assert msg["Date"] == "Thu, 26 Nov 2026 14:12:00 +0100"
    assert msg["Message-ID"] == "<fax-job-0042-success-2@ums.example.com>"
    assert msg["In-Reply-To"] == msg["References"] == "<CAF1234@mail.example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert (msg["X-UMS-Kind"], msg["X-UMS-Fax-Job"], msg["X-UMS-Fax-Result"]) == (
        "fax-report",
        "job-0042",
        "success",
    )
    text = text_of(msg, "plain")
    assert 'Your fax ("Bestellung März") to +49 30 123456 was sent: 3 pages.' in text
    for line in (
        "Fax number:     +49 30 123456",
        "Your mail:      Bestellung März",
        "Result:         sent",
        "Pages sent:     3",
        "Duration:       1:35",
        "Speed:          14400 bit/s",
        "ECM:            yes",
        "Resolution:     fine",
        "Remote station: +49 30 123450",
        "Tries:          2 of 3",
        "  1  2026-11-26 14:00:00 CET  busy",
        "  2  2026-11-26 14:10:00 CET  sent (3 pages)",
    ):
        assert line in text.splitlines()
    html = text_of(msg, "html")
    assert "<td>14400 bit/s</td>" in html and "<td>Bestellung März</td>" in html
    assert '<td style="padding-right: 12px">busy</td>' in html


def test_failure_report() -> None:
    r = report(
        kind="failure",
        pages_sent=2,
        pages_total=5,
        tries=3,
        reason=stopped_reason(2, 5, "no answer to the page"),
        attempts=(FaxAttempt(T0, "busy"), FaxAttempt(T0, "no answer"), FaxAttempt(T0, "stopped", 2)),
    )
    msg = parse(compose_fax_report(r, SETTINGS))
    assert (
        msg["Subject"]
        == "Fax to +49 30 123456 failed: stopped at page 3 of 5: no answer to the page (3 tries)"
    )
    assert msg["Message-ID"] == "<fax-job-0042-failure-3@ums.example.com>"
    text = text_of(msg, "plain")
    assert "could not be sent: stopped at page 3 of 5: no answer to the page." in text
    assert "It was given up after 3 tries" in text
    assert "2 of 5 pages reached the receiving fax machine." in text
    assert "Pages sent:     2 of 5" in text.splitlines()


@pytest.mark.parametrize(
    ("kw", "subject"),
    [
        ({"kind": "failure", "reason": "busy", "tries": 3}, "Fax to +49 30 123456 failed: busy (3 tries)"),
        (
            {"kind": "failure", "reason": "no answer", "tries": 1},
            "Fax to +49 30 123456 failed: no answer (1 try)",
        ),
        ({"kind": "success", "pages_sent": 1, "pages_total": 1}, "Fax to +49 30 123456 sent: 1 page"),
        (
            {"kind": "attempt", "reason": "busy", "tries": 1, "next_try": T0 + timedelta(minutes=5)},
            "Fax to +49 30 123456 not sent yet: busy (try 1 of 3, next try 14:05)",
        ),
        (
            {"kind": "attempt", "reason": "", "tries": 2, "max_tries": 0},
            "Fax to +49 30 123456 not sent yet (try 2)",
        ),
    ],
)
def test_subjects(kw: dict[str, Any], subject: str) -> None:
    r = report(**kw)
    assert report_subject(r, SETTINGS) == subject
    assert parse(compose_fax_report(r, SETTINGS))["Subject"] == subject


def test_attempt_report_says_when_the_next_try_is() -> None:
    r = report(kind="attempt", reason="busy", tries=1, next_try=T0 + timedelta(minutes=5), pages_sent=0)
    text = text_of(parse(compose_fax_report(r, SETTINGS)), "plain")
    assert "has not been sent yet: busy." in text
    assert "It will be tried again at 2026-11-26 14:05:00 CET." in text
    assert "Next try:       2026-11-26 14:05:00 CET" in text.splitlines()
    assert report_message_id(r, SETTINGS) == "<fax-job-0042-attempt-1@ums.example.com>"


def test_thumbnail_inline_and_pdf_attached() -> None:
    msg = parse(compose_fax_report(report(thumbnail_png=PNG, document_pdf=PDF), SETTINGS))
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert image.get_content() == PNG
    assert image.get_content_disposition() == "inline"
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in text_of(msg, "html")
    attachments = list(msg.iter_attachments())
    assert [(a.get_filename(), a.get_content()) for a in attachments] == [
        ("fax-to-4930123456-20261126-1412.pdf", PDF)
    ]
    assert "The document as sent is attached (fax-to-4930123456-20261126-1412.pdf)." in text_of(msg, "plain")


def test_without_html_the_thumbnail_is_attached() -> None:
    settings = dataclasses.replace(SETTINGS, html=False)
    msg = parse(compose_fax_report(report(thumbnail_png=PNG), settings))
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/mixed", "text/plain", "image/png"]
    assert [a.get_filename() for a in msg.iter_attachments()] == ["fax-job-0042-page1.png"]


def test_plain_report_without_attachments_is_alternative_at_top() -> None:
    msg = parse(compose_fax_report(report(), SETTINGS))
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/alternative", "text/plain", "text/html"]


def test_same_input_same_bytes() -> None:
    r = report(thumbnail_png=PNG, document_pdf=PDF)
    first = compose_fax_report(r, SETTINGS)
    assert first == compose_fax_report(report(thumbnail_png=PNG, document_pdf=PDF), SETTINGS)
    assert b'boundary="=_ums_faxjob0042success2umsexamplecom_1"' in first
    assert compose_fax_report(report(kind="failure", reason="busy"), SETTINGS) != first


def test_missing_or_bad_original_message_id_leaves_threading_out() -> None:
    for value in ("", "not an id", "<a b@c>"):
        msg = parse(compose_fax_report(report(original_message_id=value), SETTINGS))
        assert msg["In-Reply-To"] is None and msg["References"] is None
    msg = parse(compose_fax_report(report(original_message_id="x@y.example"), SETTINGS))
    assert msg["In-Reply-To"] == "<x@y.example>"


def test_header_injection_is_neutralised() -> None:
    r = report(
        original_subject="Hi\r\nBcc: evil@example.com", destination="+49 30\n123", reason="busy\r\nX: y"
    )
    data = compose_fax_report(r, SETTINGS)
    msg = parse(data)
    assert msg["Bcc"] is None and msg["X"] is None
    assert msg["Subject"] == "Fax to +49 30 123 sent: 3 pages"


def test_non_ascii_names_are_encoded() -> None:
    r = report(remote_csid="Bäckerei", destination="+49 30 123456")
    data = compose_fax_report(r, dataclasses.replace(SETTINGS, from_name="Faxdienst Müller"))
    assert data.isascii()
    msg = parse(data)
    assert msg["From"] == "Faxdienst Müller <fax@ums.example.com>"
    assert "Remote station: Bäckerei" in text_of(msg, "plain")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "done"}, "unknown report kind"),
        ({"sender": "alice"}, "e-mail address"),
        ({"sender": "jörg@example.com"}, "not a usable e-mail address"),  # SMTPUTF8 needed
        ({"job_id": "//"}, "job_id"),
        ({"pages_sent": -1}, "must not be negative"),
        ({"date": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"attempts": (FaxAttempt(datetime(2026, 1, 1), "busy"),)}, "timezone-aware"),
    ],
)
def test_bad_reports(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compose_fax_report(report(**kw), SETTINGS)
