"""E-mail addresses of the fax and SMS gateways, who may use them, and the X-Fax option headers.

What it does
------------
* :func:`parse_recipient` tells whether a recipient address is meant for a gateway
  (:class:`GatewayAddressing`, one per service: ``"fax"``, ``"sms"``) and returns the number as
  written plus an "attention" name for the cover page.  Three forms, domains case-insensitive:

  ================================ ===========================================================
  ``+4930123456@fax.example.com``  any local part at a gateway domain (``domains``); with
                                   ``prefix_forms`` also ``fax=+4930123456@fax.example.com``
  ``fax=030123456@example.com``    ``prefix_forms``: ``<service>=NUMBER`` at one of the
                                   ``local_domains`` (other addresses there are ordinary mail)
  ``bob@030123456.fax``            ``subdomain_form``: the domain is NUMBER + "." + service, or
                                   NUMBER + "." + a gateway domain; the user part is the attention
  ================================ ===========================================================

  The number is *not* checked here: ``"+49-30-123456"``, ``"030.123456"`` and ``"bob"`` all come
  back as written, and :func:`ums.outbound.numbers.normalize` gives the sender the reason when it is
  not a number.  ``postmaster`` at a gateway domain is not a fax number: RFC 5321 §4.5.1 wants that
  mailbox to reach a person.
* :class:`SenderPolicy` decides who may send: full addresses, ``@domain`` and ``*``, a deny list that
  wins over everything, optionally every SMTP-authenticated user.  Mail with the empty reverse-path
  (``<>``, RFC 5321 §4.5.5: bounces and other automatic mail) never sends.  The sender address is
  only as trustworthy as the listener that took the mail: accept gateway mail only from the company
  mail server, or with SMTP AUTH.
* :func:`parse_options` reads the ``X-Fax-*`` headers into :class:`FaxOptions`; a bad value raises
  :class:`BadOption` naming the header and what it expects.  Headers that are absent or empty leave
  the option ``None`` (the server's default); ``X-Fax-*`` headers not listed below are ignored.

  ======================== ==================================================================
  X-Fax-Cover              yes / no (also true/false, on/off, 1/0): send a cover page
  X-Fax-Resolution         standard (alias normal), fine (alias high), superfine
  X-Fax-Retries            most tries, 1 to 20
  X-Fax-Notify             final (one report at the end), each (every try), none
  X-Fax-Send-At            RFC 5322 date (``Fri, 27 Nov 2026 08:00:00 +0100``) or ISO 8601
                           (``2026-11-27T08:00+01:00``, ``...Z``); a time zone is required
  X-Fax-Comment            text for the cover page, at most 1000 characters
  X-Fax-Attach-Document    yes / no: attach the rendered document to the report
  ======================== ==================================================================

How it works
------------
An address is either an ``addr-spec`` (an RCPT TO path, with or without angle brackets) or one
``display-name <addr-spec>`` entry of a To/Cc header.  It is split at the last ``@`` by hand rather
than with :func:`email.utils.parseaddr`, which reads ``(30)`` in ``+49(30)123456@...`` as an RFC 5322
comment and loses the digits.  A quoted local part is unquoted (RFC 5322 §3.2.4), display names are
unquoted and their RFC 2047 encoded words decoded.  A display name that only repeats the address
(what Outlook shows for an address typed by hand) or holds no letters (a number) is no attention
name.  Header values are decoded the same way and their whitespace (folding) collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Final, Literal

__all__ = [
    "BadOption",
    "FaxOptions",
    "GatewayAddressing",
    "GatewayRecipient",
    "Notify",
    "Resolution",
    "SenderPolicy",
    "bare_address",
    "header_text",
    "parse_options",
    "parse_recipient",
]

#: the same values as ``ums.render.page.Resolution``
Resolution = Literal["standard", "fine", "superfine"]
Notify = Literal["final", "each", "none"]

MAX_RETRIES: Final = 20
MAX_COMMENT: Final = 1000

_SERVICE: Final = re.compile(r"[a-z][a-z0-9-]*")
_DOMAIN: Final = re.compile(r"[^\s@<>()\[\],;:\"\\]+")
#: "display name <addr-spec>"; the address part holds no angle brackets
_NAME_ADDR: Final = re.compile(r"\s*(.*?)\s*<([^<>]*)>\s*", re.DOTALL)
#: RFC 5321 §4.1.2 source route "@relay1,@relay2:" in front of a path (obsolete, still legal)
_SOURCE_ROUTE: Final = re.compile(r"@[^:]*:")
_PLURAL: Final[Mapping[str, str]] = {"fax": "faxes", "sms": "SMS messages"}


def _domains(values: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{what} is a sequence of domains, not a single string")
    out = []
    for value in values:
        domain = value.strip().lower().rstrip(".")
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"{what}: {value!r} is not a domain name")
        out.append(domain)
    return tuple(out)


@dataclass(frozen=True)
class GatewayAddressing:
    """Which recipient addresses belong to one gateway service (``"fax"``, ``"sms"``)."""

    #: service name, lower case: also the prefix (``fax=``) and the top-level domain (``NUMBER.fax``)
    service: str
    #: gateway domains: every local part there is a number, e.g. ("fax.example.com",)
    domains: tuple[str, ...]
    #: accept ``<service>=NUMBER`` local parts (at ``local_domains`` and at ``domains``)
    prefix_forms: bool = True
    #: ordinary mail domains where ``<service>=NUMBER@domain`` reaches the gateway
    local_domains: tuple[str, ...] = ()
    #: accept ``user@NUMBER.<service>`` and ``user@NUMBER.<gateway domain>``
    subdomain_form: bool = False

    def __post_init__(self) -> None:
        service = self.service.strip().lower()
        if not _SERVICE.fullmatch(service):
            raise ValueError(f"service {self.service!r}: a lower-case name such as 'fax' or 'sms'")
        domains = _domains(self.domains, "domains")
        local_domains = _domains(self.local_domains, "local_domains")
        both = sorted(set(domains) & set(local_domains))
        if both:
            raise ValueError(f"{', '.join(both)} cannot be both a gateway domain and a local domain")
        if not domains and not (self.prefix_forms and local_domains) and not self.subdomain_form:
            raise ValueError(
                f"no address reaches the {service} gateway: give domains, "
                "local_domains with prefix_forms, or subdomain_form"
            )
        object.__setattr__(self, "service", service)
        object.__setattr__(self, "domains", domains)
        object.__setattr__(self, "local_domains", local_domains)


@dataclass(frozen=True)
class GatewayRecipient:
    """A recipient meant for a gateway: the number as written, and whom it is for."""

    #: the number as the sender wrote it; normalise with ``ums.outbound.numbers.normalize``
    number_text: str
    #: a person's name for the cover page ("Attn."), or None
    attention: str | None
    #: the address as given, without display name and angle brackets
    address: str


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded; the text unchanged when they are broken."""
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def _unquote(text: str) -> str:
    """A quoted-string (RFC 5322 §3.2.4) without its quotes and backslashes; other text unchanged."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.DOTALL)
    return text


def _split(address: str) -> tuple[str, str]:
    """``(display name, addr-spec)`` of one address; the name is "" when there is none."""
    m = _NAME_ADDR.fullmatch(address)
    if m is None:
        return "", address.strip()
    name = " ".join(_decode_words(_unquote(m.group(1).strip())).split())
    return name, _SOURCE_ROUTE.sub("", m.group(2).strip(), count=1)


def _attention(name: str, *same: str) -> str | None:
    name = name.strip("'\" ")
    if not any(c.isalpha() for c in name) or name.casefold() in {s.casefold() for s in same}:
        return None  # no name, a number, or the address itself
    return name


def parse_recipient(address: str, addressing: GatewayAddressing) -> GatewayRecipient | None:
    """The gateway recipient in ``address``, or None when the address is not for this gateway."""
    name, addr = _split(address)
    local_raw, at, domain_raw = addr.rpartition("@")
    if not at:
        return None
    local = _unquote(local_raw)
    domain = domain_raw.strip().lower().rstrip(".")
    prefix = addressing.service + "="
    if domain in addressing.domains:
        if local.lower() == "postmaster":
            return None
        number = local
        if addressing.prefix_forms and local.lower().startswith(prefix):
            number = local[len(prefix) :]
        return GatewayRecipient(number, _attention(name, addr, number), addr)
    if addressing.prefix_forms and domain in addressing.local_domains:
        if not local.lower().startswith(prefix):
            return None
        number = local[len(prefix) :]
        return GatewayRecipient(number, _attention(name, addr, number), addr)
    if addressing.subdomain_form:
        for suffix in (*addressing.domains, addressing.service):
            if domain.endswith("." + suffix):
                number = domain[: -len(suffix) - 1]
                attention = _attention(local) or _attention(name, addr, number)
                return GatewayRecipient(number, attention, addr)
    return None


def _entries(values: Sequence[str], what: str) -> tuple[str, ...]:
    """Policy entries in the form they are compared in: case-folded, local part unquoted."""
    if isinstance(values, str):
        raise TypeError(f"{what} is a sequence of addresses, not a single string")
    out = []
    for value in values:
        entry = value.strip().casefold().rstrip(".")
        if entry == "*":
            out.append(entry)
            continue
        local, at, domain = entry.rpartition("@")
        quoted = len(local) >= 2 and local[0] == local[-1] == '"'
        if (
            not (at and _DOMAIN.fullmatch(domain))
            or (not quoted and any(c.isspace() or c in '<>"' for c in local))
            or (local and not _unquote(local))
        ):
            raise ValueError(f"{what}: {value!r} is not an address, '@domain' or '*'")
        out.append(f"@{domain}" if local == "*" else f"{_unquote(local)}@{domain}")
    return tuple(out)


def _matches(entries: Sequence[str], address: str) -> bool:
    domain = address.rpartition("@")[2]
    return any(e == "*" or e == address or (e.startswith("@") and e[1:] == domain) for e in entries)


@dataclass(frozen=True)
class SenderPolicy:
    """Who may send through a gateway: ``deny`` wins, then SMTP AUTH (if allowed), then ``allow``.

    Entries are full addresses (``bob@example.com``), domains (``@example.com`` or ``*@example.com``,
    that domain only, not its subdomains) or ``*`` (everyone); compared without regard to case (RFC
    5321 §2.4 leaves the case of local parts to the receiving host; no mail system we meet uses it).
    """

    allow: Sequence[str]
    deny: Sequence[str] = ()
    #: every SMTP-authenticated user may send, whatever the MAIL FROM (deny still applies)
    allow_authenticated: bool = False
    #: service name for the reason text ("may not send faxes")
    service: str = "fax"

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", _entries(self.allow, "allow"))
        object.__setattr__(self, "deny", _entries(self.deny, "deny"))

    def authorised(self, mail_from: str, auth_user: str | None) -> str | None:
        """None when the sender may use the gateway, else the reason (for an SMTP reply or a bounce)."""
        what = _PLURAL.get(self.service, f"{self.service} messages")
        _, addr = _split(mail_from)
        if not addr or addr == "<>":
            return f"mail with an empty sender (<>, such as a bounce) cannot send {what}"
        local, at, domain = addr.rpartition("@")
        if not (at and local and domain):
            return f"sender {addr!r} is not a valid e-mail address"
        sender = f"{_unquote(local).casefold()}@{domain.casefold().rstrip('.')}"
        identities = [sender]
        if auth_user and "@" in auth_user:
            identities.append(auth_user.strip().casefold())
        if any(_matches(self.deny, i) for i in identities):
            return f"sender {addr} may not send {what}"
        if auth_user and self.allow_authenticated:
            return None
        if _matches(self.allow, sender):
            return None
        return f"sender {addr} may not send {what}"


class BadOption(ValueError):
    """An ``X-Fax-*`` header with a value we cannot use; ``reason`` says what it expects."""

    def __init__(self, header: str, reason: str) -> None:
        super().__init__(f"{header}: {reason}")
        self.header = header
        self.reason = reason


@dataclass(frozen=True)
class FaxOptions:
    """Per-message fax options from the ``X-Fax-*`` headers; None means the server default."""

    cover: bool | None = None
    resolution: Resolution | None = None
    #: most tries (1 to 20)
    retries: int | None = None
    notify: Notify | None = None
    #: when to send, time-zone aware; whether it lies in the past is for the caller (it has the clock)
    send_at: datetime | None = None
    cover_comment: str | None = None
    #: attach the rendered document to the report
    attach_document: bool | None = None


_BOOL: Final[Mapping[str, bool]] = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}
_RESOLUTION: Final[Mapping[str, Resolution]] = {
    "standard": "standard",
    "normal": "standard",
    "fine": "fine",
    "high": "fine",
    "superfine": "superfine",
    "super-fine": "superfine",
}
_NOTIFY: Final[Mapping[str, Notify]] = {"final": "final", "each": "each", "none": "none"}


def _header(headers: Mapping[str, str] | Message, name: str) -> str | None:
    """The one value of header ``name`` (decoded, whitespace collapsed), or None when absent or empty."""
    if isinstance(headers, Message):
        raw = [str(v) for v in headers.get_all(name, [])]
    else:
        raw = [str(v) for k, v in headers.items() if k.lower() == name.lower()]
    values: dict[str, str] = {}
    for v in raw:
        value = " ".join(_decode_words(v).split())
        if value:
            values.setdefault(value.casefold(), value)
    if len(values) > 1:
        raise BadOption(name, "given more than once with different values")
    return next(iter(values.values()), None)


def _bool(name: str, value: str) -> bool:
    try:
        return _BOOL[value.lower()]
    except KeyError:
        raise BadOption(name, f"expected yes or no, not {value!r}") from None


def _send_at(name: str, value: str) -> datetime:
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError, IndexError):
            when = None
    if when is None:
        raise BadOption(
            name,
            f"expected a date such as 'Fri, 27 Nov 2026 08:00:00 +0100' or '2026-11-27T08:00+01:00', "
            f"not {value!r}",
        )
    if when.tzinfo is None or when.utcoffset() is None:
        raise BadOption(name, f"{value!r} needs a time zone, e.g. '+01:00' or 'Z'")
    return when


def parse_options(headers: Mapping[str, str] | Message) -> FaxOptions:
    """The fax options in the ``X-Fax-*`` headers; raises :class:`BadOption` for a bad value."""
    cover = attach = None
    resolution: Resolution | None = None
    notify: Notify | None = None
    retries: int | None = None
    send_at: datetime | None = None
    comment: str | None = None
    if (v := _header(headers, "X-Fax-Cover")) is not None:
        cover = _bool("X-Fax-Cover", v)
    if (v := _header(headers, "X-Fax-Attach-Document")) is not None:
        attach = _bool("X-Fax-Attach-Document", v)
    if (v := _header(headers, "X-Fax-Resolution")) is not None:
        resolution = _RESOLUTION.get(v.lower())
        if resolution is None:
            raise BadOption("X-Fax-Resolution", f"expected standard, fine or superfine, not {v!r}")
    if (v := _header(headers, "X-Fax-Retries")) is not None:
        if not re.fullmatch(r"[0-9]{1,3}", v) or not 1 <= int(v) <= MAX_RETRIES:
            raise BadOption("X-Fax-Retries", f"expected a number of tries from 1 to {MAX_RETRIES}, not {v!r}")
        retries = int(v)
    if (v := _header(headers, "X-Fax-Notify")) is not None:
        notify = _NOTIFY.get(v.lower())
        if notify is None:
            raise BadOption("X-Fax-Notify", f"expected final, each or none, not {v!r}")
    if (v := _header(headers, "X-Fax-Send-At")) is not None:
        send_at = _send_at("X-Fax-Send-At", v)
    if (v := _header(headers, "X-Fax-Comment")) is not None:
        comment = "".join(c for c in v if c.isprintable())
        if len(comment) > MAX_COMMENT:
            raise BadOption("X-Fax-Comment", f"too long: at most {MAX_COMMENT} characters")
    return FaxOptions(
        cover=cover,
        resolution=resolution,
        retries=retries,
        notify=notify,
        send_at=send_at,
        cover_comment=comment or None,
        attach_document=attach,
    )


def bare_address(address: str) -> str:
    """An SMTP path without its angle brackets (``<a@b>`` -> ``a@b``)."""
    return address.strip().removeprefix("<").removesuffix(">").strip()


def header_text(headers: Message, name: str) -> str:
    """A header's value on one line ("" when absent or unparseable), safe to write as UTF-8."""
    try:
        value = headers.get(name)
    except (ValueError, IndexError):  # a header email cannot parse
        return ""
    if value is None:
        return ""
    # undecodable 8-bit bytes arrive as lone surrogates, which cannot be written as UTF-8
    return " ".join(str(value).encode("utf-8", "replace").decode("utf-8").split())
