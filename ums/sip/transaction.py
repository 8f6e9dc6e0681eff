"""SIP transactions (RFC 3261 §17): client and server, INVITE and non-INVITE.

What it does
------------
:class:`ClientTransaction` sends one request, retransmits it over UDP, absorbs response
retransmissions, builds the ACK for a non-2xx final response and reports a timeout.
:class:`ServerTransaction` absorbs request retransmissions, re-sends the last response for them,
retransmits a non-2xx final response to INVITE until the ACK arrives and reports a missing ACK.
:func:`client_key` and :func:`server_key` give the matching keys of §17.1.3 and §17.2.3.

How it works
------------
Each of the four machines is an enum state plus a transition table
``(state, input) -> (action, new_state)`` named after the states of RFC 3261 §17 (Calling /
Trying / Proceeding / Completed / Confirmed / Terminated).  Inputs are received messages
(``RECV_*``), responses the transaction user hands down (``SEND_*``) and timer expiries
(``TIMER_A`` .. ``TIMER_K``).  A received input the table does not list is ignored (a stray
retransmission); a ``SEND_*`` input it does not list is a local bug and raises
:class:`TransactionError`.

Time comes in as ``now``; every armed timer is an absolute deadline and :meth:`advance` fires
those that are due, in order, so a late call catches up exactly.  Wire bytes wait in an outbox
that the user agent drains with :meth:`take_output`.  Timer values come from
:class:`~ums.sip.timers.TimerSettings`; on TCP the retransmission timers are off and the
wait-for-retransmission timers are zero, so those transactions terminate at once.

2xx responses to INVITE are not the transaction's business: the client INVITE transaction
terminates on a 2xx (the UA core sends the ACK, §13.2.2.4) and the server INVITE transaction
terminates once the TU sends a 2xx (the UA core retransmits it, §13.3.1.4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ums.sip.events import Addr
from ums.sip.message import Headers, Request, Response, SipParseError
from ums.sip.timers import TimerSettings
from ums.sip.uri import BRANCH_MAGIC_COOKIE, NameAddr, Via

__all__ = [
    "INVITE_CLIENT_TRANSITIONS",
    "INVITE_SERVER_TRANSITIONS",
    "NON_INVITE_CLIENT_TRANSITIONS",
    "NON_INVITE_SERVER_TRANSITIONS",
    "ClientTransaction",
    "ServerTransaction",
    "TransactionError",
    "TxAction",
    "TxInput",
    "TxKey",
    "TxState",
    "build_non2xx_ack",
    "cancelled_key",
    "client_key",
    "server_key",
]

TxKey = tuple[str, ...]


class TransactionError(RuntimeError):
    """The transaction user asked for something the state machine does not allow."""


class TxState(enum.Enum):
    """RFC 3261 §17 transaction states (figures 5-8)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class TxInput(enum.Enum):
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FINAL = "300-699 received"
    RECV_REQUEST = "request retransmission received"
    RECV_ACK = "ACK received"
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_FINAL = "TU sends 300-699"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"


class TxAction(enum.Enum):
    PASS_UP = "hand the response to the TU"
    ACK_AND_PASS_UP = "send ACK, hand the response to the TU"
    RESEND_ACK = "send the ACK again"
    ABSORB = "absorb"
    RETRANSMIT_REQUEST = "retransmit the request"
    TIMEOUT = "report a timeout to the TU"
    SEND_RESPONSE = "send the TU's response"
    RESEND_RESPONSE = "send the last response again"
    END = "terminate quietly"


S = TxState
I = TxInput  # noqa: E741 - short alias keeps the tables readable
A = TxAction
Table = dict[tuple[TxState, TxInput], tuple[TxAction, TxState]]

#: RFC 3261 §17.1.1.2, figure 5.
INVITE_CLIENT_TRANSITIONS: Table = {
    (S.CALLING, I.TIMER_A): (A.RETRANSMIT_REQUEST, S.CALLING),
    (S.CALLING, I.TIMER_B): (A.TIMEOUT, S.TERMINATED),
    (S.CALLING, I.RECV_1XX): (A.PASS_UP, S.PROCEEDING),
    (S.CALLING, I.RECV_2XX): (A.PASS_UP, S.TERMINATED),
    (S.CALLING, I.RECV_FINAL): (A.ACK_AND_PASS_UP, S.COMPLETED),
    (S.PROCEEDING, I.RECV_1XX): (A.PASS_UP, S.PROCEEDING),
    (S.PROCEEDING, I.RECV_2XX): (A.PASS_UP, S.TERMINATED),
    (S.PROCEEDING, I.RECV_FINAL): (A.ACK_AND_PASS_UP, S.COMPLETED),
    (S.COMPLETED, I.RECV_FINAL): (A.RESEND_ACK, S.COMPLETED),
    (S.COMPLETED, I.TIMER_D): (A.END, S.TERMINATED),
}

#: RFC 3261 §17.1.2.2, figure 6.
NON_INVITE_CLIENT_TRANSITIONS: Table = {
    (S.TRYING, I.TIMER_E): (A.RETRANSMIT_REQUEST, S.TRYING),
    (S.TRYING, I.TIMER_F): (A.TIMEOUT, S.TERMINATED),
    (S.TRYING, I.RECV_1XX): (A.PASS_UP, S.PROCEEDING),
    (S.TRYING, I.RECV_2XX): (A.PASS_UP, S.COMPLETED),
    (S.TRYING, I.RECV_FINAL): (A.PASS_UP, S.COMPLETED),
    (S.PROCEEDING, I.TIMER_E): (A.RETRANSMIT_REQUEST, S.PROCEEDING),
    (S.PROCEEDING, I.TIMER_F): (A.TIMEOUT, S.TERMINATED),
    (S.PROCEEDING, I.RECV_1XX): (A.PASS_UP, S.PROCEEDING),
    (S.PROCEEDING, I.RECV_2XX): (A.PASS_UP, S.COMPLETED),
    (S.PROCEEDING, I.RECV_FINAL): (A.PASS_UP, S.COMPLETED),
    (S.COMPLETED, I.RECV_1XX): (A.ABSORB, S.COMPLETED),
    (S.COMPLETED, I.RECV_2XX): (A.ABSORB, S.COMPLETED),
    (S.COMPLETED, I.RECV_FINAL): (A.ABSORB, S.COMPLETED),
    (S.COMPLETED, I.TIMER_K): (A.END, S.TERMINATED),
}

#: RFC 3261 §17.2.1, figure 7.
INVITE_SERVER_TRANSITIONS: Table = {
    (S.PROCEEDING, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_2XX): (A.SEND_RESPONSE, S.TERMINATED),
    (S.PROCEEDING, I.SEND_FINAL): (A.SEND_RESPONSE, S.COMPLETED),
    (S.COMPLETED, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.COMPLETED),
    (S.COMPLETED, I.TIMER_G): (A.RESEND_RESPONSE, S.COMPLETED),
    (S.COMPLETED, I.TIMER_H): (A.TIMEOUT, S.TERMINATED),
    (S.COMPLETED, I.RECV_ACK): (A.ABSORB, S.CONFIRMED),
    (S.CONFIRMED, I.RECV_ACK): (A.ABSORB, S.CONFIRMED),
    (S.CONFIRMED, I.RECV_REQUEST): (A.ABSORB, S.CONFIRMED),
    (S.CONFIRMED, I.TIMER_I): (A.END, S.TERMINATED),
}

#: RFC 3261 §17.2.2, figure 8.
NON_INVITE_SERVER_TRANSITIONS: Table = {
    (S.TRYING, I.RECV_REQUEST): (A.ABSORB, S.TRYING),
    (S.TRYING, I.SEND_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
    (S.TRYING, I.SEND_2XX): (A.SEND_RESPONSE, S.COMPLETED),
    (S.TRYING, I.SEND_FINAL): (A.SEND_RESPONSE, S.COMPLETED),
    (S.PROCEEDING, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_2XX): (A.SEND_RESPONSE, S.COMPLETED),
    (S.PROCEEDING, I.SEND_FINAL): (A.SEND_RESPONSE, S.COMPLETED),
    (S.COMPLETED, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.COMPLETED),
    (S.COMPLETED, I.TIMER_J): (A.END, S.TERMINATED),
}

_TIMER_INPUTS = {
    "A": I.TIMER_A,
    "B": I.TIMER_B,
    "D": I.TIMER_D,
    "E": I.TIMER_E,
    "F": I.TIMER_F,
    "G": I.TIMER_G,
    "H": I.TIMER_H,
    "I": I.TIMER_I,
    "J": I.TIMER_J,
    "K": I.TIMER_K,
}


def _status_input(status: int, sending: bool) -> TxInput:
    if status < 200:
        return I.SEND_1XX if sending else I.RECV_1XX
    if status < 300:
        return I.SEND_2XX if sending else I.RECV_2XX
    return I.SEND_FINAL if sending else I.RECV_FINAL


def _top_via(msg: Request | Response) -> Via:
    vias = msg.vias
    if not vias:
        raise SipParseError("no Via")
    return Via.parse(vias[0])


def client_key(msg: Request | Response) -> TxKey:
    """RFC 3261 §17.1.3: the top Via branch plus the CSeq method (our own requests always
    carry a magic-cookie branch).  Raises :class:`SipParseError` for an unusable Via/CSeq."""
    via = _top_via(msg)
    branch = via.branch
    if not branch:
        raise SipParseError("top Via has no branch")
    return ("client", branch, msg.cseq[1])


def server_key(request: Request) -> TxKey:
    """RFC 3261 §17.2.3: branch + sent-by + method, ACK matching its INVITE.

    For a branch without the ``z9hG4bK`` cookie (RFC 2543 peers) the key is built from
    Request-URI, From tag, Call-ID, CSeq number and the whole top Via instead.  A CANCEL has
    its own key; :func:`cancelled_key` gives the INVITE it refers to.
    """
    via = _top_via(request)
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(BRANCH_MAGIC_COOKIE):
        return ("server", branch, via.sent_by.lower(), method)
    try:
        from_tag = NameAddr.parse(request.headers.get("From") or "").tag or ""
    except SipParseError:
        from_tag = ""
    return (
        "server2543",
        request.uri,
        from_tag,
        request.call_id,
        str(request.cseq[0]),
        str(via).lower(),
        method,
    )


def cancelled_key(cancel_key: TxKey) -> TxKey:
    """The server key of the INVITE a CANCEL with key ``cancel_key`` refers to (§9.2)."""
    return (*cancel_key[:-1], "INVITE")


def build_non2xx_ack(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 response (RFC 3261 §17.1.1.3)."""
    headers = [("Via", request.vias[0])]
    headers += [("Route", r) for r in request.headers.get_lines("Route")]
    headers += [
        ("Max-Forwards", "70"),
        ("From", request.headers.get_raw("From") or ""),
        ("To", response.headers.get_raw("To") or ""),
        ("Call-ID", request.call_id),
        ("CSeq", f"{request.cseq[0]} ACK"),
    ]
    return Request(headers=Headers.of(headers), method="ACK", uri=request.uri)


@dataclass
class _Machine:
    """Shared timer and outbox plumbing of the four machines."""

    dest: Addr
    timers: TimerSettings
    state: TxState
    table: Table
    deadlines: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)
    outbox: list[tuple[bytes, Addr]] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return self.dest.transport != "udp"

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values()) if self.deadlines else None

    def take_output(self) -> list[tuple[bytes, Addr]]:
        out, self.outbox = self.outbox, []
        return out

    def _arm(self, name: str, now: float, delay: float | None) -> None:
        if delay is None:
            return
        self.deadlines[name] = now + delay
        self.intervals[name] = delay

    def _lookup(self, inp: TxInput) -> tuple[TxAction, TxState] | None:
        return self.table.get((self.state, inp))

    def _due_timer(self, now: float) -> str | None:
        due = [(t, name) for name, t in self.deadlines.items() if t <= now]
        if not due:
            return None
        return min(due)[1]


class ClientTransaction(_Machine):
    """One outgoing request (RFC 3261 §17.1).

    Parameters
    ----------
    request:
        The complete request, top Via carrying our branch.
    dest:
        Where to send it (the next hop's address).
    now:
        Current time; the request is queued for sending at once.
    """

    def __init__(self, request: Request, dest: Addr, now: float, timers: TimerSettings) -> None:
        self.request = request
        self.is_invite = request.method == "INVITE"
        super().__init__(
            dest=dest,
            timers=timers,
            state=S.CALLING if self.is_invite else S.TRYING,
            table=INVITE_CLIENT_TRANSITIONS if self.is_invite else NON_INVITE_CLIENT_TRANSITIONS,
        )
        self.key = client_key(request)
        self._wire = request.serialize()
        self._ack: bytes | None = None
        self.last_response: Response | None = None
        self.outbox.append((self._wire, dest))
        if self.is_invite:
            self._arm("A", now, timers.timer_a(self.reliable))
            self._arm("B", now, timers.transaction_timeout)
        else:
            self._arm("E", now, timers.timer_e(self.reliable))
            self._arm("F", now, timers.transaction_timeout)

    def receive(self, response: Response, now: float) -> bool:
        """Feed a matching response; True when the TU should see it."""
        step = self._lookup(_status_input(response.status, sending=False))
        if step is None:
            return False
        action, new_state = step
        if action is A.ACK_AND_PASS_UP:
            self._ack = build_non2xx_ack(self.request, response).serialize()
            self.outbox.append((self._ack, self.dest))
        elif action is A.RESEND_ACK and self._ack is not None:
            self.outbox.append((self._ack, self.dest))
        self._enter(new_state, now)
        if action in (A.PASS_UP, A.ACK_AND_PASS_UP):
            self.last_response = response
            return True
        return False

    def advance(self, now: float) -> bool:
        """Fire due timers; True if the transaction timed out (Timer B / F) in this call."""
        timed_out = False
        while not self.terminated:
            name = self._due_timer(now)
            if name is None:
                break
            fired_at = self.deadlines.pop(name)
            step = self._lookup(_TIMER_INPUTS[name])
            if step is None:
                continue
            action, new_state = step
            if action is A.RETRANSMIT_REQUEST:
                self.outbox.append((self._wire, self.dest))
                interval = self.intervals[name] * 2
                if name == "E":
                    # §17.1.2.2: doubling up to T2 in Trying; T2 in Proceeding.
                    interval = self.timers.t2 if self.state is S.PROCEEDING else min(interval, self.timers.t2)
                self.deadlines[name] = fired_at + interval
                self.intervals[name] = interval
            elif action is A.TIMEOUT:
                timed_out = True
            self._enter(new_state, fired_at)
        return timed_out

    def _enter(self, new_state: TxState, now: float) -> None:
        old = self.state
        self.state = new_state
        if new_state is old:
            return
        if old is S.CALLING:
            self.deadlines.pop("A", None)
            self.deadlines.pop("B", None)
        if new_state is S.COMPLETED:
            self.deadlines.clear()
            t = self.timers
            wait = t.timer_d(self.reliable) if self.is_invite else t.timer_k(self.reliable)
            if wait <= 0:
                self.state = S.TERMINATED
            else:
                self._arm("D" if self.is_invite else "K", now, wait)
        if self.state is S.TERMINATED:
            self.deadlines.clear()


class ServerTransaction(_Machine):
    """One incoming request (RFC 3261 §17.2).

    ``dest`` is where responses go (RFC 3261 §18.2.2 / RFC 3581, worked out by the caller).
    """

    def __init__(self, request: Request, dest: Addr, now: float, timers: TimerSettings) -> None:
        self.request = request
        self.is_invite = request.method == "INVITE"
        super().__init__(
            dest=dest,
            timers=timers,
            state=S.PROCEEDING if self.is_invite else S.TRYING,
            table=INVITE_SERVER_TRANSITIONS if self.is_invite else NON_INVITE_SERVER_TRANSITIONS,
        )
        self.key = server_key(request)
        self.last_response: Response | None = None
        self._last_wire: bytes | None = None

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def receive(self, request: Request, now: float) -> None:
        """A retransmission of the request (or, for INVITE, the ACK of a non-2xx final)."""
        inp = I.RECV_ACK if request.method == "ACK" else I.RECV_REQUEST
        step = self._lookup(inp)
        if step is None:
            return
        action, new_state = step
        if action is A.RESEND_RESPONSE and self._last_wire is not None:
            self.outbox.append((self._last_wire, self.dest))
        self._enter(new_state, now)

    def respond(self, response: Response, now: float) -> None:
        """Send a response from the TU; raises :class:`TransactionError` if none is allowed now."""
        step = self._lookup(_status_input(response.status, sending=True))
        if step is None:
            raise TransactionError(f"cannot send {response.status} in state {self.state.value}")
        _action, new_state = step
        self.last_response = response
        self._last_wire = response.serialize()
        self.outbox.append((self._last_wire, self.dest))
        self._enter(new_state, now)

    def advance(self, now: float) -> bool:
        """Fire due timers; True if Timer H fired (no ACK for our non-2xx final response)."""
        timed_out = False
        while not self.terminated:
            name = self._due_timer(now)
            if name is None:
                break
            fired_at = self.deadlines.pop(name)
            step = self._lookup(_TIMER_INPUTS[name])
            if step is None:
                continue
            action, new_state = step
            if action is A.RESEND_RESPONSE and self._last_wire is not None:
                self.outbox.append((self._last_wire, self.dest))
                interval = min(self.intervals[name] * 2, self.timers.t2)  # §17.2.1: min(2*T, T2)
                self.deadlines[name] = fired_at + interval
                self.intervals[name] = interval
            elif action is A.TIMEOUT:
                timed_out = True
            self._enter(new_state, fired_at)
        return timed_out

    def _enter(self, new_state: TxState, now: float) -> None:
        old = self.state
        self.state = new_state
        if new_state is old:
            return
        if new_state is S.COMPLETED:
            if self.is_invite:
                self._arm("G", now, self.timers.timer_g(self.reliable))
                self._arm("H", now, self.timers.transaction_timeout)
            else:
                wait = self.timers.timer_j(self.reliable)
                if wait <= 0:
                    self.state = S.TERMINATED
                else:
                    self._arm("J", now, wait)
        elif new_state is S.CONFIRMED:
            self.deadlines.clear()
            wait = self.timers.timer_i(self.reliable)
            if wait <= 0:
                self.state = S.TERMINATED
            else:
                self._arm("I", now, wait)
        if self.state is S.TERMINATED:
            self.deadlines.clear()
