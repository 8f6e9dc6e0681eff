"""Who we are on the wire, and the responses we build (RFC 3261 §8.2.6, §18.2, RFC 3581).

What it does
------------
:class:`LocalParty` holds what our messages say about us — host, ports per transport, the
methods we allow and the event packages we accept — and builds from it our Via and Contact
values and every response the user agent sends.  :func:`stamp_via` adds ``received`` /
``rport`` to a request's top Via and works out where its responses go;
:func:`salvage_headers` recovers enough of an unparsable request to answer it with 400;
:func:`replace_top_via` and :func:`sanitize_phrase` are the small helpers around them.

How it works
------------
Pure functions of their inputs (the random source for branches comes from the caller), so
the user agent stays the only place with state.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from ums.sip.dialog import DEFAULT_SIP_PORT
from ums.sip.events import Addr
from ums.sip.message import Headers, Request, Response, SipParseError, canonical_name, split_header_values
from ums.sip.uri import NameAddr, SipUri, Via, new_branch

__all__ = [
    "ACCEPT",
    "ALLOW",
    "LocalParty",
    "replace_top_via",
    "salvage_headers",
    "sanitize_phrase",
    "stamp_via",
]

#: Methods the user agent handles itself (RFC 3261 §20.5 Allow).
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO")
#: Bodies we understand (RFC 3261 §20.1 Accept).
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf"

_REQUEST_LINE_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) SIP/\d+\.\d+$")
_PHRASE_RE = re.compile(r"[^\x20-\x7e]")


def sanitize_phrase(text: str) -> str:
    """A reason phrase safe to put on a status line (printable ASCII, at most 100 characters)."""
    phrase = _PHRASE_RE.sub(" ", text).strip()[:100]
    return phrase or "Bad Request"


def stamp_via(top: Via, source: Addr) -> tuple[Via, Addr]:
    """Add received/rport (RFC 3261 §18.2.1, RFC 3581 §4) and work out where responses go."""
    if source.transport == "tcp":
        if top.host != source.host:
            top = top.with_param("received", source.host)
        return top, source
    rport = top.param("rport")
    if top.host != source.host or rport is not None:
        top = top.with_param("received", source.host)
    if rport is not None:
        top = top.with_param("rport", str(source.port))
        return top, source
    return top, Addr("udp", source.host, top.port or DEFAULT_SIP_PORT)


def replace_top_via(request: Request, top: Via) -> None:
    """Rewrite the first Via value in place (the received/rport stamp)."""
    new = Headers()
    done = False
    for name, value in request.headers:
        if name == "Via" and not done:
            values = split_header_values(value)
            values[0] = str(top)
            value = ", ".join(values)
            done = True
        new.add(name, value)
    request.headers = new


def salvage_headers(data: bytes) -> tuple[list[str], list[tuple[str, str]]] | None:
    """Via values and From/To/Call-ID/CSeq lines of an unparsable request, if all are there."""
    text = data[:8192].decode("latin-1").lstrip("\r\n")
    head = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    lines = head.replace("\r\n", "\n").split("\n")
    m = _REQUEST_LINE_RE.match(lines[0].strip())
    if m is None or m.group(1).upper() == "ACK":
        return None
    vias: list[str] = []
    found: dict[str, str] = {}
    for ln in lines[1:]:
        name, colon, value = ln.partition(":")
        if not colon or not name.strip() or "\r" in value or "\x00" in value:
            continue
        cname = canonical_name(name)
        value = value.strip()
        if cname == "Via":
            vias.extend(split_header_values(value))
        elif cname in ("From", "To", "Call-ID", "CSeq") and cname not in found and value:
            found[cname] = value
    if not vias or len(found) != 4:
        return None
    return vias, [(n, found[n]) for n in ("From", "To", "Call-ID", "CSeq")]


class LocalParty:
    """Our host, ports and capabilities as written in Via, Contact, Allow and responses."""

    def __init__(self, host: str, ports: Mapping[str, int], user_agent: str, rng: random.Random) -> None:
        self.host = host
        self.ports = ports
        self.user_agent = user_agent
        self.rng = rng
        #: methods handed to the application (RequestReceived), listed in Allow after ours
        self.accepted: frozenset[str] = frozenset()
        #: event packages for Allow-Events (RFC 6665 §8.2.2)
        self.allow_events: tuple[str, ...] = ()

    def port(self, transport: str) -> int:
        if transport in self.ports:
            return int(self.ports[transport])
        return int(next(iter(self.ports.values()), DEFAULT_SIP_PORT))

    def via(self, transport: str) -> str:
        """A Via for a request we send: fresh branch, rport asked for (RFC 3581 §3)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"SIP/2.0/{transport.upper()} {host}:{self.port(transport)};branch={new_branch(self.rng)};rport"
        )

    def contact_uri(self, transport: str, user: str = "ums") -> SipUri:
        uri = SipUri("sip", user, self.host, self.port(transport))
        return uri.with_params(transport="tcp") if transport == "tcp" else uri

    def contact_value(self, transport: str, user: str = "ums") -> str:
        # no display name: SIPp copies it into the Request-URI of in-dialog requests
        return f"<{self.contact_uri(transport, user)}>"

    def allow_value(self) -> str:
        return ", ".join((*ALLOW, *sorted(self.accepted)))

    def capabilities(self) -> list[tuple[str, str]]:
        """Allow, Accept, Supported (and Allow-Events) for OPTIONS answers and 405s."""
        accept = ACCEPT + (", text/plain, message/cpim" if "MESSAGE" in self.accepted else "")
        caps = [("Allow", self.allow_value()), ("Accept", accept), ("Supported", "")]
        if self.allow_events:
            caps.append(("Allow-Events", ", ".join(self.allow_events)))
        return caps

    def response(
        self,
        request: Request,
        status: int,
        reason: str,
        *,
        to_tag: str | None,
        dialog_creating: bool = False,
        body: bytes | None = None,
        top_via: Via | None = None,
    ) -> Response:
        """A response per RFC 3261 §8.2.6: Via, From, To (+ our tag), Call-ID, CSeq copied."""
        h = Headers()
        vias = request.vias
        if top_via is not None and vias:
            vias = [str(top_via), *vias[1:]]
        for v in vias:
            h.add("Via", v)
        h.add("From", request.headers.get_raw("From") or "")
        to = request.headers.get_raw("To") or ""
        if to_tag is not None and status != 100:
            try:
                na = NameAddr.parse(to)
                if na.tag is None:
                    to = str(na.with_param("tag", to_tag))
            except SipParseError:
                pass
        h.add("To", to)
        h.add("Call-ID", request.call_id)
        h.add("CSeq", request.headers.get_raw("CSeq") or "")
        if status == 100 and "Timestamp" in request.headers:
            h.add("Timestamp", request.headers.get_raw("Timestamp") or "")  # §8.2.6.1
        if dialog_creating and 100 < status < 300:
            for rr in request.headers.get_lines("Record-Route"):
                h.add("Record-Route", rr)
            transport = "tcp" if (Via.parse(vias[0]).transport == "TCP") else "udp"
            h.add("Contact", self.contact_value(transport))
        if dialog_creating and 200 <= status < 300:
            h.add("Allow", self.allow_value())
        h.add("Server", self.user_agent)
        resp = Response(headers=h, status=status, reason=reason)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return resp
