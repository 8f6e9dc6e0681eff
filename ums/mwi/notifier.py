"""Unsolicited MWI: NOTIFY ``message-summary`` to configured phone or PBX URIs, sans-I/O.

What it does
------------
:class:`UnsolicitedNotifier` sends an out-of-dialog NOTIFY (RFC 3842 §3: a notifier may send
message-summary state without a subscription when the device is configured for it) to every URI
configured for a mailbox, whenever the mailbox's counts change, and once at start.  Targets that
refuse (481, 489, 405, 501, ...) are left alone until the next change or a long retry interval;
targets that do not answer are retried with a growing back-off.

How it works
------------
One :class:`Target` per (mailbox, URI) with a small state table
(:data:`TARGET_TRANSITIONS`): IDLE -> SENDING -> IDLE (answered 2xx) / REFUSED (a rejection;
no NOTIFY until the next change or ``refused_retry`` seconds) / BACKOFF (timeout or other
failure; retry after ``BACKOFF_FIRST`` doubling up to ``refused_retry``, or at the next change).
At most one NOTIFY per target is in flight; a change meanwhile marks the target dirty and the
newest state goes out when the answer comes.

Each NOTIFY is a new request (new Call-ID, CSeq 1) with ``Event: message-summary``,
``Content-Type: application/simple-message-summary``, our Contact and a ``Subscription-State``
header.  RFC 3842 leaves that header's value open for unsolicited NOTIFYs; phones (Cisco,
Polycom, Yealink, Snom) accept ``active``, which is the default here.  Asterisk's res_pjsip_mwi
builds the header from a state field it never sets, so what it puts on the wire is
``terminated``; pass ``subscription_state="terminated"`` to behave like it, or ``None`` to leave
the header out.  NOTIFYs may carry digest credentials (``Target.account``) for PBXs that
challenge them.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ums.log import kv
from ums.mwi.subscriptions import MailboxState, SipPort
from ums.mwi.summary import CONTENT_TYPE, EVENT_PACKAGE, MessageCounts
from ums.sip.dialog import out_of_dialog_request, uri_to_addr
from ums.sip.events import RequestFailed, ResponseReceived
from ums.sip.message import SipParseError
from ums.sip.uri import NameAddr, SipUri, new_call_id, new_tag

__all__ = [
    "BACKOFF_FIRST",
    "REFUSED_RETRY",
    "REFUSING_STATUSES",
    "TARGET_TRANSITIONS",
    "NotifyTarget",
    "Target",
    "TargetInput",
    "TargetState",
    "UnsolicitedNotifier",
]

log = logging.getLogger("ums.mwi")

#: Responses meaning "this device does not want unsolicited message-summary NOTIFYs":
#: 481 (no such subscription), 489 Bad Event (the package is not supported, RFC 6665),
#: 405/501 (no NOTIFY at all), 403/404/410/415/488/603/604 (not for this device).
REFUSING_STATUSES = frozenset({403, 404, 405, 410, 415, 481, 488, 489, 501, 603, 604})
#: Seconds a refusing target is left alone unless the counts change (one hour).
REFUSED_RETRY = 3600.0
#: First retry after a timeout or a transient failure; doubles up to REFUSED_RETRY.
BACKOFF_FIRST = 60.0


@dataclass(frozen=True)
class NotifyTarget:
    """Configuration: send the MWI of ``mailbox`` to ``uri``; ``account`` answers challenges."""

    mailbox: str
    uri: str
    account: str | None = None


class TargetState(enum.Enum):
    IDLE = "idle"
    SENDING = "sending"
    REFUSED = "refused"
    BACKOFF = "backoff"


class TargetInput(enum.Enum):
    SEND = "counts changed / start / retry timer"
    OK = "2xx"
    REFUSED = "481/489/405/..."
    FAILED = "timeout or other failure"


T = TargetState
TI = TargetInput
#: (state, input) -> new state; inputs not listed are ignored.
TARGET_TRANSITIONS: dict[tuple[TargetState, TargetInput], TargetState] = {
    (T.IDLE, TI.SEND): T.SENDING,
    (T.REFUSED, TI.SEND): T.SENDING,
    (T.BACKOFF, TI.SEND): T.SENDING,
    (T.SENDING, TI.OK): T.IDLE,
    (T.SENDING, TI.REFUSED): T.REFUSED,
    (T.SENDING, TI.FAILED): T.BACKOFF,
}


@dataclass
class Target:
    """Runtime state of one configured URI."""

    config: NotifyTarget
    uri: SipUri
    state: TargetState = TargetState.IDLE
    handle: str | None = None
    dirty: bool = False
    retry_at: float | None = None
    failures: int = 0
    last_status: int | None = None
    sent: int = 0
    last_body: bytes | None = field(default=None, repr=False)


class UnsolicitedNotifier:
    """Out-of-dialog message-summary NOTIFYs to configured URIs (see the module notes).

    Parameters
    ----------
    port:
        Sends the NOTIFYs (a :class:`ums.sip.ua.UserAgent`).
    targets:
        The configured (mailbox, URI) pairs; a bad URI raises ValueError.
    local_host:
        Host for From, Call-ID and the default Message-Account (``sip:<mailbox>@<local_host>``).
    subscription_state:
        Value of the Subscription-State header, or None to omit it.
    """

    def __init__(
        self,
        port: SipPort,
        targets: Iterable[NotifyTarget],
        *,
        local_host: str,
        rng: random.Random | None = None,
        subscription_state: str | None = "active",
        refused_retry: float = REFUSED_RETRY,
        backoff_first: float = BACKOFF_FIRST,
        account_uri: Callable[[str], str] | None = None,
        mailboxes: Mapping[str, MailboxState] | None = None,
    ) -> None:
        self.port = port
        self.local_host = local_host
        self.rng = rng if rng is not None else random.Random()
        self.subscription_state = subscription_state
        self.refused_retry = refused_retry
        self.backoff_first = backoff_first
        self.account_uri = account_uri
        self._mailboxes: dict[str, MailboxState] = dict(mailboxes or {})
        self._targets: list[Target] = []
        for cfg in targets:
            try:
                uri = SipUri.parse(cfg.uri.strip().removeprefix("<").removesuffix(">"))
            except SipParseError as exc:
                raise ValueError(f"bad MWI notify URI {cfg.uri!r}: {exc}") from exc
            if uri.scheme not in ("sip", "sips"):
                raise ValueError(f"MWI notify URI must be sip: or sips:, got {cfg.uri!r}")
            self._targets.append(Target(cfg, uri))
        self._by_handle: dict[str, Target] = {}

    # ================================================================== inputs
    def targets(self, mailbox: str | None = None) -> list[Target]:
        return [t for t in self._targets if mailbox is None or t.config.mailbox == mailbox]

    def start(self, now: float) -> None:
        """Send the current state of every mailbox to all its targets (lamps right after a restart)."""
        for target in self._targets:
            self._send(target, now)

    def update(self, mailbox: str, state: MailboxState, now: float) -> int:
        """New counts for a mailbox: NOTIFY its targets if they changed.  Returns how many."""
        old = self._mailboxes.get(mailbox)
        self._mailboxes[mailbox] = state
        if old == state:
            return 0
        n = 0
        for target in self.targets(mailbox):
            self._send(target, now)
            n += 1
        return n

    def counts_changed(self, mailbox: str, new: int, old: int, now: float) -> int:
        """Voice counts changed (fax counts kept): :meth:`update` with ``MessageCounts(new, old)``."""
        prev = self._mailboxes.get(mailbox, MailboxState())
        voice = MessageCounts(new, old, prev.voice.urgent_new, prev.voice.urgent_old)
        return self.update(mailbox, MailboxState(voice, prev.fax), now)

    def on_response(self, event: ResponseReceived, now: float) -> bool:
        target = self._by_handle.pop(event.handle, None)
        if target is None:
            return False
        target.handle = None
        status = event.response.status
        target.last_status = status
        if status < 300:
            self._go(target, TI.OK)
            target.failures = 0
            target.retry_at = None
        elif status in REFUSING_STATUSES:
            self._go(target, TI.REFUSED)
            target.retry_at = now + self.refused_retry
            log.warning(
                kv(
                    "mwi.unsolicited.refused",
                    mailbox=target.config.mailbox,
                    uri=str(target.uri),
                    status=status,
                    reason=event.response.reason,
                    retry_in=self.refused_retry,
                )
            )
        else:
            self._failed(target, status, event.response.reason, now)
        if target.dirty:
            target.dirty = False
            self._send(target, now)
        return True

    def on_failure(self, event: RequestFailed, now: float) -> bool:
        target = self._by_handle.pop(event.handle, None)
        if target is None:
            return False
        target.handle = None
        target.last_status = event.status
        self._failed(target, event.status, event.reason, now)
        if target.dirty:
            target.dirty = False
            self._send(target, now)
        return True

    # ================================================================== timers
    def next_deadline(self) -> float | None:
        times = [
            t.retry_at for t in self._targets if t.retry_at is not None and t.state in (T.REFUSED, T.BACKOFF)
        ]
        return min(times) if times else None

    def advance(self, now: float) -> None:
        for target in self._targets:
            if (
                target.state in (T.REFUSED, T.BACKOFF)
                and target.retry_at is not None
                and target.retry_at <= now
            ):
                self._send(target, now)

    # ================================================================== internals
    def _go(self, target: Target, inp: TargetInput) -> bool:
        new = TARGET_TRANSITIONS.get((target.state, inp))
        if new is None:
            return False
        target.state = new
        return True

    def _failed(self, target: Target, status: int, reason: str, now: float) -> None:
        self._go(target, TI.FAILED)
        target.failures += 1
        delay = min(self.backoff_first * 2 ** min(target.failures - 1, 16), self.refused_retry)
        target.retry_at = now + delay
        log.info(
            kv(
                "mwi.unsolicited.failed",
                mailbox=target.config.mailbox,
                uri=str(target.uri),
                status=status,
                reason=reason,
                retry_in=delay,
            )
        )

    def _send(self, target: Target, now: float) -> None:
        if target.state is T.SENDING:
            target.dirty = True
            return
        mailbox = target.config.mailbox
        state = self._mailboxes.get(mailbox, MailboxState())
        account = self.account_uri(mailbox) if self.account_uri is not None else None
        if account is None:
            account = str(SipUri("sip", mailbox, self.local_host))
        body = state.body(account)
        headers = [("Event", EVENT_PACKAGE)]
        if self.subscription_state is not None:
            headers.append(("Subscription-State", self.subscription_state))
        transport = uri_to_addr(target.uri).transport
        headers.append(("Contact", self.port.local_contact(transport, mailbox)))
        request = out_of_dialog_request(
            "NOTIFY",
            target.uri,
            from_=NameAddr(SipUri("sip", mailbox, self.local_host)),
            from_tag=new_tag(self.rng),
            call_id=new_call_id(self.rng, self.local_host),
            body=body,
            content_type=CONTENT_TYPE,
            headers=headers,
        )
        try:
            handle = self.port.send_request(request, None, now, account=target.config.account)
        except ValueError as exc:
            log.warning(
                kv("mwi.unsolicited.unsendable", mailbox=mailbox, uri=str(target.uri), reason=str(exc))
            )
            target.state = T.REFUSED
            target.retry_at = now + self.refused_retry
            return
        self._go(target, TI.SEND)
        target.handle = handle
        target.sent += 1
        target.last_body = body
        self._by_handle[handle] = target
