"""Message-waiting lamps: the asyncio shell around the subscription manager and notifier.

What it does
------------
:class:`MwiService` accepts SUBSCRIBE for ``message-summary`` through the SIP user agent,
sends NOTIFYs (in subscriptions and unsolicited to configured URIs) and keeps the counts in
step with the message index.  Counts are re-read when the server stores a message, when
an IMAP watcher reports a read/unread change, and every ``[mwi] poll_interval`` seconds
(``ums mailbox mark-read`` in another process changes the index directly).

How it works
------------
The pure :class:`~ums.mwi.subscriptions.SubscriptionManager` and
:class:`~ums.mwi.notifier.UnsolicitedNotifier` talk to the user agent through its
``respond``/``send_request`` plumbing; this shell routes the UA's request/response events
to them, keeps one loop timer for their deadlines, and reads counts from SQLite in a
worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence

from ums.config import Config
from ums.log import kv
from ums.mwi.notifier import NotifyTarget, UnsolicitedNotifier
from ums.mwi.subscriptions import MailboxState, SubscriptionManager
from ums.mwi.summary import MessageCounts
from ums.sip import events as ev
from ums.sip.service import SipService
from ums.store.index import MessageIndex
from ums.store.models import Kind

__all__ = ["MwiService"]

log = logging.getLogger("ums.mwi")


class MwiService:
    def __init__(self, config: Config, sip: SipService, index: MessageIndex, host: str) -> None:
        self.config = config
        self.sip = sip
        self.index = index
        self._loop = asyncio.get_running_loop()
        rng = random.Random()
        self._counted: dict[str, tuple[Kind, ...]] = {
            mb.number: (("voice", "fax") if mb.count_faxes else ("voice",)) for mb in config.mailboxes
        }
        states = {number: MailboxState() for number in self._counted}
        self.manager = SubscriptionManager(
            sip.ua,
            dict(states),
            rng=rng,
            min_expires=config.mwi.min_expires,
            max_expires=config.mwi.max_expires,
            default_expires=config.mwi.default_expires,
        )
        targets = [NotifyTarget(mb.number, uri) for mb in config.mailboxes for uri in mb.notify]
        self.notifier = UnsolicitedNotifier(sip.ua, targets, local_host=host, rng=rng, mailboxes=dict(states))
        self._last: dict[str, MailboxState] = dict(states)
        self._timer: asyncio.TimerHandle | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        ua = self.sip.ua
        ua.accept_methods(
            ua.local.accepted | {"SUBSCRIBE"}, allow_events=[*ua.local.allow_events, "message-summary"]
        )
        await self.refresh_all(initial=True)
        self.notifier.start(self.sip.now())
        self.sip.kick()
        self._arm()
        self._poll_task = self._loop.create_task(self._poll())

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        if self._timer is not None:
            self._timer.cancel()
        self.manager.shutdown(self.sip.now())
        self.sip.kick()

    # -- SIP events -----------------------------------------------------------------------------
    def on_sip_event(self, event: ev.Event) -> bool:
        """True when the event was ours (a subscription or one of our NOTIFYs)."""
        now = self.sip.now()
        if isinstance(event, ev.RequestReceived):
            handled = self.manager.on_request(event, now)
        elif isinstance(event, ev.ResponseReceived):
            handled = self.manager.on_response(event, now) or self.notifier.on_response(event, now)
        elif isinstance(event, ev.RequestFailed):
            handled = self.manager.on_failure(event, now) or self.notifier.on_failure(event, now)
        else:
            return False
        if handled:
            self.sip.kick()
            self._arm()
        return handled

    # -- counts ---------------------------------------------------------------------------------
    def _state_of(self, number: str, counts: dict[Kind, tuple[int, int]]) -> MailboxState:
        voice = MessageCounts(*counts.get("voice", (0, 0)))
        fax = MessageCounts(*counts.get("fax", (0, 0))) if "fax" in self._counted[number] else None
        return MailboxState(voice=voice, fax=fax)

    def _read_counts(self, numbers: Sequence[str]) -> dict[str, MailboxState]:
        out: dict[str, MailboxState] = {}
        for number in numbers:
            kinds = self._counted[number]
            counts: dict[Kind, tuple[int, int]] = {k: self.index.counts(number, (k,)) for k in kinds}
            out[number] = self._state_of(number, counts)
        return out

    async def refresh(self, number: str) -> None:
        """Re-read one mailbox's counts and NOTIFY when they changed."""
        if number in self._counted:
            await self._apply(await asyncio.to_thread(self._read_counts, [number]))

    async def refresh_all(self, initial: bool = False) -> None:
        states = await asyncio.to_thread(self._read_counts, list(self._counted))
        if initial:
            for number, state in states.items():
                self._last[number] = state
                self.manager.update(number, state, self.sip.now())
                self.notifier.update(number, state, self.sip.now())
            return
        await self._apply(states)

    async def _apply(self, states: dict[str, MailboxState]) -> None:
        now = self.sip.now()
        for number, state in states.items():
            if self._last.get(number) == state:
                continue
            self._last[number] = state
            subs = self.manager.update(number, state, now)
            targets = self.notifier.update(number, state, now)
            log.info(
                kv(
                    "mwi.notify",
                    mailbox=number,
                    new=state.voice.new,
                    old=state.voice.old,
                    fax_new=state.fax.new if state.fax else None,
                    subscriptions=subs,
                    targets=targets,
                )
            )
        self.sip.kick()
        self._arm()

    def changed_soon(self, number: str) -> None:
        """Thread-safe: a watcher saw a change; re-read on the loop."""
        self._loop.call_soon_threadsafe(self.refresh_later, number)

    def refresh_later(self, number: str) -> None:
        """Schedule :meth:`refresh` (from the event loop, without awaiting it)."""
        task = self._loop.create_task(self.refresh(number))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.mwi.poll_interval)
            try:
                await self.refresh_all()
            except Exception:
                log.exception(kv("mwi.poll_failed"))

    # -- timers ---------------------------------------------------------------------------------
    def _arm(self) -> None:
        deadlines = [
            d for d in (self.manager.next_deadline(), self.notifier.next_deadline()) if d is not None
        ]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            self._timer = self._loop.call_at(max(min(deadlines), self.sip.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.sip.now()
        self.manager.advance(now)
        self.notifier.advance(now)
        self.sip.kick()
        self._arm()
