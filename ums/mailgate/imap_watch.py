"""Read state from IMAP: which of our messages the owner has read, deleted or marked unread.

What it does
------------
The pure half of the IMAP watcher.  It turns what the server answered into
state changes for the message index, and never talks to a socket itself:

* :func:`parse_fetch` reads the FETCH responses as :mod:`imaplib` hands them
  over (bytes lines and ``(line, literal)`` tuples) into
  :class:`FetchedMessage` (UID, flags, header block);
* :func:`parse_ids` finds ``X-UMS-Message-Id`` and ``Message-ID`` in a header
  block; :class:`FolderCache` remembers them per UID for one ``UIDVALIDITY``,
  so a later round only needs ``UID FETCH 1:* (FLAGS)`` and the headers of new
  UIDs, and builds an :class:`Observation` (our messages in the folder and
  their flags);
* :class:`ReadStateTracker` compares an observation with the index records of
  the mailbox and returns the :class:`StateChange` list to apply;
* helpers for the wire: :func:`quote_mailbox` (modified UTF-7, RFC 3501
  §5.1.3), :func:`uid_sets`, :func:`idle_event` (which untagged responses end
  an IDLE) and :func:`retry_delay` (reconnect backoff).

How it works
------------
A folder message is one of ours when its ``X-UMS-Message-Id`` names a record
of the mailbox, or (for a server or gateway that dropped our own header) its
``Message-ID`` equals the record's.  For each record of the mailbox the
tracker derives the state the folder asks for:

* found, and some copy is neither ``\\Seen`` nor ``\\Deleted`` → ``new``
  (marking a mail unread in Outlook lights the lamp again);
* found, every copy ``\\Seen`` or ``\\Deleted`` → ``read``;
* not found, but found in an earlier observation of the same ``UIDVALIDITY``
  → ``read`` (the owner deleted it or moved it to another folder; a deleted
  voicemail must not keep the lamp on);
* not found and never seen by this tracker (e.g. deleted while ums was not
  running): ``read`` only once the record's delivery is ``delivered`` *and*
  it has been missing from every observation for ``missing_grace`` seconds of
  the caller's clock, so that a mail still on its way from the smarthost to
  the mailbox is not taken as deleted;
* not found and not delivered: no opinion.

(So the watched folder must be the one our mails land in: if a server-side rule
moves them elsewhere, every delivered message goes ``read`` after the grace.)

The tracker is edge-triggered: it reports a record only when the state the
folder asks for differs from what it asked for in the previous observation
(the first observation after start counts as a change).  So an operator's
``ums mailbox mark-unread`` stands until the owner does something in the
mailbox, and ums never fights an operator every poll.

A failed or incomplete look at the folder is passed as ``None`` (or
:meth:`FolderCache.observation` returns ``None``) and yields no change at all:
an IMAP outage never turns into a NOTIFY.  A new ``UIDVALIDITY`` (the folder
was re-created) forgets which messages were seen before, so an emptied
re-created folder does not mark everything read at once.

Pure: no I/O, no clock (``now`` is passed in, in seconds of any monotonic
clock).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from typing import NamedTuple, TypeAlias

from ums.store.models import MessageRecord, State

__all__ = [
    "FETCH_FLAGS",
    "FETCH_HEADERS",
    "IDLE_REISSUE",
    "FetchedMessage",
    "FolderCache",
    "FolderEntry",
    "MessageIds",
    "Observation",
    "ReadStateTracker",
    "StateChange",
    "idle_event",
    "normalize_message_id",
    "parse_fetch",
    "parse_ids",
    "quote_mailbox",
    "retry_delay",
    "uid_sets",
]

#: RFC 3501 §2.3.2 system flags (compared case-insensitively, kept lower-case here).
SEEN = "\\seen"
DELETED = "\\deleted"

#: The header fields that identify our mails (``BODY.PEEK`` never sets ``\\Seen``, RFC 3501 §6.4.5).
FETCH_HEADERS = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-UMS-MESSAGE-ID)]"
FETCH_FLAGS = "(UID FLAGS)"

#: RFC 2177 §3: "clients using IDLE are advised to terminate the IDLE and re-issue it at least
#: every 29 minutes to avoid being logged off".
IDLE_REISSUE = 29 * 60.0

#: Untagged responses during IDLE that mean the folder changed (RFC 3501 §7.3.1 EXISTS, §7.4.1
#: EXPUNGE, §7.4.2 FETCH; RFC 7162 §3.2.10 VANISHED).
_IDLE_CHANGE = re.compile(rb"^\* (?:\d+ (?:EXISTS|EXPUNGE|FETCH)\b|VANISHED\b)", re.I)
_IDLE_BYE = re.compile(rb"^\* BYE\b", re.I)

#: RFC 3501 §9: literal = "{" number "}" CRLF *CHAR8 (imaplib strips the CRLF).
_LITERAL = re.compile(rb"\{(\d+)\+?\}$")


class StateChange(NamedTuple):
    """Set record ``id`` to ``state`` in the index."""

    id: str
    state: State


@dataclass(frozen=True)
class FetchedMessage:
    """One FETCH response: UID, flags (lower-case) and the header block when it was asked for."""

    seq: int
    uid: int | None
    flags: frozenset[str] | None
    header: bytes | None


class MessageIds(NamedTuple):
    """The identifying headers of a folder message (``""`` when absent)."""

    ums_id: str
    message_id: str


@dataclass(frozen=True)
class FolderEntry:
    uid: int
    ids: MessageIds
    flags: frozenset[str]


@dataclass(frozen=True)
class Observation:
    """One complete look at the folder: every message that may be ours, with its flags."""

    uidvalidity: int
    entries: tuple[FolderEntry, ...]


# -- the FETCH response parser ----------------------------------------------------------------


class _Literal(bytes):
    """A literal's bytes (kept apart from the text around it)."""


_Token: TypeAlias = str | bytes | list["_Token"] | None


class _Open:
    pass


class _Close:
    pass


_OPEN = _Open()
_CLOSE = _Close()


def _tokens(parts: Sequence[bytes]) -> Iterable[object]:
    """RFC 3501 §9 tokens of a FETCH stream: parens, atoms (str), quoted (bytes), literals, NIL.

    ``parts`` alternates text and :class:`_Literal`; a text part ending in ``{n}`` is followed by
    the literal.  Parts are separated by white space (imaplib split the lines there).
    """
    for part in parts:
        if isinstance(part, _Literal):
            yield bytes(part)
            continue
        i, n = 0, len(part)
        while i < n:
            c = part[i : i + 1]
            if c in b" \t\r\n":
                i += 1
            elif c == b"(":
                yield _OPEN
                i += 1
            elif c == b")":
                yield _CLOSE
                i += 1
            elif c == b'"':
                j, out = i + 1, bytearray()
                while j < n and part[j : j + 1] != b'"':
                    if part[j : j + 1] == b"\\" and j + 1 < n:
                        j += 1
                    out += part[j : j + 1]
                    j += 1
                yield bytes(out)
                i = j + 1
            elif c == b"{" and _LITERAL.match(part, i):
                i = n  # the literal's announcement; its bytes are the next part
            else:
                j, depth = i, 0
                while j < n:
                    ch = part[j : j + 1]
                    if ch == b"[":
                        depth += 1
                    elif ch == b"]":
                        depth -= 1
                    elif depth == 0 and ch in b" ()":
                        break
                    j += 1
                atom = part[i:j].decode("latin-1")
                yield None if atom.upper() == "NIL" else atom
                i = j


def _nest(parts: Sequence[bytes]) -> list[_Token]:
    """The token stream as nested lists (a parenthesized list becomes a Python list)."""
    stack: list[list[_Token]] = [[]]
    for tok in _tokens(parts):
        if tok is _OPEN:
            stack.append([])
        elif tok is _CLOSE:
            if len(stack) == 1:
                raise ValueError("unbalanced ')' in FETCH response")
            done = stack.pop()
            stack[-1].append(done)
        else:
            assert tok is None or isinstance(tok, str | bytes)
            stack[-1].append(tok)
    if len(stack) != 1:
        raise ValueError("unbalanced '(' in FETCH response")
    return stack[0]


def parse_fetch(data: Sequence[bytes | tuple[bytes, bytes] | None]) -> list[FetchedMessage]:
    """FETCH responses as imaplib returns them (``conn.uid("FETCH", ...)[1]``).

    Each response is ``<seq> (<item> <value> ...)``; a literal arrives as a tuple ``(text up to
    {n}, literal bytes)`` and the rest of its line as the next element.  Unknown items are
    skipped; a response without UID (an unsolicited flag update) has ``uid=None``.
    Raises ``ValueError`` on a malformed response.
    """
    parts: list[bytes] = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            parts.append(item[0])
            parts.append(_Literal(item[1]))
        else:
            parts.append(item)
    tokens = _nest(parts)
    out: list[FetchedMessage] = []
    i = 0
    while i < len(tokens):
        seq, attrs = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else None
        if not (isinstance(seq, str) and seq.isdigit() and isinstance(attrs, list)):
            raise ValueError(f"not a FETCH response at token {i}: {seq!r}")
        uid: int | None = None
        flags: frozenset[str] | None = None
        header: bytes | None = None
        for k in range(0, len(attrs) - 1, 2):
            key, value = attrs[k], attrs[k + 1]
            name = key.upper() if isinstance(key, str) else ""
            if name == "UID" and isinstance(value, str) and value.isdigit():
                uid = int(value)
            elif name == "FLAGS" and isinstance(value, list):
                flags = frozenset(f.lower() for f in value if isinstance(f, str))
            elif name.startswith(("BODY[", "BODY.PEEK[", "RFC822.HEADER")):
                header = value if isinstance(value, bytes) else b""
        out.append(FetchedMessage(int(seq), uid, flags, header))
        i += 2
    return out


def normalize_message_id(value: str) -> str:
    """``" <a@b>\\r\\n "`` -> ``"<a@b>"``; a bare ``a@b`` gets its angle brackets; ``""`` stays."""
    text = "".join(value.split())
    if text and not text.startswith("<"):
        text = f"<{text}>"
    return text


def parse_ids(header: bytes) -> MessageIds:
    """``X-UMS-Message-Id`` and ``Message-ID`` of a header block (folded or not)."""
    msg = BytesHeaderParser(policy=policy.compat32).parsebytes(header)
    ums_id = "".join(str(msg.get("X-UMS-Message-Id", "")).split())
    return MessageIds(ums_id, normalize_message_id(str(msg.get("Message-ID", ""))))


# -- the per-UID cache ------------------------------------------------------------------------


class FolderCache:
    """Identifying headers per UID for one ``UIDVALIDITY`` (RFC 3501 §2.3.1.1)."""

    def __init__(self) -> None:
        self.uidvalidity: int | None = None
        self._ids: dict[int, MessageIds] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def plan(self, uidvalidity: int, uids: Iterable[int]) -> list[int]:
        """Take the folder's current UIDs; return those whose headers must be fetched (sorted).

        A new ``uidvalidity`` drops everything; UIDs no longer present are forgotten.
        """
        if uidvalidity != self.uidvalidity:
            self._ids.clear()
            self.uidvalidity = uidvalidity
        present = set(uids)
        for uid in [u for u in self._ids if u not in present]:
            del self._ids[uid]
        return sorted(u for u in present if u not in self._ids)

    def learn(self, uid: int, header: bytes) -> None:
        self._ids[uid] = parse_ids(header)

    def observation(self, flags: Mapping[int, frozenset[str]]) -> Observation | None:
        """The observation for these UIDs and flags; None while a UID's headers are unknown."""
        if self.uidvalidity is None or any(uid not in self._ids for uid in flags):
            return None
        entries = tuple(
            FolderEntry(uid, self._ids[uid], frozenset(flags[uid]))
            for uid in sorted(flags)
            if self._ids[uid].ums_id or self._ids[uid].message_id
        )
        return Observation(self.uidvalidity, entries)


# -- the decision -----------------------------------------------------------------------------


class ReadStateTracker:
    """Turns observations of one folder into read-state changes for one mailbox's records.

    ``missing_grace``: seconds a delivered record must be missing from the folder, without
    ever having been seen there, before it counts as deleted (read).
    """

    def __init__(self, missing_grace: float = 900.0) -> None:
        if missing_grace < 0:
            raise ValueError("missing_grace must not be negative")
        self.missing_grace = missing_grace
        self._uidvalidity: int | None = None
        #: records found in the folder in an observation of this UIDVALIDITY
        self._present: set[str] = set()
        #: first observation time at which a never-seen delivered record was missing
        self._missing_since: dict[str, float] = {}
        #: what the folder asked for in the previous observation
        self._asked: dict[str, State] = {}

    def resync(self) -> None:
        """Forget the previous requests: the next observation is applied in full again.

        Call it when applying changes failed, so they are not lost.
        """
        self._asked.clear()

    def _wanted(self, rec: MessageRecord, copies: list[frozenset[str]] | None, now: float) -> State | None:
        if copies:
            self._present.add(rec.id)
            self._missing_since.pop(rec.id, None)
            unread = any(SEEN not in f and DELETED not in f for f in copies)
            return "new" if unread else "read"
        if rec.id in self._present:
            return "read"
        if rec.delivery != "delivered":
            return None
        since = self._missing_since.setdefault(rec.id, now)
        return "read" if now - since >= self.missing_grace else None

    def observe(
        self, records: Sequence[MessageRecord], observation: Observation | None, now: float
    ) -> list[StateChange]:
        """The changes to apply after ``observation`` (None: the look failed -> no changes).

        ``records`` are the index records of the mailbox as they are now.
        """
        if observation is None:
            return []
        if observation.uidvalidity != self._uidvalidity:
            self._uidvalidity = observation.uidvalidity
            self._present.clear()
            self._missing_since.clear()
        by_id = {r.id: r for r in records}
        by_mid = {r.message_id: r for r in records if r.message_id}
        found: dict[str, list[frozenset[str]]] = {}
        for entry in observation.entries:
            rec = by_id.get(entry.ids.ums_id) if entry.ids.ums_id else None
            if rec is None and entry.ids.message_id:
                rec = by_mid.get(entry.ids.message_id)
            if rec is not None:
                found.setdefault(rec.id, []).append(entry.flags)
        changes: list[StateChange] = []
        for rec in records:
            wanted = self._wanted(rec, found.get(rec.id), now)
            if wanted is None or self._asked.get(rec.id) == wanted:
                continue
            self._asked[rec.id] = wanted
            if rec.state != wanted:
                changes.append(StateChange(rec.id, wanted))
        for table in (self._asked, self._missing_since):
            for ident in [k for k in table if k not in by_id]:
                del table[ident]
        self._present &= by_id.keys()
        return changes


# -- wire helpers -----------------------------------------------------------------------------


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 §5.1.3).

    ``"Entwürfe"`` -> ``'"Entw&APw-rfe"'``; ``&`` becomes ``&-``.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    text = "".join(out)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_sets(uids: Iterable[int], chunk: int = 500) -> list[str]:
    """RFC 3501 §9 sequence-sets, at most ``chunk`` UIDs each: ``[1, 2, 3, 7]`` -> ``["1:3,7"]``."""
    ordered = sorted(set(uids))
    out: list[str] = []
    for k in range(0, len(ordered), chunk):
        part = ordered[k : k + chunk]
        ranges: list[str] = []
        start = prev = part[0]
        for uid in [*part[1:], None]:
            if uid is not None and uid == prev + 1:
                prev = uid
                continue
            ranges.append(str(start) if start == prev else f"{start}:{prev}")
            if uid is not None:
                start = prev = uid
        out.append(",".join(ranges))
    return out


def idle_event(line: bytes) -> str:
    """Classify a line received during IDLE: ``"change"``, ``"bye"`` or ``""`` (nothing to do)."""
    if _IDLE_BYE.match(line):
        return "bye"
    if _IDLE_CHANGE.match(line):
        return "change"
    return ""


def retry_delay(failures: int, first: float, maximum: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1, 2, ...): doubling, capped."""
    if failures < 1:
        return 0.0
    return float(min(maximum, first * 2.0 ** min(failures - 1, 30)))
