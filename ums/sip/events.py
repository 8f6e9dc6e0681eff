"""Events the sans-I/O user agent hands to the application, and the transport address type.

What it does
------------
Defines :class:`Addr` (transport + host + port, the unit the I/O shell sends to and receives
from) and the frozen event dataclasses that :meth:`ums.sip.ua.UserAgent.events` returns:
call control (:class:`IncomingCall`, :class:`CallProgress`, :class:`CallAnswered`,
:class:`CallEstablished`, :class:`CallFailed`, :class:`CallEnded`, :class:`ReInvite`,
:class:`DtmfInfo`), registration (:class:`RegistrationChanged`), protocol complaints for the
log (:class:`RequestRejected`) and the generic request plumbing used by SUBSCRIBE / NOTIFY /
MESSAGE users (:class:`RequestReceived`, :class:`ResponseReceived`, :class:`RequestFailed`).

How it works
------------
Plain frozen dataclasses with light validation in ``__post_init__`` (h11 style: an event that
exists is a valid event).  They carry data only; no behaviour and no references back into the
user agent, so the application may keep them as long as it likes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ums.sip.message import Request, Response

__all__ = [
    "CALL_END_REASONS",
    "REGISTRATION_STATES",
    "Addr",
    "CallAnswered",
    "CallEnded",
    "CallEstablished",
    "CallFailed",
    "CallProgress",
    "DtmfInfo",
    "Event",
    "IncomingCall",
    "ReInvite",
    "RegistrationChanged",
    "RequestFailed",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
]

#: Why a call ended (``CallEnded.reason``).
CALL_END_REASONS = frozenset({"remote-bye", "local-bye", "cancelled", "ack-timeout", "transport-error"})
#: ``RegistrationChanged.state`` values.
REGISTRATION_STATES = frozenset({"registered", "failed", "unregistered"})
_TRANSPORTS = frozenset({"udp", "tcp"})


@dataclass(frozen=True)
class Addr:
    """Where a message came from or goes to: ``transport`` is ``"udp"`` or ``"tcp"``.

    For TCP the shell maps the address to a connection (an accepted one keyed by the peer's
    address, or a new one it dials).
    """

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport not in _TRANSPORTS:
            raise ValueError(f"transport must be udp or tcp, got {self.transport!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


class Event:
    """Base class of everything :meth:`UserAgent.events` returns."""

    __slots__ = ()


@dataclass(frozen=True)
class IncomingCall(Event):
    """A new INVITE; the application must ``ring``/``answer``/``reject`` it."""

    call_id: str
    request: Request
    source: Addr


@dataclass(frozen=True)
class CallEstablished(Event):
    """ACK received for our 200 (UAS), or we sent the ACK for a 2xx (UAC)."""

    call_id: str


@dataclass(frozen=True)
class CallAnswered(Event):
    """Our outgoing INVITE got a 2xx; ``sdp`` is its body (the answer)."""

    call_id: str
    sdp: bytes


@dataclass(frozen=True)
class CallProgress(Event):
    """Our outgoing INVITE got a provisional response."""

    call_id: str
    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 199:
            raise ValueError(f"CallProgress status must be 1xx, got {self.status}")


@dataclass(frozen=True)
class CallFailed(Event):
    """Our outgoing INVITE ended without a dialog (final non-2xx after auth retries, timeout)."""

    call_id: str
    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 300 <= self.status <= 699:
            raise ValueError(f"CallFailed status must be 3xx-6xx, got {self.status}")


@dataclass(frozen=True)
class CallEnded(Event):
    """A call that was offered or established is over; ``reason`` is one of CALL_END_REASONS."""

    call_id: str
    reason: str

    def __post_init__(self) -> None:
        if self.reason not in CALL_END_REASONS:
            raise ValueError(f"unknown CallEnded reason {self.reason!r}")


@dataclass(frozen=True)
class ReInvite(Event):
    """A re-INVITE in an established dialog; answer with ``UserAgent.answer_reinvite``."""

    call_id: str
    sdp: bytes


@dataclass(frozen=True)
class DtmfInfo(Event):
    """One digit from a SIP INFO (application/dtmf-relay or application/dtmf)."""

    call_id: str
    digit: str

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {self.digit!r}")


@dataclass(frozen=True)
class RegistrationChanged(Event):
    """An account's registration changed state.

    ``expires`` is the granted binding lifetime (0 unless registered); ``retry_in`` the seconds
    until the next attempt after a failure (``None`` otherwise).
    """

    account: str
    state: str
    status: int
    reason: str
    expires: int
    retry_in: float | None

    def __post_init__(self) -> None:
        if self.state not in REGISTRATION_STATES:
            raise ValueError(f"unknown registration state {self.state!r}")


@dataclass(frozen=True)
class RequestRejected(Event):
    """A malformed request, or one we answered 4xx/5xx for protocol reasons (for the log)."""

    source: Addr
    reason: str


@dataclass(frozen=True)
class RequestReceived(Event):
    """A request of a method the application registered with ``UserAgent.accept_methods``.

    The application answers it with ``UserAgent.respond(handle, ...)``; the user agent answers
    500 itself if it does not within ``APP_ANSWER_TIMEOUT``.  In-dialog requests (To tag set)
    are delivered as they are: the dialogs of these methods belong to the application.
    """

    handle: str
    request: Request
    source: Addr


@dataclass(frozen=True)
class ResponseReceived(Event):
    """The final response to a request sent with ``UserAgent.send_request`` (after digest retries)."""

    handle: str
    response: Response

    def __post_init__(self) -> None:
        if self.response.status < 200:
            raise ValueError(f"ResponseReceived needs a final response, got {self.response.status}")


@dataclass(frozen=True)
class RequestFailed(Event):
    """A request sent with ``UserAgent.send_request`` got no response (408: Timer F expired)."""

    handle: str
    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 300 <= self.status <= 699:
            raise ValueError(f"RequestFailed status must be 3xx-6xx, got {self.status}")
