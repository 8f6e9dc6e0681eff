"""The e-mails ums sends: voicemail, fax and SMS notifications and the admin report.

What it does
------------
``compose(record, attachments, subject, body_lines, settings, fields=())``
builds one RFC 5322 message as bytes, ready for SMTP or a Maildir; the
wrappers ``compose_voicemail``, ``compose_fax`` and ``compose_sms`` fill in the
subject and text for each kind (``Voicemail from Jane Doe (+49 89 1234567),
0:42``), and ``compose_admin_report`` tells the admin which messages could not
be delivered.

How it works
------------
stdlib ``email`` with ``policy.SMTP``: every line ends in CRLF (RFC 5322 §2.1),
long headers are folded, non-ASCII header text becomes RFC 2047 encoded words
and non-ASCII attachment names RFC 2231 parameters (``filename*=utf-8''...``).
Text parts are 7-bit when they can be and quoted-printable otherwise, so the
message needs no 8BITMIME from the smarthost.  The structure is::

    multipart/mixed
      multipart/alternative
        text/plain   (the notification)
        text/html    (the same, as a small table, for Outlook)
      <attachment>   (base64)

(without attachments the alternative is the top level).  MIME boundaries are
derived from the message id, so composing the same record twice gives the same
bytes, and the Message-ID is the record's, so a retry after a crash can be
recognised as the same mail.  ``Auto-Submitted: auto-generated`` (RFC 3834
§5) keeps vacation responders quiet; ``X-UMS-Message-Id`` and ``X-UMS-Kind``
let the IMAP watcher and mail filters find our messages.

The report mails (``ums.mailgate.fax_reports``, ``ums.mailgate.sms_reports``)
are built from the same pieces: ``render_text`` and ``render_html`` lay out
body lines and a ``(label, value)`` list, ``assemble_reply`` adds what makes a
mail an automatic answer to a sender's mail, and ``clean_text``,
``report_time``, ``thread_id`` and ``mail_address`` tidy the values put in.

Pure: no I/O, no clock (the admin report takes ``now``).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ums.directory.lookup import display_number
from ums.store.fax_pages import META_FAX, META_FAX_PAGES
from ums.store.models import META_COMPANY, META_CSID, META_SWITCHBOARD, MessageRecord

__all__ = [
    "AUTO_REPLIED",
    "Attachment",
    "ComposeSettings",
    "InlineImage",
    "assemble",
    "assemble_reply",
    "attachment_filename",
    "caller_text",
    "clean_text",
    "compose",
    "compose_admin_report",
    "compose_fax",
    "compose_sms",
    "compose_voicemail",
    "fax_fields",
    "format_duration",
    "mail_address",
    "render_html",
    "render_text",
    "report_time",
    "thread_id",
]

#: RFC 3834 §5: "auto-generated" marks messages a program generated on its own.
AUTO_SUBMITTED = "auto-generated"
#: RFC 3834 §5.1: "auto-replied" marks automatic responses to a message.
AUTO_REPLIED: Final = "auto-replied"
#: characters that do not belong in a file name on any common system, plus control characters
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")
#: RFC 5322 §3.6.4 msg-id, loosely: ``<left@right>`` without spaces or further brackets
_MSG_ID: Final = re.compile(r"<[^<>\s]+@[^<>\s]+>")


@dataclass(frozen=True)
class ComposeSettings:
    """What the outgoing mails look like (proposed keys of the ``[mail]`` section)."""

    #: envelope and header sender address
    from_addr: str = "ums@localhost"
    #: display name in From
    from_name: str = "Unified Messaging"
    #: Reply-To address; empty: none
    reply_to: str = ""
    #: where the give-up report goes; empty: from_addr
    admin: str = ""
    #: IANA zone for the times written in the mails
    timezone: str = "UTC"
    #: add a text/html alternative
    html: bool = True

    def __post_init__(self) -> None:
        for name in ("from_addr", "reply_to", "admin"):
            value = getattr(self, name)
            if value and "@" not in value:
                raise ValueError(f"{name} must be an e-mail address, got {value!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def domain(self) -> str:
        return self.from_addr.rpartition("@")[2] or "localhost"


@dataclass(frozen=True)
class Attachment:
    data: bytes
    filename: str
    #: "type/subtype", e.g. "audio/wav", "application/pdf"
    mime: str


@dataclass(frozen=True)
class InlineImage:
    """An image shown in the HTML part (``<img src="cid:...">``); attached when there is no HTML."""

    image: Attachment
    #: Content-ID with angle brackets (RFC 2392), e.g. ``<page1-<id>@example.com>``
    cid: str
    alt: str = ""
    #: display width in CSS pixels
    width: int = 300


def _address(addr: str, display: str = "") -> Address:
    local, _, domain = addr.rpartition("@")
    return Address(display_name=display, username=local, domain=domain)


def mail_address(addr: str, display: str = "") -> Address:
    """``addr`` (control characters and outer space removed, see :func:`clean_text`) as a header address.

    Raises ``ValueError`` when it is not a usable address, e.g. a non-ASCII local part, which would
    need SMTPUTF8 (RFC 6531)."""
    try:
        return Address(display_name=display, addr_spec=clean_text(addr))
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError(f"not a usable e-mail address: {addr!r}") from exc


def clean_text(text: str) -> str:
    """``text`` fit for one header or one field line: runs of control characters (CR, LF, tab, ...)
    become a space, outer white space is stripped."""
    return _CONTROL.sub(" ", text).strip()


def thread_id(message_id: str) -> str:
    """``message_id`` as the msg-id for In-Reply-To and References (RFC 5322 §3.6.4): cleaned, angle
    brackets added when missing; ``""`` when it is not ``<left@right>``."""
    value = clean_text(message_id)
    if value and not value.startswith("<"):
        value = f"<{value}>"
    return value if _MSG_ID.fullmatch(value) else ""


def format_duration(seconds: float | None) -> str:
    """``42.4`` -> ``"0:42"``, ``3725`` -> ``"1:02:05"``; None -> ``""``."""
    if seconds is None:
        return ""
    total = max(0, int(seconds + 0.5))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def report_time(t: datetime, settings: ComposeSettings) -> str:
    """``2026-11-26 14:12:00 CET``: ``t`` (timezone-aware) in the settings' zone, with its abbreviation."""
    local = t.astimezone(settings.zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def caller_text(record: MessageRecord) -> tuple[str, str]:
    """``(who, detail)`` for a record's caller.

    ``who`` is the short form for subjects: ``"Jane Doe (+49 89 1234567)"``, ``"+49 89 1234567 (ACME)"``
    for a company (switchboard) match, the bare number, or ``"unknown caller"``.  ``detail`` is the long
    form for the body: ``"Jane Doe (company: ACME, switchboard +49 89 1234560)"``.
    """
    number = display_number(record.caller_number)
    name = record.caller_name.strip()
    company = str(record.meta.get(META_COMPANY, "")).strip()
    switchboard = str(record.meta.get(META_SWITCHBOARD, "")).strip()
    company_note = ""
    if company:
        company_note = f"company: {company}"
        if switchboard:
            company_note += f", switchboard {display_number(switchboard)}"
    if name:
        who = f"{name} ({number})" if number else name
        detail = f"{name} ({company_note})" if company_note else name
    elif company:
        who = f"{number} ({company})" if number else company
        detail = company_note
    else:
        who = number or "unknown caller"
        detail = ""
    return who, detail


def attachment_filename(record: MessageRecord, ext: str, settings: ComposeSettings) -> str:
    """``voicemail-20240101-130507-Jane Doe.wav``: kind, local time, caller name or number."""
    label = {"voice": "voicemail", "fax": "fax", "sms": "sms"}[record.kind]
    stamp = record.received_at.astimezone(settings.zone).strftime("%Y%m%d-%H%M%S")
    who = record.caller_name.strip() or record.caller_number.strip()
    who = _UNSAFE_FILENAME.sub("_", who).strip(" ._")[:60]
    stem = f"{label}-{stamp}-{who}" if who else f"{label}-{stamp}"
    return f"{stem}.{ext.lstrip('.')}"


def _text_part(part: MIMEPart | EmailMessage, text: str, subtype: str, alternative: bool) -> None:
    # RFC 5322 §2.1.1: lines of at most 998 characters; 78 keeps every mail client happy
    short = all(len(line) <= 78 for line in text.splitlines())
    cte = "7bit" if text.isascii() and short else "quoted-printable"
    if alternative:
        part.add_alternative(text, subtype=subtype, charset="utf-8", cte=cte)
    else:
        part.set_content(text, subtype=subtype, charset="utf-8", cte=cte)


def render_text(
    body_lines: Sequence[str],
    fields: Sequence[tuple[str, str]] = (),
    *,
    before_fields: Sequence[str] = (),
    after_fields: Sequence[str] = (),
) -> str:
    """The text/plain part: ``body_lines``, ``before_fields``, the ``fields`` as an aligned
    ``Label:  value`` list and ``after_fields``, a blank line between them (empty ones left out)."""
    blocks: list[Sequence[str]] = [body_lines, before_fields]
    if fields:
        width = max(len(k) for k, _ in fields) + 2
        blocks.append([f"{k + ':':<{width}}{v}" for k, v in fields])
    blocks.append(after_fields)
    lines: list[str] = []
    for block in blocks:
        if block:
            lines += [""] if lines else []
            lines += block
    return "\n".join(lines) + "\n"


def render_html(
    subject: str,
    body_lines: Sequence[str],
    fields: Sequence[tuple[str, str]] = (),
    *,
    before_fields: Sequence[str] = (),
    after_fields: Sequence[str] = (),
    images: Sequence[InlineImage] = (),
) -> str:
    """The text/html part: ``body_lines`` as paragraphs (an empty line starts a new one),
    ``before_fields`` (HTML lines, as they are), the ``fields`` as a table, ``after_fields``, then
    ``images`` (``<img src="cid:...">``)."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>{esc(subject)}</title></head>',
        '<body style="font-family: Segoe UI, Arial, sans-serif; font-size: 11pt">',
    ]
    paragraph: list[str] = []
    for line in [*body_lines, ""]:
        if line.strip():
            paragraph.append(esc(line))
        elif paragraph:
            out.append("<p>" + "<br>\n".join(paragraph) + "</p>")
            paragraph = []
    out += before_fields
    if fields:
        cell = '<td style="color: #555555; padding-right: 12px">'
        out.append('<table cellpadding="3" style="border-collapse: collapse">')
        out += [f"<tr>{cell}{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in fields]
        out.append("</table>")
    out += after_fields
    out += [
        f'<p><img src="cid:{esc(img.cid.strip("<>"))}" alt="{esc(img.alt)}" '
        f'width="{img.width}" style="border: 1px solid #cccccc"></p>'
        for img in images
    ]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _assemble(
    *,
    settings: ComposeSettings,
    to: str,
    subject: str,
    date: datetime,
    message_id: str,
    boundary_seed: str,
    body_lines: Sequence[str],
    fields: Sequence[tuple[str, str]],
    attachments: Sequence[Attachment],
    extra_headers: Sequence[tuple[str, str]],
    images: Sequence[InlineImage] = (),
) -> bytes:
    html_text = render_html(subject, body_lines, fields, images=images) if settings.html else None
    return assemble(
        settings=settings,
        to=_address(to),
        subject=subject,
        date=date,
        message_id=message_id,
        boundary_seed=boundary_seed,
        text=render_text(body_lines, fields),
        html=html_text,
        attachments=attachments,
        images=images,
        extra_headers=extra_headers,
    )


def assemble(
    *,
    settings: ComposeSettings,
    to: Address,
    subject: str,
    date: datetime,
    message_id: str,
    boundary_seed: str,
    text: str,
    html: str | None,
    attachments: Sequence[Attachment] = (),
    images: Sequence[InlineImage] = (),
    sender: Address | None = None,
    reply_headers: Sequence[tuple[str, str]] = (),
    auto_submitted: str = AUTO_SUBMITTED,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """One mail as bytes: ``text`` (and ``html`` with ``images`` related to it, when given; without
    HTML the images become attachments after the others), then ``attachments``.

    Headers in order: From (``sender``, else the settings'), Reply-To, To, Subject, Date, Message-ID,
    ``reply_headers`` (In-Reply-To, References), Auto-Submitted (RFC 3834: ``auto_submitted``),
    ``extra_headers``.  MIME boundaries come from ``boundary_seed``, so the bytes are the same for the
    same input."""
    body = MIMEPart(policy=policy.SMTP)
    _text_part(body, text, "plain", alternative=False)
    if html is not None:
        _text_part(body, html, "html", alternative=True)
        html_part = body.get_body(("html",))
        assert html_part is not None
        for img in images:  # RFC 2387 multipart/related: the HTML and the images it shows
            maintype, _, subtype = img.image.mime.partition("/")
            html_part.add_related(
                img.image.data,
                maintype=maintype,
                subtype=subtype,
                cid=img.cid,
                filename=img.image.filename,
                disposition="inline",
            )
    else:
        attachments = [*attachments, *(img.image for img in images)]
    for att in attachments:
        maintype, sep, subtype = att.mime.partition("/")
        if not sep or not maintype or not subtype:
            raise ValueError(f"bad MIME type {att.mime!r}")
        body.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=att.filename)

    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender if sender is not None else _address(settings.from_addr, settings.from_name)
    if settings.reply_to:
        msg["Reply-To"] = _address(settings.reply_to)
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date.astimezone(settings.zone))
    msg["Message-ID"] = message_id
    for name, value in reply_headers:
        msg[name] = value
    msg["Auto-Submitted"] = auto_submitted
    for name, value in extra_headers:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    for name, value in body.items():
        msg[name] = value
    msg.set_payload(body.get_payload())

    seed = re.sub(r"[^0-9A-Za-z]", "", boundary_seed)[:40]
    n = 0
    for part in msg.walk():
        if part.is_multipart():
            n += 1
            part.set_boundary(f"=_ums_{seed}_{n}")
    return msg.as_bytes(policy=policy.SMTP)


def assemble_reply(
    *,
    settings: ComposeSettings,
    to: str,
    in_reply_to: str,
    subject: str,
    date: datetime,
    message_id: str,
    text: str,
    html: str | None,
    attachments: Sequence[Attachment] = (),
    images: Sequence[InlineImage] = (),
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """An automatic answer to someone's mail (the fax and SMS reports), with :func:`assemble`.

    To ``to`` and From the settings' address, both checked with :func:`mail_address` (so an unusable
    one raises ``ValueError``); In-Reply-To and References carry ``in_reply_to`` when
    :func:`thread_id` finds a msg-id in it, so mail programs thread the answer under the mail;
    ``Auto-Submitted: auto-replied`` (RFC 3834 §5.1); MIME boundaries from ``message_id``."""
    original = thread_id(in_reply_to)
    return assemble(
        settings=settings,
        sender=mail_address(settings.from_addr, settings.from_name),
        to=mail_address(to),
        reply_headers=[("In-Reply-To", original), ("References", original)] if original else [],
        auto_submitted=AUTO_REPLIED,
        subject=subject,
        date=date,
        message_id=message_id,
        boundary_seed=message_id,
        text=text,
        html=html,
        attachments=attachments,
        images=images,
        extra_headers=extra_headers,
    )


def compose(
    record: MessageRecord,
    attachments: Sequence[Attachment],
    subject: str,
    body_lines: Sequence[str],
    settings: ComposeSettings,
    fields: Sequence[tuple[str, str]] = (),
    images: Sequence[InlineImage] = (),
) -> bytes:
    """One notification mail for ``record`` to its owner.

    ``body_lines`` are paragraphs of text (an empty string separates paragraphs); ``fields`` are
    ``(label, value)`` pairs written as an aligned list (and a table in the HTML part); ``images``
    are shown below them in the HTML part.
    """
    return _assemble(
        settings=settings,
        to=record.owner,
        subject=subject,
        date=record.received_at,
        message_id=record.message_id,
        boundary_seed=record.id,
        body_lines=body_lines,
        fields=fields,
        attachments=attachments,
        extra_headers=(
            ("X-UMS-Message-Id", record.id),
            ("X-UMS-Kind", record.kind),
            ("X-UMS-Mailbox", record.mailbox),
        ),
        images=images,
    )


def _common_fields(record: MessageRecord, settings: ComposeSettings) -> list[tuple[str, str]]:
    _, detail = caller_text(record)
    fields: list[tuple[str, str]] = []
    if detail:
        fields.append(("Caller", detail))
    fields.append(("Number", display_number(record.caller_number) or "unknown"))
    fields.append(("Received", report_time(record.received_at, settings)))
    return fields


def compose_voicemail(
    record: MessageRecord, audio: bytes, audio_name: str, audio_mime: str, settings: ComposeSettings
) -> bytes:
    """``Voicemail from Jane Doe (+49 89 1234567), 0:42`` with the recording attached."""
    who, _ = caller_text(record)
    duration = format_duration(record.duration)
    subject = f"Voicemail from {who}" + (f", {duration}" if duration else "")
    fields = _common_fields(record, settings)
    if duration:
        fields.append(("Duration", duration))
    fields.append(("Mailbox", record.mailbox))
    lines = [f"You have a new voicemail from {who}.", "", f"The recording is attached ({audio_name})."]
    return compose(record, [Attachment(audio, audio_name, audio_mime)], subject, lines, settings, fields)


_MODEM_NAMES = {"v17": "V.17", "v29": "V.29", "v27ter": "V.27ter", "v33": "V.33", "v34": "V.34"}
_TRANSPORTS = {"t38": "T.38", "g711": "G.711 audio"}


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _fax_result(record: MessageRecord) -> tuple[bool, str]:
    """``(complete, reason)``: a record without a reception result counts as complete."""
    result = record.meta.get(META_FAX)
    if not isinstance(result, dict) or "success" not in result:
        return True, ""
    return bool(result.get("success")), str(result.get("reason") or "").strip()


def _resolution_text(result: dict[str, Any], pages: list[dict[str, Any]]) -> str:
    named = str(result.get("resolution") or "").strip()
    dpi = ""
    if pages:
        first = pages[0]
        x, y = first.get("xdpi"), first.get("ydpi")
        if isinstance(x, int | float) and isinstance(y, int | float):
            dpi = f"{x:g} x {y:g} dpi"
    if named and dpi and named != dpi:
        return f"{named} ({dpi})"
    return named or dpi


def fax_fields(record: MessageRecord) -> list[tuple[str, str]]:
    """The reception details of a fax for the mail: station, pages, speed, ECM, resolution, ..."""
    raw_result = record.meta.get(META_FAX)
    result: dict[str, Any] = raw_result if isinstance(raw_result, dict) else {}
    raw_pages = record.meta.get(META_FAX_PAGES)
    pages: list[dict[str, Any]] = (
        [p for p in raw_pages if isinstance(p, dict)] if isinstance(raw_pages, list) else []
    )
    fields: list[tuple[str, str]] = []
    csid = str(record.meta.get(META_CSID, "") or result.get("remote_ident") or "").strip()
    if csid:
        fields.append(("Station ID", csid))
    if record.pages is not None:
        fields.append(("Pages", str(record.pages)))
    resolution = _resolution_text(result, pages)
    if resolution:
        fields.append(("Resolution", resolution))
    rate, modem = result.get("rate"), str(result.get("modem") or "").strip()
    speed = f"{rate} bit/s" if isinstance(rate, int | float) and rate else ""
    modem_name = _MODEM_NAMES.get(modem.lower().replace(".", ""), modem)
    if speed or modem_name:
        fields.append(("Speed", f"{speed} ({modem_name})" if speed and modem_name else speed or modem_name))
    if "ecm" in result:
        fields.append(("ECM", _yes_no(result.get("ecm"))))
    compression = str(result.get("compression") or "").strip()
    if compression:
        fields.append(("Compression", compression))
    duration = format_duration(record.duration)
    if duration:
        fields.append(("Duration", duration))
    transport = str(result.get("transport") or "").strip()
    if transport:
        fields.append(("Transport", _TRANSPORTS.get(transport.lower(), transport)))
    bad = result.get("bad_rows")
    if isinstance(bad, int) and not isinstance(bad, bool) and bad > 0:
        fields.append(("Bad rows", str(bad)))
    if "success" in result:
        complete, reason = _fax_result(record)
        fields.append(
            ("Result", "complete" if complete else "incomplete" + (f": {reason}" if reason else ""))
        )
    return fields


def compose_fax(
    record: MessageRecord,
    document: bytes,
    document_name: str,
    document_mime: str,
    settings: ComposeSettings,
    *,
    more: Sequence[Attachment] = (),
    thumbnail: bytes | None = None,
) -> bytes:
    """``Fax from ACME (+49 89 1234567), 3 pages`` with the PDF and/or TIFF attached.

    ``more``: further attachments (the TIFF next to the PDF); ``thumbnail``: a PNG preview of the
    first page, shown in the HTML part (attached when the mail has no HTML part).  A fax that was
    not received completely says so in the subject (``(incomplete)``) and gives the reason.
    """
    who, _ = caller_text(record)
    pages = record.pages
    page_text = "" if pages is None else f"{pages} page" + ("" if pages == 1 else "s")
    complete, reason = _fax_result(record)
    subject = (
        f"Fax from {who}" + (f", {page_text}" if page_text else "") + ("" if complete else " (incomplete)")
    )
    fields = _common_fields(record, settings)
    fields.extend(fax_fields(record))
    fields.append(("Mailbox", record.mailbox))
    attachments = [Attachment(document, document_name, document_mime), *more]
    names = ", ".join(a.filename for a in attachments)
    lines = [f"You have a new fax from {who}."]
    if not complete:
        lines += [
            "",
            "The fax was not received completely"
            + (f" ({reason})" if reason else "")
            + "; the pages that arrived are attached.",
        ]
    lines += [
        "",
        f"The document is attached ({names})."
        if len(attachments) == 1
        else f"The documents are attached ({names}).",
    ]
    images: list[InlineImage] = []
    if thumbnail is not None:
        stem = document_name.rsplit(".", 1)[0] or "fax"
        images.append(
            InlineImage(
                Attachment(thumbnail, f"{stem}-page1.png", "image/png"),
                cid=f"<page1-{record.id}@{settings.domain}>",
                alt="page 1",
            )
        )
    return compose(record, attachments, subject, lines, settings, fields, images)


def compose_sms(record: MessageRecord, text: str, settings: ComposeSettings) -> bytes:
    """``SMS from Jane Doe (+49 89 1234567)`` with the message text in the body."""
    who, _ = caller_text(record)
    fields = _common_fields(record, settings)
    fields.append(("Mailbox", record.mailbox))
    lines = [*text.splitlines(), "", "-- ", f"SMS from {who}."]
    return compose(record, [], f"SMS from {who}", lines, settings, fields)


def compose_admin_report(
    records: Sequence[MessageRecord], settings: ComposeSettings, now: datetime, reason: str = ""
) -> bytes:
    """Tell the admin which messages could not be delivered (they stay in the spool)."""
    to = settings.admin or settings.from_addr
    n = len(records)
    subject = f"ums: {n} message{'s' if n != 1 else ''} could not be delivered"
    lines = [
        f"{n} message{'s' if n != 1 else ''} could not be delivered to {'its' if n == 1 else 'their'} owner"
        + (f" ({reason})" if reason else "")
        + ".",
        "The messages are kept in the spool; nothing was deleted.",
    ]
    for r in records:
        who, _ = caller_text(r)
        lines += [
            "",
            f"Message {r.id}",
            f"  kind:      {r.kind}",
            f"  mailbox:   {r.mailbox} -> {r.owner}",
            f"  caller:    {who}",
            f"  received:  {report_time(r.received_at, settings)}",
            f"  attempts:  {r.attempts}",
            f"  last error: {r.last_error or '-'}",
            f"  Message-ID: {r.message_id}",
        ]
        lines += [f"  file:      {f}" for f in r.files]
    digest = hashlib.sha256("\n".join(r.id for r in records).encode()).hexdigest()[:16]
    stamp = now.astimezone(settings.zone).strftime("%Y%m%d%H%M%S")
    return _assemble(
        settings=settings,
        to=to,
        subject=subject,
        date=now,
        message_id=f"<report-{stamp}-{digest}@{settings.domain}>",
        boundary_seed=f"report{stamp}{digest}",
        body_lines=lines,
        fields=(),
        attachments=(),
        extra_headers=(("X-UMS-Kind", "report"),),
    )
