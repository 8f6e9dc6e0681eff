"""The mails that tell a sender what became of the fax they mailed to the gateway.

What it does
------------
``compose_fax_report(report, settings)`` builds the delivery report for one outgoing fax job as an
RFC 5322 message (bytes, ready for SMTP or a Maildir), addressed to the person who mailed the fax:

* ``success``: ``Fax to +49 30 123456 sent: 3 pages``;
* ``failure``: ``Fax to +49 30 123456 failed: busy (3 tries)``, when the job has given up;
* ``attempt``: ``Fax to +49 30 123456 not sent yet: busy (try 1 of 3, next try 14:05)``, an
  optional notice after a failed try that will be retried.

The text gives the destination, the subject of the sender's mail, pages sent of total, duration,
speed, ECM, resolution, the far end's station id (CSID), the number of tries and the final reason
("busy", "no answer", "no fax machine", "stopped at page 3 of 5: ..."), then one line per try
(time, cause, pages).  A preview of the first page (PNG) is shown in the HTML part, and the sent
document can be attached as PDF.

How it works
------------
Same structure and encoding rules as the notification mails of ``ums.mailgate.mime`` (stdlib
``email`` with ``policy.SMTP``, CRLF lines, RFC 2047 / RFC 2231 encoded names, 7-bit or
quoted-printable text parts)::

    multipart/mixed
      multipart/alternative
        text/plain        (the report)
        multipart/related (RFC 2387)
          text/html       (the same with two small tables, for Outlook)
          image/png       (first page, Content-ID referenced from the HTML)
      application/pdf     (the sent document, when given)

It is a response to the sender's mail, so it carries ``In-Reply-To`` and ``References`` with the
original Message-ID (RFC 5322 §3.6.4; mail programs thread it under the sent mail) and
``Auto-Submitted: auto-replied`` (RFC 3834 §5.1), which keeps vacation responders and other robots
from answering it.  The Message-ID is derived from the job id, the kind and the try number, and
the MIME boundaries from the Message-ID, so composing the same report twice gives the same bytes
and a report re-sent after a crash is recognisable as the same mail.  ``X-UMS-Kind: fax-report``,
``X-UMS-Fax-Job`` and ``X-UMS-Fax-Result`` let mail filters sort them.

Pure: no I/O, no clock; the report's date and every time in it are passed in.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from ums.mailgate.mime import (
    AUTO_REPLIED,
    Attachment,
    ComposeSettings,
    InlineImage,
    assemble_reply,
    clean_text,
    format_duration,
    render_html,
    render_text,
    report_time,
)

__all__ = [
    "AUTO_SUBMITTED",
    "FaxAttempt",
    "FaxReport",
    "ReportKind",
    "compose_fax_report",
    "report_message_id",
    "report_subject",
    "stopped_reason",
]

ReportKind = Literal["success", "failure", "attempt"]

#: RFC 3834 §5.1: "auto-replied" marks automatic responses to a message.
AUTO_SUBMITTED: Final = AUTO_REPLIED
_KINDS: Final = ("success", "failure", "attempt")
_UNSAFE: Final = re.compile(r"[^0-9A-Za-z._-]+")


@dataclass(frozen=True)
class FaxAttempt:
    """One try at sending the fax.

    Attributes
    ----------
    at : datetime
        When the try started (timezone-aware).
    cause : str
        How it ended, for people: ``"busy"``, ``"no answer"``, ``"sent"``, ``"stopped at page 3 of 5: ..."``.
    pages : int
        Pages the far end confirmed in this try.
    """

    at: datetime
    cause: str
    pages: int = 0


@dataclass(frozen=True)
class FaxReport:
    """What happened to one outgoing fax job (everything the report mail says).

    Attributes
    ----------
    kind : {"success", "failure", "attempt"}
        Sent; given up; one try failed and another will follow.
    job_id : str
        The outgoing job's id (Message-ID, boundaries, ``X-UMS-Fax-Job``).
    sender : str
        Address of whoever mailed the fax: the report's To.
    destination : str
        The number dialled, in display form (``"+49 30 123456"``).
    date : datetime
        When the report is made (timezone-aware): the Date header.
    original_subject, original_message_id : str
        Subject and Message-ID of the sender's mail (``""`` when unknown).
    pages_sent, pages_total : int
        Pages the far end confirmed, pages of the document (cover included).
    duration : float or None
        Seconds on the line in the last try.
    rate : int or None
        Modem bit rate in bit/s.
    ecm : bool or None
        T.30 error correction mode used; None when unknown.
    resolution : str
        ``"fine"``, ``"standard"``, ...
    remote_csid : str
        The far end's station id (T.30 CSID).
    tries, max_tries : int
        Tries made so far, tries allowed in all (0: not known).
    reason : str
        The final reason for a failure or a failed try ("busy", "no answer", "no fax machine",
        "stopped at page 3 of 5: no answer to the page"); see :func:`stopped_reason`.
    attempts : tuple of FaxAttempt
        One entry per try, oldest first.
    next_try : datetime or None
        For ``attempt``: when the next try is due.
    thumbnail_png : bytes or None
        Preview of the first page (``ums.render.page.thumbnail_png``).
    document_pdf : bytes or None
        The document as sent, attached as PDF.
    """

    kind: ReportKind
    job_id: str
    sender: str
    destination: str
    date: datetime
    original_subject: str = ""
    original_message_id: str = ""
    pages_sent: int = 0
    pages_total: int = 0
    duration: float | None = None
    rate: int | None = None
    ecm: bool | None = None
    resolution: str = ""
    remote_csid: str = ""
    tries: int = 0
    max_tries: int = 0
    reason: str = ""
    attempts: tuple[FaxAttempt, ...] = ()
    next_try: datetime | None = None
    thumbnail_png: bytes | None = None
    document_pdf: bytes | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown report kind {self.kind!r} (success, failure or attempt)")
        if "@" not in self.sender:
            raise ValueError(f"sender must be an e-mail address, got {self.sender!r}")
        if not _UNSAFE.sub("", self.job_id):
            raise ValueError("job_id must contain letters or digits")
        for name in ("pages_sent", "pages_total", "tries", "max_tries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        times = [self.date, self.next_try, *(a.at for a in self.attempts)]
        if any(t is not None and t.utcoffset() is None for t in times):
            raise ValueError("report times must be timezone-aware")


def stopped_reason(pages_sent: int, pages_total: int, cause: str) -> str:
    """``"stopped at page 3 of 5: cause"`` for a call that ended after ``pages_sent`` pages."""
    return f"stopped at page {pages_sent + 1} of {pages_total}: {cause}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _tries_text(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'}"


def _hhmm(t: datetime, settings: ComposeSettings) -> str:
    return f"{t.astimezone(settings.zone):%H:%M}"


def report_subject(report: FaxReport, settings: ComposeSettings) -> str:
    """The report's Subject, e.g. ``Fax to +49 30 123456 failed: busy (3 tries)``."""
    dest = clean_text(report.destination) or "unknown number"
    reason = clean_text(report.reason)
    if report.kind == "success":
        return f"Fax to {dest} sent: {_plural(report.pages_sent or report.pages_total, 'page')}"
    if report.kind == "failure":
        return f"Fax to {dest} failed" + (f": {reason}" if reason else "") + f" ({_tries_text(report.tries)})"
    detail = f"try {report.tries}" + (f" of {report.max_tries}" if report.max_tries else "")
    if report.next_try is not None:
        detail += f", next try {_hhmm(report.next_try, settings)}"
    return f"Fax to {dest} not sent yet" + (f": {reason}" if reason else "") + f" ({detail})"


def report_message_id(report: FaxReport, settings: ComposeSettings) -> str:
    """``<fax-JOB-KIND-TRIES@domain>``: one id per job, kind and try."""
    job = _UNSAFE.sub("", report.job_id)[:64]
    return f"<fax-{job}-{report.kind}-{report.tries}@{settings.domain}>"


def _pages_text(report: FaxReport) -> str:
    if report.pages_total and report.pages_sent != report.pages_total:
        return f"{report.pages_sent} of {report.pages_total}"
    return str(report.pages_sent or report.pages_total)


def _fields(report: FaxReport, settings: ComposeSettings) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = [("Fax number", clean_text(report.destination) or "unknown")]
    if report.original_subject.strip():
        fields.append(("Your mail", clean_text(report.original_subject)))
    result = {"success": "sent", "failure": "failed", "attempt": "not sent yet"}[report.kind]
    reason = clean_text(report.reason)
    fields.append(("Result", f"{result}: {reason}" if reason and report.kind != "success" else result))
    if report.pages_total or report.pages_sent:
        fields.append(("Pages sent", _pages_text(report)))
    duration = format_duration(report.duration)
    if duration:
        fields.append(("Duration", duration))
    if report.rate:
        fields.append(("Speed", f"{report.rate} bit/s"))
    if report.ecm is not None:
        fields.append(("ECM", "yes" if report.ecm else "no"))
    if report.resolution.strip():
        fields.append(("Resolution", clean_text(report.resolution)))
    if report.remote_csid.strip():
        fields.append(("Remote station", clean_text(report.remote_csid)))
    if report.tries:
        fields.append(
            ("Tries", f"{report.tries} of {report.max_tries}" if report.max_tries else str(report.tries))
        )
    if report.kind == "attempt" and report.next_try is not None:
        fields.append(("Next try", report_time(report.next_try, settings)))
    fields.append(("Job", clean_text(report.job_id)))
    return fields


def _attempt_rows(report: FaxReport, settings: ComposeSettings) -> list[tuple[str, str, str, str]]:
    return [
        (str(n), report_time(a.at, settings), clean_text(a.cause), str(a.pages))
        for n, a in enumerate(report.attempts, start=1)
    ]


def _body_lines(report: FaxReport, settings: ComposeSettings, pdf_name: str | None) -> list[str]:
    dest = clean_text(report.destination) or "an unknown number"
    reason = clean_text(report.reason)
    subject = clean_text(report.original_subject)
    mail = f' ("{subject}")' if subject else ""
    lines: list[str] = []
    if report.kind == "success":
        pages = _plural(report.pages_sent or report.pages_total, "page")
        lines.append(f"Your fax{mail} to {dest} was sent: {pages}.")
        if report.remote_csid.strip():
            lines.append(f"The receiving fax machine identified itself as {clean_text(report.remote_csid)}.")
    elif report.kind == "failure":
        lines.append(f"Your fax{mail} to {dest} could not be sent" + (f": {reason}." if reason else "."))
        lines.append(f"It was given up after {_tries_text(report.tries)}; it will not be tried again.")
        if report.pages_total and 0 < report.pages_sent < report.pages_total:
            lines.append(
                f"{report.pages_sent} of {report.pages_total} pages reached the receiving fax machine."
            )
        lines += ["", "Please check the number, or send the fax again later."]
    else:
        lines.append(f"Your fax{mail} to {dest} has not been sent yet" + (f": {reason}." if reason else "."))
        if report.next_try is not None:
            lines.append(f"It will be tried again at {report_time(report.next_try, settings)}.")
        lines.append("You will get another mail when it has been sent or given up.")
    if pdf_name:
        lines += ["", f"The document as sent is attached ({pdf_name})."]
    return lines


def _attempts_text(rows: Sequence[tuple[str, str, str, str]]) -> list[str]:
    if not rows:
        return []
    return ["Attempts:"] + [
        f"  {n}  {at}  {cause}" + (f" ({_plural(int(p), 'page')})" if p != "0" else "")
        for n, at, cause, p in rows
    ]


def _attempts_html(rows: Sequence[tuple[str, str, str, str]]) -> list[str]:
    if not rows:
        return []
    head = '<th style="text-align: left; padding-right: 12px; border-bottom: 1px solid #cccccc">'
    return [
        "<p><b>Attempts</b></p>",
        '<table cellpadding="3" style="border-collapse: collapse">',
        "<tr>" + "".join(f"{head}{h}</th>" for h in ("#", "Time", "Result", "Pages")) + "</tr>",
        *(
            "<tr>" + "".join(f'<td style="padding-right: 12px">{html.escape(v)}</td>' for v in row) + "</tr>"
            for row in rows
        ),
        "</table>",
    ]


def _pdf_name(report: FaxReport, settings: ComposeSettings) -> str:
    digits = re.sub(r"[^0-9]", "", report.destination) or "unknown"
    stamp = report.date.astimezone(settings.zone).strftime("%Y%m%d-%H%M")
    return f"fax-to-{digits}-{stamp}.pdf"


def compose_fax_report(report: FaxReport, settings: ComposeSettings) -> bytes:
    """The delivery report mail for ``report``, to ``report.sender`` (see the module docstring).

    Raises ``ValueError`` when the sender or the configured From address is not usable
    (:func:`ums.mailgate.mime.mail_address`).
    """
    subject = report_subject(report, settings)
    message_id = report_message_id(report, settings)
    pdf_name = _pdf_name(report, settings) if report.document_pdf is not None else None
    lines = _body_lines(report, settings, pdf_name)
    fields = _fields(report, settings)
    rows = _attempt_rows(report, settings)
    attachments: list[Attachment] = []
    images: list[InlineImage] = []
    if report.thumbnail_png is not None:
        job = _UNSAFE.sub("", report.job_id)[:64]
        png = Attachment(report.thumbnail_png, f"fax-{job}-page1.png", "image/png")
        images.append(InlineImage(png, cid=f"<page1-fax-{job}@{settings.domain}>", alt="page 1"))
    if report.document_pdf is not None and pdf_name is not None:
        attachments.append(Attachment(report.document_pdf, pdf_name, "application/pdf"))
    html_text = None
    if settings.html:
        html_text = render_html(subject, lines, fields, after_fields=_attempts_html(rows), images=images)
    return assemble_reply(
        settings=settings,
        to=report.sender,
        in_reply_to=report.original_message_id,
        subject=subject,
        date=report.date,
        message_id=message_id,
        text=render_text(lines, fields, after_fields=_attempts_text(rows)),
        html=html_text,
        attachments=attachments,
        images=images,
        extra_headers=[
            ("X-UMS-Kind", "fax-report"),
            ("X-UMS-Fax-Job", clean_text(report.job_id)),
            ("X-UMS-Fax-Result", report.kind),
        ],
    )
