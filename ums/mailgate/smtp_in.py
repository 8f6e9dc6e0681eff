"""The inbound SMTP server of the e-mail to fax/SMS gateway: a thin shell over aiosmtpd.

What it does
------------
:class:`SmtpGateway` listens on ``host:port`` inside the running asyncio loop
and speaks ESMTP (RFC 5321) with SIZE (RFC 1870), 8BITMIME, STARTTLS
(RFC 3207, offered when a certificate and key are configured) and AUTH PLAIN /
LOGIN (RFC 4954).  Every decision belongs to the caller's
:class:`GatewayHandler`:

- ``check_sender`` at ``MAIL FROM`` and ``check_recipient`` at each ``RCPT TO``
  (on the event loop: they must not block) raise :class:`Reject` to refuse;
- ``accept`` at the end of ``DATA`` runs in the loop's default thread executor
  and gets the message bytes exactly as received (dot-unstuffed, CRLF line
  ends).  It makes the message durable; ``250`` goes out only after it returns.
  A :class:`Reject` becomes its reply; any other exception becomes
  ``451 4.3.0 temporary failure, try again later`` and a logged traceback;
- ``authenticate(user, password)`` checks AUTH credentials (on the loop).

The gateway's replies carry RFC 3463 enhanced status codes (aiosmtpd's own
syntax and sequence replies, such as ``503 Error: need MAIL command``, do
not).  One ``key=value`` line
is logged per accepted or refused message (``event=smtp_in.accepted`` /
``event=smtp_in.rejected stage=mail|rcpt|data code=... reason=...``) and per
AUTH attempt.

How it works
------------
``loop.create_server`` with a factory that builds one :class:`aiosmtpd.smtp.SMTP`
protocol per connection; the hooks ``handle_EHLO``, ``handle_MAIL``,
``handle_RCPT``, ``handle_AUTH`` and ``handle_DATA`` call the handler, and
aiosmtpd's ``authenticator`` calls ``authenticate``.  aiosmtpd enforces the
size limit while reading DATA (RFC 1870 §6.3: excess data is read and
discarded, memory stays bounded) and parses the commands.

The ``SMTP`` subclass changes four things aiosmtpd has no hook for:

- a ``SIZE=`` declared at ``MAIL FROM`` above the limit is refused with the
  declared and the allowed size (RFC 1870 §6.1), and so is a DATA that runs
  over (aiosmtpd's own text is replaced; the size given is the number of bytes
  the client sent);
- aiosmtpd's own refusals during DATA (too much data, a line over 1000 octets)
  are logged like ours;
- it counts DATA commands in progress so :meth:`SmtpGateway.stop` can let
  running ``accept`` calls finish and their replies go out (meanwhile a new
  ``MAIL FROM`` gets ``421 4.3.2``);
- the session does not log aiosmtpd's deprecation warning about
  ``login_data`` at every successful AUTH.

aiosmtpd decides "AUTH only after STARTTLS" once per server; the rule here is
per connection (loopback peers may authenticate without TLS), so aiosmtpd's
switch is off and the hooks apply the rule: EHLO leaves ``AUTH`` out of the
extension list and ``AUTH`` is answered ``538 5.7.11`` (RFC 4954 §6).

The null reverse-path of a bounce (``MAIL FROM:<>``) reaches ``check_sender``
and ``accept`` as the string ``"<>"`` (that is how aiosmtpd parses it).
STARTTLS is offered, never required (RFC 3207 §4).  aiosmtpd closes a
connection that sends no command for 300 s; that clock also runs while
``accept`` works.  A client that hangs up while ``accept`` runs gets no
reply; the thread finishes and ``event=smtp_in.accepted_unanswered`` is
logged (the client will send the message again).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from ums.log import kv

__all__ = ["GatewayHandler", "GatewayRouter", "Reject", "RoutedHandler", "SmtpGateway", "SmtpInSettings"]

log = logging.getLogger("ums.mailgate.smtp_in")

#: RFC 5321 §4.2.5: "451 Requested action aborted: local error in processing"; X.3.0 (RFC 3463 §3.5)
TEMPFAIL = "451 4.3.0 temporary failure, try again later"
#: RFC 5321 §4.5.3.1.8 and RFC 3463 §3.6 X.5.3 "Too many recipients"
_TOO_MANY_RCPTS = "452 4.5.3 too many recipients"
#: RFC 4954 §6: AUTH refused before STARTTLS
_NEED_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
#: RFC 4954 §6: the authentication backend failed
_AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure"
_AUTH_OFF = "502 5.5.1 AUTH not available"
#: RFC 5321 §3.8 / §4.2.3 and RFC 3463 X.3.2 "System not accepting network messages"
_SHUTTING_DOWN = "421 4.3.2 shutting down, try again later"
_ENHANCED_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")
#: ``SIZE=<n>`` among the MAIL parameters (RFC 1870 §3: "SIZE=" 1*20DIGIT)
_SIZE_PARAM = re.compile(r"(?:^|\s)SIZE=(\d{1,20})(?=\s|$)", re.IGNORECASE)
_DATA_END = len(b".\r\n")

#: RFC 3463 enhanced codes for the basic code at a stage.  X.7.1 "Delivery not
#: authorized, message refused", X.1.1 "Bad destination mailbox address", X.1.7
#: "Bad sender's mailbox address syntax", X.1.3 "Bad destination mailbox address
#: syntax", X.1.6 "Destination mailbox has moved", X.6.0 "Other or undefined
#: media error" (content that cannot be converted).
_BY_STAGE: dict[tuple[str, int], str] = {
    ("mail", 550): "5.7.1",
    ("mail", 553): "5.1.7",
    ("rcpt", 550): "5.1.1",
    ("rcpt", 551): "5.1.6",
    ("rcpt", 553): "5.1.3",
    ("rcpt", 452): "4.5.3",
    ("data", 554): "5.6.0",
}
#: ...and at any stage: X.3.4 "Message too big for system", X.3.0 "Other or
#: undefined mail system status", X.3.1 "Mail system full", X.3.2 "System not
#: accepting network messages", X.7.8 / X.7.0 authentication.
_BY_CODE: dict[int, str] = {
    552: "5.3.4",
    451: "4.3.0",
    452: "4.3.1",
    421: "4.3.2",
    450: "4.2.0",
    550: "5.7.1",
    553: "5.1.3",
    554: "5.7.1",
    535: "5.7.8",
    530: "5.7.0",
}


@dataclass(frozen=True)
class SmtpInSettings:
    host: str = "127.0.0.1"
    #: 0 picks a free port (see :meth:`SmtpGateway.start`)
    port: int = 2525
    #: name in the 220 greeting and the EHLO reply; empty: the host's FQDN, looked up once at start
    hostname: str = ""
    #: largest message in bytes, advertised with SIZE (RFC 1870)
    max_size: int = 25 * 1024 * 1024
    #: PEM certificate (chain) and key; STARTTLS is offered when both are set (RFC 3207)
    tls_cert: str = ""
    tls_key: str = ""
    #: AUTH only after STARTTLS, except for peers on a loopback address
    require_tls_for_auth: bool = True
    #: offer AUTH PLAIN and LOGIN (RFC 4954)
    auth: bool = True
    #: RCPT TO beyond this many in one transaction gets 452 4.5.3
    max_recipients: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1 byte, not {self.max_size}")
        if self.max_recipients < 1:
            raise ValueError(f"max_recipients must be at least 1, not {self.max_recipients}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be set together")


class Reject(Exception):
    """Refuse the command with ``code`` (4xx temporary, 5xx permanent) and a one-line ``reason``.

    ``enhanced`` is the RFC 3463 status code (``"5.7.1"``); left out, it follows
    from the code and the stage: 550 is 5.7.1 at MAIL FROM and 5.1.1 at RCPT TO,
    552 is 5.3.4, 451 is 4.3.0, 554 at DATA is 5.6.0, anything else ``X.0.0``.
    """

    def __init__(self, code: int, reason: str, enhanced: str | None = None) -> None:
        if not 400 <= code <= 599:
            raise ValueError(f"an SMTP refusal needs a 4xx or 5xx code, not {code}")
        if enhanced is not None and (not _ENHANCED_RE.match(enhanced) or int(enhanced[0]) != code // 100):
            raise ValueError(f"enhanced status {enhanced!r} does not fit code {code} (RFC 3463 §2)")
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.enhanced = enhanced

    def reply(self, stage: str) -> str:
        """The SMTP reply line ``"{code} {enhanced} {reason}"`` for ``stage`` (mail, rcpt or data)."""
        enhanced = (
            self.enhanced
            or _BY_STAGE.get((stage, self.code))
            or _BY_CODE.get(self.code)
            or f"{self.code // 100}.0.0"
        )
        return f"{self.code} {enhanced} {_one_line(self.reason)}"


class GatewayHandler(Protocol):
    """The policy and the storage behind the server; everything may raise :class:`Reject`."""

    def check_sender(self, mail_from: str, auth_user: str | None) -> None:
        """At MAIL FROM, on the event loop."""

    def check_recipient(self, rcpt: str, mail_from: str, auth_user: str | None) -> None:
        """At each RCPT TO, on the event loop; a refused recipient leaves the others in place."""

    def accept(self, mail_from: str, rcpts: list[str], data: bytes, auth_user: str | None, peer: str) -> None:
        """At the end of DATA, in a worker thread; return only once the message is durable."""

    def authenticate(self, user: str, password: str) -> bool:
        """AUTH PLAIN / LOGIN, on the event loop; True lets the client in."""


class RoutedHandler(GatewayHandler, Protocol):
    """A gateway that can tell whether a recipient address is its own."""

    def claims(self, rcpt: str) -> bool:
        """True when ``rcpt`` is one of this gateway's addresses (checked or not)."""
        ...


class GatewayRouter:
    """One listener in front of several gateways (fax, SMS): each recipient goes to the one claiming it.

    MAIL FROM passes when one gateway takes the sender; each RCPT TO is then checked by the gateway it
    belongs to, sender included, so a sender allowed for fax only is refused at RCPT for an SMS address.
    At the end of DATA each gateway gets its own recipients, one after the other: when a later one fails
    the client gets a temporary error and sends the mail again, and the earlier gateways see it twice.
    """

    def __init__(self, handlers: Sequence[RoutedHandler]) -> None:
        if not handlers:
            raise ValueError("a router needs at least one gateway")
        self.handlers = tuple(handlers)

    def _owner(self, rcpt: str) -> RoutedHandler | None:
        return next((h for h in self.handlers if h.claims(rcpt)), None)

    def check_sender(self, mail_from: str, auth_user: str | None) -> None:
        first: Reject | None = None
        for handler in self.handlers:
            try:
                handler.check_sender(mail_from, auth_user)
                return
            except Reject as reject:
                first = first or reject
        assert first is not None
        raise first

    def check_recipient(self, rcpt: str, mail_from: str, auth_user: str | None) -> None:
        owner = self._owner(rcpt)
        if owner is None:
            raise Reject(550, f"no such gateway address: {rcpt.strip().strip('<>')}")
        owner.check_sender(mail_from, auth_user)
        owner.check_recipient(rcpt, mail_from, auth_user)

    def accept(self, mail_from: str, rcpts: list[str], data: bytes, auth_user: str | None, peer: str) -> None:
        groups: dict[int, list[str]] = {}
        for rcpt in rcpts:
            owner = self._owner(rcpt)
            if owner is None:  # checked at RCPT; the configuration cannot change in between
                raise Reject(550, f"no such gateway address: {rcpt.strip().strip('<>')}")
            groups.setdefault(self.handlers.index(owner), []).append(rcpt)
        for i, mine in sorted(groups.items()):
            self.handlers[i].accept(mail_from, mine, data, auth_user, peer)

    def authenticate(self, user: str, password: str) -> bool:
        return any(h.authenticate(user, password) for h in self.handlers)


def _one_line(text: str) -> str:
    """Reply text: one line of printable ASCII (aiosmtpd encodes replies as ASCII)."""
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode("ascii") or "refused"


def _is_loopback(peer: Any) -> bool:
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return False
    try:
        addr = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer) if peer else "-"


def _auth_user(session: Session) -> str | None:
    user = session.auth_data if session.authenticated else None
    return user if isinstance(user, str) else None


def _too_large(size: int, limit: int) -> str:
    return f"552 5.3.4 message too large ({size} bytes, limit {limit})"


def _log_rejected(stage: str, reply: str, session: Session | None, **fields: Any) -> None:
    code, _, text = reply.partition(" ")
    enhanced, _, reason = text.partition(" ")
    if not _ENHANCED_RE.match(enhanced):
        enhanced, reason = "", text
    peer = _peer_text(session.peer) if session is not None else "-"
    log.info(
        kv(
            "smtp_in.rejected",
            stage=stage,
            code=code,
            enhanced=enhanced or None,
            reason=reason,
            peer=peer,
            **fields,
        )
    )


def _log_unanswered(fields: dict[str, Any], future: asyncio.Future[None]) -> None:
    """The client went away while ``accept`` ran: say how it ended (a stored copy may come again)."""
    error = None if future.cancelled() else future.exception()
    if error is None:
        log.warning(kv("smtp_in.accepted_unanswered", **fields))
    else:
        log.error(kv("smtp_in.accept_failed", **fields), exc_info=error)


class _Session(Session):
    """aiosmtpd's session without the deprecation warning logged when AUTH stores ``login_data``."""

    _legacy_login: Any = None

    @property
    def login_data(self) -> Any:
        return self._legacy_login

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._legacy_login = value


class _Connection(SMTP):
    """One client connection: aiosmtpd's protocol plus the size reply, DATA tracking and a quiet session."""

    def __init__(self, gateway: SmtpGateway, hooks: _Hooks, **kwargs: Any) -> None:
        super().__init__(hooks, **kwargs)
        self._gateway = gateway
        self._bytes_in = 0
        #: bytes received when the 354 went out; None outside the DATA body
        self._data_start: int | None = None
        #: the reply to this DATA comes from handle_DATA, not from aiosmtpd itself
        self.data_answered = False

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again with the TLS transport after STARTTLS (RFC 3207 §4.2 resets the session).
        super().connection_made(transport)
        self._gateway._connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._gateway._connections.discard(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        super().data_received(data)

    async def push(self, status: AnyStr) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
        if text.startswith("354"):
            self._data_start = self._bytes_in
        elif self._data_start is not None:
            start, self._data_start = self._data_start, None
            if not self.data_answered:
                # aiosmtpd refused the body itself (RFC 1870 §6.3 or a line over RFC 5321 §4.5.3.1.6).
                limit = self.data_size_limit or 0
                if text.startswith("552"):
                    text = _too_large(max(0, self._bytes_in - start - _DATA_END), limit)
                mail_from = self.envelope.mail_from if self.envelope is not None else None
                _log_rejected("data", text, self.session, **{"from": mail_from})
                await super().push(text)
                return
        await super().push(status)

    async def smtp_MAIL(self, arg: str | None) -> None:
        # aiosmtpd refuses an oversized SIZE= with a text of its own before any hook runs.
        session, envelope = self.session, self.envelope
        limit = self.data_size_limit
        if (
            arg
            and limit
            and session is not None
            and session.extended_smtp
            and session.host_name
            and envelope is not None
            and not envelope.mail_from
        ):
            declared = _SIZE_PARAM.search(arg)
            if declared is not None and int(declared.group(1)) > limit:
                reply = _too_large(int(declared.group(1)), limit)
                _log_rejected("mail", reply, session)
                await super().push(reply)
                return
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        done: asyncio.Future[None] = self.loop.create_future()
        self._gateway._busy.add(done)
        self.data_answered = False
        try:
            await super().smtp_DATA(arg)
        finally:
            self._data_start = None
            self._gateway._busy.discard(done)
            done.set_result(None)


class _Hooks:
    """aiosmtpd handler hooks.  aiosmtpd takes every ``handle_*`` attribute as a hook and every
    ``auth_*`` attribute as an AUTH mechanism, so no other names here start with those."""

    def __init__(self, gateway: SmtpGateway) -> None:
        self._gw = gateway

    def _auth_allowed(self, session: Session) -> bool:
        settings = self._gw.settings
        if not settings.require_tls_for_auth:
            return True
        return session.ssl is not None or _is_loopback(session.peer)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to the hook when one exists
        if self._gw.settings.auth and self._auth_allowed(session):
            return responses
        return [line for line in responses if not line.upper().startswith("250-AUTH")]

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope, args: list[str]) -> Any:
        if not self._gw.settings.auth:
            return _AUTH_OFF
        if not self._auth_allowed(session):
            return _NEED_TLS
        return MISSING  # go on with aiosmtpd's PLAIN / LOGIN and the authenticator below

    def authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        try:
            user = auth_data.login.decode("utf-8")
            password = auth_data.password.decode("utf-8")
        except UnicodeDecodeError:
            log.info(kv("smtp_in.auth", result="failed", mechanism=mechanism, peer=_peer_text(session.peer)))
            return AuthResult(success=False, handled=False)
        try:
            ok = self._gw.handler.authenticate(user, password)
        except Exception:
            log.exception(kv("smtp_in.auth", result="error", user=user, peer=_peer_text(session.peer)))
            return AuthResult(success=False, handled=False, message=_AUTH_TEMPFAIL)
        result = "ok" if ok else "failed"
        log.info(
            kv("smtp_in.auth", result=result, user=user, mechanism=mechanism, peer=_peer_text(session.peer))
        )
        if not ok:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=user)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self._gw.stopping:
            _log_rejected("mail", _SHUTTING_DOWN, session, **{"from": address})
            return _SHUTTING_DOWN
        try:
            self._gw.handler.check_sender(address, _auth_user(session))
        except Reject as reject:
            reply = reject.reply("mail")
            _log_rejected("mail", reply, session, **{"from": address})
            return reply
        except Exception:
            log.exception(kv("smtp_in.check_failed", stage="mail", peer=_peer_text(session.peer)))
            _log_rejected("mail", TEMPFAIL, session, **{"from": address})
            return TEMPFAIL
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        mail_from = envelope.mail_from or ""
        if len(envelope.rcpt_tos) >= self._gw.settings.max_recipients:
            _log_rejected("rcpt", _TOO_MANY_RCPTS, session, **{"from": mail_from, "rcpt": address})
            return _TOO_MANY_RCPTS
        try:
            self._gw.handler.check_recipient(address, mail_from, _auth_user(session))
        except Reject as reject:
            reply = reject.reply("rcpt")
            _log_rejected("rcpt", reply, session, **{"from": mail_from, "rcpt": address})
            return reply
        except Exception:
            log.exception(kv("smtp_in.check_failed", stage="rcpt", peer=_peer_text(session.peer)))
            _log_rejected("rcpt", TEMPFAIL, session, **{"from": mail_from, "rcpt": address})
            return TEMPFAIL
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if isinstance(server, _Connection):
            server.data_answered = True
        mail_from = envelope.mail_from or ""
        rcpts = list(envelope.rcpt_tos)
        data = envelope.original_content or b""
        peer = _peer_text(session.peer)
        user = _auth_user(session)
        fields: dict[str, Any] = {"from": mail_from, "rcpts": len(rcpts), "size": len(data)}
        limit = self._gw.settings.max_size
        if len(data) > limit:
            reply = _too_large(len(data), limit)
            _log_rejected("data", reply, session, **fields)
            return reply
        accept = functools.partial(self._gw.handler.accept, mail_from, rcpts, data, user, peer)
        future = asyncio.get_running_loop().run_in_executor(None, accept)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The connection is gone; the thread cannot be stopped, so report how it ends.
            future.add_done_callback(functools.partial(_log_unanswered, {"peer": peer, **fields}))
            raise
        except Reject as reject:
            reply = reject.reply("data")
            _log_rejected("data", reply, session, **fields)
            return reply
        except Exception:
            log.exception(kv("smtp_in.accept_failed", peer=peer, **fields))
            _log_rejected("data", TEMPFAIL, session, **fields)
            return TEMPFAIL
        log.info(kv("smtp_in.accepted", peer=peer, user=user, **fields))
        return "250 2.0.0 OK queued"

    async def handle_exception(self, error: Exception) -> str:
        # Anything that escapes aiosmtpd's command loop: never a traceback to the client.
        log.error(kv("smtp_in.error", error=type(error).__name__), exc_info=error)
        return TEMPFAIL


class SmtpGateway:
    """The SMTP listener on the running asyncio loop; ``start()`` once, ``stop()`` once."""

    def __init__(self, settings: SmtpInSettings, handler: GatewayHandler) -> None:
        self.settings = settings
        self.handler = handler
        self._hooks = _Hooks(self)
        self._server: asyncio.Server | None = None
        #: set by stop(): new transactions get 421 while DATA in progress finishes
        self.stopping = False
        self._connections: set[_Connection] = set()
        #: one future per DATA command in progress, done when its reply is written
        self._busy: set[asyncio.Future[None]] = set()

    async def start(self) -> int:
        """Listen; return the bound port (the free one picked when ``port`` is 0).

        Raises ``ValueError`` when the certificate or key cannot be loaded and
        ``OSError`` when the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("SmtpGateway already started")
        self.stopping = False
        settings = self.settings
        loop = asyncio.get_running_loop()
        tls = self._tls_context()
        # aiosmtpd looks the FQDN up in every new connection when no hostname is given.
        hostname = settings.hostname or await asyncio.to_thread(socket.getfqdn)

        def factory() -> _Connection:
            return _Connection(
                self,
                self._hooks,
                data_size_limit=settings.max_size,
                hostname=hostname,
                ident="ESMTP ums",
                tls_context=tls,
                require_starttls=False,  # RFC 3207 §4: a publicly referenced server must not require it
                auth_require_tls=False,  # decided per connection in _Hooks (loopback exception)
                authenticator=self._hooks.authenticator,
                loop=loop,
            )

        self._server = await loop.create_server(factory, host=settings.host or None, port=settings.port)
        port = int(self._server.sockets[0].getsockname()[1])
        log.info(
            kv(
                "smtp_in.listening",
                host=settings.host or "*",
                port=port,
                starttls=tls is not None,
                auth=settings.auth,
                max_size=settings.max_size,
            )
        )
        return port

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, give DATA commands in progress up to ``grace`` seconds, close all connections.

        An ``accept`` still running after ``grace`` finishes in its thread, but its
        client gets no reply and will send the message again.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping = True
        server.close()
        busy = list(self._busy)
        if busy:
            await asyncio.wait(busy, timeout=grace)
        connections = list(self._connections)
        for conn in connections:
            if conn.transport is not None:
                conn.transport.close()
        await server.wait_closed()
        log.info(kv("smtp_in.stopped", closed=len(connections)))

    def _tls_context(self) -> ssl.SSLContext | None:
        settings = self.settings
        if not (settings.tls_cert and settings.tls_key):
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # server side, no client certs
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load TLS certificate {settings.tls_cert} / key {settings.tls_key}: {exc}"
            ) from exc
        return context

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._connections)
