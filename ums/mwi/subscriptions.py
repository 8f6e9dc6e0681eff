"""MWI notifier for ``message-summary`` subscriptions (RFC 3842 + RFC 6665), sans-I/O.

What it does
------------
:class:`SubscriptionManager` answers SUBSCRIBE requests for the ``message-summary`` event
package, keeps one state machine per subscription and sends the NOTIFYs: the initial one right
after the 200, one with the current state on every refresh, one to every subscription of a
mailbox when its counts change, and a final ``terminated`` one on unsubscribe, expiry and
shutdown.  It talks to SIP only through :class:`SipPort` (``respond`` / ``send_request`` /
``local_contact``, which :class:`ums.sip.ua.UserAgent` provides) and is fed the UA's
``RequestReceived`` / ``ResponseReceived`` / ``RequestFailed`` events and the time.

How it works
------------
SUBSCRIBE without a To tag (RFC 6665 §4.2.1.1):

* ``Event`` other than ``message-summary`` -> 489 Bad Event with ``Allow-Events``;
* an ``Accept`` that excludes application/simple-message-summary -> 406;
* mailbox = Request-URI user, else To user; unknown -> 404;
* ``Expires`` absent -> :data:`DEFAULT_EXPIRES`; below ``min_expires`` (but not 0) -> 423 with
  ``Min-Expires``; above ``max_expires`` -> shortened (the 200's Expires says what was granted);
* no usable Contact -> 400 (a dialog needs a remote target);
* otherwise 200 with our To tag and Contact, a UAS dialog (RFC 3261 §12.1.1), and at once the
  initial NOTIFY (RFC 6665 §4.2.1.2).  ``Expires: 0`` is a fetch: 200, then one NOTIFY
  ``terminated;reason=timeout`` with the state.

SUBSCRIBE inside a known subscription refreshes it (new expiry, remote target refresh) and is
answered 200 + NOTIFY with the current state; ``Expires: 0`` ends it with a final NOTIFY.  An
unknown dialog gets 481, a CSeq going backwards 500 (RFC 3261 §12.2.2).

States: ACTIVE -> TERMINATED (table :data:`SUBSCRIPTION_TRANSITIONS`).  At most one NOTIFY per
subscription is in flight; a change meanwhile marks it dirty and the newest state goes out when
the answer comes (subscribers see NOTIFYs in CSeq order, never an older state after a newer
one).  A NOTIFY answered 481 or 408, timed out, or answered with a response that ends a dialog
usage (RFC 5057: 404, 405, 410, 416, 480-485, 489, 501, 604) drops the subscription at once
(RFC 6665 §4.2.2); other failures keep it (the next change or refresh sends the state again).
A TERMINATED subscription is forgotten when its final NOTIFY is answered or fails.

Expiry is checked in :meth:`advance`; :meth:`next_deadline` gives the earliest expiry.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ums.log import kv
from ums.mwi.summary import CONTENT_TYPE, EVENT_PACKAGE, MessageCounts, summary_for
from ums.sip.dialog import Dialog
from ums.sip.events import Addr, RequestFailed, RequestReceived, ResponseReceived
from ums.sip.message import Request, SipParseError
from ums.sip.uri import NameAddr, SipUri, new_tag

__all__ = [
    "DEFAULT_EXPIRES",
    "DIALOG_ENDING_STATUSES",
    "MAX_EXPIRES",
    "MIN_EXPIRES",
    "SUBSCRIPTION_TRANSITIONS",
    "MailboxState",
    "SipPort",
    "SubInput",
    "SubState",
    "Subscription",
    "SubscriptionManager",
]

log = logging.getLogger("ums.mwi")

#: RFC 3842 §3.4: "The default expiration time for subscriptions within this package is 3600
#: seconds."
DEFAULT_EXPIRES = 3600
#: Shortest subscription we grant; shorter requests get 423 Interval Too Brief (RFC 6665
#: §4.2.1.1) so a phone cannot make us NOTIFY it every few seconds.
MIN_EXPIRES = 60
#: Longest subscription we grant (RFC 6665 §4.2.1.1: the notifier may shorten the duration).
MAX_EXPIRES = 7200
#: Final responses to NOTIFY that end the subscription: 481 and 408 end the dialog, the rest
#: end the usage (RFC 5057; RFC 6665 §4.2.2 for 481 and timeouts).
DIALOG_ENDING_STATUSES = frozenset({404, 405, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})
_ACCEPTABLE = frozenset({CONTENT_TYPE, "application/*", "*/*"})


class SipPort(Protocol):
    """The part of :class:`ums.sip.ua.UserAgent` the MWI machines use."""

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
    ) -> str | None: ...

    def send_request(
        self, request: Request, dest: Addr | None, now: float, account: str | None = None
    ) -> str: ...

    def local_contact(self, transport: str = "udp", user: str = "ums") -> str: ...


@dataclass(frozen=True)
class MailboxState:
    """What a mailbox's NOTIFY says: voice counts, and fax counts when faxes are counted."""

    voice: MessageCounts = field(default_factory=MessageCounts)
    fax: MessageCounts | None = None

    def body(self, account: str | None) -> bytes:
        return summary_for(self.voice, account=account, fax=self.fax)


class SubState(enum.Enum):
    ACTIVE = "active"
    TERMINATED = "terminated"


class SubInput(enum.Enum):
    REFRESH = "SUBSCRIBE refresh"
    UNSUBSCRIBE = "SUBSCRIBE with Expires: 0"
    EXPIRE = "expiry without refresh"
    SHUTDOWN = "mailbox removed or server stopping"
    NOTIFY_REJECTED = "NOTIFY answered 481/489/... or timed out"


#: (state, input) -> new state; anything not listed leaves the state alone.
SUBSCRIPTION_TRANSITIONS: dict[tuple[SubState, SubInput], SubState] = {
    (SubState.ACTIVE, SubInput.REFRESH): SubState.ACTIVE,
    (SubState.ACTIVE, SubInput.UNSUBSCRIBE): SubState.TERMINATED,
    (SubState.ACTIVE, SubInput.EXPIRE): SubState.TERMINATED,
    (SubState.ACTIVE, SubInput.SHUTDOWN): SubState.TERMINATED,
    (SubState.ACTIVE, SubInput.NOTIFY_REJECTED): SubState.TERMINATED,
    (SubState.TERMINATED, SubInput.NOTIFY_REJECTED): SubState.TERMINATED,
}

SubKey = tuple[str, str, str, str]


@dataclass
class Subscription:
    """One message-summary subscription (a dialog usage in the sense of RFC 5057)."""

    mailbox: str
    dialog: Dialog
    event_id: str
    account: str
    expires_at: float
    state: SubState = SubState.ACTIVE
    reason: str | None = None
    notify_handle: str | None = None
    dirty: bool = False
    notifies_sent: int = 0

    @property
    def key(self) -> SubKey:
        return (*self.dialog.id, self.event_id)


class SubscriptionManager:
    """The message-summary notifier (see the module notes).

    Parameters
    ----------
    port:
        Responds to requests and sends NOTIFYs (a :class:`ums.sip.ua.UserAgent`).
    mailboxes:
        Known mailboxes and their counts; SUBSCRIBEs for others get 404.  :meth:`update` adds.
    rng:
        Source of our To tags and initial CSeq numbers.
    account_uri:
        Message-Account for a mailbox; default ``sip:<mailbox>@<host[:port] of the SUBSCRIBE's
        Request-URI>``.
    """

    def __init__(
        self,
        port: SipPort,
        mailboxes: Mapping[str, MailboxState] | Iterable[str] = (),
        *,
        rng: random.Random | None = None,
        min_expires: int = MIN_EXPIRES,
        max_expires: int = MAX_EXPIRES,
        default_expires: int = DEFAULT_EXPIRES,
        account_uri: Callable[[str], str] | None = None,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.port = port
        self.rng = rng if rng is not None else random.Random()
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.account_uri = account_uri
        if isinstance(mailboxes, Mapping):
            self._mailboxes: dict[str, MailboxState] = dict(mailboxes)
        else:
            self._mailboxes = {name: MailboxState() for name in mailboxes}
        self._subs: dict[SubKey, Subscription] = {}
        self._by_handle: dict[str, Subscription] = {}

    # ================================================================== mailbox state
    def state(self, mailbox: str) -> MailboxState | None:
        return self._mailboxes.get(mailbox)

    def update(self, mailbox: str, state: MailboxState, now: float) -> int:
        """Set a mailbox's counts (adding it if new); NOTIFY its subscriptions if they changed.

        Returns the number of subscriptions a NOTIFY was sent or queued for.
        """
        old = self._mailboxes.get(mailbox)
        self._mailboxes[mailbox] = state
        if old == state:
            return 0
        n = 0
        for sub in self.subscriptions(mailbox):
            if sub.state is SubState.ACTIVE:
                self._notify(sub, now)
                n += 1
        return n

    def counts_changed(self, mailbox: str, new: int, old: int, now: float) -> int:
        """Voice counts changed (fax counts kept): :meth:`update` with ``MessageCounts(new, old)``."""
        prev = self._mailboxes.get(mailbox, MailboxState())
        voice = MessageCounts(new, old, prev.voice.urgent_new, prev.voice.urgent_old)
        return self.update(mailbox, MailboxState(voice, prev.fax), now)

    def remove_mailbox(self, mailbox: str, now: float) -> None:
        """Forget a mailbox; its subscriptions end with ``reason=noresource``."""
        for sub in self.subscriptions(mailbox):
            self._terminate(sub, SubInput.SHUTDOWN, "noresource", now)
        self._mailboxes.pop(mailbox, None)

    def shutdown(self, now: float) -> None:
        """End every subscription with ``reason=deactivated`` (RFC 6665 §4.1.3: subscribe again)."""
        for sub in list(self._subs.values()):
            if sub.state is SubState.ACTIVE:
                self._terminate(sub, SubInput.SHUTDOWN, "deactivated", now)

    def subscriptions(self, mailbox: str | None = None) -> list[Subscription]:
        return [s for s in self._subs.values() if mailbox is None or s.mailbox == mailbox]

    # ================================================================== timers
    def next_deadline(self) -> float | None:
        times = [s.expires_at for s in self._subs.values() if s.state is SubState.ACTIVE]
        return min(times) if times else None

    def advance(self, now: float) -> None:
        for sub in list(self._subs.values()):
            if sub.state is SubState.ACTIVE and sub.expires_at <= now:
                log.info(kv("mwi.subscription.expired", mailbox=sub.mailbox, call_id=sub.dialog.call_id))
                self._terminate(sub, SubInput.EXPIRE, "timeout", now)

    # ================================================================== SIP events
    def on_request(self, event: RequestReceived, now: float) -> bool:
        """Handle a SUBSCRIBE (True); other methods are not ours (False, nothing done)."""
        request = event.request
        if request.method != "SUBSCRIBE":
            return False
        handle = event.handle
        package, event_id = _event_header(request)
        if package != EVENT_PACKAGE:
            self.port.respond(handle, 489, "Bad Event", now, headers=[("Allow-Events", EVENT_PACKAGE)])
            return True
        if not _accepts_summary(request):
            self.port.respond(handle, 406, "Not Acceptable", now, headers=[("Accept", CONTENT_TYPE)])
            return True
        try:
            to = NameAddr.parse(request.headers.get("To") or "")
            from_ = NameAddr.parse(request.headers.get("From") or "")
        except SipParseError:
            self.port.respond(handle, 400, "Bad From or To", now)
            return True
        expires = _expires(request)
        if expires is None:
            expires = self.default_expires
        if to.tag is not None:
            key = (request.call_id, to.tag, from_.tag or "", event_id)
            sub = self._subs.get(key)
            if sub is None or sub.state is not SubState.ACTIVE:
                self.port.respond(handle, 481, "Subscription Does Not Exist", now)
                return True
            self._refresh(sub, event, expires, now)
            return True
        self._new(event, to, event_id, expires, now)
        return True

    def on_response(self, event: ResponseReceived, now: float) -> bool:
        """The answer to one of our NOTIFYs (True); other handles are not ours."""
        sub = self._by_handle.pop(event.handle, None)
        if sub is None:
            return False
        sub.notify_handle = None
        response = event.response
        try:
            sub.dialog.local_cseq = max(sub.dialog.local_cseq, response.cseq[0])
        except SipParseError:
            pass
        status = response.status
        if status >= 300:
            log.info(
                kv(
                    "mwi.notify.rejected",
                    mailbox=sub.mailbox,
                    status=status,
                    reason=response.reason,
                    call_id=sub.dialog.call_id,
                )
            )
            if status in DIALOG_ENDING_STATUSES:
                self._drop(sub, f"{status} {response.reason}")
                return True
        self._after_notify(sub, now)
        return True

    def on_failure(self, event: RequestFailed, now: float) -> bool:
        """A NOTIFY of ours timed out (True): the subscription is gone (RFC 6665 §4.2.2)."""
        sub = self._by_handle.pop(event.handle, None)
        if sub is None:
            return False
        sub.notify_handle = None
        log.info(
            kv("mwi.notify.failed", mailbox=sub.mailbox, status=event.status, call_id=sub.dialog.call_id)
        )
        self._drop(sub, f"{event.status} {event.reason}")
        return True

    # ================================================================== internals
    def _new(self, event: RequestReceived, to: NameAddr, event_id: str, expires: int, now: float) -> None:
        request = event.request
        handle = event.handle
        mailbox = self._mailbox_of(request, to)
        if mailbox is None:
            self.port.respond(handle, 404, "Not Found", now)
            return
        if 0 < expires < self.min_expires:
            self.port.respond(
                handle, 423, "Interval Too Brief", now, headers=[("Min-Expires", str(self.min_expires))]
            )
            return
        granted = min(expires, self.max_expires)
        tag = new_tag(self.rng)
        try:
            dialog = Dialog.as_uas(request, tag, event.source, local_cseq=self.rng.randrange(1, 2**16))
        except SipParseError as exc:
            self.port.respond(handle, 400, f"Bad SUBSCRIBE: {exc.reason}"[:80], now)
            return
        self.port.respond(handle, 200, "OK", now, headers=[("Expires", str(granted))], to_tag=tag)
        sub = Subscription(
            mailbox=mailbox,
            dialog=dialog,
            event_id=event_id,
            account=self._account(mailbox, request),
            expires_at=now + granted,
        )
        self._subs[sub.key] = sub
        log.info(
            kv(
                "mwi.subscription.new",
                mailbox=mailbox,
                expires=granted,
                source=str(event.source),
                call_id=request.call_id,
            )
        )
        if granted == 0:
            self._terminate(sub, SubInput.UNSUBSCRIBE, "timeout", now)  # a fetch: state once, then done
        else:
            self._notify(sub, now)

    def _refresh(self, sub: Subscription, event: RequestReceived, expires: int, now: float) -> None:
        request = event.request
        handle = event.handle
        if not sub.dialog.accept_remote_cseq(request):
            self.port.respond(handle, 500, "Server Internal Error", now, headers=[("Retry-After", "1")])
            return
        if 0 < expires < self.min_expires:
            self.port.respond(
                handle, 423, "Interval Too Brief", now, headers=[("Min-Expires", str(self.min_expires))]
            )
            return
        sub.dialog.refresh_target(request)
        granted = min(expires, self.max_expires)
        self.port.respond(handle, 200, "OK", now, headers=[("Expires", str(granted))])
        if granted == 0:
            log.info(kv("mwi.subscription.ended", mailbox=sub.mailbox, call_id=sub.dialog.call_id))
            self._terminate(sub, SubInput.UNSUBSCRIBE, "timeout", now)
            return
        sub.expires_at = now + granted
        self._notify(sub, now)  # RFC 6665 §4.2.1.2: state again after a refresh

    def _terminate(self, sub: Subscription, inp: SubInput, reason: str, now: float) -> None:
        new = SUBSCRIPTION_TRANSITIONS.get((sub.state, inp))
        if new is None:
            return
        sub.state = new
        sub.reason = reason
        self._notify(sub, now)

    def _drop(self, sub: Subscription, why: str) -> None:
        sub.state = SUBSCRIPTION_TRANSITIONS.get((sub.state, SubInput.NOTIFY_REJECTED), sub.state)
        if sub.notify_handle is not None:
            self._by_handle.pop(sub.notify_handle, None)
            sub.notify_handle = None
        if self._subs.get(sub.key) is sub:
            del self._subs[sub.key]
        log.info(kv("mwi.subscription.dropped", mailbox=sub.mailbox, why=why, call_id=sub.dialog.call_id))

    def _after_notify(self, sub: Subscription, now: float) -> None:
        if sub.state is SubState.TERMINATED and not sub.dirty:
            self._drop(sub, f"terminated ({sub.reason})")
        elif sub.dirty:
            sub.dirty = False
            self._notify(sub, now)

    def _notify(self, sub: Subscription, now: float) -> None:
        if sub.notify_handle is not None:
            sub.dirty = True
            return
        if sub.state is SubState.ACTIVE:
            remaining = max(0, math.ceil(sub.expires_at - now))
            sub_state = f"active;expires={remaining}"
        else:
            sub_state = f"terminated;reason={sub.reason or 'timeout'}"
        event = EVENT_PACKAGE + (f";id={sub.event_id}" if sub.event_id else "")
        state = self._mailboxes.get(sub.mailbox, MailboxState())
        request = sub.dialog.create_request(
            "NOTIFY",
            headers=[
                ("Event", event),
                ("Subscription-State", sub_state),
                ("Contact", self.port.local_contact(sub.dialog.transport)),
            ],
            body=state.body(sub.account),
            content_type=CONTENT_TYPE,
        )
        try:
            handle = self.port.send_request(request, sub.dialog.next_hop(), now)
        except ValueError as exc:
            log.warning(kv("mwi.notify.unsendable", mailbox=sub.mailbox, reason=str(exc)))
            self._drop(sub, "unsendable")
            return
        sub.notify_handle = handle
        sub.notifies_sent += 1
        self._by_handle[handle] = sub

    def _mailbox_of(self, request: Request, to: NameAddr) -> str | None:
        candidates: list[str | None] = []
        try:
            candidates.append(SipUri.parse(request.uri).user)
        except SipParseError:
            pass
        candidates.append(to.uri.user)
        for user in candidates:
            if user and user in self._mailboxes:
                return user
        return None

    def _account(self, mailbox: str, request: Request) -> str:
        if self.account_uri is not None:
            return self.account_uri(mailbox)
        try:
            uri = SipUri.parse(request.uri)
            return str(SipUri(uri.scheme if uri.scheme != "tel" else "sip", mailbox, uri.host, uri.port))
        except SipParseError:
            return f"sip:{mailbox}"


def _event_header(request: Request) -> tuple[str, str]:
    """(package, id) of the Event header (RFC 6665 §8.2.1); ``("", "")`` when absent."""
    raw = request.headers.get("Event") or ""
    parts = [p.strip() for p in raw.split(";")]
    package = parts[0].lower()
    event_id = ""
    for param in parts[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "id":
            event_id = value.strip()
    return package, event_id


def _accepts_summary(request: Request) -> bool:
    """RFC 6665 §4.2.1.1 / RFC 3842 §3.3: no Accept means the package's default type."""
    values = request.headers.get_all_values("Accept")
    if not values:
        return True
    types = {v.split(";", 1)[0].strip().lower() for v in values}
    types.discard("")
    return not types or bool(types & _ACCEPTABLE)


def _expires(request: Request) -> int | None:
    raw = request.headers.get("Expires")
    if raw is None:
        return None
    token = raw.strip()
    if not token.isdigit() or len(token) > 10:
        return None
    return int(token)
