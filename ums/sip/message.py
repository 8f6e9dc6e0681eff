"""SIP messages (RFC 3261 §7): parse and serialise requests and responses.

What it does
------------
``parse_message(data)`` turns one datagram (or one framed TCP message) into a
:class:`Request` or :class:`Response`; ``msg.serialize()`` gives the bytes back.
:class:`StreamFramer` cuts a TCP byte stream into messages by Content-Length
(RFC 3261 §18.3).

How it works
------------
Header names are stored in their canonical long form (compact forms of
RFC 3261 §7.3.3 are expanded: ``v`` -> ``Via``), looked up case-insensitively.
A header line carrying several comma-separated values (``Via: a, b``) is kept as
written; :meth:`Headers.get_all_values` splits it on commas outside quotes and
angle brackets, so ``Via``, ``Route`` and ``Record-Route`` come out one value per
hop.  Anything malformed raises :class:`SipParseError` with a status hint (400,
413, 505 ...) so the caller can answer when a response is possible; no other
exception escapes ``parse_message``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "COMPACT_FORMS",
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "Headers",
    "Request",
    "Response",
    "SipMessage",
    "SipParseError",
    "StreamFramer",
    "canonical_name",
    "parse_message",
    "split_header_values",
]

#: Largest message we accept (bytes).  RFC 3261 §18.1.1 keeps UDP under the MTU;
#: TCP messages may be larger but a UMS never needs more than this.
MAX_MESSAGE_SIZE = 65_535
#: Most header lines we accept in one message.
MAX_HEADERS = 256

#: RFC 3261 §7.3.3 compact forms, plus RFC 3265 (o, u), RFC 3515 (r, b), RFC 4028 (x), RFC 3841 (j, d, a).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_SPECIAL_CASE = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
# Request-Line = Method SP Request-URI SP SIP-Version CRLF
_REQUEST_LINE_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) (SIP/\d+\.\d+)$")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF  (ASCII digits only: str regexes'
# \d would also take other scripts' digits)
_STATUS_LINE_RE = re.compile(r"^(SIP/[0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?$")
# Request-URI = SIP-URI / SIPS-URI / absoluteURI ; absoluteURI starts with scheme ":"
# (scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )), which also rules out "<sip:...>"
_URI_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:")
# 1*DIGIT fields (Content-Length, CSeq number); more than 10 digits is out of range anyway
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
_QUOTED_PAIR_RE = re.compile(r"\\[\x00-\x09\x0b\x0c\x0e-\x7f]")
# RFC 3261 §7.3.1: only headers whose grammar is a comma list may appear more than once
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")


class SipParseError(ValueError):
    """A message we cannot accept.  ``status_hint`` is the response to send, if one can be sent."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint


_CANONICAL_CACHE: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Canonical long form of a header name: ``v`` -> ``Via``, ``call-id`` -> ``Call-ID``."""
    cached = _CANONICAL_CACHE.get(name)
    if cached is not None:
        return cached
    low = name.strip().lower()
    if len(low) == 1 and low in COMPACT_FORMS:
        canon = COMPACT_FORMS[low]
    elif low in _SPECIAL_CASE:
        canon = _SPECIAL_CASE[low]
    else:
        canon = "-".join(part[:1].upper() + part[1:] for part in low.split("-"))
    if len(_CANONICAL_CACHE) < 4096:
        _CANONICAL_CACHE[name] = canon
    return canon


_SPLIT_SPECIALS = re.compile(r'[",<>\\]')


def split_header_values(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and ``<...>``.

    >>> split_header_values('<sip:a@b;lr>, "x, y" <sip:c@d>')
    ['<sip:a@b;lr>', '"x, y" <sip:c@d>']
    """
    if "," not in value:
        part = value.strip()
        return [part] if part else []
    if '"' not in value and "<" not in value:
        return [p for p in (p.strip() for p in value.split(",")) if p]
    out: list[str] = []
    depth_angle = 0
    in_quote = False
    escaped_at = -1
    start = 0
    # walk the delimiters only; a backslash inside quotes escapes the character after it
    for m in _SPLIT_SPECIALS.finditer(value):
        i = m.start()
        ch = value[i]
        if in_quote:
            if i == escaped_at:
                continue
            if ch == "\\":
                escaped_at = i + 1
            elif ch == '"':
                in_quote = False
            continue
        if ch == '"':
            in_quote = True
        elif ch == "<":
            depth_angle += 1
        elif ch == ">":
            depth_angle = max(0, depth_angle - 1)
        elif ch == "," and depth_angle == 0:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


@dataclass
class Headers:
    """Ordered, case-insensitive SIP header list; repeated headers are kept in order."""

    _items: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, items: Iterable[tuple[str, str]]) -> Headers:
        h = cls()
        for name, value in items:
            h.add(name, value)
        return h

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first header of that name (or at the top)."""
        cname = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == cname:
                self._items.insert(i, (cname, value))
                return
        self._items.insert(0, (cname, value))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the first header line of that name (comma lists are split)."""
        values = self.get_all_values(name)
        return values[0] if values else default

    def get_raw(self, name: str) -> str | None:
        """The first header line of that name, unsplit (for headers that may contain commas)."""
        cname = canonical_name(name)
        for n, v in self._items:
            if n == cname:
                return v
        return None

    def get_lines(self, name: str) -> list[str]:
        """Every header line of that name, unsplit."""
        cname = canonical_name(name)
        return [v for n, v in self._items if n == cname]

    def get_all_values(self, name: str) -> list[str]:
        """Every value of that name, comma-separated lists split (Via, Route, Record-Route, Contact...).

        Headers whose grammar allows bare commas (auth challenges, Date, Subject, User-Agent...) are not
        split; use :meth:`get_lines` for those.
        """
        cname = canonical_name(name)
        if cname in _UNSPLIT:
            return self.get_lines(cname)
        out: list[str] = []
        for n, v in self._items:
            if n == cname:
                out.extend(split_header_values(v))
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every header of that name with one line (placed where the first one was)."""
        cname = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == cname:
                self._items[i] = (cname, value)
                self._items = [it for j, it in enumerate(self._items) if j <= i or it[0] != cname]
                return
        self._items.append((cname, value))

    def remove(self, name: str) -> None:
        cname = canonical_name(name)
        self._items = [it for it in self._items if it[0] != cname]

    def remove_first_value(self, name: str) -> str | None:
        """Pop the topmost value of a multi-value header (e.g. our own Via on a response)."""
        cname = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == cname:
                values = split_header_values(v)
                if not values:
                    del self._items[i]
                    return None
                first = values[0]
                if len(values) == 1:
                    del self._items[i]
                else:
                    self._items[i] = (cname, ", ".join(values[1:]))
                return first
        return None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        cname = canonical_name(name)
        return any(n == cname for n, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        return Headers(list(self._items))


_UNSPLIT = frozenset(
    {
        "WWW-Authenticate",
        "Authorization",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Authentication-Info",
        "Date",
        "Subject",
        "User-Agent",
        "Server",
        "Organization",
        "Call-Info",
        "Warning",
        "Retry-After",
        "Content-Disposition",
        "Content-Type",
        "Expires",
        "Min-Expires",
        "CSeq",
        "Call-ID",
        "Content-Length",
        "Max-Forwards",
        "Event",
        "Subscription-State",
    }
)


@dataclass
class SipMessage:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # -- common header helpers ------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) from CSeq; raises SipParseError if absent or malformed."""
        raw = self.headers.get("CSeq")
        if raw is None:
            raise SipParseError("missing CSeq")
        parts = raw.split()
        if len(parts) != 2 or not _DIGITS_RE.fullmatch(parts[0]) or not _TOKEN_RE.match(parts[1]):
            raise SipParseError(f"malformed CSeq: {raw!r}")
        num = int(parts[0])
        if num >= 2**31:
            raise SipParseError("CSeq number out of range")
        return num, parts[1].upper()

    @property
    def vias(self) -> list[str]:
        return self.headers.get_all_values("Via")

    def _head_lines(self) -> list[str]:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is always written and always matches the body."""
        lines = self._head_lines()
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass
class Request(SipMessage):
    method: str = "OPTIONS"
    uri: str = ""
    version: str = "SIP/2.0"

    def _head_lines(self) -> list[str]:
        return [f"{self.method} {self.uri} {self.version}"]

    def __repr__(self) -> str:
        return f"Request({self.method} {self.uri}, call_id={self.call_id!r})"


@dataclass
class Response(SipMessage):
    status: int = 200
    reason: str = "OK"
    version: str = "SIP/2.0"

    def _head_lines(self) -> list[str]:
        return [f"{self.version} {self.status} {self.reason}"]

    def __repr__(self) -> str:
        return f"Response({self.status} {self.reason}, call_id={self.call_id!r})"


_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
# raw header name (as written before the colon) -> canonical name, for names already validated
_HEADER_NAME_CACHE: dict[str, str] = {}


def parse_message(data: bytes) -> Request | Response:
    """Parse one complete SIP message.

    Raises
    ------
    SipParseError
        For anything that is not a well-formed SIP/2.0 message; ``status_hint`` says which
        response fits (400 malformed, 413 too large, 505 version).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("message too large", 413)
    # RFC 3261 §7.5: leading CRLFs before the start line are ignored (keep-alives).
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    sep = data.find(b"\r\n\r\n")
    if sep >= 0:
        head_b, body = data[:sep], data[sep + 4 :]
    else:
        sep = data.find(b"\n\n")
        if sep < 0:
            head_b, body = data, b""
        else:
            head_b, body = data[:sep], data[sep + 2 :]
    try:
        head = head_b.decode("utf-8")
    except UnicodeDecodeError:
        try:
            head = head_b.decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
            raise SipParseError("undecodable header") from exc
    head = head.replace("\r\n", "\n")
    if "\r" in head:
        raise SipParseError("stray CR in header")
    # RFC 3261 §25.1: quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F) is the only place for a NUL
    if "\x00" in head and "\x00" in _QUOTED_PAIR_RE.sub("", head):
        raise SipParseError("NUL in header")
    raw_lines = head.split("\n")
    start = raw_lines[0].strip()
    if "\n " in head or "\n\t" in head:
        # RFC 3261 §7.3.1: a line beginning with whitespace continues the previous header (LWS folding)
        folded: list[str] = []
        for ln in raw_lines[1:]:
            if ln[:1] in (" ", "\t") and folded:
                folded[-1] += " " + ln.strip()
            elif ln.strip():
                folded.append(ln)
    else:
        folded = [ln for ln in raw_lines[1:] if ln.strip()]
    if len(folded) > MAX_HEADERS:
        raise SipParseError("too many headers", 400)

    msg: Request | Response
    m = _REQUEST_LINE_RE.match(start)
    if m:
        method, uri, version = m.groups()
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported version {version}", 505)
        if not _URI_SCHEME_RE.match(uri):
            raise SipParseError(f"malformed Request-URI {uri[:60]!r}")
        msg = Request(method=method.upper(), uri=uri, version=version)
    else:
        m2 = _STATUS_LINE_RE.match(start)
        if not m2:
            raise SipParseError(f"malformed start line: {start[:60]!r}")
        version, code, reason = m2.groups()
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported version {version}", 505)
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range: {status}")
        msg = Response(status=status, reason=reason or "", version=version)

    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for ln in folded:
        name, colon, value = ln.partition(":")
        canon = _HEADER_NAME_CACHE.get(name) if colon else None
        if canon is None:
            stripped = name.strip()
            if not colon or not stripped or not _TOKEN_RE.match(stripped):
                raise SipParseError(f"malformed header line: {ln[:60]!r}")
            canon = canonical_name(stripped)
            if len(_HEADER_NAME_CACHE) < 4096:
                _HEADER_NAME_CACHE[name] = canon
        value = value.strip()
        if canon in _SINGLE and (
            canon in seen or (canon in ("From", "To") and len(split_header_values(value)) > 1)
        ):
            raise SipParseError(f"more than one {canon}")
        if canon == "Via" and not split_header_values(value):
            raise SipParseError("empty Via")  # Via = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
        seen.add(canon)
        items.append((canon, value))
    for name in _MANDATORY:
        if name not in seen:
            raise SipParseError(f"missing {name}")
    msg.headers = headers = Headers(items)
    if not msg.vias:
        raise SipParseError("empty Via")
    _num, cseq_method = msg.cseq
    if isinstance(msg, Request) and cseq_method != msg.method:
        raise SipParseError("CSeq method does not match request method")
    clen = headers.get_raw("Content-Length")
    if clen is not None:
        clen = clen.strip()
        if not _DIGITS_RE.fullmatch(clen):
            raise SipParseError(f"malformed Content-Length: {clen[:20]!r}")
        n = int(clen)
        if n > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[:n]  # RFC 3261 §18.3: extra octets after the body are discarded on UDP
    msg.body = body
    return msg


# Content-Length (or compact "l") at the start of a head line; lines end in CRLF or LF
_FRAMER_CLEN_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$")


class StreamFramer:
    """Cut a TCP byte stream into SIP messages (RFC 3261 §18.3: Content-Length framing).

    ``feed(data)`` returns the complete messages' bytes; partial data stays buffered.
    Raises :class:`SipParseError` (status 400/413) when the stream cannot be framed;
    the caller should then close the connection.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            # keep-alive CRLFs (RFC 5626 §3.5.1) between messages
            while True:
                if self._buf[:2] == b"\r\n":
                    del self._buf[:2]
                elif self._buf[:1] == b"\n":
                    del self._buf[:1]
                else:
                    break
            end, sep_len = self._buf.find(b"\r\n\r\n"), 4
            lf_end = self._buf.find(b"\n\n")  # LF-only heads, as parse_message accepts them
            if lf_end >= 0 and (end < 0 or lf_end < end):
                end, sep_len = lf_end, 2
            if end < 0:
                if len(self._buf) > self._max:
                    raise SipParseError("header too large", 413)
                return out
            head = bytes(self._buf[:end])
            m = _FRAMER_CLEN_RE.search(head)
            if m is None:
                raise SipParseError("missing Content-Length on a stream transport")
            if len(m.group(1)) > 10:
                raise SipParseError("message too large", 413)
            length = int(m.group(1))
            total = end + sep_len + length
            if total > self._max:
                raise SipParseError("message too large", 413)
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
