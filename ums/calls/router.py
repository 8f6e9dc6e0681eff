"""Which mailbox answers an incoming call.

What it does
------------
:func:`route` looks at an INVITE and the configuration and returns a
:class:`Route`: the dialed number, the mailbox (or None -> 404), the caller, and
why the call reached us (a Diversion reason such as ``user-busy`` selects the
busy greeting later).

How it works
------------
A PBX that forwards a user's call to voicemail sends it to the voicemail pilot
number and says whose call it was in ``Diversion`` (RFC 5806) or
``History-Info`` (RFC 7044).  So the candidates are tried in this order and the
first that names a configured mailbox wins:

1. ``Diversion`` values, top (most recent redirection) to bottom;
2. ``History-Info`` entries that were redirected (all but the last), newest first;
3. the Request-URI user (a call straight to the number);
4. the To user (proxies that rewrite the Request-URI to a contact).

Numbers compare after removing RFC 3966 visual separators and URI escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from ums.config import Config, Mailbox
from ums.sip.message import Request, SipParseError
from ums.sip.uri import NameAddr, SipUri

__all__ = ["Caller", "Route", "caller_of", "normalise_number", "route"]

# RFC 3966 §3: visual-separator = "-" / "." / "(" / ")"
_VISUAL = re.compile(r"[-.()\s]")


@dataclass(frozen=True)
class Caller:
    number: str
    name: str
    uri: str


@dataclass(frozen=True)
class Route:
    number: str
    mailbox: Mailbox | None
    #: "diversion" | "history-info" | "request-uri" | "to" | "none"
    matched_by: str
    #: Diversion reason (RFC 5806 §4: unconditional, user-busy, no-answer ...) or History-Info cause.
    reason: str
    caller: Caller


def normalise_number(user: str | None) -> str:
    """``+49 (89) 123-45`` -> ``+498912345``; None/empty -> ""."""
    if not user:
        return ""
    text = unquote(user)
    text = text.split(";", 1)[0]  # tel-style params in the user part (;phone-context=...)
    return _VISUAL.sub("", text)


def _uri_user(text: str) -> str:
    try:
        return normalise_number(SipUri.parse(text).user)
    except SipParseError:
        return ""


def _name_addr(value: str) -> NameAddr | None:
    try:
        return NameAddr.parse(value)
    except SipParseError:
        return None


def caller_of(request: Request) -> Caller:
    """The calling party: P-Asserted-Identity when present, else From."""
    for header in ("P-Asserted-Identity", "From"):
        for value in request.headers.get_all_values(header):
            na = _name_addr(value)
            if na is None:
                continue
            number = normalise_number(na.uri.user)
            if header == "P-Asserted-Identity" and not number:
                continue
            return Caller(number=number, name=(na.display or "").strip(), uri=str(na.uri))
    return Caller(number="", name="", uri="")


def _history_info_candidates(request: Request) -> list[tuple[str, str]]:
    entries: list[tuple[list[int], str, str]] = []
    for value in request.headers.get_all_values("History-Info"):
        na = _name_addr(value)
        if na is None:
            continue
        index_text = na.param("index") or ""
        try:
            index = [int(p) for p in index_text.split(".") if p]
        except ValueError:
            index = []
        cause = na.uri.param("cause") or ""
        entries.append((index, normalise_number(na.uri.user), cause))
    if len(entries) < 2:
        return []
    entries.sort(key=lambda e: e[0])
    # every entry but the last was retargeted; the cause of the next entry says why
    out: list[tuple[str, str]] = []
    for i in range(len(entries) - 2, -1, -1):
        out.append((entries[i][1], entries[i + 1][2]))
    return out


def route(request: Request, config: Config) -> Route:
    caller = caller_of(request)
    candidates: list[tuple[str, str, str]] = []  # (number, matched_by, reason)
    for value in request.headers.get_all_values("Diversion"):
        na = _name_addr(value)
        if na is not None:
            candidates.append((normalise_number(na.uri.user), "diversion", na.param("reason") or ""))
    for number, cause in _history_info_candidates(request):
        candidates.append((number, "history-info", cause))
    candidates.append((_uri_user(request.uri), "request-uri", ""))
    to = request.headers.get("To")
    na_to = _name_addr(to) if to else None
    if na_to is not None:
        candidates.append((normalise_number(na_to.uri.user), "to", ""))

    for number, matched_by, reason in candidates:
        if not number:
            continue
        mailbox = config.mailbox_for(number)
        if mailbox is not None:
            return Route(number=number, mailbox=mailbox, matched_by=matched_by, reason=reason, caller=caller)
    dialed = next((c[0] for c in candidates if c[1] == "request-uri" and c[0]), "")
    if not dialed:
        dialed = next((c[0] for c in candidates if c[0]), "")
    return Route(number=dialed, mailbox=None, matched_by="none", reason="", caller=caller)
