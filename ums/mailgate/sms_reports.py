"""The mails that tell a sender what became of the text they mailed to ``NUMBER@sms.example.com``.

What it does
------------
``compose_sms_report(report, settings)`` builds the report for one outgoing SMS job as an RFC 5322
message (bytes, ready for SMTP or a Maildir), addressed to the person who mailed the text:

* ``delivered``: ``SMS to +49 151 2345678: delivered`` -- a delivery receipt said so;
* ``sent``: ``SMS to +49 151 2345678: sent`` -- the SMS network accepted it, and no receipt was
  asked for or none came back in time, so whether it reached the phone is not known;
* ``failed``: ``SMS to +49 151 2345678: not delivered`` -- refused, given up, or a receipt said
  it could not be delivered; the reason in one plain sentence.

The body quotes the text that was sent (``> `` lines, long lines wrapped at 76 characters so no
line of the mail comes near the 998-octet limit of RFC 5322 §2.1.1), then a short table: number,
the subject of the sender's mail, result, tries, when it was queued, accepted and finished.

How it works
------------
Built with :func:`ums.mailgate.mime.assemble_reply` like the fax reports (:mod:`ums.mailgate.fax_reports`):
stdlib ``email`` with ``policy.SMTP``, CRLF lines, text parts 7-bit or quoted-printable UTF-8 (any
text survives, emoji included), ``multipart/alternative`` with text/plain and text/html.  It is a
response to the sender's mail, so it carries ``In-Reply-To`` and ``References`` with the original
Message-ID (RFC 5322 §3.6.4) and ``Auto-Submitted: auto-replied`` (RFC 3834 §5.1).  The
Message-ID is ``<sms-JOB-KIND@domain>`` and the MIME boundaries derive from it, so composing the
same report twice gives the same bytes and a report sent again after a crash is recognisable as
the same mail.  ``X-UMS-Kind: sms-report``, ``X-UMS-SMS-Job`` and ``X-UMS-SMS-Result`` let mail
filters sort them.  Numbers are shown grouped (:func:`ums.directory.lookup.display_number`).

Pure: no I/O, no clock; the report's date and every time in it are passed in.
"""

from __future__ import annotations

import html
import re
import textwrap
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from ums.directory.lookup import display_number
from ums.mailgate.mime import (
    AUTO_REPLIED,
    ComposeSettings,
    assemble_reply,
    clean_text,
    render_html,
    render_text,
    report_time,
)

__all__ = [
    "AUTO_SUBMITTED",
    "QUOTE_WIDTH",
    "SmsReport",
    "SmsReportKind",
    "compose_sms_report",
    "report_message_id",
    "report_subject",
]

SmsReportKind = Literal["delivered", "sent", "failed"]

#: RFC 3834 §5.1: "auto-replied" marks automatic responses to a message.
AUTO_SUBMITTED: Final = AUTO_REPLIED
#: quoted lines of the text part are wrapped at this width (RFC 3676 §4.2 suggests at most 78)
QUOTE_WIDTH: Final = 76
_KINDS: Final = ("delivered", "sent", "failed")
_UNSAFE: Final = re.compile(r"[^0-9A-Za-z._-]+")
_SUBJECT_WORD: Final = {"delivered": "delivered", "sent": "sent", "failed": "not delivered"}

#: SMPP v3.4 Appendix B ``stat`` words (and RFC 5438 IMDN words) in plain words
_RECEIPT_TEXT: Final = {
    "UNDELIV": "the mobile network could not deliver it to the phone",
    "EXPIRED": "the phone could not be reached before the mobile network gave up",
    "REJECTD": "the mobile network rejected it",
    "DELETED": "the mobile network deleted it before it was delivered",
    "UNKNOWN": "the mobile network reported it as not delivered, without a reason",
    "FAILED": "the recipient's service could not deliver it",
    "FORBIDDEN": "the recipient's service refused it",
    "ERROR": "the recipient's service reported an error",
}


@dataclass(frozen=True)
class SmsReport:
    """What happened to one outgoing SMS job (everything the report mail says).

    Attributes
    ----------
    kind : {"delivered", "sent", "failed"}
        Receipt said delivered; accepted without a (timely) receipt; refused, given up or not
        delivered.
    job_id : str
        The job's id (Message-ID, boundaries, ``X-UMS-SMS-Job``).
    recipient : str
        Address of whoever mailed the text: the report's To.
    number : str
        The destination number (shown grouped: ``+49 151 2345678``).
    text : str
        The text as sent (quoted in the body).
    date : datetime
        When the report is made (timezone-aware): the Date header.
    original_subject, original_message_id : str
        Subject and Message-ID of the sender's mail (``""`` when unknown).
    reason : str
        Why the job ended as it did, in words (``"not delivered: UNDELIV err 001"``,
        ``"no delivery receipt within 48 hours"``); for ``delivered`` it is not shown.
    receipt : str
        The delivery receipt's status word that decided the job (``DELIVRD``, ``UNDELIV``, ...;
        ``""``: none).
    tries : int
        Submits made.
    queued, submitted, finished : datetime or None
        When the mail came in, when the SMS network accepted the text, when the job ended.
    parts : int
        Parts the text was sent in (SMPP concatenation).
    """

    kind: SmsReportKind
    job_id: str
    recipient: str
    number: str
    text: str
    date: datetime
    original_subject: str = ""
    original_message_id: str = ""
    reason: str = ""
    receipt: str = ""
    tries: int = 0
    queued: datetime | None = None
    submitted: datetime | None = None
    finished: datetime | None = None
    parts: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown SMS report kind {self.kind!r} (delivered, sent or failed)")
        if "@" not in self.recipient:
            raise ValueError(f"recipient must be an e-mail address, got {self.recipient!r}")
        if not _UNSAFE.sub("", self.job_id):
            raise ValueError("job_id must contain letters or digits")
        if self.tries < 0 or self.parts < 1:
            raise ValueError("tries must not be negative and parts must be at least 1")
        times = (self.date, self.queued, self.submitted, self.finished)
        if any(t is not None and t.utcoffset() is None for t in times):
            raise ValueError("report times must be timezone-aware")


def _number(report: SmsReport) -> str:
    return display_number(clean_text(report.number)) or "an unknown number"


def report_subject(report: SmsReport) -> str:
    """``SMS to +49 151 2345678: delivered`` / ``: sent`` / ``: not delivered``."""
    return f"SMS to {_number(report)}: {_SUBJECT_WORD[report.kind]}"


def report_message_id(report: SmsReport, settings: ComposeSettings) -> str:
    """``<sms-JOB-KIND@domain>``: one id per job and outcome."""
    job = _UNSAFE.sub("", report.job_id)[:64]
    return f"<sms-{job}-{report.kind}@{settings.domain}>"


def _failure_sentence(report: SmsReport) -> str:
    """Why it failed, as the end of ``Your SMS ... could not be ...: <this>.``"""
    word = clean_text(report.receipt).upper()
    if word in _RECEIPT_TEXT:
        return _RECEIPT_TEXT[word]
    return clean_text(report.reason).rstrip(".") or "no reason was given"


def _body_lines(report: SmsReport) -> list[str]:
    dest = _number(report)
    subject = clean_text(report.original_subject)
    mail = f' ("{subject}")' if subject else ""
    reason = clean_text(report.reason).rstrip(".")
    if report.kind == "delivered":
        return [f"Your SMS{mail} to {dest} was delivered."]
    if report.kind == "sent":
        lines = [f"Your SMS{mail} to {dest} was accepted by the SMS network."]
        lines.append("Whether it reached the phone is not known" + (f": {reason}." if reason else "."))
        return lines
    verb = "delivered" if report.submitted is not None else "sent"
    return [
        f"Your SMS{mail} to {dest} could not be {verb}: {_failure_sentence(report)}.",
        "It will not be tried again; please check the number, or send the text again later.",
    ]


def _quote(text: str) -> list[str]:
    """The text as ``> `` lines, long lines wrapped at :data:`QUOTE_WIDTH`."""
    out: list[str] = []
    for raw in text.splitlines() or [""]:
        line = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", raw).rstrip()
        pieces = (
            textwrap.wrap(line, QUOTE_WIDTH - 2, break_long_words=True, break_on_hyphens=False)
            if len(line) > QUOTE_WIDTH - 2
            else [line]
        )
        out += [f"> {p}" if p else ">" for p in pieces or [""]]
    return out


def _fields(report: SmsReport, settings: ComposeSettings) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = [("Number", _number(report))]
    if report.original_subject.strip():
        fields.append(("Your mail", clean_text(report.original_subject)))
    reason = clean_text(report.reason)
    if report.kind == "failed":
        result = reason or "not delivered"
    elif report.kind == "sent":
        result = f"sent: {reason}" if reason else "sent"
    else:
        result = "delivered"
    fields.append(("Result", result))
    if report.receipt.strip():
        fields.append(("Receipt", clean_text(report.receipt)))
    if report.parts > 1:
        fields.append(("Parts", str(report.parts)))
    if report.tries:
        fields.append(("Tries", str(report.tries)))
    if report.queued is not None:
        fields.append(("Queued", report_time(report.queued, settings)))
    if report.submitted is not None:
        fields.append(("Accepted", report_time(report.submitted, settings)))
    if report.finished is not None:
        label = "Delivered" if report.kind == "delivered" else "Finished"
        fields.append((label, report_time(report.finished, settings)))
    fields.append(("Job", clean_text(report.job_id)))
    return fields


def _quote_html(text: str) -> list[str]:
    shown = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", " ", text)
    return [
        "<p>Your text:</p>",
        '<blockquote style="margin: 0 0 0 8px; padding-left: 8px; border-left: 2px solid #cccccc; '
        f'white-space: pre-wrap">{html.escape(shown)}</blockquote>',
    ]


def compose_sms_report(report: SmsReport, settings: ComposeSettings) -> bytes:
    """The report mail for ``report``, to ``report.recipient`` (see the module docstring).

    Raises ``ValueError`` when the recipient or the configured From address is not usable
    (:func:`ums.mailgate.mime.mail_address`).
    """
    subject = report_subject(report)
    lines = _body_lines(report)
    fields = _fields(report, settings)
    html_text = None
    if settings.html:
        html_text = render_html(subject, lines, fields, before_fields=_quote_html(report.text))
    return assemble_reply(
        settings=settings,
        to=report.recipient,
        in_reply_to=report.original_message_id,
        subject=subject,
        date=report.date,
        message_id=report_message_id(report, settings),
        text=render_text(lines, fields, before_fields=["Your text:", *_quote(report.text)]),
        html=html_text,
        extra_headers=[
            ("X-UMS-Kind", "sms-report"),
            ("X-UMS-SMS-Job", clean_text(report.job_id)),
            ("X-UMS-SMS-Result", report.kind),
        ],
    )
