"""The sans-I/O SIP user agent: UAS and UAC call control, registrations, OPTIONS.

What it does
------------
:class:`UserAgent` turns received datagrams / framed TCP messages into events for the
application (``IncomingCall``, ``CallEnded`` ...) and turns application calls (``answer``,
``hangup``, ``invite`` ...) into messages to send.  It owns the transactions
(:mod:`ums.sip.transaction`), the dialogs (:mod:`ums.sip.dialog`) and one registration machine
per account (:mod:`ums.sip.registration`).  The I/O shell (``service.py``) feeds
:meth:`UserAgent.receive` and :meth:`UserAgent.advance`, drains
:meth:`UserAgent.datagrams_to_send` and :meth:`UserAgent.events`, and arms one timer for
:meth:`UserAgent.next_deadline`.

How it works
------------
Received messages are parsed; a malformed request is answered with the parser's status hint
(400/413/505) and its reason as the reason phrase when enough of it survives to build a response,
otherwise dropped; malformed responses are dropped.  Nothing raises out of ``receive`` or
``advance``: an internal error on one message is logged and, for a request, answered 500.

Responses go where RFC 3261 §18.2.2 and RFC 3581 say: over UDP to the ``received`` address (the
packet's source host) and the ``rport`` (its source port) when the Via asked for one, else the
sent-by port; over TCP back on the connection the request came in on (its source ``Addr``).

The server INVITE transaction's 100 Trying is sent at once when the INVITE arrives (RFC 3261
§17.2.1 allows this instead of waiting 200 ms).  The UA core retransmits its 2xx to INVITE from
T1 doubling to T2 until the ACK comes, and after 64*T1 without one ends the call (``ack-timeout``)
with a BYE (§13.3.1.4).  An unanswered re-INVITE gets a 500 after :data:`REINVITE_TIMEOUT`.
A second re-INVITE while one is still waiting for the application gets 491 Request Pending.
:meth:`UserAgent.reinvite` sends our own re-INVITE in an established call (UAS or UAC side); its
final response comes up as ``ResponseReceived`` (a 2xx is ACKed, also when retransmitted), a
timeout as ``RequestFailed``; while it is out, a re-INVITE from the peer gets 491.

``hangup`` sends BYE in a confirmed dialog (once our 2xx is ACKed), CANCEL for our own
unanswered INVITE (after the first provisional response, §9.1) or 480 for an unanswered incoming
call, and reports ``CallEnded(reason="local-bye")`` at once in each case; ``reject`` reports
nothing (the application knows).

Generic requests: methods the application registers with :meth:`UserAgent.accept_methods`
(SUBSCRIBE, NOTIFY, MESSAGE, PUBLISH ...) are handed up as ``RequestReceived`` with a handle,
in or out of a dialog, instead of being answered 405/501; the application answers through
:meth:`UserAgent.respond` (the server transaction absorbs retransmissions and repeats the
response), or the user agent answers 500 after :data:`APP_ANSWER_TIMEOUT`.  The dialogs of these
methods (subscriptions) belong to the application; the user agent does no dialog matching for
them.  :meth:`UserAgent.send_request` runs any non-INVITE request through a client transaction
(Timers E/F), answers 401/407 with digest credentials when an account is named, and reports the
final response as ``ResponseReceived`` or the timeout as ``RequestFailed``.  Without
``accept_methods`` nothing of this changes what the user agent does.

All timers of transactions, calls and registrations sit in one heap keyed by deadline, so
``advance`` and ``next_deadline`` stay cheap with thousands of transactions alive.  Every
Call-ID, tag, branch and cnonce comes from the injected :class:`random.Random`.
"""

from __future__ import annotations

import enum
import heapq
import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from ums.config import Account
from ums.log import kv
from ums.sip.dialog import DEFAULT_SIP_PORT, Dialog, uri_to_addr
from ums.sip.events import (
    Addr,
    CallAnswered,
    CallEnded,
    CallEstablished,
    CallFailed,
    CallProgress,
    DtmfInfo,
    Event,
    IncomingCall,
    ReInvite,
    RequestFailed,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
)
from ums.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    canonical_name,
    parse_message,
)
from ums.sip.registration import ClientAuth, Registration, RegStep
from ums.sip.responses import (
    ALLOW,
    LocalParty,
    replace_top_via,
    salvage_headers,
    sanitize_phrase,
    stamp_via,
)
from ums.sip.timers import TimerSettings
from ums.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TxKey,
    cancelled_key,
    client_key,
    server_key,
)
from ums.sip.uri import NameAddr, SipUri, Via, new_call_id, new_tag

__all__ = ["ALLOW", "APP_ANSWER_TIMEOUT", "REINVITE_TIMEOUT", "Addr", "UaSettings", "UserAgent"]

log = logging.getLogger("ums.sip")

#: Methods we implement (RFC 3261 §20.5 Allow).
#: Methods we know but do not implement: 405 (RFC 3261 §21.4.6), the rest get 501 (§21.5.2).
KNOWN_UNSUPPORTED = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "UPDATE", "PRACK", "PUBLISH"}
)
#: Seconds the application has to answer a re-INVITE before we answer 500 ourselves.
REINVITE_TIMEOUT = 8.0
#: Seconds the application has to answer a ``RequestReceived`` before we answer 500 ourselves
#: (well inside the client's 64*T1 = 32 s Timer F, RFC 3261 §17.1.2.2).
APP_ANSWER_TIMEOUT = 8.0
#: Methods the user agent always handles itself (or that belong to its INVITE dialogs), so
#: ``accept_methods`` refuses them.
_NOT_DELEGABLE = frozenset(ALLOW) | {"PRACK", "UPDATE"}
#: Requests whose 2xx creates a dialog or refreshes its target and so carries a Contact
#: (RFC 6665 §4.2.1.1 for SUBSCRIBE; REFER sets up a subscription the same way, RFC 3515).
_CONTACT_IN_2XX = frozenset({"SUBSCRIBE", "REFER"})
#: RFC 2976 INFO DTMF bodies: ``Signal=5`` (application/dtmf-relay) or ``5`` (application/dtmf);
#: events 10/11 are * and # (RFC 4733 numbering), 12-15 A-D.
_DTMF_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
_SIGNAL_RE = re.compile(r"(?im)^\s*signal\s*=\s*(\S+)\s*$")


@dataclass(frozen=True)
class UaSettings:
    """What the user agent needs to know about itself."""

    host: str
    ports: Mapping[str, int]
    user_agent: str = "ums/0.1"
    accounts: Sequence[Account] = ()
    timers: TimerSettings = field(default_factory=TimerSettings)


class CallState(enum.Enum):
    INCOMING = "incoming"  # UAS: INVITE received, no final response yet
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for the ACK
    CALLING = "calling"  # UAC: INVITE sent, no final response yet
    CANCELLING = "cancelling"  # UAC: hung up before the final response
    ESTABLISHED = "established"


@dataclass
class _Call:
    call_id: str
    uac: bool
    state: CallState
    peer: Addr  # UAS: source of the INVITE; UAC: where the INVITE went
    invite: Request
    local_tag: str
    dialog: Dialog | None = None
    invite_tx: ServerTransaction | None = None
    invite_ctx: TxKey | None = None
    auth: ClientAuth | None = None
    # 2xx retransmission (§13.3.1.4), for the initial INVITE and re-INVITEs
    ok_wire: bytes | None = None
    ok_dest: Addr | None = None
    ok_cseq: int = 0
    ok_interval: float = 0.0
    ok_next: float | None = None
    ok_give_up: float | None = None
    bye_after_ack: bool = False
    # UAC: the ACK for our 2xx (re-sent when the 2xx is retransmitted)
    ack_wire: bytes | None = None
    ack_dest: Addr | None = None
    got_provisional: bool = False
    cancel_sent: bool = False
    cancel_give_up: float | None = None
    # UAS: pending re-INVITE
    reinvite_tx: ServerTransaction | None = None
    reinvite_deadline: float | None = None
    # our own re-INVITE: its handle, client transaction, CSeq and the ACK for its 2xx
    reinvite_handle: str | None = None
    reinvite_ctx: TxKey | None = None
    reinvite_cseq: int = 0
    reinvite_ack: bytes | None = None

    def next_deadline(self) -> float | None:
        times = [
            t
            for t in (self.ok_next, self.ok_give_up, self.cancel_give_up, self.reinvite_deadline)
            if t is not None
        ]
        return min(times) if times else None


@dataclass
class _AppRequest:
    """A request handed to the application, waiting for ``respond``."""

    handle: str
    tx: ServerTransaction
    deadline: float | None
    to_tag: str | None = None

    def next_deadline(self) -> float | None:
        return self.deadline


@dataclass
class _OutRequest:
    """A request from ``send_request``: the transaction now carrying it and its digest state."""

    handle: str
    request: Request
    dest: Addr
    auth: ClientAuth | None
    ctx: TxKey | None = None


_Timed = ClientTransaction | ServerTransaction | _Call | Registration | _AppRequest


def _dtmf_digit(request: Request) -> str | None:
    ctype = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    body = request.body.decode("latin-1", "replace")
    if ctype == "application/dtmf-relay":
        m = _SIGNAL_RE.search(body)
        value = m.group(1) if m else None
    elif ctype == "application/dtmf":
        value = body.strip()
    else:
        return None
    if value is None:
        return None
    value = _DTMF_CODES.get(value, value).upper()
    return value if len(value) == 1 and value in "0123456789*#ABCD" else None


class UserAgent:
    """Sans-I/O SIP user agent (see the module notes)."""

    def __init__(self, settings: UaSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.timers = settings.timers
        self.rng = rng if rng is not None else random.Random()
        self.local = LocalParty(settings.host, settings.ports, settings.user_agent, self.rng)
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[Event] = []
        self._ctx: dict[TxKey, ClientTransaction] = {}
        self._ctx_owner: dict[TxKey, tuple[str, str]] = {}
        self._stx: dict[TxKey, ServerTransaction] = {}
        self._calls: dict[str, _Call] = {}
        self._regs: dict[str, Registration] = {}
        self._heap: list[tuple[float, int, str, object]] = []
        self._scheduled: dict[tuple[str, object], float] = {}
        self._seq = 0
        self._now = 0.0
        self._app_requests: dict[str, _AppRequest] = {}
        self._out_requests: dict[str, _OutRequest] = {}
        self._handles = 0
        for account in settings.accounts:
            if account.register:
                self._regs[account.name] = Registration(
                    account,
                    self.local.contact_uri(account.transport, self._aor_user(account)),
                    settings.host,
                    self.rng,
                )

    # ================================================================== I/O side
    def receive(self, data: bytes, source: Addr, now: float) -> None:
        """One datagram or one framed TCP message from ``source``.  Never raises."""
        self._now = now
        try:
            self._receive(data, source, now)
        except Exception as exc:  # one bad message must not take the user agent down
            log.exception(kv("sip.internal_error", source=str(source), error=type(exc).__name__))
            self._internal_error(data, source)

    def advance(self, now: float) -> None:
        """Fire every timer due at ``now``.  Never raises."""
        self._now = now
        while self._heap and self._heap[0][0] <= now:
            deadline, _seq, kind, key = heapq.heappop(self._heap)
            if self._scheduled.get((kind, key)) != deadline:
                continue
            del self._scheduled[(kind, key)]
            try:
                self._fire(kind, key, now)
            except Exception as exc:
                log.exception(kv("sip.internal_error", where="advance", timer=kind, error=type(exc).__name__))
                self._forget(kind, key)
            else:
                self._sched(kind, key)

    def next_deadline(self) -> float | None:
        while self._heap:
            deadline, _seq, kind, key = self._heap[0]
            if self._scheduled.get((kind, key)) == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    # ================================================================== registration
    def start_registrations(self, now: float) -> None:
        for reg in self._regs.values():
            self._reg_step(reg, reg.start(now), now)

    def unregister_all(self, now: float) -> None:
        for reg in self._regs.values():
            self._reg_step(reg, reg.stop(now), now)

    def registrations_idle(self) -> bool:
        return not any(reg.in_flight for reg in self._regs.values())

    def registration(self, name: str) -> Registration:
        """The registration machine of an account (for status displays and tests)."""
        return self._regs[name]

    # ================================================================== UAS call control
    def ring(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is None or call.uac or call.state is not CallState.INCOMING or call.invite_tx is None:
            log.debug(kv("sip.ring_ignored", call_id=call_id))
            return
        tx = call.invite_tx
        resp = self.local.response(tx.request, 180, "Ringing", to_tag=call.local_tag, dialog_creating=True)
        tx.respond(resp, self._now)
        self._after_stx(tx)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        call = self._calls.get(call_id)
        if call is None or call.uac or call.state is not CallState.INCOMING or call.invite_tx is None:
            log.debug(kv("sip.answer_ignored", call_id=call_id))
            return
        tx = call.invite_tx
        resp = self.local.response(
            tx.request, 200, "OK", to_tag=call.local_tag, dialog_creating=True, body=sdp
        )
        tx.respond(resp, now)
        self._after_stx(tx)
        call.invite_tx = None
        call.state = CallState.ANSWERED
        self._start_2xx(call, resp, tx.dest, tx.request.cseq[0], now)

    def reject(
        self, call_id: str, status: int, reason: str, now: float, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status, got {status}")
        call = self._calls.get(call_id)
        if call is None or call.uac or call.state is not CallState.INCOMING or call.invite_tx is None:
            log.debug(kv("sip.reject_ignored", call_id=call_id))
            return
        tx = call.invite_tx
        resp = self.local.response(tx.request, status, sanitize_phrase(reason), to_tag=call.local_tag)
        for name, value in headers:
            resp.headers.add(name, value)
        tx.respond(resp, now)
        self._after_stx(tx)
        self._drop_call(call)

    def hangup(self, call_id: str, now: float) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        if call.state is CallState.INCOMING and call.invite_tx is not None:
            tx = call.invite_tx
            tx.respond(
                self.local.response(tx.request, 480, "Temporarily Unavailable", to_tag=call.local_tag), now
            )
            self._after_stx(tx)
            self._drop_call(call)
        elif call.state is CallState.ANSWERED:
            call.bye_after_ack = True  # §15: no BYE before the ACK (or its timeout)
            self._emit(CallEnded(call.call_id, "local-bye"))
            return
        elif call.state is CallState.CALLING:
            call.state = CallState.CANCELLING
            call.cancel_give_up = now + self.timers.transaction_timeout
            if call.got_provisional:
                self._send_cancel(call, now)
            self._sched("call", call.call_id)
        elif call.state is CallState.ESTABLISHED:
            self._send_bye(call, now)
            self._drop_call(call)
        else:
            return
        self._emit(CallEnded(call.call_id, "local-bye"))

    def answer_reinvite(
        self, call_id: str, sdp: bytes | None, now: float, status: int = 200, reason: str = "OK"
    ) -> None:
        call = self._calls.get(call_id)
        if call is None or call.reinvite_tx is None:
            log.debug(kv("sip.reinvite_answer_ignored", call_id=call_id))
            return
        tx = call.reinvite_tx
        call.reinvite_tx = None
        call.reinvite_deadline = None
        resp = self.local.response(
            tx.request,
            status,
            sanitize_phrase(reason),
            to_tag=call.local_tag,
            dialog_creating=False,
            body=sdp,
        )
        if 200 <= status < 300:
            resp.headers.add("Contact", self.local.contact_value(tx.dest.transport))
        tx.respond(resp, now)
        self._after_stx(tx)
        if 200 <= status < 300:
            self._start_2xx(call, resp, tx.dest, tx.request.cseq[0], now)
        self._sched("call", call.call_id)

    def reinvite(self, call_id: str, sdp: bytes, now: float) -> str | None:
        """Send a re-INVITE with ``sdp`` in an established call; returns its handle.

        The outcome is ``ResponseReceived(handle, final response)`` (a 2xx is ACKed here) or
        ``RequestFailed(handle, 408, ...)``.  None (nothing sent) when the call is not
        established or an offer/answer exchange is in progress either way (RFC 3261 §14.1).
        """
        call = self._calls.get(call_id)
        if (
            call is None
            or call.state is not CallState.ESTABLISHED
            or call.dialog is None
            or call.reinvite_tx is not None
            or call.reinvite_handle is not None
            or call.ok_wire is not None
        ):
            log.debug(kv("sip.reinvite_not_sent", call_id=call_id))
            return None
        dialog = call.dialog
        request = dialog.create_request(
            "INVITE",
            body=sdp,
            headers=[
                ("Contact", self.local.contact_value(dialog.transport)),
                ("Allow", self.local.allow_value()),
                ("User-Agent", self.settings.user_agent),
            ],
        )
        handle = self._new_handle("reinvite")
        call.reinvite_handle = handle
        call.reinvite_cseq = request.cseq[0]
        call.reinvite_ack = None
        call.reinvite_ctx = self._send_client(request, dialog.next_hop(), now, ("reinvite", call_id))
        return handle

    # ================================================================== UAC
    def invite(
        self, target: str, sdp: bytes, now: float, account: str | None = None, from_user: str = "ums"
    ) -> str:
        """Start an outgoing call; returns its Call-ID.  Raises ValueError for a bad target."""
        acct: Account | None = None
        if account is not None:
            acct = next((a for a in self.settings.accounts if a.name == account), None)
            if acct is None:
                raise ValueError(f"unknown account {account!r}")
        try:
            ruri = self._target_uri(target, acct)
        except SipParseError as exc:
            raise ValueError(f"bad call target {target!r}: {exc}") from exc
        if acct is not None:
            from_na = NameAddr(SipUri.parse(acct.aor))
            user = self._aor_user(acct)
            hop = SipUri.parse(acct.proxy) if acct.proxy else ruri
            dest = Addr(acct.transport, hop.host, hop.port or DEFAULT_SIP_PORT)
            auth: ClientAuth | None = ClientAuth(acct.auth_user or user, acct.password, self.rng)
        else:
            user = from_user
            from_na = NameAddr(SipUri("sip", from_user, self.settings.host))
            dest = uri_to_addr(ruri, "udp")
            auth = None
        call_id = new_call_id(self.rng, self.settings.host)
        tag = new_tag(self.rng)
        h = Headers()
        h.add("Max-Forwards", "70")
        h.add("From", str(from_na.with_param("tag", tag)))
        h.add("To", str(NameAddr(ruri.without_headers())))
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self.local.contact_value(dest.transport, user))
        h.add("Allow", self.local.allow_value())
        h.add("User-Agent", self.settings.user_agent)
        if sdp:
            h.add("Content-Type", "application/sdp")
        request = Request(headers=h, body=sdp, method="INVITE", uri=str(ruri.without_headers()))
        call = _Call(call_id, True, CallState.CALLING, dest, request, tag, auth=auth)
        self._calls[call_id] = call
        self._send_invite(call, now)
        return call_id

    def active_calls(self) -> list[str]:
        return list(self._calls)

    # ================================================================== generic requests
    def accept_methods(self, methods: Iterable[str], allow_events: Iterable[str] = ()) -> None:
        """Hand requests of ``methods`` to the application as ``RequestReceived``.

        Replaces the previous set; an empty set restores the default (405/501).  The methods
        show up in Allow; ``allow_events`` (event packages such as ``message-summary``) in an
        Allow-Events header of OPTIONS answers (RFC 6665 §8.2.2).  Raises ValueError for a
        method the user agent handles itself (INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, PRACK,
        UPDATE).
        """
        wanted = frozenset(m.strip().upper() for m in methods if m.strip())
        refused = wanted & _NOT_DELEGABLE
        if refused:
            raise ValueError(f"the user agent handles {', '.join(sorted(refused))} itself")
        self.local.accepted = wanted
        self.local.allow_events = tuple(dict.fromkeys(e.strip() for e in allow_events if e.strip()))

    def respond(
        self,
        handle: str,
        status: int,
        reason: str,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
    ) -> str | None:
        """Answer a ``RequestReceived``; returns the To tag of the response (None: unknown handle).

        A request without a To tag gets ``to_tag`` (or a fresh one) on every response but 100;
        the 2xx to a SUBSCRIBE or REFER carries our Contact (and, for one outside a dialog,
        the Record-Route set), unless ``headers`` bring a Contact.  A provisional status keeps
        the handle open; a final one closes it.
        """
        if not 100 <= status <= 699:
            raise ValueError(f"status out of range: {status}")
        if body and not content_type:
            raise ValueError("a body needs a content_type")
        app = self._app_requests.get(handle)
        if app is None:
            log.debug(kv("sip.respond_ignored", handle=handle))
            return None
        tx = app.tx
        request = tx.request
        try:
            existing = NameAddr.parse(request.headers.get("To") or "").tag
        except SipParseError:
            existing = None
        if app.to_tag is None:
            app.to_tag = existing or to_tag or new_tag(self.rng)
        tag = app.to_tag
        wants_contact = request.method in _CONTACT_IN_2XX and 200 <= status < 300
        resp = self.local.response(
            request,
            status,
            sanitize_phrase(reason),
            to_tag=None if status == 100 else tag,
            dialog_creating=wants_contact and existing is None,
        )
        extra = list(headers)
        if any(canonical_name(name) == "Contact" for name, _ in extra):
            resp.headers.remove("Contact")
        elif wants_contact and "Contact" not in resp.headers:
            resp.headers.add("Contact", self.local.contact_value(tx.dest.transport))
        for name, value in extra:
            resp.headers.add(name, value)
        if body and content_type:
            resp.headers.add("Content-Type", content_type)
            resp.body = body
        tx.respond(resp, now)
        self._after_stx(tx)
        if status >= 200:
            self._app_requests.pop(handle, None)
            self._scheduled.pop(("app", handle), None)
        return tag

    def send_request(
        self, request: Request, dest: Addr | None, now: float, account: str | None = None
    ) -> str:
        """Send a non-INVITE request in a client transaction; returns its handle.

        ``request`` needs From (with tag), To, Call-ID and CSeq (see
        :func:`ums.sip.dialog.out_of_dialog_request` and :meth:`Dialog.create_request`); any Via
        is replaced by ours, Max-Forwards and User-Agent are added when missing, Content-Length
        is written on serialisation.  ``dest=None`` sends to the first Route, else the
        account's outbound proxy, else the Request-URI's address; for in-dialog requests pass
        ``dialog.next_hop()`` (it knows the TCP flow).  With ``account`` a 401/407 is answered
        with its credentials (CSeq + 1).  Outcome: ``ResponseReceived(handle, final response)``
        or ``RequestFailed(handle, 408, ...)``.  Raises ValueError for INVITE/ACK/CANCEL, a
        request missing those headers, an unknown account or an unusable Request-URI.
        """
        if request.method in ("INVITE", "ACK", "CANCEL"):
            raise ValueError(f"send_request does not send {request.method}")
        for name in ("From", "To", "Call-ID", "CSeq"):
            if name not in request.headers:
                raise ValueError(f"request without {name}")
        try:
            if request.cseq[1] != request.method:
                raise ValueError("CSeq method does not match the request method")
            NameAddr.parse(request.headers.get("From") or "")
        except SipParseError as exc:
            raise ValueError(f"unusable request: {exc}") from exc
        acct: Account | None = None
        if account is not None:
            acct = next((a for a in self.settings.accounts if a.name == account), None)
            if acct is None:
                raise ValueError(f"unknown account {account!r}")
        if dest is None:
            try:
                dest = self._request_dest(request, acct)
            except SipParseError as exc:
                raise ValueError(f"no destination for {request.uri!r}: {exc}") from exc
        request.headers.remove("Via")
        if "Max-Forwards" not in request.headers:
            request.headers.add("Max-Forwards", "70")
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.settings.user_agent)
        auth: ClientAuth | None = None
        if acct is not None:
            auth = ClientAuth(acct.auth_user or self._aor_user(acct), acct.password, self.rng)
        handle = self._new_handle("out")
        out = _OutRequest(handle, request, dest, auth)
        self._out_requests[handle] = out
        out.ctx = self._send_client(request, dest, now, ("req", handle))
        return handle

    def local_contact(self, transport: str = "udp", user: str = "ums") -> str:
        """Our Contact header value for ``transport`` (``<sip:user@host:port>``)."""
        return self.local.contact_value(transport, user)

    # ================================================================== receiving
    def _receive(self, data: bytes, source: Addr, now: float) -> None:
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self._reject_unparsable(data, source, exc)
            return
        if isinstance(msg, Response):
            self._on_response(msg, now)
        else:
            self._on_request(msg, source, now)

    def _reject_unparsable(self, data: bytes, source: Addr, exc: SipParseError) -> None:
        reason = sanitize_phrase(exc.reason)
        self._emit(RequestRejected(source, reason))
        log.info(kv("sip.bad_message", source=str(source), reason=reason))
        salvaged = salvage_headers(data)
        if salvaged is None:
            return
        vias, rest = salvaged
        try:
            top = Via.parse(vias[0])
        except SipParseError:
            return
        top, dest = stamp_via(top, source)
        h = Headers()
        h.add("Via", str(top))
        for v in vias[1:]:
            h.add("Via", v)
        for name, value in rest:
            if name == "To" and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={new_tag(self.rng)}"
            h.add(name, value)
        h.add("Server", self.settings.user_agent)
        status = exc.status_hint if 400 <= exc.status_hint <= 699 else 400
        self._out.append((Response(headers=h, status=status, reason=reason).serialize(), dest))

    def _internal_error(self, data: bytes, source: Addr) -> None:
        try:
            msg = parse_message(data)
            if not isinstance(msg, Request) or msg.method == "ACK":
                return
            top, dest = stamp_via(Via.parse(msg.vias[0]), source)
            resp = self.local.response(
                msg, 500, "Server Internal Error", to_tag=new_tag(self.rng), top_via=top
            )
            self._out.append((resp.serialize(), dest))
        except Exception:
            log.debug(kv("sip.internal_error_unanswered", source=str(source)))

    # ------------------------------------------------------------------ requests
    def _on_request(self, request: Request, source: Addr, now: float) -> None:
        try:
            top = Via.parse(request.vias[0])
            from_na = NameAddr.parse(request.headers.get("From") or "")
            to_na = NameAddr.parse(request.headers.get("To") or "")
            SipUri.parse(request.uri)
        except SipParseError as exc:
            if request.method != "ACK":
                self._reply_stateless(request, source, exc.status_hint, sanitize_phrase(exc.reason))
            else:
                self._emit(RequestRejected(source, sanitize_phrase(exc.reason)))
            return
        top, reply_to = stamp_via(top, source)
        replace_top_via(request, top)
        key = server_key(request)

        if request.method == "ACK":
            stx = self._stx.get(key)
            if stx is not None:
                stx.receive(request, now)
                self._after_stx(stx)
            else:
                self._on_2xx_ack(request, to_na, from_na, now)
            return
        existing = self._stx.get(key)
        if existing is not None:
            existing.receive(request, now)
            self._after_stx(existing)
            return
        if (
            request.method == "INVITE"
            and to_na.tag is None
            and self._absorb_invite_retransmission(request, now)
        ):
            return
        tx = ServerTransaction(request, reply_to, now, self.timers)
        self._stx[tx.key] = tx
        method = request.method
        if method == "CANCEL":
            self._on_cancel(tx, source, now)
            return
        if method in self.local.accepted:
            self._deliver(tx, source, now)
            return
        if method not in ALLOW and method not in KNOWN_UNSUPPORTED:
            self._reply(tx, 501, "Not Implemented", source, now, [("Allow", self.local.allow_value())])
            return
        if method in KNOWN_UNSUPPORTED:
            self._reply(tx, 405, "Method Not Allowed", source, now, [("Allow", self.local.allow_value())])
            return
        max_fwd = request.headers.get("Max-Forwards")
        if max_fwd is not None and max_fwd.strip() == "0":
            self._reply(tx, 483, "Too Many Hops", source, now)
            return
        if to_na.tag is not None:
            self._on_in_dialog(tx, to_na, from_na, source, now)
            return
        if method == "INVITE":
            self._on_new_invite(tx, from_na, source, now)
        elif method == "OPTIONS":
            self._reply(tx, 200, "OK", None, now, self.local.capabilities())
        else:  # BYE, INFO without a dialog
            self._reply(tx, 481, "Call/Transaction Does Not Exist", source, now)

    def _deliver(self, tx: ServerTransaction, source: Addr, now: float) -> None:
        """Hand an accepted-method request to the application (RequestReceived)."""
        max_fwd = tx.request.headers.get("Max-Forwards")
        if max_fwd is not None and max_fwd.strip() == "0":
            self._reply(tx, 483, "Too Many Hops", source, now)
            return
        require = [v.strip() for v in tx.request.headers.get_all_values("Require") if v.strip()]
        if require:  # RFC 3261 §8.2.2.3: we support no extensions
            self._reply(tx, 420, "Bad Extension", source, now, [("Unsupported", ", ".join(require))])
            return
        handle = self._new_handle("in")
        self._app_requests[handle] = _AppRequest(handle, tx, now + APP_ANSWER_TIMEOUT)
        self._sched("app", handle)
        self._emit(RequestReceived(handle, tx.request, source))

    def _new_handle(self, prefix: str) -> str:
        self._handles += 1
        return f"{prefix}-{self._handles}"

    def _on_new_invite(self, tx: ServerTransaction, from_na: NameAddr, source: Addr, now: float) -> None:
        request = tx.request
        call_id = request.call_id
        if call_id in self._calls:
            self._reply(tx, 482, "Loop Detected", source, now)
            return
        require = [v.strip() for v in request.headers.get_all_values("Require") if v.strip()]
        if require:
            self._reply(tx, 420, "Bad Extension", source, now, [("Unsupported", ", ".join(require))])
            return
        local_tag = new_tag(self.rng)
        try:
            dialog = Dialog.as_uas(request, local_tag, source, local_cseq=self.rng.randrange(1, 2**16))
        except SipParseError as exc:
            self._reply(tx, 400, sanitize_phrase(exc.reason), source, now)
            return
        call = _Call(call_id, False, CallState.INCOMING, source, request, local_tag, dialog=dialog)
        call.invite_tx = tx
        self._calls[call_id] = call
        self._reply(tx, 100, "Trying", None, now)
        self._emit(IncomingCall(call_id, request, source))

    def _on_in_dialog(
        self, tx: ServerTransaction, to_na: NameAddr, from_na: NameAddr, source: Addr, now: float
    ) -> None:
        request = tx.request
        call = self._calls.get(request.call_id)
        dialog = call.dialog if call is not None else None
        if (
            call is None
            or dialog is None
            or dialog.local_tag != to_na.tag
            or dialog.remote_tag != (from_na.tag or "")
        ):
            self._reply(tx, 481, "Call/Transaction Does Not Exist", source, now)
            return
        if not dialog.accept_remote_cseq(request):
            self._reply(tx, 500, "Server Internal Error", source, now, [("Retry-After", "1")])
            return
        method = request.method
        if method == "BYE":
            self._reply(tx, 200, "OK", None, now)
            if call.state is CallState.INCOMING and call.invite_tx is not None:
                itx = call.invite_tx
                itx.respond(
                    self.local.response(itx.request, 487, "Request Terminated", to_tag=call.local_tag), now
                )
                self._after_stx(itx)
            self._drop_call(call)
            if not call.bye_after_ack:
                self._emit(CallEnded(call.call_id, "remote-bye"))
        elif method == "INVITE":
            self._on_reinvite(call, dialog, tx, source, now)
        elif method == "INFO":
            self._reply(tx, 200, "OK", None, now)
            digit = _dtmf_digit(request)
            if digit is not None:
                self._emit(DtmfInfo(call.call_id, digit))
        elif method == "OPTIONS":
            self._reply(tx, 200, "OK", None, now, self.local.capabilities())
        else:
            self._reply(tx, 405, "Method Not Allowed", source, now, [("Allow", self.local.allow_value())])

    def _on_reinvite(
        self, call: _Call, dialog: Dialog, tx: ServerTransaction, source: Addr, now: float
    ) -> None:
        if (
            call.state is not CallState.ESTABLISHED
            or call.reinvite_tx is not None
            or call.reinvite_handle is not None
            or call.ok_wire is not None
        ):
            self._reply(tx, 491, "Request Pending", source, now)
            return
        dialog.refresh_target(tx.request)
        call.reinvite_tx = tx
        call.reinvite_deadline = now + REINVITE_TIMEOUT
        self._reply(tx, 100, "Trying", None, now)
        self._sched("call", call.call_id)
        self._emit(ReInvite(call.call_id, tx.request.body))

    def _on_cancel(self, tx: ServerTransaction, source: Addr, now: float) -> None:
        itx = self._stx.get(cancelled_key(tx.key))
        if itx is None:
            self._reply(tx, 481, "Call/Transaction Does Not Exist", source, now)
            return
        call = self._calls.get(itx.request.call_id)
        to_tag = call.local_tag if call is not None else None
        resp = self.local.response(tx.request, 200, "OK", to_tag=to_tag or new_tag(self.rng))
        tx.respond(resp, now)
        self._after_stx(tx)
        if itx.final_sent:
            return  # §9.2: the CANCEL has no effect on a completed INVITE
        if call is not None and call.invite_tx is itx:
            itx.respond(
                self.local.response(itx.request, 487, "Request Terminated", to_tag=call.local_tag), now
            )
            self._after_stx(itx)
            self._drop_call(call)
            self._emit(CallEnded(call.call_id, "cancelled"))
        elif call is not None and call.reinvite_tx is itx:
            itx.respond(
                self.local.response(itx.request, 487, "Request Terminated", to_tag=call.local_tag), now
            )
            self._after_stx(itx)
            call.reinvite_tx = None
            call.reinvite_deadline = None
            self._sched("call", call.call_id)

    def _on_2xx_ack(self, request: Request, to_na: NameAddr, from_na: NameAddr, now: float) -> None:
        call = self._calls.get(request.call_id)
        if call is None or call.dialog is None or call.dialog.local_tag != to_na.tag:
            return
        if call.ok_wire is None or request.cseq[0] != call.ok_cseq:
            return
        call.ok_wire = None
        call.ok_next = None
        call.ok_give_up = None
        self._sched("call", call.call_id)
        if call.state is CallState.ANSWERED:
            call.state = CallState.ESTABLISHED
            if call.bye_after_ack:
                self._send_bye(call, now)
                self._drop_call(call)
                return
            self._emit(CallEstablished(call.call_id))

    def _absorb_invite_retransmission(self, request: Request, now: float) -> bool:
        """An INVITE retransmitted after its transaction ended with our 2xx (§13.3.1.4)."""
        call = self._calls.get(request.call_id)
        if call is None or call.uac:
            return False
        if call.invite.cseq != request.cseq or call.invite.headers.get("From") != request.headers.get("From"):
            return False
        if call.ok_wire is not None and call.ok_dest is not None:
            self._out.append((call.ok_wire, call.ok_dest))
        return True

    # ------------------------------------------------------------------ responses
    def _on_response(self, response: Response, now: float) -> None:
        try:
            key = client_key(response)
        except SipParseError:
            return
        tx = self._ctx.get(key)
        if tx is None:
            if response.cseq[1] == "INVITE" and 200 <= response.status < 300:
                self._on_stray_2xx(response, now)
            return
        owner = self._ctx_owner.get(key)
        pass_up = tx.receive(response, now)
        self._after_ctx(tx)
        if not pass_up or owner is None:
            return
        kind, name = owner
        if kind == "reg":
            reg = self._regs.get(name)
            if reg is not None and response.status >= 200:
                self._reg_step(reg, reg.on_response(response, now), now)
        elif kind == "invite":
            call = self._calls.get(name)
            if call is not None and call.invite_ctx == key:
                self._on_invite_response(call, tx, response, now)
        elif kind == "req":
            out = self._out_requests.get(name)
            if out is not None and out.ctx == key and response.status >= 200:
                self._on_request_response(out, response, now)
        elif kind == "reinvite":
            call = self._calls.get(name)
            if call is not None and call.reinvite_ctx == key and response.status >= 200:
                self._on_reinvite_response(call, response, now)

    def _on_request_response(self, out: _OutRequest, response: Response, now: float) -> None:
        if response.status in (401, 407) and out.auth is not None:
            why = out.auth.on_challenge(response)
            if why is None:
                old = out.request
                h = Headers()
                for name, value in old.headers:
                    if name in ("Via", "Authorization", "Proxy-Authorization", "CSeq"):
                        continue
                    h.add(name, value)
                h.add("CSeq", f"{old.cseq[0] + 1} {old.method}")
                for name, value in out.auth.credentials(old.method, old.uri, old.body):
                    h.add(name, value)
                out.request = Request(headers=h, body=old.body, method=old.method, uri=old.uri)
                out.ctx = self._send_client(out.request, out.dest, now, ("req", out.handle))
                return
            log.info(kv("sip.auth_failed", handle=out.handle, method=out.request.method, reason=why))
        elif out.auth is not None:
            out.auth.on_success()
        self._out_requests.pop(out.handle, None)
        self._emit(ResponseReceived(out.handle, response))

    def _on_invite_response(self, call: _Call, tx: ClientTransaction, response: Response, now: float) -> None:
        status = response.status
        if status < 200:
            call.got_provisional = True
            if call.state is CallState.CANCELLING:
                if not call.cancel_sent:
                    self._send_cancel(call, now)
            elif call.state is CallState.CALLING:
                self._emit(CallProgress(call.call_id, status, response.reason))
            return
        if status < 300:
            self._on_invite_2xx(call, response, now)
            return
        call.invite_ctx = None
        if call.state is CallState.CANCELLING:
            self._drop_call(call)
            return
        if status in (401, 407) and call.auth is not None:
            why = call.auth.on_challenge(response)
            if why is None:
                self._resend_invite_with_auth(call, now)
                return
        self._drop_call(call)
        self._emit(CallFailed(call.call_id, status, response.reason or "Failed"))

    def _on_reinvite_response(self, call: _Call, response: Response, now: float) -> None:
        """The final response to our re-INVITE: ACK a 2xx (the transaction ACKs the others)."""
        handle = call.reinvite_handle
        call.reinvite_handle = None
        call.reinvite_ctx = None
        if 200 <= response.status < 300 and call.dialog is not None:
            ack = call.dialog.create_request("ACK", cseq=call.reinvite_cseq)
            dest = call.dialog.next_hop()
            ack.headers.prepend("Via", self.local.via(dest.transport))
            call.reinvite_ack = ack.serialize()
            self._out.append((call.reinvite_ack, dest))
        if handle is not None:
            self._emit(ResponseReceived(handle, response))

    def _on_invite_2xx(self, call: _Call, response: Response, now: float) -> None:
        if call.state not in (CallState.CALLING, CallState.CANCELLING):
            return
        dialog: Dialog | None
        try:
            dialog = Dialog.as_uac(call.invite, response, call.peer)
        except SipParseError:
            dialog = _fallback_uac_dialog(call, response)
        if dialog is None:
            return
        call.dialog = dialog
        call.invite_ctx = None
        self._send_ack(call, response, now)
        if call.state is CallState.CANCELLING:
            self._send_bye(call, now)
            self._drop_call(call)
            return
        call.state = CallState.ESTABLISHED
        self._emit(CallAnswered(call.call_id, response.body))
        self._emit(CallEstablished(call.call_id))

    def _on_stray_2xx(self, response: Response, now: float) -> None:
        """A retransmitted 2xx (the INVITE transaction is gone): ACK it again (§13.2.2.4)."""
        call = self._calls.get(response.call_id)
        if (
            call is not None
            and call.reinvite_ack is not None
            and call.dialog is not None
            and response.cseq[0] == call.reinvite_cseq
        ):
            self._out.append((call.reinvite_ack, call.dialog.next_hop()))
            return
        if call is None or not call.uac or call.dialog is None:
            return
        try:
            to_tag = NameAddr.parse(response.headers.get("To") or "").tag
        except SipParseError:
            return
        if to_tag == call.dialog.remote_tag:
            if call.ack_wire is not None and call.ack_dest is not None:
                self._out.append((call.ack_wire, call.ack_dest))
            return
        # a 2xx from a second fork: acknowledge it and end that dialog at once
        try:
            other = Dialog.as_uac(call.invite, response, call.peer)
        except SipParseError:
            return
        ack = other.create_request("ACK", cseq=call.invite.cseq[0])
        self._send_stateless(ack, other.next_hop())
        bye = other.create_request("BYE")
        self._send_client(bye, other.next_hop(), now, ("bye", call.call_id))

    # ================================================================== UAC helpers
    def _send_invite(self, call: _Call, now: float) -> None:
        request = call.invite
        request.headers.remove("Via")
        request.headers.prepend("Via", self.local.via(call.peer.transport))
        key = self._send_client(request, call.peer, now, ("invite", call.call_id))
        call.invite_ctx = key

    def _resend_invite_with_auth(self, call: _Call, now: float) -> None:
        assert call.auth is not None
        old = call.invite
        h = Headers()
        for name, value in old.headers:
            if name in ("Via", "Authorization", "Proxy-Authorization", "CSeq"):
                continue
            h.add(name, value)
        h.add("CSeq", f"{old.cseq[0] + 1} INVITE")
        for name, value in call.auth.credentials("INVITE", old.uri, old.body):
            h.add(name, value)
        call.invite = Request(headers=h, body=old.body, method="INVITE", uri=old.uri)
        self._send_invite(call, now)

    def _send_cancel(self, call: _Call, now: float) -> None:
        """CANCEL (§9.1): same Request-URI, Call-ID, From, To, CSeq number and top Via."""
        inv = call.invite
        h = Headers()
        h.add("Via", inv.vias[0])
        for route in inv.headers.get_lines("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", inv.headers.get_raw("From") or "")
        h.add("To", inv.headers.get_raw("To") or "")
        h.add("Call-ID", inv.call_id)
        h.add("CSeq", f"{inv.cseq[0]} CANCEL")
        h.add("User-Agent", self.settings.user_agent)
        cancel = Request(headers=h, method="CANCEL", uri=inv.uri)
        call.cancel_sent = True
        self._send_client(cancel, call.peer, now, ("cancel", call.call_id))

    def _send_ack(self, call: _Call, response: Response, now: float) -> None:
        assert call.dialog is not None
        headers = [
            (n, v) for n, v in call.invite.headers if n in ("Authorization", "Proxy-Authorization")
        ]  # §22: the ACK carries the INVITE's credentials
        ack = call.dialog.create_request("ACK", cseq=call.invite.cseq[0], headers=headers)
        dest = call.dialog.next_hop()
        ack.headers.prepend("Via", self.local.via(dest.transport))
        call.ack_wire = ack.serialize()
        call.ack_dest = dest
        self._out.append((call.ack_wire, dest))

    def _send_bye(self, call: _Call, now: float) -> None:
        if call.dialog is None:
            return
        bye = call.dialog.create_request("BYE", headers=[("User-Agent", self.settings.user_agent)])
        self._send_client(bye, call.dialog.next_hop(), now, ("bye", call.call_id))

    def _send_client(self, request: Request, dest: Addr, now: float, owner: tuple[str, str]) -> TxKey:
        if not request.vias:
            request.headers.prepend("Via", self.local.via(dest.transport))
        tx = ClientTransaction(request, dest, now, self.timers)
        self._ctx[tx.key] = tx
        self._ctx_owner[tx.key] = owner
        self._after_ctx(tx)
        return tx.key

    def _send_stateless(self, request: Request, dest: Addr) -> None:
        request.headers.prepend("Via", self.local.via(dest.transport))
        self._out.append((request.serialize(), dest))

    def _request_dest(self, request: Request, acct: Account | None) -> Addr:
        """Next hop of a request from ``send_request``: first Route, outbound proxy, Request-URI."""
        routes = request.headers.get_all_values("Route")
        default = acct.transport if acct is not None else "udp"
        if routes:
            return uri_to_addr(NameAddr.parse(routes[0]).uri, default)
        if acct is not None and acct.proxy:
            return uri_to_addr(SipUri.parse(acct.proxy), default)
        return uri_to_addr(SipUri.parse(request.uri), default)

    def _target_uri(self, target: str, acct: Account | None) -> SipUri:
        text = target.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        if text.lower().startswith(("sip:", "sips:")):
            return SipUri.parse(text)
        if "@" in text:
            return SipUri.parse("sip:" + text)
        if acct is None:
            raise SipParseError("a target without host needs an account")
        registrar = SipUri.parse(acct.registrar)
        return SipUri("sip", text, registrar.host, registrar.port)

    # ================================================================== registration helpers
    def _reg_step(self, reg: Registration, step: RegStep, now: float) -> None:
        if step.request is not None:
            req = step.request
            req.headers.add("User-Agent", self.settings.user_agent)
            self._send_client(req, reg.dest, now, ("reg", reg.name))
        if step.event is not None:
            ev = step.event
            if ev.state == "registered":
                log.info(kv("sip.register.ok", account=ev.account, expires=ev.expires))
            elif ev.state == "failed":
                log.warning(
                    kv(
                        "sip.register.failed",
                        account=ev.account,
                        status=ev.status,
                        reason=ev.reason,
                        retry_in=ev.retry_in,
                    )
                )
            else:
                log.info(kv("sip.register.removed", account=ev.account, status=ev.status))
            self._emit(ev)
        self._sched("reg", reg.name)

    def _aor_user(self, account: Account) -> str:
        try:
            return SipUri.parse(account.aor).user or "ums"
        except SipParseError:
            return "ums"

    # ================================================================== timers
    def _sched(self, kind: str, key: object) -> None:
        obj = self._lookup(kind, key)
        deadline = obj.next_deadline() if obj is not None else None
        if deadline is None:
            self._scheduled.pop((kind, key), None)
            return
        if self._scheduled.get((kind, key)) == deadline:
            return
        self._scheduled[(kind, key)] = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, kind, key))

    def _lookup(self, kind: str, key: object) -> _Timed | None:
        if kind == "ctx":
            return self._ctx.get(cast(TxKey, key))
        if kind == "stx":
            return self._stx.get(cast(TxKey, key))
        if kind == "call":
            return self._calls.get(cast(str, key))
        if kind == "reg":
            return self._regs.get(cast(str, key))
        if kind == "app":
            return self._app_requests.get(cast(str, key))
        return None

    def _forget(self, kind: str, key: object) -> None:
        if kind == "ctx":
            self._ctx.pop(cast(TxKey, key), None)
            self._ctx_owner.pop(cast(TxKey, key), None)
        elif kind == "stx":
            self._stx.pop(cast(TxKey, key), None)
        elif kind == "call":
            self._calls.pop(cast(str, key), None)
        elif kind == "app":
            self._app_requests.pop(cast(str, key), None)
        self._scheduled.pop((kind, key), None)

    def _fire(self, kind: str, key: object, now: float) -> None:
        obj = self._lookup(kind, key)
        if isinstance(obj, ClientTransaction):
            owner = self._ctx_owner.get(obj.key)
            timed_out = obj.advance(now)
            self._after_ctx(obj)
            if timed_out and owner is not None:
                self._on_client_timeout(obj, owner, now)
        elif isinstance(obj, ServerTransaction):
            obj.advance(now)
            self._after_stx(obj)
        elif isinstance(obj, _Call):
            self._call_timers(obj, now)
        elif isinstance(obj, Registration):
            self._reg_step(obj, obj.advance(now), now)
        elif isinstance(obj, _AppRequest):
            if obj.deadline is not None and now >= obj.deadline:
                log.warning(kv("sip.app_no_answer", handle=obj.handle, method=obj.tx.request.method))
                self.respond(obj.handle, 500, "Server Internal Error", now)

    def _on_client_timeout(self, tx: ClientTransaction, owner: tuple[str, str], now: float) -> None:
        kind, name = owner
        log.info(kv("sip.timeout", method=tx.request.method, dest=str(tx.dest)))
        if kind == "reg":
            reg = self._regs.get(name)
            if reg is not None:
                self._reg_step(reg, reg.on_timeout(now), now)
        elif kind == "invite":
            call = self._calls.get(name)
            if call is not None and call.invite_ctx == tx.key:
                self._drop_call(call)
                if call.state is CallState.CALLING:
                    self._emit(CallFailed(call.call_id, 408, "Request Timeout"))
        elif kind == "req":
            out = self._out_requests.get(name)
            if out is not None and out.ctx == tx.key:
                self._out_requests.pop(name, None)
                self._emit(RequestFailed(name, 408, "Request Timeout"))
        elif kind == "reinvite":
            call = self._calls.get(name)
            if call is not None and call.reinvite_ctx == tx.key and call.reinvite_handle is not None:
                handle = call.reinvite_handle
                call.reinvite_handle = None
                call.reinvite_ctx = None
                self._emit(RequestFailed(handle, 408, "Request Timeout"))

    def _call_timers(self, call: _Call, now: float) -> None:
        if call.ok_give_up is not None and now >= call.ok_give_up:
            # §13.3.1.4: no ACK after 64*T1 -> end the session with a BYE
            call.ok_wire = call.ok_next = call.ok_give_up = None
            self._send_bye(call, now)
            self._drop_call(call)
            if not call.bye_after_ack:
                self._emit(CallEnded(call.call_id, "ack-timeout"))
            return
        if call.ok_next is not None and now >= call.ok_next and call.ok_wire is not None:
            assert call.ok_dest is not None
            self._out.append((call.ok_wire, call.ok_dest))
            call.ok_interval = min(call.ok_interval * 2, self.timers.t2)
            call.ok_next = call.ok_next + call.ok_interval
        if call.reinvite_deadline is not None and now >= call.reinvite_deadline:
            self.answer_reinvite(call.call_id, None, now, 500, "Server Internal Error")
        if call.cancel_give_up is not None and now >= call.cancel_give_up:
            call.cancel_give_up = None
            self._drop_call(call)

    def _start_2xx(self, call: _Call, resp: Response, dest: Addr, cseq: int, now: float) -> None:
        call.ok_wire = resp.serialize()
        call.ok_dest = dest
        call.ok_cseq = cseq
        call.ok_interval = self.timers.t1
        call.ok_next = now + self.timers.t1 if dest.transport == "udp" else None
        call.ok_give_up = now + self.timers.transaction_timeout
        self._sched("call", call.call_id)

    def _drop_call(self, call: _Call) -> None:
        self._calls.pop(call.call_id, None)
        self._scheduled.pop(("call", call.call_id), None)

    # ================================================================== plumbing
    def _after_ctx(self, tx: ClientTransaction) -> None:
        self._out.extend(tx.take_output())
        if tx.terminated:
            self._forget("ctx", tx.key)
        else:
            self._sched("ctx", tx.key)

    def _after_stx(self, tx: ServerTransaction) -> None:
        self._out.extend(tx.take_output())
        if tx.terminated:
            self._forget("stx", tx.key)
        else:
            self._sched("stx", tx.key)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _reply(
        self,
        tx: ServerTransaction,
        status: int,
        reason: str,
        rejected_source: Addr | None,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Respond through ``tx``; ``rejected_source`` set = also report a RequestRejected."""
        to_tag = None if status == 100 else new_tag(self.rng)
        call = self._calls.get(tx.request.call_id)
        if call is not None and status != 100 and call.dialog is not None:
            try:
                if NameAddr.parse(tx.request.headers.get("To") or "").tag in (None, call.local_tag):
                    to_tag = call.local_tag
            except SipParseError:
                pass
        resp = self.local.response(tx.request, status, reason, to_tag=to_tag)
        for name, value in headers:
            resp.headers.add(name, value)
        tx.respond(resp, now)
        self._after_stx(tx)
        if rejected_source is not None:
            why = f"{status} {reason} for {tx.request.method}"
            self._emit(RequestRejected(rejected_source, why))
            log.info(
                kv(
                    "sip.rejected",
                    source=str(rejected_source),
                    status=status,
                    reason=reason,
                    method=tx.request.method,
                )
            )

    def _reply_stateless(self, request: Request, source: Addr, status: int, reason: str) -> None:
        self._emit(RequestRejected(source, reason))
        log.info(kv("sip.bad_message", source=str(source), reason=reason))
        try:
            top, dest = stamp_via(Via.parse(request.vias[0]), source)
        except SipParseError:
            return
        status = status if 400 <= status <= 699 else 400
        resp = self.local.response(request, status, reason, to_tag=new_tag(self.rng), top_via=top)
        self._out.append((resp.serialize(), dest))


def _fallback_uac_dialog(call: _Call, response: Response) -> Dialog | None:
    """A dialog for a 2xx without a usable Contact: target the Request-URI so we can ACK/BYE."""
    try:
        from_na = NameAddr.parse(call.invite.headers.get("From") or "")
        to_na = NameAddr.parse(response.headers.get("To") or "")
        target = SipUri.parse(call.invite.uri)
    except SipParseError:
        return None
    return Dialog(
        call_id=call.call_id,
        local_tag=from_na.tag or call.local_tag,
        remote_tag=to_na.tag or "",
        local_uri=from_na.with_param("tag", None),
        remote_uri=to_na.with_param("tag", None),
        remote_target=target,
        route_set=[],
        local_cseq=call.invite.cseq[0],
        transport=call.peer.transport,
        flow=call.peer if call.peer.transport == "tcp" else None,
    )
