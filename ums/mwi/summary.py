"""``application/simple-message-summary`` bodies (RFC 3842 §5): build and parse.

What it does
------------
:class:`MessageCounts` holds the four numbers of one message class (new / old, and of those the
urgent ones); :class:`MessageSummary` is a whole body: ``Messages-Waiting``, the optional
``Message-Account`` and one summary line per message class, plus optional extension headers.
:func:`summary_for` builds the body a voicemail box sends: voice counts always, fax counts when
faxes are counted.

How it works
------------
The grammar of RFC 3842 §5.2::

    message-summary  = msg-status-line CRLF [msg-account CRLF] [*(msg-summary-line CRLF)]
                       [ *opt-msg-headers ]
    msg-status-line  = "Messages-Waiting" HCOLON msg-status      ; "yes" / "no"
    msg-account      = "Message-Account" HCOLON Account-URI
    msg-summary-line = message-context-class HCOLON newmsgs SLASH oldmsgs
                       [ LPAREN new-urgentmsgs SLASH old-urgentmsgs RPAREN ]
    opt-msg-headers  = CRLF 1*(extension-header CRLF)
    msg-count        = 1*DIGIT   ; MUST NOT exceed 2^32-1

``serialize`` writes exactly that with CRLF line ends, ``Name: value`` spacing and the urgent
pair always present (``Voice-Message: 1/0 (0/0)``), which is what phones are tested against.
``parse`` is lenient where the grammar is (case of names and ``yes``/``no``, white space around
``:``, ``/``, ``(`` and ``)``, LF-only line ends) and strict about the numbers.  Message classes
are the message-context-class values of RFC 3458 (``voice-message``, ``fax-message``,
``pager-message``, ``multimedia-message``, ``text-message``, ``none``); other names with a
count syntax are kept as classes too, other ``Name: value`` lines as extension headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CONTENT_TYPE",
    "EVENT_PACKAGE",
    "FAX",
    "MAX_COUNT",
    "VOICE",
    "MessageCounts",
    "MessageSummary",
    "SummaryError",
    "summary_for",
]

#: RFC 3842 §3.5: "the body ... of type application/simple-message-summary".
CONTENT_TYPE = "application/simple-message-summary"
#: RFC 3842 §3.1: the event package name.
EVENT_PACKAGE = "message-summary"
#: RFC 3842 §5.2: "msg-count ... MUST NOT exceed 2^32-1".
MAX_COUNT = 2**32 - 1
#: RFC 3458 message-context-class values as RFC 3842 writes them in its examples.
VOICE = "Voice-Message"
FAX = "Fax-Message"
_CANONICAL = {
    name.lower(): name for name in (VOICE, FAX, "Pager-Message", "Multimedia-Message", "Text-Message", "None")
}

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_LINE_RE = re.compile(rf"^({_TOKEN})[ \t]*:[ \t]*(.*?)[ \t]*$")
_COUNTS_RE = re.compile(r"^(\d+)[ \t]*/[ \t]*(\d+)(?:[ \t]*\([ \t]*(\d+)[ \t]*/[ \t]*(\d+)[ \t]*\))?$")


class SummaryError(ValueError):
    """A body that is not an application/simple-message-summary document."""


@dataclass(frozen=True)
class MessageCounts:
    """New and old messages of one class; ``urgent_*`` count the urgent ones among them."""

    new: int = 0
    old: int = 0
    urgent_new: int = 0
    urgent_old: int = 0

    def __post_init__(self) -> None:
        for value in (self.new, self.old, self.urgent_new, self.urgent_old):
            if not 0 <= value <= MAX_COUNT:
                raise ValueError(f"message count out of range: {value}")

    def __str__(self) -> str:
        return f"{self.new}/{self.old} ({self.urgent_new}/{self.urgent_old})"


@dataclass(frozen=True)
class MessageSummary:
    """One application/simple-message-summary document.

    ``classes`` keeps the order of the summary lines; names are canonical for the RFC 3458
    classes (``Voice-Message``) and as written for others.  ``extra`` holds the optional
    extension headers that follow a blank line (RFC 3842 §5.2 opt-msg-headers).
    """

    waiting: bool
    account: str | None = None
    classes: tuple[tuple[str, MessageCounts], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()

    def count(self, message_class: str) -> MessageCounts | None:
        """The counts of a class (case-insensitive name), None when the body has no such line."""
        low = message_class.lower()
        for name, counts in self.classes:
            if name.lower() == low:
                return counts
        return None

    @property
    def voice(self) -> MessageCounts | None:
        return self.count(VOICE)

    @property
    def fax(self) -> MessageCounts | None:
        return self.count(FAX)

    def serialize(self) -> bytes:
        lines = [f"Messages-Waiting: {'yes' if self.waiting else 'no'}"]
        if self.account:
            lines.append(f"Message-Account: {self.account}")
        lines += [f"{name}: {counts}" for name, counts in self.classes]
        if self.extra:
            lines.append("")
            lines += [f"{name}: {value}" for name, value in self.extra]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> MessageSummary:
        """Parse a body; raises :class:`SummaryError` when it does not follow RFC 3842 §5.2."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SummaryError("body is not UTF-8") from exc
        lines = text.replace("\r\n", "\n").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        waiting: bool | None = None
        account: str | None = None
        classes: list[tuple[str, MessageCounts]] = []
        extra: list[tuple[str, str]] = []
        in_extensions = False
        for raw in lines:
            if not raw.strip():
                if waiting is None:
                    raise SummaryError("blank line before Messages-Waiting")
                in_extensions = True
                continue
            m = _LINE_RE.match(raw)
            if m is None:
                raise SummaryError(f"not a header line: {raw[:60]!r}")
            name, value = m.group(1), m.group(2)
            low = name.lower()
            if in_extensions:
                extra.append((name, value))
            elif low == "messages-waiting":
                if waiting is not None:
                    raise SummaryError("Messages-Waiting twice")
                status = value.lower()
                if status not in ("yes", "no"):
                    raise SummaryError(f"Messages-Waiting must be yes or no, not {value[:20]!r}")
                waiting = status == "yes"
            elif waiting is None:
                raise SummaryError("the body must start with Messages-Waiting")
            elif low == "message-account":
                if not value or ":" not in value:
                    raise SummaryError("Message-Account needs an absolute URI")
                account = value
            else:
                counts = _parse_counts(value)
                if counts is None:
                    extra.append((name, value))
                else:
                    classes.append((_CANONICAL.get(low, name), counts))
        if waiting is None:
            raise SummaryError("no Messages-Waiting line")
        return cls(waiting, account, tuple(classes), tuple(extra))


def _parse_counts(value: str) -> MessageCounts | None:
    m = _COUNTS_RE.match(value)
    if m is None:
        return None
    numbers = [int(g) if g is not None else 0 for g in m.groups()]
    if any(n > MAX_COUNT for n in numbers):
        raise SummaryError("message count above 2^32-1")
    return MessageCounts(*numbers)


def summary_for(
    voice: MessageCounts, *, account: str | None = None, fax: MessageCounts | None = None
) -> bytes:
    """The body for a mailbox: waiting = any new message (RFC 3842 §5.2); fax line if counted."""
    classes: list[tuple[str, MessageCounts]] = [(VOICE, voice)]
    if fax is not None:
        classes.append((FAX, fax))
    waiting = any(counts.new > 0 for _, counts in classes)
    return MessageSummary(waiting, account, tuple(classes)).serialize()
