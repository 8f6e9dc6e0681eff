"""Registration of our contact with a registrar (RFC 3261 §10), one machine per account.

What it does
------------
:class:`Registration` builds the REGISTER requests for one :class:`ums.config.Account` and
reacts to their outcome: digest challenges (401/407), 423 Interval Too Brief, success with the
granted lifetime, failures with back-off, refresh before expiry and un-REGISTER on shutdown.
:class:`ClientAuth` is the digest bookkeeping it shares with outgoing INVITEs.  The user agent
owns the transactions: it adds the Via, sends the request to :attr:`Registration.dest` and
feeds back the final response (or the timeout).

How it works
------------
States: IDLE -> REGISTERING -> REGISTERED (refresh timer) -> REGISTERING ...; a failure goes to
FAILED (retry timer); ``stop`` goes through UNREGISTERING to UNREGISTERED.  The transitions are
the table :data:`REGISTRATION_TRANSITIONS`.

* Request: Request-URI = registrar, To = From = AOR, one Call-ID for the life of the machine and
  an increasing CSeq (RFC 3261 §10.2.4), ``Contact: <our contact>``, ``Expires``.
* Refresh: the granted lifetime is the ``expires`` parameter of the Contact in the 200 that
  matches ours, else the ``Expires`` header, else what we asked for.  We refresh after
  ``max(expires / 2, expires - REFRESH_MARGIN)`` seconds: 90 s before expiry for long
  lifetimes, which leaves room for one timed-out attempt (64*T1 = 32 s) and the first 30 s
  retry; half-way for short ones.
* Digest (RFC 2617 / 7616): each challenge is remembered with its nonce and answered with a
  fresh cnonce and an ``nc`` that counts the requests sent with that nonce; refreshes answer
  the remembered challenge pre-emptively.  A challenge that comes back for credentials computed
  from the previous challenge is a wrong password: the attempt fails at once (no loop) unless
  the challenge says ``stale=true``, which is retried with the new nonce (at most
  :data:`MAX_STALE_RETRIES` times in a row) without counting as a failure.
* 423 (RFC 3261 §10.3 step 7): retry at once with the registrar's ``Min-Expires``.
* Failure (403, other 4xx, 5xx, 6xx, timeout, wrong password): retry after
  ``Retry-After`` when the response has one, else 30 s doubling per consecutive failure up to
  30 min.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from ums.config import Account
from ums.sip.digest import Challenge, build_authorization, pick_challenge
from ums.sip.events import Addr, RegistrationChanged
from ums.sip.message import Headers, Request, Response, SipParseError
from ums.sip.uri import NameAddr, SipUri, new_call_id, new_tag

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "MAX_STALE_RETRIES",
    "REFRESH_MARGIN",
    "REGISTRATION_TRANSITIONS",
    "ClientAuth",
    "RegInput",
    "RegState",
    "RegStep",
    "Registration",
    "refresh_delay",
]

#: Seconds before expiry at which a long-lived binding is refreshed (see module notes).
REFRESH_MARGIN = 90.0
#: First retry delay after a failure; doubles per consecutive failure.
BACKOFF_FIRST = 30.0
#: Longest retry delay (30 min).
BACKOFF_MAX = 1800.0
#: RFC 2617 §3.2.1 stale=TRUE "the client may wish to simply retry the request with a new
#: encrypted response, without reprompting"; we allow this many in a row.
MAX_STALE_RETRIES = 3
#: Upper bound for an honoured Retry-After (RFC 3261 §20.33 gives no limit; we keep it sane).
RETRY_AFTER_MAX = 3600.0


def refresh_delay(expires: int) -> float:
    """Seconds after a successful REGISTER at which to refresh a binding of ``expires`` s."""
    return max(expires / 2.0, expires - REFRESH_MARGIN)


class ClientAuth:
    """Digest credentials for a sequence of requests (a registration, an outgoing call).

    Call :meth:`on_challenge` with each 401/407; it returns ``None`` when a retry makes sense
    or a short reason when it does not.  :meth:`credentials` gives the Authorization /
    Proxy-Authorization header lines for the next request.
    """

    def __init__(self, username: str, password: str, rng: random.Random) -> None:
        self.username = username
        self.password = password
        self._rng = rng
        self._cached: dict[str, tuple[Challenge, int]] = {}
        self._fresh: set[str] = set()
        self._sent_fresh: set[str] = set()
        self._stale = 0

    @property
    def has_credentials(self) -> bool:
        return bool(self._cached)

    def on_challenge(self, response: Response) -> str | None:
        """Digest a 401/407; ``None`` = retry with :meth:`credentials`, else why not."""
        if response.status == 407:
            header, challenge_header = "Proxy-Authorization", "Proxy-Authenticate"
        else:
            header, challenge_header = "Authorization", "WWW-Authenticate"
        ch = pick_challenge(response.headers.get_lines(challenge_header))
        if ch is None:
            return "no usable digest challenge"
        if header in self._sent_fresh and not ch.stale:
            return "credentials rejected"
        if ch.stale:
            self._stale += 1
            if self._stale > MAX_STALE_RETRIES:
                return "stale nonce again and again"
        prev = self._cached.get(header)
        nc = prev[1] if prev is not None and prev[0].nonce == ch.nonce else 0
        self._cached[header] = (ch, nc)
        self._fresh.add(header)
        return None

    def on_success(self) -> None:
        """A non-challenge response: the stale counter starts again."""
        self._stale = 0
        self._sent_fresh.clear()

    def credentials(self, method: str, uri: str, body: bytes = b"") -> list[tuple[str, str]]:
        """Header lines answering every remembered challenge (nc incremented, new cnonce)."""
        out: list[tuple[str, str]] = []
        self._sent_fresh = set()
        for header, (ch, nc) in list(self._cached.items()):
            nc += 1
            self._cached[header] = (ch, nc)
            try:
                value = build_authorization(
                    ch,
                    method=method,
                    uri=uri,
                    username=self.username,
                    password=self.password,
                    cnonce=f"{self._rng.getrandbits(64):016x}",
                    nc=nc,
                    body=body,
                )
            except ValueError:
                continue
            out.append((header, value))
            if header in self._fresh:
                self._sent_fresh.add(header)
        self._fresh.clear()
        return out


class RegState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


class RegInput(enum.Enum):
    START = "start"
    TIMER = "refresh or retry timer"
    OK = "2xx"
    CHALLENGE = "401/407 we can answer"
    TOO_BRIEF = "423 with a usable Min-Expires"
    FAILURE = "failure or timeout"
    STOP = "stop"


R = RegState
RI = RegInput
#: (state, input) -> new state.  Inputs not listed are ignored.
REGISTRATION_TRANSITIONS: dict[tuple[RegState, RegInput], RegState] = {
    (R.IDLE, RI.START): R.REGISTERING,
    (R.UNREGISTERED, RI.START): R.REGISTERING,
    (R.REGISTERING, RI.OK): R.REGISTERED,
    (R.REGISTERING, RI.CHALLENGE): R.REGISTERING,
    (R.REGISTERING, RI.TOO_BRIEF): R.REGISTERING,
    (R.REGISTERING, RI.FAILURE): R.FAILED,
    (R.REGISTERING, RI.STOP): R.UNREGISTERING,
    (R.REGISTERED, RI.TIMER): R.REGISTERING,
    (R.REGISTERED, RI.STOP): R.UNREGISTERING,
    (R.FAILED, RI.TIMER): R.REGISTERING,
    (R.FAILED, RI.STOP): R.UNREGISTERED,
    (R.IDLE, RI.STOP): R.UNREGISTERED,
    (R.UNREGISTERING, RI.CHALLENGE): R.UNREGISTERING,
    (R.UNREGISTERING, RI.OK): R.UNREGISTERED,
    (R.UNREGISTERING, RI.FAILURE): R.UNREGISTERED,
    (R.UNREGISTERING, RI.TOO_BRIEF): R.UNREGISTERED,
}


@dataclass(frozen=True)
class RegStep:
    """What the user agent must do after an input: send ``request`` and/or report ``event``."""

    request: Request | None = None
    event: RegistrationChanged | None = None


class Registration:
    """The REGISTER state machine for one account.

    Parameters
    ----------
    account:
        Registrar, AOR, credentials, transport, outbound proxy, requested lifetime.
    contact:
        Our contact URI (``sip:user@host:port;transport=tcp``).
    local_host:
        Host for the Call-ID.
    rng:
        Source of the Call-ID, tags and cnonces.
    """

    def __init__(self, account: Account, contact: SipUri, local_host: str, rng: random.Random) -> None:
        self.account = account
        self.contact = contact
        self.registrar = SipUri.parse(account.registrar)
        self.aor = NameAddr(SipUri.parse(account.aor))
        hop = SipUri.parse(account.proxy) if account.proxy else self.registrar
        #: Where REGISTERs go: the outbound proxy if there is one, else the registrar.
        self.dest = Addr(account.transport, hop.host, hop.port or 5060)
        self.state = RegState.IDLE
        self.call_id = new_call_id(rng, local_host)
        self.from_tag = new_tag(rng)
        self.cseq = 0
        self.requested = account.expires
        self.expires = 0
        self.failures = 0
        self.due_at: float | None = None
        username = account.auth_user or self.aor.uri.user or ""
        self.auth = ClientAuth(username, account.password, rng)

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def in_flight(self) -> bool:
        return self.state in (RegState.REGISTERING, RegState.UNREGISTERING)

    def next_deadline(self) -> float | None:
        return self.due_at if self.state in (RegState.REGISTERED, RegState.FAILED) else None

    def _go(self, inp: RegInput) -> bool:
        new = REGISTRATION_TRANSITIONS.get((self.state, inp))
        if new is None:
            return False
        self.state = new
        return True

    # -- inputs ---------------------------------------------------------------------------------
    def start(self, now: float) -> RegStep:
        if not self._go(RI.START):
            return RegStep()
        self.failures = 0
        return RegStep(request=self._build(self.requested))

    def stop(self, now: float) -> RegStep:
        """Un-REGISTER (Expires: 0) if a binding may exist; otherwise just go quiet."""
        if not self._go(RI.STOP):
            return RegStep()
        self.due_at = None
        if self.state is RegState.UNREGISTERING:
            return RegStep(request=self._build(0))
        return RegStep()

    def advance(self, now: float) -> RegStep:
        if self.due_at is None or now < self.due_at or not self._go(RI.TIMER):
            return RegStep()
        self.due_at = None
        return RegStep(request=self._build(self.requested))

    def matches(self, response: Response) -> bool:
        """Whether ``response`` answers the REGISTER now in flight (older ones are ignored)."""
        try:
            return self.in_flight and response.cseq[0] == self.cseq
        except SipParseError:
            return False

    def on_response(self, response: Response, now: float) -> RegStep:
        """A final response to the REGISTER in flight."""
        if response.status < 200 or not self.matches(response):
            return RegStep()
        unregistering = self.state is RegState.UNREGISTERING
        if response.status in (401, 407):
            why = self.auth.on_challenge(response)
            if why is None and self._go(RI.CHALLENGE):
                return RegStep(request=self._build(0 if unregistering else self.requested))
            return self._fail(now, response.status, f"{response.reason} ({why})", None)
        self.auth.on_success()
        if 200 <= response.status < 300:
            if unregistering:
                self._go(RI.OK)
                return RegStep(event=self._event("unregistered", response.status, response.reason))
            granted = self._granted(response)
            if granted <= 0:
                return self._fail(now, response.status, "registrar granted no lifetime", None)
            self._go(RI.OK)
            self.expires = granted
            self.failures = 0
            self.due_at = now + refresh_delay(granted)
            return RegStep(event=self._event("registered", response.status, response.reason, granted))
        if response.status == 423 and not unregistering:
            min_expires = _int_header(response, "Min-Expires")
            if min_expires is not None and min_expires > self.requested and self._go(RI.TOO_BRIEF):
                self.requested = min_expires
                return RegStep(request=self._build(self.requested))
        return self._fail(now, response.status, response.reason, _int_header(response, "Retry-After"))

    def on_timeout(self, now: float) -> RegStep:
        """No final response (Timer F) or the transport failed."""
        if not self.in_flight:
            return RegStep()
        return self._fail(now, 408, "Request Timeout", None)

    # -- helpers --------------------------------------------------------------------------------
    def _fail(self, now: float, status: int, reason: str, retry_after: int | None) -> RegStep:
        if self.state is RegState.UNREGISTERING:
            self._go(RI.FAILURE)
            return RegStep(event=self._event("unregistered", status, reason))
        self._go(RI.FAILURE)
        self.failures += 1
        self.expires = 0
        if retry_after is not None and retry_after > 0:
            delay = min(float(retry_after), RETRY_AFTER_MAX)
        else:
            delay = min(BACKOFF_FIRST * 2 ** min(self.failures - 1, 16), BACKOFF_MAX)
        self.due_at = now + delay
        return RegStep(event=self._event("failed", status, reason, 0, delay))

    def _event(
        self, state: str, status: int, reason: str, expires: int = 0, retry_in: float | None = None
    ) -> RegistrationChanged:
        return RegistrationChanged(self.name, state, status, reason, expires, retry_in)

    def _granted(self, response: Response) -> int:
        for value in response.headers.get_all_values("Contact"):
            try:
                na = NameAddr.parse(value)
            except SipParseError:
                continue
            if _same_contact(na.uri, self.contact):
                exp = na.param("expires")
                if exp is not None and exp.isdigit():
                    return int(exp)
        header = _int_header(response, "Expires")
        return header if header is not None else self.requested

    def _build(self, expires: int) -> Request:
        self.cseq += 1
        ruri = str(self.registrar)
        h = Headers()
        h.add("Max-Forwards", "70")
        h.add("From", str(self.aor.with_param("tag", self.from_tag)))
        h.add("To", str(self.aor))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", f"<{self.contact}>")
        h.add("Expires", str(expires))
        for name, value in self.auth.credentials("REGISTER", ruri):
            h.add(name, value)
        return Request(headers=h, method="REGISTER", uri=ruri)


def _int_header(msg: Response, name: str) -> int | None:
    raw = msg.headers.get(name)
    if raw is None:
        return None
    token = raw.split(";", 1)[0].split("(", 1)[0].strip()
    return int(token) if token.isdigit() and len(token) < 10 else None


def _same_contact(a: SipUri, b: SipUri) -> bool:
    return (
        a.scheme == b.scheme
        and (a.user or "") == (b.user or "")
        and a.host.lower() == b.host.lower()
        and (a.port or 5060) == (b.port or 5060)
    )
