"""SMS over SIP MESSAGE (RFC 3428): texts in and out through our SIP user agent.

What it does
------------
:class:`SipMessageTransport` is the ``sip`` :class:`~ums.sms.transport.SmsTransport`.

* **In**: a MESSAGE to one of our numbers becomes an :class:`~ums.sms.transport.IncomingSms`.
  The transport answers 200 OK only after the ``on_incoming`` callback has returned (the text is
  on disk); a callback that raises gets 500 with ``Retry-After: 10``, so the far end sends again.
  A MESSAGE we cannot take is refused at once: 404 for a number we do not serve, 415 (with
  ``Accept: text/plain, message/cpim``) for another body type, an unknown charset or a
  Content-Encoding, 413 for a body over :data:`MAX_INCOMING_BYTES`, 400 for an empty text or a
  broken ``message/cpim`` wrapper.  Typing indications (``application/im-iscomposing+xml``,
  RFC 3994) and IMDN bodies some phones send get the same 415.
* **Out**: a text leaves as out-of-dialog MESSAGE(s) with ``Content-Type:
  text/plain;charset=UTF-8`` to ``sip:<number>@<trunk>``, or through an ``[[accounts]]`` entry
  (Request-URI at its registrar, From its AOR, digest credentials on a 401/407).  2xx is
  accepted; 404, 484, 403, 488, 415, 603, 604, 606 and the like are permanent; 408, 480, 486,
  500, 503, 504, a timeout and the like are temporary (:func:`is_permanent`).
* There are no delivery receipts over SIP: ``on_receipt`` is never called (RFC 5438 IMDN is not
  implemented), and a 2xx only says the next hop took the text.

How it works
------------
The SIP specifics are pure functions: :func:`parse_message` (request -> text or
:class:`MessageRefused`), :func:`build_message` / :func:`build_messages` (text -> requests) and
:func:`split_text`.  RFC 3428 §8 caps a MESSAGE at 1300 bytes unless every hop is known to be
congestion controlled; we cannot know that of the hops behind the trunk, so every text whose
request would be larger is split into several complete MESSAGEs (own Call-ID each) at character
boundaries, preferring a space near the end of a part and never cutting before a combining mark or
inside a zero-width-joiner sequence.  The budget leaves room for the Via and User-Agent the user
agent adds and, with an account, the Authorization header of a challenged retry.  Parts go one
after the other, each after the previous one got its 2xx, so they arrive in order.

Inbound charsets: ``text/plain`` without a charset is read as UTF-8 (RFC 2046 would say
US-ASCII, of which UTF-8 is a superset; phones and gateways send UTF-8 without saying so) and,
when that fails, as Windows-1252 (older gateways send Latin text unlabelled).  A declared charset
that does not fit the bytes is tried as UTF-8, then decoded with replacement characters: the far
end cannot repair a text, and most of it is better than none.  ``message/cpim`` (RFC 3862 §3) is
unwrapped to its ``text/plain`` content.  The sender is the user part of the first
P-Asserted-Identity (RFC 3325; set by the trusted network and not hidden by anonymous From
values), else of From; the recipient is the Request-URI user part, else the To user part,
mapped by the ``numbers`` function the service gives.

The shell drives the user agent of :class:`~ums.sip.service.SipService`: it registers MESSAGE
with ``accept_methods``, answers through ``respond`` and sends through ``send_request``, and
:meth:`SipMessageTransport.on_sip_event` takes the user agent's events for it.  A retransmitted
MESSAGE is absorbed by the server transaction; one sent again after our 500 is a new request.
The user agent answers 500 by itself when a request stays unanswered for
:data:`~ums.sip.ua.APP_ANSWER_TIMEOUT` seconds; a text stored after that is logged with
``answered=late`` (the far end will send it again).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ums.config import Account
from ums.log import kv
from ums.sip.dialog import out_of_dialog_request
from ums.sip.events import Event, RequestFailed, RequestReceived, ResponseReceived
from ums.sip.message import Request, SipParseError
from ums.sip.ua import UserAgent
from ums.sip.uri import NameAddr, SipUri, new_call_id, new_tag
from ums.sms.transport import IncomingSms, OnIncoming, OnReceipt, OutgoingSms, SubmitResult

__all__ = [
    "ACCEPT",
    "MAX_INCOMING_BYTES",
    "MAX_REQUEST_BYTES",
    "MessageRefused",
    "SipMessageTransport",
    "SipShell",
    "SipSmsSettings",
    "build_message",
    "build_messages",
    "is_permanent",
    "parse_message",
    "split_text",
]

log = logging.getLogger("ums.sms")

#: RFC 3428 §8: a MESSAGE outside a media session stays under this many bytes unless every hop
#: is known to be congestion controlled.
MAX_REQUEST_BYTES: Final = 1300
#: Largest body we take in (413 above): ten times the UDP ceiling, far more than any text.
MAX_INCOMING_BYTES: Final = 16 * 1024
#: What a 415 offers (RFC 3261 §21.4.13).
ACCEPT: Final = "text/plain, message/cpim"
#: The Content-Type of what we send.
CONTENT_TYPE: Final = "text/plain;charset=UTF-8"
#: Bytes kept free in a request for the Via and User-Agent the user agent adds (plus host/agent).
VIA_RESERVE: Final = 90
#: Bytes kept free for the Authorization of a challenged retry (plus Request-URI and user name):
#: fixed fields of a SHA-256 qop=auth answer and room for realm, nonce and opaque.
AUTH_RESERVE: Final = 420
#: A part smaller than this means the addresses alone nearly fill a request.
MIN_PART_BYTES: Final = 64
#: Codecs Python knows that are not charsets a text could be written in.
_NOT_CHARSETS: Final = frozenset(
    {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "mbcs", "oem"}
)
#: Statuses after which sending again may work (besides 5xx but 501/505/513).
_TEMPORARY: Final = frozenset({401, 407, 408, 429, 480, 486, 487, 491, 600})
_PERMANENT_5XX: Final = frozenset({501, 505, 513})
_BLANK_LINE: Final = re.compile(rb"\r?\n\r?\n")
_ZWJ: Final = "\u200d"


# ====================================================================== inbound


class MessageRefused(Exception):
    """A MESSAGE we do not take: answer it with ``status``, ``reason`` and ``headers``."""

    def __init__(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)


def _unsupported(reason: str) -> MessageRefused:
    return MessageRefused(415, reason, [("Accept", ACCEPT)])


def _media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; k=v`` -> ("type/subtype" lower-cased, {k lower-cased: v unquoted})."""
    head, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, eq, val = item.partition("=")
        if eq:
            params[name.strip().lower()] = val.strip().strip('"').strip()
    return head.strip().lower(), params


def _decode(body: bytes, charset: str | None) -> str:
    if not charset:
        try:
            return body.decode("utf-8-sig")
        except UnicodeDecodeError:
            return body.decode("cp1252", "replace")
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        raise _unsupported(f"Unsupported charset {charset[:40]}") from None
    if name in _NOT_CHARSETS:
        raise _unsupported(f"Unsupported charset {charset[:40]}")
    try:
        return body.decode("utf-8-sig" if name == "utf-8" else name)
    except LookupError:  # a bytes-to-bytes codec such as base64
        raise _unsupported(f"Unsupported charset {charset[:40]}") from None
    except UnicodeError:
        pass
    if name != "utf-8":
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    try:
        return body.decode(name, "replace")
    except UnicodeError:
        raise _unsupported(f"Unsupported charset {charset[:40]}") from None


def _header_block(block: bytes) -> dict[str, str]:
    """``Name: value`` lines (CRLF or LF; folded lines joined) -> {lower-cased name: value}."""
    out: dict[str, str] = {}
    last = ""
    for raw in re.split(rb"\r?\n", block):
        line = raw.decode("utf-8", "replace")
        if not line.strip():
            continue
        if line[0] in " \t" and last:
            out[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MessageRefused(400, "Malformed message/cpim header")
        last = name.strip().lower()
        out.setdefault(last, value.strip())
    return out


def _cpim_content(body: bytes) -> tuple[str, dict[str, str], bytes]:
    """RFC 3862 §3: message headers, blank line, the MIME object's headers, blank line, content."""
    first = _BLANK_LINE.search(body)
    if first is None:
        raise MessageRefused(400, "Malformed message/cpim body")
    outer = _header_block(body[: first.start()])  # message headers: identities come from SIP
    rest = body[first.end() :]
    if "content-type" in outer and "from" not in outer and "to" not in outer:
        # no message headers at all (seen from some clients): the first block is the MIME one
        mime, content = outer, rest
    else:
        second = _BLANK_LINE.search(rest)
        if second is None:
            raise MessageRefused(400, "Malformed message/cpim body")
        mime, content = _header_block(rest[: second.start()]), rest[second.end() :]
    encoding = mime.get("content-transfer-encoding", "").strip().lower()
    if encoding not in ("", "7bit", "8bit", "binary"):
        raise _unsupported("Unsupported Content-Transfer-Encoding in message/cpim")
    mtype, params = _media_type(mime.get("content-type", "text/plain"))
    return mtype, params, content


def _user_part(uri: SipUri) -> str | None:
    """The user part without telephone-subscriber parameters (``+4930100;npdi`` -> ``+4930100``)."""
    user = (uri.user or "").split(";", 1)[0].strip()
    return user or None


def _user_of(value: str | None) -> str | None:
    """The user part of a header's name-addr (From, To, P-Asserted-Identity)."""
    if not value:
        return None
    try:
        return _user_part(NameAddr.parse(value).uri)
    except SipParseError:
        return None


def _sender(request: Request) -> str:
    for value in request.headers.get_all_values("P-Asserted-Identity"):
        user = _user_of(value)
        if user is not None:
            return user
    return _user_of(request.headers.get("From")) or ""


def _recipient(request: Request) -> str | None:
    try:
        user = _user_part(SipUri.parse(request.uri))
    except SipParseError:
        user = None
    return user or _user_of(request.headers.get("To"))


def parse_message(
    request: Request,
    numbers: Callable[[str], str | None],
    *,
    max_bytes: int = MAX_INCOMING_BYTES,
) -> IncomingSms:
    """The text a MESSAGE carries, for one of our numbers; raises :class:`MessageRefused`.

    ``numbers(user)`` maps the recipient user part to our mailbox number (None: not ours, 404).
    An empty text is refused with 400: nothing to deliver, and the sender's fault (an empty
    ``text/plain`` body is valid MIME, but not a text anyone wants mailed).
    """
    user = _recipient(request)
    number = numbers(user) if user is not None else None
    if number is None:
        raise MessageRefused(404, "Not Found")
    body = request.body
    if len(body) > max_bytes:
        raise MessageRefused(413, "Request Entity Too Large")
    encoding = (request.headers.get("Content-Encoding") or "").strip().lower()
    if encoding not in ("", "identity"):
        raise MessageRefused(415, "Unsupported Content-Encoding", [("Accept-Encoding", "identity")])
    # RFC 3261 §20.15 wants a Content-Type with every body; without one we read text/plain
    mtype, params = _media_type(request.headers.get("Content-Type") or "text/plain")
    if mtype == "message/cpim":
        mtype, params, body = _cpim_content(body)
        if mtype != "text/plain":
            raise _unsupported(f"Unsupported type in message/cpim: {mtype[:40]}")
    elif mtype != "text/plain":
        raise _unsupported(f"Unsupported Media Type {mtype[:40]}")
    text = _decode(body, params.get("charset"))
    if not text:
        raise MessageRefused(400, "Empty message body")
    return IncomingSms(sender=_sender(request), to=number, text=text, via="sip", ref=request.call_id)


# ====================================================================== outbound


def _utf8_len(ch: str) -> int:
    cp = ord(ch)
    return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4


def _clings(text: str, i: int) -> bool:
    """True when the character at ``i`` belongs to the one before it (no cut at ``i``)."""
    ch = text[i]
    cp = ord(ch)
    return (
        text[i - 1] == _ZWJ
        or ch == _ZWJ
        or unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences
    )


def split_text(text: str, max_bytes: int) -> list[str]:
    """``text`` in parts of at most ``max_bytes`` UTF-8 bytes, cut between characters.

    A cut goes after the last white space in the final fifth of a part when there is one (the
    space stays at the end of the earlier part), and never before a combining mark, a variation
    selector or skin tone, or next to a zero-width joiner.  ``"".join(parts) == text``.  A text
    that fits comes back as one part; ``max_bytes`` below 4 raises ValueError.
    """
    if max_bytes < 4:
        raise ValueError("a part needs room for at least one character")
    parts: list[str] = []
    start, n = 0, len(text)
    while True:
        size, end = 0, start
        while end < n and size + _utf8_len(text[end]) <= max_bytes:
            size += _utf8_len(text[end])
            end += 1
        if end == n:
            parts.append(text[start:])
            return parts
        cut = end
        while cut > start + 1 and _clings(text, cut):
            cut -= 1
        if cut == start + 1 and _clings(text, cut):
            cut = end  # one endless cluster: cut where the bytes run out
        floor = max(start + 1, cut - max(1, (cut - start) // 5))
        for i in range(cut - 1, floor - 1, -1):
            if text[i].isspace():
                cut = i + 1
                break
        parts.append(text[start:cut])
        start = cut


def _parse_uri(text: str) -> SipUri:
    try:
        return SipUri.parse(text.strip().removeprefix("<").removesuffix(">"))
    except SipParseError as exc:
        raise ValueError(f"bad SIP URI {text!r}: {exc}") from None


def build_message(
    sms: OutgoingSms,
    target_uri: str,
    from_uri: str,
    rng: random.Random,
    *,
    text: str | None = None,
) -> Request:
    """One out-of-dialog MESSAGE (RFC 3428) carrying ``text`` (default: the whole of ``sms.text``).

    Request-URI and To are ``target_uri``; From is ``from_uri`` with a fresh tag; a fresh
    Call-ID at the From host; CSeq 1; no Contact (RFC 3428 forbids one); the body is UTF-8
    (a lone surrogate becomes "?").  The user agent adds Via, User-Agent and credentials.  Raises
    ValueError for a URI we cannot parse.
    """
    target = _parse_uri(target_uri)
    try:
        from_na = NameAddr.parse(from_uri)
    except SipParseError as exc:
        raise ValueError(f"bad From {from_uri!r}: {exc}") from None
    body = (sms.text if text is None else text).encode("utf-8", "replace")
    return out_of_dialog_request(
        "MESSAGE",
        target,
        from_=from_na,
        from_tag=new_tag(rng),
        call_id=new_call_id(rng, from_na.uri.host or "ums"),
        body=body,
        content_type=CONTENT_TYPE if body else None,
    )


def build_messages(
    sms: OutgoingSms,
    target_uri: str,
    from_uri: str,
    rng: random.Random,
    *,
    limit: int = MAX_REQUEST_BYTES,
    reserve: int = VIA_RESERVE,
) -> list[Request]:
    """The MESSAGEs for ``sms``: one, or several when one request would exceed ``limit`` bytes.

    ``reserve`` bytes are kept free in every request for what the user agent adds (Via,
    User-Agent, Authorization).  Raises ValueError for a bad URI or when the headers alone leave
    less than :data:`MIN_PART_BYTES` for the text.
    """
    text = sms.text.encode("utf-8", "replace").decode("utf-8")
    probe = build_message(sms, target_uri, from_uri, random.Random(0), text="x")
    # the probe carries a 1-byte body; Content-Length may grow from 1 to 5 digits
    head = len(probe.serialize()) - 1 + 4
    budget = limit - reserve - head
    if budget < MIN_PART_BYTES:
        raise ValueError(f"the headers leave {budget} bytes of {limit} for the text")
    return [build_message(sms, target_uri, from_uri, rng, text=part) for part in split_text(text, budget)]


def is_permanent(status: int) -> bool:
    """A refusal that sending the same text again cannot fix (4xx/6xx mostly, 3xx: we do not redirect).

    Temporary: 401/407 (credentials the operator may fix), 408, 429, 480, 486, 487, 491, 600 and
    5xx except 501 (no MESSAGE there), 505 and 513; status 0 (no answer) too.
    """
    if status == 0 or status in _TEMPORARY:
        return False
    if 500 <= status < 600:
        return status in _PERMANENT_5XX
    return status >= 300


# ====================================================================== the shell


class SipShell(Protocol):
    """What the transport needs of :class:`~ums.sip.service.SipService`."""

    ua: UserAgent

    def now(self) -> float: ...

    def kick(self) -> None: ...


@dataclass(frozen=True)
class SipSmsSettings:
    """How texts leave over SIP."""

    #: where texts go without an account: ``sip:<number>@<trunk host:port>``
    trunk: str = "sip:127.0.0.1:5080"
    #: send through this ``[[accounts]]`` entry (Request-URI at its registrar, From its AOR, digest)
    account: str = ""
    #: From user without an account; "" = the text's sender number, else "ums"
    from_user: str = ""
    #: seconds to wait for the final answer to one MESSAGE
    timeout: float = 32.0


#: (status, reason) of one MESSAGE; status 0 = no SIP answer (reason says why)
_Outcome = tuple[int, str]


class SipMessageTransport:
    """The ``sip`` SMS transport (see the module notes).  Delivery receipts: none over SIP."""

    name: str = "sip"

    def __init__(
        self,
        sip: SipShell,
        settings: SipSmsSettings,
        numbers: Callable[[str], str | None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Raises ValueError for a bad trunk URI, an unknown account or a timeout <= 0."""
        self.sip = sip
        self.settings = settings
        self.numbers = numbers
        self.rng = rng if rng is not None else random.Random()
        if settings.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {settings.timeout}")
        self._trunk = _parse_uri(settings.trunk)
        self._account: Account | None = None
        self._registrar = self._aor = self._trunk
        if settings.account:
            self._account = next((a for a in sip.ua.settings.accounts if a.name == settings.account), None)
            if self._account is None:
                raise ValueError(f"unknown SIP account {settings.account!r}")
            self._registrar = _parse_uri(self._account.registrar)
            self._aor = _parse_uri(self._account.aor)
        self._on_incoming: OnIncoming | None = None
        self._on_receipt: OnReceipt | None = None
        self._running = False
        self._stopped = False
        self._pending: dict[str, asyncio.Future[_Outcome]] = {}
        self._late: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, on_incoming: OnIncoming, on_receipt: OnReceipt) -> None:
        """Take MESSAGE requests from now on (keeping the methods others registered)."""
        self._on_incoming = on_incoming
        self._on_receipt = on_receipt
        ua = self.sip.ua
        ua.accept_methods(ua.local.accepted | {"MESSAGE"}, allow_events=ua.local.allow_events)
        self._running = True
        self._stopped = False

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking MESSAGE, fail waiting submits (temporary), let texts being stored finish.

        Texts still being stored after ``grace`` seconds are cancelled and answered 503.
        """
        self._running = False
        self._stopped = True
        ua = self.sip.ua
        ua.accept_methods(ua.local.accepted - {"MESSAGE"}, allow_events=ua.local.allow_events)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result((0, "SIP transport stopped"))
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.sip.kick()

    async def drain(self) -> None:
        """Wait until every text handed to ``on_incoming`` has been answered."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def ready(self) -> bool:
        """True once started: the SIP stack sends at once (a trunk that is down answers, or times
        out, per text)."""
        return self._running

    # ------------------------------------------------------------------ SIP events
    def on_sip_event(self, event: Event) -> bool:
        """Take a user agent event; True when it was ours (a MESSAGE, or the answer to one of ours)."""
        if isinstance(event, RequestReceived):
            if event.request.method != "MESSAGE":
                return False
            self._on_message(event)
            return True
        if isinstance(event, ResponseReceived | RequestFailed):
            fut = self._pending.pop(event.handle, None)
            if fut is None:
                if event.handle not in self._late:
                    return False
                self._late.discard(event.handle)
                log.info(kv("sms.sip_late_answer", handle=event.handle))
                return True
            if not fut.done():
                if isinstance(event, ResponseReceived):
                    fut.set_result((event.response.status, event.response.reason))
                else:
                    fut.set_result((event.status, event.reason))
            return True
        return False

    def _respond(
        self, handle: str, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()
    ) -> bool:
        tag = self.sip.ua.respond(handle, status, reason, self.sip.now(), headers=headers)
        self.sip.kick()
        return tag is not None

    def _on_message(self, event: RequestReceived) -> None:
        request = event.request
        on_incoming = self._on_incoming
        if not self._running or on_incoming is None:
            self._respond(event.handle, 503, "Service Unavailable", [("Retry-After", "30")])
            return
        try:
            sms = parse_message(request, self.numbers)
        except MessageRefused as exc:
            log.info(
                kv(
                    "sms.sip_refused",
                    sender=_sender(request),
                    recipient=_recipient(request),
                    status=exc.status,
                    reason=exc.reason,
                    length=len(request.body),
                    call_id=request.call_id,
                )
            )
            self._respond(event.handle, exc.status, exc.reason, exc.headers)
            return
        task = asyncio.get_running_loop().create_task(self._deliver(on_incoming, event.handle, sms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, on_incoming: OnIncoming, handle: str, sms: IncomingSms) -> None:
        try:
            await on_incoming(sms)
        except asyncio.CancelledError:
            self._respond(handle, 503, "Service Unavailable", [("Retry-After", "10")])
            raise
        except Exception as exc:
            log.exception(kv("sms.sip_in_failed", sender=sms.sender, to=sms.to, call_id=sms.ref, error=exc))
            self._respond(handle, 500, "Server Internal Error", [("Retry-After", "10")])
            return
        answered = self._respond(handle, 200, "OK")
        log.info(
            kv(
                "sms.sip_in",
                sender=sms.sender,
                to=sms.to,
                length=len(sms.text),
                call_id=sms.ref,
                answered=None if answered else "late",
            )
        )

    # ------------------------------------------------------------------ submit
    def _addresses(self, sms: OutgoingSms) -> tuple[str, str, int]:
        """(Request-URI, From, bytes to reserve) for a text to ``sms.to``."""
        ua = self.sip.ua
        reserve = VIA_RESERVE + len(ua.settings.host) + len(ua.settings.user_agent)
        if self._account is not None:
            target = SipUri("sip", sms.to, self._registrar.host, self._registrar.port)
            auth_user = self._account.auth_user or self._aor.user or ""
            reserve += AUTH_RESERVE + len(str(target)) + len(auth_user)
            return str(target), str(NameAddr(self._aor)), reserve
        trunk = self._trunk
        target = SipUri(trunk.scheme, sms.to, trunk.host, trunk.port, trunk.params)
        user = self.settings.from_user or sms.sender or "ums"
        return str(target), str(NameAddr(SipUri("sip", user, ua.settings.host))), reserve

    async def submit(self, sms: OutgoingSms) -> SubmitResult:
        """Send ``sms`` as one MESSAGE per part; accepted when every part got a 2xx.

        ``message_ids`` are the Call-IDs of the parts that got a 2xx.  A part refused ends the
        submit (later parts are not sent); sending again re-sends every part.
        """
        if self._stopped:
            return SubmitResult(False, reason="SIP transport stopped")
        if not sms.to:
            return SubmitResult(False, permanent=True, reason="no destination number")
        if not sms.text:
            return SubmitResult(False, permanent=True, reason="empty text")
        try:
            target, from_uri, reserve = self._addresses(sms)
            requests = build_messages(sms, target, from_uri, self.rng, reserve=reserve)
        except ValueError as exc:
            log.warning(kv("sms.sip_out_unsendable", job=sms.job_id, to=sms.to, reason=exc))
            return SubmitResult(False, permanent=True, reason=f"cannot address {sms.to!r}: {exc}")
        ids: list[str] = []
        status, phrase = 200, "OK"
        for request in requests:
            try:
                status, phrase = await self._send_one(request)
            except ValueError as exc:  # the user agent cannot route the Request-URI
                log.warning(kv("sms.sip_out_unsendable", job=sms.job_id, to=sms.to, reason=exc))
                return SubmitResult(False, permanent=True, reason=f"cannot send to {sms.to!r}: {exc}")
            if not 200 <= status < 300:
                break
            ids.append(request.call_id)
        accepted = len(ids) == len(requests)
        reason = "" if accepted else (f"SIP {status} {phrase}" if status else phrase)
        if not accepted and len(requests) > 1:
            reason += f" (part {len(ids) + 1} of {len(requests)}; {len(ids)} delivered)"
        log.info(
            kv(
                "sms.sip_out",
                job=sms.job_id,
                to=sms.to,
                length=len(sms.text),
                parts=len(requests),
                status=status,
                accepted=accepted,
                call_id=requests[0].call_id,
            )
        )
        if accepted:
            return SubmitResult(True, message_ids=tuple(ids), parts=len(requests))
        return SubmitResult(
            False, message_ids=tuple(ids), permanent=is_permanent(status), reason=reason, parts=len(requests)
        )

    async def _send_one(self, request: Request) -> _Outcome:
        handle = self.sip.ua.send_request(
            request, None, self.sip.now(), account=self.settings.account or None
        )
        fut: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        self._pending[handle] = fut
        self.sip.kick()
        try:
            return await asyncio.wait_for(fut, self.settings.timeout)
        except TimeoutError:
            return 0, f"no answer within {self.settings.timeout:g} s"
        finally:
            if self._pending.pop(handle, None) is not None:
                self._late.add(handle)  # the user agent still reports it; take that quietly
