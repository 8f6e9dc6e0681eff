"""A mail sent to the fax gateway as fax pages: cover page, mail text, attachments.

What it does
------------
``compose_document(mail, resolution=..., cover=...)`` parses a mail (RFC 5322 / MIME) and returns a
:class:`FaxDocument`: the pages to send, in this order,

1. the cover page (``ums.render.cover``) when a :class:`~ums.render.cover.CoverInfo` is given; its page
   count is filled in here and includes the cover;
2. the mail text, unless it is empty or only a signature or client boilerplate (see below);
3. every attachment in mail order, each rendered by ``ums.render.documents.render_document`` (PDF,
   images, text, HTML, Office); an attached mail (``message/rfc822``) is faxed as its header lines
   and body text.

and a :class:`DocumentPart` per item saying where its pages are.  Anything that cannot be faxed
raises :class:`BadDocument` with a reason for the sender ("cannot fax 'x.exe': unsupported type
application/x-msdownload"), so the SMTP layer can refuse the mail with 554 before accepting it.

Which MIME parts are what
-------------------------
* The mail text is the first ``text/plain``, ``text/html``, ``multipart/alternative`` or
  ``multipart/related`` part that is not ``Content-Disposition: attachment``.  Inside it
  ``text/plain`` is preferred; ``text/html`` is used when there is no plain text or the plain text
  counts as empty.
* The parts of a ``multipart/related`` other than its root (RFC 2387) are resources of the HTML text,
  as is any image whose Content-ID (RFC 2392) an HTML part refers to with ``cid:``, even when it
  is marked as an attachment: inline images, not attachments.  Pictures pasted into the text are
  therefore not faxed.
* Every other part is an attachment: ``Content-Disposition: attachment`` parts, and inline parts
  after the mail text (Apple Mail puts inline images and further text between the text parts).
  The file name comes from the ``filename`` parameter of Content-Disposition or the ``name``
  parameter of Content-Type, RFC 2231 and RFC 2047 decoded by ``email``.
* ``multipart/signed`` (RFC 1847): the signed content counts, the signature part
  (``application/pkcs7-signature``, ``application/pgp-signature``) is skipped.  Encrypted and
  opaque-signed mails (``multipart/encrypted``, ``application/pkcs7-mime``) are refused.

When the mail text counts as empty
----------------------------------
Mail programs add text to mails that carry only an attachment.  The text is cleaned and then tested:

* ``format=flowed`` text (RFC 3676 §4.2) is unwrapped first (space-stuffing removed, soft line
  breaks joined, ``DelSp=yes`` honoured).
* Everything from the first signature separator line on is cut: ``-- `` (RFC 3676 §4.3), and also
  ``--`` because many programs strip the trailing space.
* Whole lines that are mobile or client taglines are removed ("Sent from my iPhone", "Von meinem
  iPad gesendet", "Get Outlook for Android", "Sent from Mail for Windows", ...).
* Paragraphs given as ``boilerplate`` (company disclaimers) are removed wherever they occur; they
  match case-insensitively with any white space between the words.
* Trailing white space is removed from every line, and blank lines at the start and end.

The cleaned text is what gets faxed.  It counts as empty when nothing but white space (including
no-break and zero-width spaces) is left, or when it starts with a closing phrase ("Best regards",
"Mit freundlichen Grüßen", "Thanks", ...) followed by at most :data:`SIGNATURE_MAX_LINES` short
lines that are not sentences (no "?" or "!" at the end, no full stop after more than four words):
that is how an Outlook signature looks in a mail whose body the user left blank (Outlook marks its
signature with no separator).  A signature without a closing phrase or separator is faxed; list
such text as ``boilerplate`` to leave it out.

For HTML text the same test runs on its text content, leaving out elements marked as signatures (id
or class ``Signature``, ``moz-signature``, ``gmail_signature``, ...); when it is not empty the HTML
is faxed as it is, signature included.

How it works
------------
Pure apart from the rendering: the mail is parsed with ``email`` (``policy.default``), the parts
are walked once to pick the text and the attachments (text parts decoded and HTML text read by
``ums.mailgate.mailtext``), then each is rendered by the ``render``
callable (``render_document`` by default; tests pass a fake).  A file type is checked with
``detect_kind`` before rendering, so the refusal names the type; a ZIP or OLE container counts as an
Office document only with an Office file name (or no file name and an Office MIME type).  Rendering
or conversion errors become :class:`BadDocument` naming the file; a missing converter (LibreOffice)
is logged for the admin and tells the sender to send a PDF.  The page limit is checked after every
part, so a mail far over it stops early.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import Final, Literal, Protocol

from ums.mailgate.flowed import unflow
from ums.mailgate.mailtext import BLOCK_TAGS, part_text
from ums.mailgate.mailtext import html_text as html_text_of
from ums.render.cover import CoverInfo, render_cover
from ums.render.documents import (
    OFFICE_EXTENSIONS,
    OFFICE_TYPES,
    DocumentError,
    MissingToolError,
    detect_kind,
    render_document,
)
from ums.render.page import RESOLUTIONS, FaxPage, Resolution

__all__ = [
    "NOTHING_TO_FAX",
    "SIGNATURE_LINE_LENGTH",
    "SIGNATURE_MAX_LINES",
    "BadDocument",
    "DocumentPart",
    "FaxDocument",
    "PartKind",
    "Renderer",
    "clean_text",
    "compose_document",
    "html_text",
    "is_empty_text",
]

log = logging.getLogger(__name__)

PartKind = Literal["cover", "text", "attachment"]

SIGNATURE_MAX_LINES: Final = 15
"""A text that starts with a closing phrase and has at most this many lines after it is a signature."""
SIGNATURE_LINE_LENGTH: Final = 72
"""Longest line of a signature block (name, company, address, phone, web)."""
NOTHING_TO_FAX: Final = "nothing to fax: the mail has no text and no attachments"

_SIGNATURE_TYPES: Final = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)
_ENCRYPTED_TYPES: Final = frozenset(
    {"multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"}
)
_BODY_TYPES: Final = frozenset({"text/plain", "text/html", "multipart/alternative", "multipart/related"})
_TYPE_HINTS: Final = {
    "application/ms-tnef": " (Outlook rich text: send the mail as HTML or plain text)",
    "application/vnd.ms-tnef": " (Outlook rich text: send the mail as HTML or plain text)",
    "application/vnd.ms-outlook": " (an Outlook item: attach the document itself)",
}
# Taglines mail programs add below the text; whole lines only.
_TAGLINE: Final = re.compile(
    r"get\s+outlook\s+for\s+\w+[.!]?|"
    r"(?:sent\s+(?:from|with|via|using)|gesendet\s+(?:von|mit|vom)|von\s+meinem|envoy[ée]\s+(?:de|depuis)|"
    r"enviado\s+desde|inviato\s+da|verzonden\s+(?:vanaf|met))\b"
    r".{0,60}\b(?:iphone|ipad|android|outlook|mobile|samsung|galaxy|smartphone|blackberry|windows|"
    r"yahoo|gmail|huawei|xiaomi|pixel|tablet|handy|app)\b.{0,40}",
    re.IGNORECASE,
)
_CLOSING: Final = re.compile(
    r"(?:(?:best|kind|warm|many|with\s+kind|with\s+best)\s+regards|regards|best\s+wishes|best|cheers|"
    r"thanks?(?:\s+you)?|thank\s+you|many\s+thanks|sincerely|yours(?:\s+sincerely|\s+truly)?|"
    r"mit\s+freundlichen\s+gr(?:ü|ue)(?:ß|ss)en|freundliche\s+gr(?:ü|ue)(?:ß|ss)e|mfg|"
    r"(?:viele|beste|liebe|herzliche)\s+gr(?:ü|ue)(?:ß|ss)e|gr(?:ü|ue)(?:ß|ss)e|gru(?:ß|ss)|"
    r"cordialement|bien\s+(?:à|a)\s+vous|saludos|un\s+saludo|cordiali\s+saluti|saluti|"
    r"met\s+vriendelijke\s+groet(?:en)?|groeten)[\s,.!:;-]*",
    re.IGNORECASE,
)
_INVISIBLE: Final = re.compile("[\u00a0\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")
_CID_REF: Final = re.compile(r"""cid:([^"'\s)>]+)""", re.IGNORECASE)
_SIGNATURE_MARKS: Final = frozenset(
    {
        "signature",
        "x_signature",
        "moz-signature",
        "gmail_signature",
        "ms-outlook-mobile-signature",
        "x_ms-outlook-mobile-signature",
        "applemailsignature",
        "divrplysignature",
        "outlooksignature",
        "yahoo_signature",
    }
)


class BadDocument(ValueError):
    """The mail cannot be faxed; ``reason`` says why, for the sender (the SMTP layer answers 554)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Renderer(Protocol):
    """How one document becomes fax pages (``ums.render.documents.render_document``)."""

    def __call__(
        self,
        data: bytes,
        *,
        filename: str | None = ...,
        content_type: str | None = ...,
        resolution: Resolution = ...,
    ) -> list[FaxPage]: ...


@dataclass(frozen=True)
class DocumentPart:
    """One item of a fax document and where its pages are.

    Attributes
    ----------
    name : str
        The attachment's file name, ``"cover page"``, ``"mail text"`` or ``"attachment N"``.
    content_type : str
        ``type/subtype`` as the mail declared it (``text/plain`` or ``text/html`` for the text).
    first_page : int
        Index of its first page in :attr:`FaxDocument.pages` (0-based).
    page_count : int
    kind : {"cover", "text", "attachment"}
    """

    name: str
    content_type: str
    first_page: int
    page_count: int
    kind: PartKind


@dataclass(eq=False)
class FaxDocument:
    """The pages to send and what they came from.

    ``subject`` and ``sender`` are the mail's Subject and From (decoded, ``""`` when missing),
    ``message_id`` its Message-ID (for the report's In-Reply-To).
    """

    pages: list[FaxPage]
    parts: list[DocumentPart]
    subject: str
    sender: str
    message_id: str = ""
    resolution: Resolution = "fine"
    #: parts skipped as not faxable content: ("mail text", why) and skipped inline resources
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def page_count(self) -> int:
        return len(self.pages)


# -- text clean-up -------------------------------------------------------------------------------------


def _boilerplate_pattern(text: str) -> re.Pattern[str] | None:
    words = text.split()
    return re.compile(r"\s+".join(map(re.escape, words)), re.IGNORECASE) if words else None


def clean_text(
    text: str, *, flowed: bool = False, delsp: bool = False, boilerplate: Sequence[str] = ()
) -> str:
    """The mail text as it is faxed: unflowed, signature cut, taglines and boilerplate removed, trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if flowed:
        text = unflow(text, delsp)
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line in ("-- ", "--"):
            lines = lines[:index]
            break
    text = "\n".join(lines)
    for item in boilerplate:
        pattern = _boilerplate_pattern(item)
        if pattern is not None:
            text = pattern.sub("", text)
    kept = [
        line.rstrip()
        for line in text.split("\n")
        if not _TAGLINE.fullmatch(_INVISIBLE.sub(" ", line).strip())
    ]
    while kept and not _INVISIBLE.sub("", kept[0]).strip():
        kept.pop(0)
    while kept and not _INVISIBLE.sub("", kept[-1]).strip():
        kept.pop()
    return "\n".join(kept)


def _signature_line(line: str) -> bool:
    """A line of a name or contact block: short, not a question, no full stop after many words."""
    if len(line) > SIGNATURE_LINE_LENGTH or line.endswith(("?", "!")):
        return False
    return not (line.endswith(".") and len(line.split()) > 4)


def is_empty_text(text: str) -> bool:
    """True for a cleaned text that has nothing to fax: only white space, or only a signature block.

    A signature block starts with a closing phrase ("Best regards", ...) followed by at most
    SIGNATURE_MAX_LINES lines, each at most SIGNATURE_LINE_LENGTH characters and none a sentence.
    """
    lines = [line for line in (_INVISIBLE.sub(" ", raw).strip() for raw in text.split("\n")) if line]
    if not lines:
        return True
    rest = lines[1:]
    return (
        bool(_CLOSING.fullmatch(lines[0]))
        and len(rest) <= SIGNATURE_MAX_LINES
        and all(map(_signature_line, rest))
    )


def html_text(html: str) -> str:
    """The text of an HTML mail body, one line per block, signatures marked by id/class left out."""
    return html_text_of(
        html,
        skip_quotes=False,
        cut_marks=frozenset(),
        drop_marks=_SIGNATURE_MARKS,
        blocks=BLOCK_TAGS | {"br"},  # "<br/>" and "</br>" break the line once more
        strip_lines=True,
    )


# -- MIME walk -----------------------------------------------------------------------------------------


def _safe(text: str, limit: int = 80) -> str:
    """A name fit for an SMTP reply line: no control characters, not too long."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError, AttributeError, LookupError):
        return ""
    return _CONTROL.sub(" ", str(value)).strip() if value is not None else ""


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, IndexError, TypeError, AttributeError, LookupError):
        return None
    name = _CONTROL.sub("", name).strip() if name else ""
    return (Path(name.replace("\\", "/")).name or None) if name else None


def _content_id(part: Message) -> str:
    return _header(part, "Content-ID").strip("<> ").lower()


def _is_attachment(part: Message) -> bool:
    return part.get_content_disposition() == "attachment"


@dataclass
class _Walk:
    cids: set[str]
    plain: Message | None = None
    html: Message | None = None
    body_seen: bool = False
    attachments: list[Message] = field(default_factory=list)
    resources: list[Message] = field(default_factory=list)


def _shown_by_html(part: Message, walk: _Walk) -> bool:
    """An image an HTML part shows (``cid:``), whatever its Content-Disposition says."""
    return (
        part.get_content_maintype() == "image" and bool(_content_id(part)) and _content_id(part) in walk.cids
    )


def _refuse_encrypted(part: Message) -> None:
    if part.get_content_type() in _ENCRYPTED_TYPES:
        raise BadDocument("cannot fax an encrypted or S/MIME opaque-signed mail: send it unencrypted")


def _related_parts(part: Message) -> tuple[Message | None, list[Message]]:
    children = [c for c in part.get_payload() if isinstance(c, Message)] if part.is_multipart() else []
    if not children:
        return None, []
    start = str(part.get_param("start", "") or "").strip("<> ").lower()
    root = next((c for c in children if start and _content_id(c) == start), children[0])
    return root, [c for c in children if c is not root]


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []


def _walk_body(part: Message, walk: _Walk) -> None:
    """Collect the text alternatives of the mail text; resources and stray attachments aside."""
    _refuse_encrypted(part)
    ctype = part.get_content_type()
    if ctype in _SIGNATURE_TYPES:
        return
    if _shown_by_html(part, walk):
        walk.resources.append(part)
    elif _is_attachment(part):
        walk.attachments.append(part)
    elif ctype == "text/plain":
        walk.plain = walk.plain or part
    elif ctype == "text/html":
        walk.html = walk.html or part
    elif ctype == "multipart/related":
        root, others = _related_parts(part)
        if root is not None:
            _walk_body(root, walk)
        for other in others:
            if _is_attachment(other) and _content_id(other) not in walk.cids:
                walk.attachments.append(other)
            else:
                walk.resources.append(other)
    elif part.get_content_maintype() == "multipart":
        # alternative, or a mixed HTML body (Apple Mail): the first text of each kind, the rest aside
        for child in _children(part):
            _walk_body(child, walk)
    else:
        walk.resources.append(part)


def _walk(part: Message, walk: _Walk) -> None:
    _refuse_encrypted(part)
    ctype = part.get_content_type()
    if ctype in _SIGNATURE_TYPES:
        return
    if _shown_by_html(part, walk):
        walk.resources.append(part)
    elif _is_attachment(part):
        walk.attachments.append(part)
    elif ctype in _BODY_TYPES and not walk.body_seen:
        walk.body_seen = True
        _walk_body(part, walk)
    elif ctype == "multipart/related":
        root, others = _related_parts(part)
        if root is not None:
            _walk(root, walk)
        walk.resources.extend(others)
    elif ctype == "multipart/alternative":
        later = _Walk(cids=walk.cids, body_seen=True)
        _walk_body(part, later)
        best = later.plain or later.html
        walk.attachments.extend([best] if best is not None else [])
        walk.attachments.extend(later.attachments)
    elif part.get_content_maintype() == "multipart":  # mixed, signed, digest, ...
        for child in _children(part):
            _walk(child, walk)
    else:
        walk.attachments.append(part)


def _cids(msg: Message) -> set[str]:
    """Content-IDs the HTML parts refer to (RFC 2392 ``cid:`` URLs), attached mails left out."""
    found: set[str] = set()
    stack = [msg]
    while stack:
        part = stack.pop()
        if part.get_content_type() == "text/html":
            found.update(m.group(1).lower() for m in _CID_REF.finditer(part_text(part)))
        elif part.get_content_maintype() == "multipart":
            stack.extend(_children(part))
    return found


# -- the document ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """Something to render: bytes, the name used in messages, the declared content type."""

    data: bytes
    name: str
    content_type: str
    header_type: str  # the full Content-Type value (with charset) for the renderer
    kind: PartKind
    label: str  # how errors name it: "'x.pdf'" or "attachment 2"
    filename: str | None = None  # the file name the renderer sees


def _body_item(walk: _Walk, boilerplate: Sequence[str]) -> _Item | None:
    if walk.plain is not None:
        flowed = str(walk.plain.get_param("format", "") or "").lower() == "flowed"
        delsp = str(walk.plain.get_param("delsp", "") or "").lower() == "yes"
        text = clean_text(part_text(walk.plain), flowed=flowed, delsp=delsp, boilerplate=boilerplate)
        if not is_empty_text(text):
            data = text.encode("utf-8")
            return _Item(
                data, "mail text", "text/plain", "text/plain; charset=utf-8", "text", "the mail text"
            )
    if walk.html is not None:
        html = part_text(walk.html)
        if not is_empty_text(clean_text(html_text(html), boilerplate=boilerplate)):
            data = html.encode("utf-8")
            return _Item(data, "mail text", "text/html", "text/html; charset=utf-8", "text", "the mail text")
    return None


def _forwarded_text(inner: Message) -> tuple[bytes, str]:
    """An attached mail as text (or HTML): its main header lines, then its text."""
    heads = [(n, _header(inner, n)) for n in ("From", "To", "Cc", "Date", "Subject")]
    heads = [(n, v) for n, v in heads if v]
    walk = _Walk(cids=_cids(inner))
    _walk(inner, walk)
    if walk.plain is None and walk.html is not None:
        table = "".join(f"<b>{n}:</b> {_html_escape(v)}<br>" for n, v in heads)
        html = f"<p>{table}</p><hr>" + part_text(walk.html)
        return html.encode("utf-8"), "text/html; charset=utf-8"
    text = "\n".join(f"{n}: {v}" for n, v in heads)
    if walk.plain is not None:
        flowed = str(walk.plain.get_param("format", "") or "").lower() == "flowed"
        delsp = str(walk.plain.get_param("delsp", "") or "").lower() == "yes"
        body = part_text(walk.plain).replace("\r\n", "\n")
        body = unflow(body, delsp) if flowed else body
        text += "\n\n" + "\n".join(line.rstrip() for line in body.strip("\n").split("\n"))
    return text.encode("utf-8"), "text/plain; charset=utf-8"


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attachment_item(part: Message, number: int) -> _Item | None:
    ctype = part.get_content_type()
    filename = _filename(part)
    label = f"'{_safe(filename)}'" if filename else f"attachment {number}"
    name = filename or f"attachment {number}"
    if ctype == "message/rfc822":
        inner = part.get_payload(0) if part.is_multipart() else None
        if not isinstance(inner, Message):
            raise BadDocument(f"cannot fax {label}: the attached mail cannot be read")
        subject = _header(inner, "Subject")
        data, header_type = _forwarded_text(inner)
        name = filename or (f"attached mail {subject!r}" if subject else "attached mail")
        return _Item(data, _safe(name), ctype, header_type, "attachment", label)
    if part.get_content_maintype() == "multipart":
        raise BadDocument(f"cannot fax {label}: unsupported type {ctype}")
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    if part.get_content_maintype() == "text" and not filename and not part_text(part).strip():
        return None  # an empty inline text fragment between attachments
    if not data:
        raise BadDocument(f"cannot fax {label}: the file is empty")
    header_type = _header(part, "Content-Type") or ctype
    return _Item(data, name, ctype, header_type, "attachment", label, filename)


def _check_type(item: _Item) -> None:
    """Refuse what the renderer cannot handle, naming the declared type."""
    unsupported = BadDocument(
        f"cannot fax {item.label}: unsupported type {item.content_type}"
        + _TYPE_HINTS.get(item.content_type, "")
    )
    filename = item.filename
    try:
        kind = detect_kind(item.data, filename=filename, content_type=item.header_type)
    except DocumentError:
        raise unsupported from None
    if kind == "office":
        ext = Path(filename).suffix.lower() if filename else ""
        if ext not in OFFICE_EXTENSIONS and not (not ext and item.content_type.startswith(OFFICE_TYPES)):
            raise unsupported  # a ZIP archive, an Outlook .msg, ...


def _parse(mail: bytes | EmailMessage) -> Message:
    if isinstance(mail, bytes):
        return BytesParser(policy=policy.default).parsebytes(mail)
    return mail


def compose_document(
    mail: bytes | EmailMessage,
    *,
    resolution: str = "fine",
    cover: CoverInfo | None = None,
    render: Renderer = render_document,
    max_pages: int = 200,
    boilerplate: Sequence[str] = (),
    logo: Path | bytes | None = None,
) -> FaxDocument:
    """Turn a mail into fax pages: cover page, mail text, attachments (see the module docstring).

    Parameters
    ----------
    mail
        The message as received (bytes) or already parsed.
    resolution
        ``"standard"``, ``"fine"`` or ``"superfine"``.
    cover
        What the cover page says; None for no cover.  Its ``pages`` is replaced by the real total,
        an empty ``sender`` or ``subject`` by the mail's From or Subject.
    render
        Renders one document (data, filename=, content_type=, resolution=) as pages.
    max_pages
        Most pages a fax may have, the cover included.
    boilerplate
        Paragraphs (disclaimers) left out of the mail text and ignored when deciding whether it is empty.
    logo
        Logo for the cover page (path or image bytes).

    Raises
    ------
    BadDocument
        Nothing to fax, an attachment that cannot be faxed, an encrypted mail, or too many pages.
    ValueError
        An unknown resolution or a max_pages below 1 (caller errors).
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r} (standard, fine or superfine)")
    if max_pages < 1:
        raise ValueError("max_pages must be at least 1")
    res: Resolution = resolution
    msg = _parse(mail)
    walk = _Walk(cids=_cids(msg))
    _walk(msg, walk)
    items: list[_Item] = []
    skipped: list[tuple[str, str]] = []
    body = _body_item(walk, boilerplate)
    if body is not None:
        items.append(body)
    elif walk.plain is not None or walk.html is not None:
        skipped.append(("mail text", "empty or only a signature"))
    for number, part in enumerate(walk.attachments, start=1):
        item = _attachment_item(part, number)
        if item is not None:
            items.append(item)
    for part in walk.resources:
        skipped.append((_filename(part) or _content_id(part) or part.get_content_type(), "inline resource"))
    if not items:
        hint = (
            " (pictures pasted into the text are not faxed: attach them as files)" if walk.resources else ""
        )
        raise BadDocument(NOTHING_TO_FAX + hint)
    for item in items:
        _check_type(item)

    first = 1 if cover is not None else 0
    pages: list[FaxPage] = []
    parts: list[DocumentPart] = []
    for item in items:
        try:
            rendered = render(
                item.data,
                filename=item.filename,
                content_type=item.header_type,
                resolution=res,
            )
        except MissingToolError as exc:
            log.error("fax document tool missing tool=%s part=%r detail=%r", exc.tool, item.name, str(exc))
            what = "Office documents" if exc.tool == "soffice" else f"{item.content_type} documents"
            raise BadDocument(
                f"cannot fax {item.label}: this server cannot convert {what}, send it as PDF"
            ) from exc
        except DocumentError as exc:
            raise BadDocument(f"cannot fax {item.label}: {exc}") from exc
        if not rendered:
            raise BadDocument(f"cannot fax {item.label}: it has no pages")
        parts.append(DocumentPart(item.name, item.content_type, first + len(pages), len(rendered), item.kind))
        pages.extend(rendered)
        if first + len(pages) > max_pages:
            raise BadDocument(f"too many pages: at least {first + len(pages)}, the limit is {max_pages}")

    subject = _header(msg, "Subject")
    sender = _header(msg, "From")
    if cover is not None:
        info = dataclasses.replace(
            cover,
            pages=len(pages) + 1,
            sender=cover.sender or sender,
            subject=cover.subject or subject,
        )
        try:
            cover_page = render_cover(info, resolution=res, logo=logo)
        except DocumentError as exc:
            raise BadDocument(f"cannot fax: the cover page cannot be made: {exc}") from exc
        pages.insert(0, cover_page)
        parts.insert(0, DocumentPart("cover page", "application/pdf", 0, 1, "cover"))
    doc = FaxDocument(
        pages=pages,
        parts=parts,
        subject=subject,
        sender=sender,
        message_id=_header(msg, "Message-ID"),
        resolution=res,
        skipped=skipped,
    )
    log.info(
        "fax document composed pages=%d parts=%d cover=%s resolution=%s skipped=%d",
        len(pages),
        len(parts),
        cover is not None,
        res,
        len(skipped),
    )
    return doc
