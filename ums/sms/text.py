"""The text of a mail as an SMS: the new words only, no quoted history, no signature.

What it does
------------
``sms_text_from_mail(msg, max_chars=1000)`` returns what a mail to the SMS gateway should say:

* the body's ``text/plain`` part (``format=flowed`` unwrapped, RFC 3676 §4.2), or the text of its
  ``text/html`` part when there is no plain text or it has nothing left;
* without quoted history: lines starting with ``>`` are dropped, and everything from the first
  reply or forward marker on is cut: "On <date>, <name> wrote:" (also over two lines, as Gmail
  wraps it; German "Am ... schrieb ...:", French "Le ... a écrit :"), "-----Original Message-----"
  (German "-----Ursprüngliche Nachricht-----", French "----- Message d'origine -----"), and
  Outlook's header block "From: ... / Sent: ..." (German "Von: ... / Gesendet: ...", French
  "De : ... / Envoyé : ...") with the rule of underscores above it;
* without the signature: everything from the RFC 3676 §4.3 separator ``-- `` (or ``--``) on, and
  mobile and client taglines ("Sent from my iPhone", "Von meinem iPad gesendet", "Get Outlook for
  Android");
* in HTML, elements that hold quoted history or signatures (``blockquote``, ``gmail_quote``,
  ``moz-signature``, ...) are left out before the text is taken, and everything from Outlook's
  ``divRplyFwdMsg`` / ``appendonsend`` marker on;
* white space tidied: no-break spaces become spaces, zero-width characters go, runs of spaces and
  tabs become one space, lines are stripped, runs of blank lines become one blank line, and the
  whole is stripped;
* at most ``max_chars`` characters: a longer text is cut at a word boundary and ends in "..."
  (ASCII, so a GSM 7-bit text stays GSM 7-bit).

Nothing left raises :class:`EmptySms` ("nothing to send: the mail has no text").  The subject is not
used.

How it works
------------
Pure: the mail is parsed with stdlib ``email`` (``policy.default``) and its body found with
``EmailMessage.get_body``; parts are decoded and HTML read by ``ums.mailgate.mailtext``; the clean-up
is line-based regular expressions.  No I/O and no third-party packages.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Final

from ums.mailgate.flowed import unflow
from ums.mailgate.mailtext import BLOCK_TAGS, html_text, part_text

__all__ = ["NOTHING_TO_SEND", "EmptySms", "clean_sms_text", "html_to_text", "sms_text_from_mail"]

NOTHING_TO_SEND: Final = "nothing to send: the mail has no text"

_INVISIBLE: Final = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES: Final = re.compile(r"[ \t\u00a0\u2002-\u200a\u202f\u205f\u3000]+")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# "On Mon, 1 Jan 2024 at 10:00, Jane Doe <jane@example.com> wrote:" (English), German, French, Dutch,
# Spanish, Italian; up to 300 characters as Gmail and Apple Mail put name and address in it.
_WROTE: Final = re.compile(
    r"(?:on\s.{0,300}\swrote|am\s.{0,300}\sschrieb.{0,120}|le\s.{0,300}\sa\s+[ée]crit|"
    r"op\s.{0,300}\sschreef.{0,120}|el\s.{0,300}\sescribi[óo]|il\s.{0,300}\sha\s+scritto)\s*:\s*",
    re.IGNORECASE,
)
_ORIGINAL: Final = re.compile(
    r"-{2,}\s*(?:original\s+message|urspr(?:ü|ue)ngliche\s+nachricht|message\s+d'origine|"
    r"mensaje\s+original|messaggio\s+originale|oorspronkelijk\s+bericht)\s*-{2,}",
    re.IGNORECASE,
)
_HEADER_FROM: Final = re.compile(r"\*?(?:from|von|de|van|da)\s*:\*?\s*\S.*", re.IGNORECASE)
_HEADER_SENT: Final = re.compile(
    r"\*?(?:sent|date|gesendet|datum|envoy[ée]|date\s+d'envoi|enviado|inviato|verzonden)\s*:\*?\s*\S.*",
    re.IGNORECASE,
)
_RULE: Final = re.compile(r"[_\-=\u2014\u2500]{8,}")
# Taglines mail programs add below the text; whole lines only.
_TAGLINE: Final = re.compile(
    r"(?:get\s+outlook\s+for\s+\w+|"
    r"(?:sent|gesendet|envoy[ée]|enviado|inviato|verzonden)\s+(?:from|with|via|using|von|mit|vom|de|depuis|"
    r"desde|da|vanaf|met)\s.{0,60}|"
    r"von\s+meinem\s.{0,60}|(?:sent|gesendet)\s+from\s+my\s.{0,60})[.!]?",
    re.IGNORECASE,
)
_TAGLINE_DEVICE: Final = re.compile(
    r"\b(?:iphone|ipad|android|outlook|mobile|samsung|galaxy|smartphone|blackberry|windows|yahoo|gmail|"
    r"huawei|xiaomi|pixel|tablet|handy|phone|proton\s*mail)\b",
    re.IGNORECASE,
)
_CID: Final = re.compile(r"\[cid:[^\]]*\]", re.IGNORECASE)


class EmptySms(ValueError):
    """The mail has nothing to send as an SMS; ``reason`` says so for the sender."""

    def __init__(self, reason: str = NOTHING_TO_SEND) -> None:
        super().__init__(reason)
        self.reason = reason


# -- HTML ----------------------------------------------------------------------------------------------

#: id or class words of elements that hold quoted history or a signature
_HTML_DROP_MARKS: Final = frozenset(
    {
        "gmail_quote",
        "gmail_quote_container",
        "gmail_attr",
        "gmail_signature",
        "yahoo_quoted",
        "moz-cite-prefix",
        "moz-signature",
        "applemailsignature",
        "signature",
        "x_signature",
        "ms-outlook-mobile-signature",
        "outlooksignature",
        "mail-signature",
    }
)


#: id or class words of elements where Outlook's quoted history starts (the history follows, unwrapped)
_HTML_CUT_MARKS: Final = frozenset({"divrplyfwdmsg", "x_divrplyfwdmsg", "appendonsend", "x_appendonsend"})


#: tags that break the line besides the common blocks
_HTML_BLOCKS: Final = BLOCK_TAGS | {"ul", "ol", "pre", "section"}


def html_to_text(html: str) -> str:
    """The text of an HTML body, a line per block, quotes and marked signatures left out."""
    return html_text(
        html,
        skip_quotes=True,
        cut_marks=_HTML_CUT_MARKS,
        drop_marks=_HTML_DROP_MARKS,
        keep_pre=True,
        blocks=_HTML_BLOCKS,
        line_breaks=frozenset({"br", "hr"}),
    )


# -- text ----------------------------------------------------------------------------------------------


def _is_tagline(line: str) -> bool:
    return bool(_TAGLINE.fullmatch(line)) and bool(_TAGLINE_DEVICE.search(line))


def _wrote_lines(lines: list[str], index: int) -> int:
    """How many lines an attribution ("On ... wrote:") at ``index`` takes: 0, 1, or 2 as Gmail wraps it."""
    if _WROTE.fullmatch(lines[index]):
        return 1
    if (
        index + 1 < len(lines)
        and lines[index + 1]
        and _WROTE.fullmatch(lines[index] + " " + lines[index + 1])
    ):
        return 2
    return 0


def _drop_history(lines: list[str]) -> list[str]:
    """The lines before the quoted history.

    An attribution followed by ``>`` lines (bottom posting, inline replies) is dropped on its own,
    and the text goes on; any other reply or forward marker cuts the rest.
    """
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        header = _HEADER_FROM.fullmatch(line) and any(
            _HEADER_SENT.fullmatch(nxt) for nxt in lines[index + 1 : index + 4]
        )
        if header or _ORIGINAL.fullmatch(line):
            while out and (not out[-1] or _RULE.fullmatch(out[-1])):
                out.pop()  # the rule of underscores Outlook puts above its header block
            break
        span = _wrote_lines(lines, index)
        if span:
            following = next((nxt for nxt in lines[index + span :] if nxt), "")
            if not following.startswith(">"):
                break
            index += span
            continue
        out.append(line)
        index += 1
    return out


def clean_sms_text(text: str) -> str:
    """A mail text without quoted history, signature and taglines, white space tidied (module docstring).

    Returns ``""`` when nothing is left.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", _CONTROL.sub("", _CID.sub("", text)))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    if "--" in lines:  # RFC 3676 §4.3 "-- ", or "--" as many programs strip the space
        lines = lines[: lines.index("--")]
    lines = [line for line in _drop_history(lines) if not line.startswith(">") and not _is_tagline(line)]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    if max_chars <= 3:
        return text[:max_chars]
    head = text[: max_chars - 3]
    space = max(head.rfind(" "), head.rfind("\n"))
    if space >= (max_chars - 3) * 3 // 4:  # a word boundary not far back
        head = head[:space]
    return head.rstrip() + "..."


def _parse(msg: EmailMessage | bytes) -> EmailMessage:
    if isinstance(msg, bytes | bytearray):
        parsed = BytesParser(policy=policy.default).parsebytes(bytes(msg))
        assert isinstance(parsed, EmailMessage)
        return parsed
    return msg


def sms_text_from_mail(msg: EmailMessage | bytes, *, max_chars: int = 1000) -> str:
    """The text to send as an SMS for a mail (see the module docstring).

    Parameters
    ----------
    msg
        The mail as received (bytes) or parsed with a modern policy (``EmailMessage``).
    max_chars
        Longest text returned, in characters (code points); longer text is cut and ends in "...".

    Raises
    ------
    EmptySms
        Nothing is left: no text part, or only quoted history, a signature or white space.
    ValueError
        ``max_chars`` below 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    mail = _parse(msg)
    for subtype in ("plain", "html"):
        part = mail.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            continue
        content = part_text(part)
        if subtype == "html":
            content = html_to_text(content)
        elif str(part.get_param("format", "") or "").lower() == "flowed":
            delsp = str(part.get_param("delsp", "") or "").lower() == "yes"
            content = unflow(content.replace("\r\n", "\n"), delsp)
        text = clean_sms_text(content)
        if text:
            return _truncate(text, max_chars)
    raise EmptySms()
