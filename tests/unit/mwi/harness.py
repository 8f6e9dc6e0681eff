"""A phone and ums in memory: two UserAgents joined by lists, the MWI machines on the ums side."""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.unit.sip.test_ua import HOST_A, HOST_B, UaPair
from ums.mwi.notifier import UnsolicitedNotifier
from ums.mwi.subscriptions import MailboxState, SubscriptionManager
from ums.sip.dialog import Dialog, out_of_dialog_request
from ums.sip.events import Event, RequestFailed, RequestReceived, ResponseReceived
from ums.sip.message import Request, Response
from ums.sip.uri import NameAddr, SipUri

PhoneAnswer = Callable[[Request], tuple[int, str]]


class MwiWorld:
    """``a`` is the phone (accepts NOTIFY), ``b`` is ums with a SubscriptionManager and an
    optional UnsolicitedNotifier; ``pump``/``run`` move messages, timers and events."""

    def __init__(
        self, mailboxes: dict[str, MailboxState] | None = None, phone_accepts_notify: bool = True
    ) -> None:
        self.pair = UaPair()
        self.pair.b.accept_methods({"SUBSCRIBE"}, allow_events=["message-summary"])
        if phone_accepts_notify:
            self.pair.a.accept_methods({"NOTIFY"})
        self.mgr = SubscriptionManager(
            self.pair.b,
            mailboxes if mailboxes is not None else {"100": MailboxState()},
            rng=random.Random(11),
        )
        self.notifier: UnsolicitedNotifier | None = None
        self.phone_answer: PhoneAnswer = lambda req: (200, "OK")
        self.notifies: list[tuple[float, Request]] = []
        self.phone_events: list[Event] = []
        self.unhandled: list[Event] = []

    @property
    def now(self) -> float:
        return self.pair.now

    def pump(self) -> None:
        while True:
            self.pair.pump()
            b_events = self.pair.take("b")
            a_events = self.pair.take("a")
            for ev in b_events:
                self._ums_event(ev)
            for ev in a_events:
                if isinstance(ev, RequestReceived) and ev.request.method == "NOTIFY":
                    self.notifies.append((self.now, ev.request))
                    status, reason = self.phone_answer(ev.request)
                    self.pair.a.respond(ev.handle, status, reason, self.now)
                else:
                    self.phone_events.append(ev)
            if not b_events and not a_events:
                break

    def _ums_event(self, ev: Event) -> None:
        now = self.now
        handled = False
        if isinstance(ev, RequestReceived):
            handled = self.mgr.on_request(ev, now)
        elif isinstance(ev, ResponseReceived):
            handled = self.mgr.on_response(ev, now) or bool(
                self.notifier is not None and self.notifier.on_response(ev, now)
            )
        elif isinstance(ev, RequestFailed):
            handled = self.mgr.on_failure(ev, now) or bool(
                self.notifier is not None and self.notifier.on_failure(ev, now)
            )
        if not handled:
            self.unhandled.append(ev)

    def run(self, until: float) -> None:
        self.pump()
        while True:
            deadlines = [
                d
                for d in (
                    self.pair.a.next_deadline(),
                    self.pair.b.next_deadline(),
                    self.mgr.next_deadline(),
                    self.notifier.next_deadline() if self.notifier is not None else None,
                )
                if d is not None
            ]
            nxt = min(deadlines) if deadlines else None
            if nxt is None or nxt > until:
                break
            self.pair.now = max(self.pair.now, nxt)
            self.pair.a.advance(self.now)
            self.pair.b.advance(self.now)
            self.mgr.advance(self.now)
            if self.notifier is not None:
                self.notifier.advance(self.now)
            self.pump()
        self.pair.now = until

    # -- the phone's side ---------------------------------------------------------------------
    def subscribe(
        self,
        user: str = "100",
        expires: int | None = 600,
        event: str = "message-summary",
        extra: tuple[tuple[str, str], ...] = (),
        call_id: str = "sub1@phone",
    ) -> tuple[Request, str]:
        headers = [("Event", event), ("Contact", f"<sip:phone@{HOST_A}:5060>"), *extra]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        req = out_of_dialog_request(
            "SUBSCRIBE",
            SipUri.parse(f"sip:{user}@{HOST_B}:5060"),
            from_=NameAddr(SipUri.parse(f"sip:phone@{HOST_A}")),
            from_tag="ft-" + call_id.split("@")[0],
            call_id=call_id,
            headers=headers,
        )
        handle = self.pair.a.send_request(req, None, self.now)
        self.pump()
        return req, handle

    def answer_to(self, handle: str) -> Response:
        for ev in self.phone_events:
            if isinstance(ev, ResponseReceived) and ev.handle == handle:
                return ev.response
        raise AssertionError(f"no response for {handle}")

    def refresh(self, dialog: Dialog, expires: int) -> Response:
        req = dialog.create_request(
            "SUBSCRIBE",
            headers=[
                ("Event", "message-summary"),
                ("Expires", str(expires)),
                ("Contact", f"<sip:phone@{HOST_A}:5060>"),
            ],
        )
        handle = self.pair.a.send_request(req, dialog.next_hop(), self.now)
        self.pump()
        return self.answer_to(handle)

    def take_notifies(self) -> list[Request]:
        out = [r for _, r in self.notifies]
        self.notifies = []
        return out
