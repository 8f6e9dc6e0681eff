"""SIP and tel URIs, name-addr header values and Via hops (RFC 3261 §19.1, §20, §25.1; RFC 3966).

What it does
------------
:class:`SipUri` parses ``sip:``, ``sips:`` and ``tel:`` URIs; :class:`NameAddr` parses the
values of From / To / Contact / Route / Record-Route / Diversion; :class:`Via` parses one Via hop.
``str()`` writes each back in canonical form, and ``str(X.parse(str(x))) == str(x)`` holds for
every value the parsers accept.  Anything malformed raises
:class:`~ums.sip.message.SipParseError` (status hint 400, or 416 for a URI scheme we do not
support).  :func:`new_branch`, :func:`new_tag` and :func:`new_call_id` make identifiers from a
caller-supplied :class:`random.Random`.

How it works
------------
Hand-written splitting on the delimiters of the RFC 3261 §25.1 grammar, with a regex per
character class.  The user and password parts are stored *unescaped* (``%61lice`` -> ``alice``,
RFC 3261 §19.1.4 makes both forms equal) and re-escaped on output; URI parameters and headers
are kept exactly as written (escapes included).  Parameter names are looked up
case-insensitively.  A flag parameter (``;lr``) has the value ``""``.  IPv6 references are
stored without brackets (``host == "::1"``) and bracketed again on output.

In the addr-spec form of a header value (no angle brackets) every ``;param`` after the URI
belongs to the header, not to the URI (RFC 3261 §20.10), and the URI may not contain ``,``,
``?`` or ``;``.
"""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass, replace

from ums.sip.message import SipParseError

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "NameAddr",
    "SipUri",
    "Via",
    "new_branch",
    "new_call_id",
    "new_tag",
]

#: RFC 3261 §8.1.1.7: "The branch ID inserted by an element compliant with this specification
#: MUST always begin with the characters "z9hG4bK"."
BRANCH_MAGIC_COOKIE = "z9hG4bK"

Params = tuple[tuple[str, str | None], ...]

# --- RFC 3261 §25.1 character classes ------------------------------------------------------------
# unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
_UNRESERVED = "A-Za-z0-9\\-_.!~*'()"
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
# (we also accept "#" and raw non-ASCII, which real PBXs send, and escape them on output)
_USER_CHARS = re.compile(r"(?:[" + _UNRESERVED + r"&=+$,;?/#\u0080-\U0010ffff]|%[0-9A-Fa-f]{2})*")
_USER_OUT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/")
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_CHARS = re.compile(r"(?:[" + _UNRESERVED + r"&=+$,\u0080-\U0010ffff]|%[0-9A-Fa-f]{2})*")
_PASSWORD_OUT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,")
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
_PARAMCHARS = re.compile(r"(?:[" + _UNRESERVED + r"\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
# headers = "?" header *( "&" header ) ; hname/hvalue chars = hnv-unreserved / unreserved / escaped
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"  (plus the "=" and "&" separators)
_URI_HEADERS = re.compile(r"(?:[" + _UNRESERVED + r"\[\]/?:+$=&@]|%[0-9A-Fa-f]{2})*")
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# gen-value = token / host / quoted-string (host adds "[" "]" ":" for IPv6 references)
_GEN_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+")
# hostname = *( domainlabel "." ) toplabel [ "." ]  (labels: alphanum, "-" inside; "_" tolerated)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_]*[A-Za-z0-9_])?")
# RFC 3966 telephone-subscriber: global-number / local-number (digits, visual separators, pause)
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()pPwW]+")
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_PORT = re.compile(r"[0-9]{1,5}")
_COLON_SWS = re.compile(r"[ \t]*:[ \t]*")
# sent-protocol = protocol-name SLASH protocol-version SLASH transport ; SLASH = SWS "/" SWS
_VIA_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+([^;]+?)[ \t]*(;.*)?"
)


def _unescape(text: str, what: str) -> str:
    """Undo %HH escapes (RFC 3261 §19.1.2); escaped octets are read as UTF-8."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            hx = text[i + 1 : i + 3]
            if len(hx) != 2 or not all(c in "0123456789abcdefABCDEF" for c in hx):
                raise SipParseError(f"bad escape in {what}")
            out.append(int(hx, 16))
            i += 3
        else:
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"{what} is not UTF-8 after unescaping") from exc


def _escape(text: str, allowed: frozenset[str]) -> str:
    if all(c in allowed for c in text):
        return text
    out: list[str] = []
    for c in text:
        if c in allowed:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _parse_host(text: str, what: str = "host") -> str:
    """host = hostname / IPv4address / IPv6reference; returns the host without IPv6 brackets."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"unterminated IPv6 reference in {what}")
        inner = text[1:-1]
        if "%" in inner:
            raise SipParseError(f"zone index in IPv6 {what}")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError as exc:
            raise SipParseError(f"bad IPv6 address in {what}: {text[:60]!r}") from exc
        return inner
    if not text:
        raise SipParseError(f"empty {what}")
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise SipParseError(f"bad {what}: {text[:60]!r}")
    return text


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_port(text: str, what: str) -> int:
    if not _PORT.fullmatch(text):
        raise SipParseError(f"bad port in {what}: {text[:20]!r}")
    port = int(text)
    if port > 65535:
        raise SipParseError(f"port out of range in {what}: {port}")
    return port


def _split_hostport(text: str, what: str) -> tuple[str, int | None]:
    """host [ ":" port ] -> (bare host, port)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}")
        host_part, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {what}")
        port_part = rest[1:] if rest else None
    else:
        host_part, colon, port_part_s = text.partition(":")
        port_part = port_part_s if colon else None
    host = _parse_host(host_part, what)
    port = _parse_port(port_part, what) if port_part is not None else None
    return host, port


def _parse_uri_params(text: str, what: str) -> Params:
    """*( ";" pname [ "=" pvalue ] ) for a URI (text starts after the first ';')."""
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not _PARAMCHARS.fullmatch(name):
            raise SipParseError(f"bad parameter in {what}: {item[:40]!r}")
        if eq:
            if not _PARAMCHARS.fullmatch(value):
                raise SipParseError(f"bad parameter value in {what}: {item[:40]!r}")
            out.append((name, value))
        else:
            out.append((name, ""))
    return tuple(out)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes; raises on an unterminated quoted string."""
    parts: list[str] = []
    start = 0
    in_quote = False
    escaped = False
    for i, ch in enumerate(text):
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
    if in_quote:
        raise SipParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def _is_quoted_string(text: str) -> bool:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return False
    escaped = False
    for ch in text[1:-1]:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return False
        elif ch in "\r\n\x00":
            return False
    return not escaped


def _parse_generic_params(text: str, what: str) -> Params:
    """*( SEMI generic-param ) after a name-addr or Via; ``text`` starts with ';' (or is empty).

    generic-param = token [ EQUAL gen-value ] ; gen-value = token / host / quoted-string.
    Quoted values are kept with their quotes.
    """
    text = text.strip(" \t")
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipParseError(f"junk after {what}: {text[:40]!r}")
    out: list[tuple[str, str | None]] = []
    for item in _split_outside_quotes(text[1:], ";"):
        name, eq, value = item.partition("=")
        name = name.strip(" \t")
        value = value.strip(" \t")
        if not _TOKEN.fullmatch(name):
            raise SipParseError(f"bad parameter in {what}: {item[:40]!r}")
        if eq:
            if not (_GEN_VALUE.fullmatch(value) or _is_quoted_string(value)):
                raise SipParseError(f"bad parameter value in {what}: {item[:40]!r}")
            out.append((name, value))
        else:
            out.append((name, ""))
    return tuple(out)


def _format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None or v == "" else f";{n}={v}" for n, v in params)


def _lookup(params: Params, name: str) -> str | None:
    low = name.lower()
    for n, v in params:
        if n.lower() == low:
            return "" if v is None else v
    return None


def _set_param(params: Params, name: str, value: str | None) -> Params:
    """Replace (in place), append, or with ``value=None`` remove a parameter."""
    low = name.lower()
    out: list[tuple[str, str | None]] = []
    done = False
    for n, v in params:
        if n.lower() == low:
            if value is not None and not done:
                out.append((n, value))
            done = True
        else:
            out.append((n, v))
    if not done and value is not None:
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True)
class SipUri:
    """A ``sip:``, ``sips:`` or ``tel:`` URI.

    ``user`` and ``password`` are unescaped; for ``tel:`` URIs ``user`` is the number and
    ``host`` is ``""``.  ``params`` keeps the URI parameters in order, a flag parameter having
    the value ``""``.  ``headers`` is the raw text after ``?``.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: Params = ()
    headers: str = ""
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; raises :class:`SipParseError` (416 for an unsupported scheme)."""
        text = text.strip(" \t")
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME.fullmatch(scheme):
            raise SipParseError(f"not a URI: {text[:60]!r}")
        scheme = scheme.lower()
        if scheme == "tel":
            return cls._parse_tel(rest)
        if scheme not in ("sip", "sips"):
            raise SipParseError(f"unsupported URI scheme {scheme!r}", 416)
        if not rest:
            raise SipParseError("empty SIP URI")
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            raw_user, pcolon, raw_password = userinfo.partition(":")
            if not raw_user or not _USER_CHARS.fullmatch(raw_user):
                raise SipParseError(f"bad user part: {userinfo[:60]!r}")
            user = _unescape(raw_user, "user part")
            if pcolon:
                if not _PASSWORD_CHARS.fullmatch(raw_password):
                    raise SipParseError("bad password in URI")
                password = _unescape(raw_password, "password")
        rest, qmark, headers = rest.partition("?")
        if qmark and (not headers or not _URI_HEADERS.fullmatch(headers)):
            raise SipParseError(f"bad URI headers: {headers[:60]!r}")
        hostport, semi, params_text = rest.partition(";")
        host, port = _split_hostport(hostport, "URI host")
        params = _parse_uri_params(params_text, "URI") if semi else ()
        return cls(scheme, user, host, port, params, headers, password)

    @classmethod
    def _parse_tel(cls, rest: str) -> SipUri:
        # RFC 3966: telephone-uri = "tel:" telephone-subscriber (number *par); no headers
        number, semi, params_text = rest.partition(";")
        if not _TEL_NUMBER.fullmatch(number):
            raise SipParseError(f"bad tel URI number: {number[:40]!r}")
        params = _parse_uri_params(params_text, "tel URI") if semi else ()
        return cls("tel", number, "", None, params)

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (``""`` for a flag parameter), ``None`` if absent."""
        return _lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return _lookup(self.params, name) is not None

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with parameters set (``""`` adds a flag parameter, ``None`` removes one)."""
        new = self.params
        for name, value in params.items():
            new = _set_param(new, name, value)
        return replace(self, params=new)

    def without_headers(self) -> SipUri:
        return replace(self, headers="")

    @property
    def hostport(self) -> str:
        host = _format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{_format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_OUT))
            if self.password is not None:
                out += [":", _escape(self.password, _PASSWORD_OUT)]
            out.append("@")
        out.append(self.hostport)
        out.append(_format_params(self.params))
        if self.headers:
            out += ["?", self.headers]
        return "".join(out)


def _parse_quoted(text: str) -> tuple[str, str]:
    """quoted-string at the start of ``text`` -> (unescaped content, rest of text)."""
    out: list[str] = []
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), text[i + 1 :]
        if ch in "\r\n\x00":
            raise SipParseError("control character in quoted string")
        out.append(ch)
        i += 1
    raise SipParseError("unterminated quoted string")


# characters written as a quoted-pair inside a quoted-string (qdtext has no DQUOTE, "\\" or controls)
_NEEDS_QUOTED_PAIR = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def _quote(text: str) -> str:
    # CR and LF cannot be escaped at all (RFC 3261 §25.1 quoted-pair); they become spaces
    text = text.replace("\r", " ").replace("\n", " ")
    return '"' + _NEEDS_QUOTED_PAIR.sub(lambda m: "\\" + m.group(0), text) + '"'


@dataclass(frozen=True)
class NameAddr:
    """A From / To / Contact / Route / Record-Route / Diversion value (RFC 3261 §20.10).

    ``display`` is the display name without quotes (``None`` when absent); ``params`` are the
    header parameters written after the URI (``tag``, ``expires``, ``q`` ...).
    """

    uri: SipUri
    display: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse ``"Name" <uri>;p=v``, ``Name <uri>``, ``<uri>`` or the bare ``uri;p=v`` form."""
        text = text.strip(" \t")
        if not text:
            raise SipParseError("empty name-addr")
        display: str | None = None
        if text.startswith('"'):
            display, rest = _parse_quoted(text)
            rest = rest.lstrip(" \t")
            if not rest.startswith("<"):
                raise SipParseError("display name without <URI>")
            return cls._bracketed(rest, display)
        lt = text.find("<")
        if lt >= 0:
            # display-name = *(token LWS) ; the tokens are kept as written, LWS collapsed
            words = text[:lt].split()
            if any(not _TOKEN.fullmatch(w) for w in words):
                raise SipParseError(f"bad display name: {text[:lt][:60]!r}")
            display = " ".join(words) if words else None
            return cls._bracketed(text[lt:], display)
        # addr-spec form: params after the URI belong to the header (RFC 3261 §20.10)
        uri_text, semi, params_text = text.partition(";")
        uri_text = uri_text.rstrip(" \t")
        if any(c in uri_text for c in ',? \t>"') or "\\" in uri_text:
            raise SipParseError(f"bad addr-spec: {uri_text[:60]!r}")
        uri = SipUri.parse(uri_text)
        params = _parse_generic_params(";" + params_text, "name-addr") if semi else ()
        return cls(uri, None, params)

    @classmethod
    def _bracketed(cls, text: str, display: str | None) -> NameAddr:
        gt = text.find(">")
        if gt < 0:
            raise SipParseError("missing '>' in name-addr")
        inner = text[1:gt]
        if not inner or any(c in inner for c in ' \t<"'):
            raise SipParseError(f"bad URI in name-addr: {inner[:60]!r}")
        uri = SipUri.parse(inner)
        params = _parse_generic_params(text[gt + 1 :], "name-addr")
        return cls(uri, display, params)

    def param(self, name: str) -> str | None:
        """Value of a header parameter (``""`` for a flag parameter), ``None`` if absent."""
        return _lookup(self.params, name)

    @property
    def tag(self) -> str | None:
        return _lookup(self.params, "tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with a header parameter set (``""`` flag, ``None`` removes it)."""
        return replace(self, params=_set_param(self.params, name, value))

    def __str__(self) -> str:
        head = f"{_quote(self.display)} " if self.display is not None else ""
        return f"{head}<{self.uri}>{_format_params(self.params)}"


@dataclass(frozen=True)
class Via:
    """One Via hop (RFC 3261 §20.42, RFC 3581 rport): ``SIP/2.0/UDP host:port;branch=..``.

    ``transport`` is upper case; ``host`` is bare (no IPv6 brackets).
    """

    transport: str
    host: str
    port: int | None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_RE.fullmatch(text.strip(" \t"))
        if m is None:
            raise SipParseError(f"malformed Via: {text[:60]!r}")
        proto, version, transport, sent_by, params_text = m.groups()
        if proto.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"unsupported Via protocol {proto}/{version}")
        # sent-by = host [ COLON port ] ; COLON = SWS ":" SWS
        sent_by = _COLON_SWS.sub(":", sent_by)
        host, port = _split_hostport(sent_by, "Via sent-by")
        params = _parse_generic_params(params_text or "", "Via")
        for name, value in params:
            low = name.lower()
            if low == "branch" and not value:
                raise SipParseError("empty Via branch")
            if low in ("received", "maddr") and not value:
                raise SipParseError(f"empty Via {low}")
            if low == "received" and value:
                try:
                    ipaddress.ip_address(value.strip("[]"))
                except ValueError as exc:
                    raise SipParseError(f"bad Via received: {value[:40]!r}") from exc
            if low == "rport" and value:
                _parse_port(value, "Via rport")
            if low == "ttl" and value and (not value.isascii() or not value.isdigit() or int(value) > 255):
                raise SipParseError(f"bad Via ttl: {value[:10]!r}")
        return cls(transport.upper(), host, port, params)

    @property
    def branch(self) -> str | None:
        return _lookup(self.params, "branch")

    def param(self, name: str) -> str | None:
        """Value of a Via parameter (``""`` for a flag such as a bare ``rport``), ``None`` if absent."""
        return _lookup(self.params, name)

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with a parameter set (``""`` flag, ``None`` removes it)."""
        return replace(self, params=_set_param(self.params, name, value))

    @property
    def sent_by(self) -> str:
        host = _format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_format_params(self.params)}"


def new_branch(rng: random.Random) -> str:
    """A Via branch: the RFC 3261 §8.1.1.7 magic cookie plus 64 random bits (16 hex digits)."""
    return f"{BRANCH_MAGIC_COOKIE}{rng.getrandbits(64):016x}"


def new_tag(rng: random.Random) -> str:
    """A From/To tag (RFC 3261 §19.3: at least 32 random bits); 64 bits as 16 hex digits."""
    return f"{rng.getrandbits(64):016x}"


def new_call_id(rng: random.Random, host: str) -> str:
    """A Call-ID ``<96 random bits in hex>@host`` (RFC 3261 §8.1.1.4)."""
    return f"{rng.getrandbits(96):024x}@{_format_host(host)}"
