"""SIP dialogs (RFC 3261 §12): state, in-dialog requests, route sets and target refresh.

What it does
------------
:class:`Dialog` holds what RFC 3261 §12 calls the dialog state: Call-ID, local and remote tag,
local and remote URI, remote target, route set, local and remote CSeq and the secure flag.
:meth:`Dialog.as_uac` and :meth:`Dialog.as_uas` build it from the dialog-creating exchange,
:meth:`Dialog.create_request` builds BYE / re-INVITE / ACK-for-2xx / INFO ... requests and
:meth:`Dialog.next_hop` says where they go.  :func:`out_of_dialog_request` builds a request
outside any dialog (MESSAGE, an unsolicited NOTIFY, an initial SUBSCRIBE).

How it works
------------
§12.1.1 (UAS): the route set is the request's Record-Route list as written, the remote target
its Contact.  §12.1.2 (UAC): the route set is the 2xx's Record-Route list reversed, the remote
target the 2xx's Contact.  §12.2.1.1: with an empty route set the Request-URI is the remote
target; if the first route has ``;lr`` (loose routing, RFC 3261) the Request-URI is the remote
target and the route set goes into Route; otherwise (a strict router, RFC 2543) the first route
becomes the Request-URI and the remote target is appended as the last Route.  The next hop is
the first route's URI, else the remote target.  Requests come out without a Via: the user
agent adds its own with a fresh branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ums.sip.events import Addr
from ums.sip.message import Headers, Request, Response, SipMessage, SipParseError
from ums.sip.uri import NameAddr, SipUri

__all__ = ["DEFAULT_SIP_PORT", "Dialog", "out_of_dialog_request", "uri_to_addr"]

#: RFC 3261 §19.1.2: "the default port value is transport and scheme dependent ... 5060 for UDP,
#: TCP, and SCTP, and 5061 for TLS."
DEFAULT_SIP_PORT = 5060


def uri_to_addr(uri: SipUri, default_transport: str = "udp") -> Addr:
    """The transport address a SIP URI points at (no DNS: the host is passed on as written).

    The ``transport`` URI parameter wins over ``default_transport``; only UDP and TCP exist here.
    """
    transport = (uri.param("transport") or default_transport).lower()
    if transport not in ("udp", "tcp"):
        transport = default_transport
    host = uri.param("maddr") or uri.host
    return Addr(transport, host, uri.port or DEFAULT_SIP_PORT)


def out_of_dialog_request(
    method: str,
    target: SipUri,
    *,
    from_: NameAddr,
    from_tag: str,
    to: NameAddr | None = None,
    call_id: str,
    cseq: int = 1,
    body: bytes = b"",
    content_type: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Request:
    """A request outside a dialog (RFC 3261 §8.1.1), without Via (the user agent adds it).

    ``to`` defaults to the target URI; RFC 3261 §8.1.1.3 wants a From tag and no To tag, so a
    ``tag`` parameter on ``to`` is dropped.  ``content_type`` is required with a body.
    """
    if body and not content_type:
        raise ValueError("a body needs a content_type")
    ruri = target.without_headers()
    to_na = (to if to is not None else NameAddr(ruri)).with_param("tag", None)
    h = Headers()
    h.add("Max-Forwards", "70")
    h.add("From", str(from_.with_param("tag", from_tag)))
    h.add("To", str(to_na))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    for name, value in headers:
        h.add(name, value)
    if body and content_type:
        h.add("Content-Type", content_type)
    return Request(headers=h, body=body, method=method, uri=str(ruri))


def _contact_uri(msg: SipMessage) -> SipUri | None:
    values = msg.headers.get_all_values("Contact")
    if not values:
        return None
    try:
        return NameAddr.parse(values[0]).uri
    except SipParseError:
        return None


def _routes(msg: SipMessage) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in msg.headers.get_all_values("Record-Route")]


@dataclass
class Dialog:
    """Dialog state (RFC 3261 §12).

    ``transport`` is the transport the dialog was set up over (used when the next hop URI
    names none); ``flow`` is, for TCP, the connection it runs over, so in-dialog requests reuse
    it instead of dialling the Contact address.
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: SipUri
    route_set: list[NameAddr] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    secure: bool = False
    transport: str = "udp"
    flow: Addr | None = None

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag): the dialog ID of RFC 3261 §12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def as_uac(cls, request: Request, response: Response, flow: Addr | None = None) -> Dialog:
        """The dialog a 2xx (or 1xx with To tag) to our ``request`` creates (§12.1.2).

        Raises :class:`SipParseError` when the response lacks what a dialog needs.
        """
        from_ = NameAddr.parse(request.headers.get("From") or "")
        to = NameAddr.parse(response.headers.get("To") or "")
        if not from_.tag or not to.tag:
            raise SipParseError("dialog without tags")
        target = _contact_uri(response)
        if target is None:
            raise SipParseError("2xx without a usable Contact")
        transport = flow.transport if flow is not None else "udp"
        return cls(
            call_id=request.call_id,
            local_tag=from_.tag,
            remote_tag=to.tag,
            local_uri=from_.with_param("tag", None),
            remote_uri=to.with_param("tag", None),
            remote_target=target,
            route_set=list(reversed(_routes(response))),
            local_cseq=request.cseq[0],
            remote_cseq=None,
            secure=SipUri.parse(request.uri).scheme == "sips",
            transport=transport,
            flow=flow if transport == "tcp" else None,
        )

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, flow: Addr, local_cseq: int = 0) -> Dialog:
        """The dialog our 2xx (or 1xx) to ``request`` creates (§12.1.1)."""
        from_ = NameAddr.parse(request.headers.get("From") or "")
        to = NameAddr.parse(request.headers.get("To") or "")
        # §12.1.1: an RFC 2543 peer may send no From tag; the remote tag is then empty
        target = _contact_uri(request)
        if target is None:
            raise SipParseError("request without a usable Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_.tag or "",
            local_uri=to.with_param("tag", None),
            remote_uri=from_.with_param("tag", None),
            remote_target=target,
            route_set=_routes(request),
            local_cseq=local_cseq,
            remote_cseq=request.cseq[0],
            secure=SipUri.parse(request.uri).scheme == "sips",
            transport=flow.transport,
            flow=flow if flow.transport == "tcp" else None,
        )

    # -- in-dialog requests ---------------------------------------------------------------------
    def create_request(
        self,
        method: str,
        *,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Request:
        """A request within the dialog (§12.2.1.1), without Via.

        ``cseq`` is for ACK (the INVITE's number) and CANCEL; otherwise the local CSeq is
        incremented and used.
        """
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        route_values: list[str]
        if not self.route_set:
            ruri = self.remote_target
            route_values = []
        elif self.route_set[0].uri.has_param("lr"):
            ruri = self.remote_target
            route_values = [str(r) for r in self.route_set]
        else:
            ruri = self.route_set[0].uri.without_headers()
            route_values = [str(r) for r in self.route_set[1:]] + [f"<{self.remote_target}>"]
        h = Headers()
        for value in route_values:
            h.add("Route", value)
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local_uri.with_param("tag", self.local_tag)))
        h.add("To", str(self.remote_uri.with_param("tag", self.remote_tag)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for name, value in headers:
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        return Request(headers=h, body=body, method=method, uri=str(ruri.without_headers()))

    def next_hop(self) -> Addr:
        """Where in-dialog requests go: the first route, else the remote target (§12.2.1.1)."""
        uri = self.route_set[0].uri if self.route_set else self.remote_target
        addr = uri_to_addr(uri, self.transport)
        if addr.transport == "tcp" and self.flow is not None:
            return self.flow
        return addr

    # -- incoming in-dialog requests ------------------------------------------------------------
    def accept_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: False (answer 500) when the CSeq is lower than the last one seen."""
        num = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and num < self.remote_cseq:
            return False
        self.remote_cseq = num
        return True

    def refresh_target(self, msg: SipMessage) -> None:
        """Target refresh (§12.2): a re-INVITE or its 2xx carries a new Contact."""
        target = _contact_uri(msg)
        if target is not None:
            self.remote_target = target
