"""SUBSCRIBE/NOTIFY for message-summary: a phone UserAgent and ums's UserAgent + SubscriptionManager."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from tests.unit.mwi.harness import MwiWorld
from tests.unit.sip.test_ua import HOST_A, HOST_B
from ums.mwi.subscriptions import MailboxState, SubscriptionManager, SubState
from ums.mwi.summary import MessageCounts, MessageSummary
from ums.sip.dialog import Dialog
from ums.sip.events import Addr, RequestFailed, RequestReceived, ResponseReceived
from ums.sip.message import Headers, Request, Response
from ums.sip.uri import NameAddr

EMPTY = b"Messages-Waiting: no\r\nMessage-Account: sip:100@10.0.0.2:5060\r\nVoice-Message: 0/0 (0/0)\r\n"


def subscribed(world: MwiWorld, expires: int = 600) -> tuple[Dialog, Response]:
    req, handle = world.subscribe(expires=expires)
    ok = world.answer_to(handle)
    assert ok.status == 200
    return Dialog.as_uac(req, ok), ok


def test_subscribe_gets_200_then_initial_notify_with_the_counts() -> None:
    world = MwiWorld({"100": MailboxState(MessageCounts(0, 0))})
    _dialog, ok = subscribed(world)
    assert ok.headers.get("Expires") == "600"
    assert ok.headers.get("Contact") == f"<sip:ums@{HOST_B}:5060>"
    (notify,) = world.take_notifies()
    # the 200 went out before the NOTIFY (RFC 6665 §4.2.1.2)
    wire = [d.split(b"\r\n", 1)[0] for w, _, d in world.pair.wire if w == "b"]
    assert wire[:2] == [b"SIP/2.0 200 OK", f"NOTIFY sip:phone@{HOST_A}:5060 SIP/2.0".encode()]
    assert notify.headers.get("Event") == "message-summary"
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert notify.headers.get("Content-Type") == "application/simple-message-summary"
    assert notify.headers.get("Contact") == f"<sip:ums@{HOST_B}:5060>"
    assert (
        NameAddr.parse(notify.headers.get("From") or "").tag == NameAddr.parse(ok.headers.get("To") or "").tag
    )
    assert notify.body == EMPTY
    (sub,) = world.mgr.subscriptions("100")
    assert sub.state is SubState.ACTIVE and sub.notify_handle is None
    assert world.unhandled == []


def test_new_message_then_read_changes_the_lamp() -> None:
    world = MwiWorld()
    subscribed(world)
    world.take_notifies()
    world.pair.now = 5.0
    assert world.mgr.counts_changed("100", 1, 0, world.now) == 1
    world.pump()
    (notify,) = world.take_notifies()
    summary = MessageSummary.parse(notify.body)
    assert summary.waiting and summary.voice == MessageCounts(1, 0)
    assert b"Messages-Waiting: yes\r\n" in notify.body and b"Voice-Message: 1/0 (0/0)\r\n" in notify.body
    assert notify.headers.get("Subscription-State") == "active;expires=595"
    world.pair.now = 9.0
    world.mgr.counts_changed("100", 0, 1, world.now)
    world.pump()
    (notify,) = world.take_notifies()
    assert b"Messages-Waiting: no\r\n" in notify.body and b"Voice-Message: 0/1 (0/0)\r\n" in notify.body
    assert world.mgr.counts_changed("100", 0, 1, world.now) == 0  # no change, no NOTIFY
    world.pump()
    assert world.take_notifies() == []
    assert world.mgr.counts_changed("200", 1, 0, world.now) == 0  # a mailbox nobody watches


def test_cseq_of_notifies_increases() -> None:
    world = MwiWorld()
    subscribed(world)
    for n in range(3):
        world.mgr.counts_changed("100", n + 1, 0, world.now)
        world.pump()
    cseqs = [r.cseq[0] for r in world.take_notifies()]
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == 4


def test_refresh_resends_the_state_and_moves_the_expiry() -> None:
    world = MwiWorld({"100": MailboxState(MessageCounts(2, 1))})
    dialog, _ = subscribed(world)
    world.take_notifies()
    world.run(300.0)
    ok = world.refresh(dialog, 600)
    assert ok.status == 200 and ok.headers.get("Expires") == "600"
    assert NameAddr.parse(ok.headers.get("To") or "").tag == dialog.remote_tag
    (notify,) = world.take_notifies()
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert MessageSummary.parse(notify.body).voice == MessageCounts(2, 1)
    world.run(850.0)  # the old expiry (600) passed without effect
    assert world.take_notifies() == []
    (sub,) = world.mgr.subscriptions()
    assert sub.expires_at == 900.0


def test_expiry_without_refresh_sends_terminated_and_drops() -> None:
    world = MwiWorld()
    subscribed(world, expires=120)
    world.take_notifies()
    assert world.mgr.next_deadline() == 120.0
    world.run(119.0)
    assert world.take_notifies() == []
    world.run(121.0)
    (final,) = world.take_notifies()
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert final.body == EMPTY
    assert world.mgr.subscriptions() == [] and world.mgr.next_deadline() is None
    world.mgr.counts_changed("100", 1, 0, world.now)
    world.pump()
    assert world.take_notifies() == []


def test_unsubscribe_with_expires_zero() -> None:
    world = MwiWorld()
    dialog, _ = subscribed(world)
    world.take_notifies()
    ok = world.refresh(dialog, 0)
    assert ok.status == 200 and ok.headers.get("Expires") == "0"
    (final,) = world.take_notifies()
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert world.mgr.subscriptions() == []
    assert world.refresh(dialog, 600).status == 481  # that subscription is gone


def test_fetch_with_expires_zero_gets_one_terminated_notify() -> None:
    world = MwiWorld({"100": MailboxState(MessageCounts(1, 0))})
    _, ok = subscribed(world, expires=0)
    assert ok.headers.get("Expires") == "0"
    (notify,) = world.take_notifies()
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert b"Voice-Message: 1/0 (0/0)" in notify.body
    assert world.mgr.subscriptions() == []


def test_481_to_notify_drops_the_subscription() -> None:
    world = MwiWorld()
    dialog, _ = subscribed(world)
    world.take_notifies()
    world.phone_answer = lambda req: (481, "Subscription Does Not Exist")
    world.mgr.counts_changed("100", 1, 0, world.now)
    world.pump()
    assert len(world.take_notifies()) == 1
    assert world.mgr.subscriptions() == [] and world.mgr.next_deadline() is None
    world.mgr.counts_changed("100", 2, 0, world.now)
    world.pump()
    assert world.take_notifies() == []
    world.phone_answer = lambda req: (200, "OK")
    assert world.refresh(dialog, 600).status == 481


def test_notify_timeout_drops_the_subscription() -> None:
    world = MwiWorld()
    subscribed(world)
    world.take_notifies()
    world.pair.drop = lambda who, data: who == "a" and data.startswith(b"SIP/2.0")  # phone's answers lost
    world.mgr.counts_changed("100", 1, 0, world.now)
    world.run(31.0)
    assert world.mgr.subscriptions() != []
    world.run(33.0)
    assert world.mgr.subscriptions() == []
    assert world.unhandled == []


def test_500_to_notify_keeps_the_subscription() -> None:
    world = MwiWorld()
    subscribed(world)
    world.phone_answer = lambda req: (500, "Server Internal Error")
    world.mgr.counts_changed("100", 1, 0, world.now)
    world.pump()
    (sub,) = world.mgr.subscriptions()
    assert sub.state is SubState.ACTIVE


def test_other_event_packages_get_489() -> None:
    world = MwiWorld()
    _, handle = world.subscribe(event="presence")
    resp = world.answer_to(handle)
    assert resp.status == 489 and resp.headers.get("Allow-Events") == "message-summary"
    _, handle = world.subscribe(event="", call_id="noevent@phone")
    assert world.answer_to(handle).status == 489
    assert world.take_notifies() == [] and world.mgr.subscriptions() == []


@pytest.mark.parametrize(
    ("user", "expires", "extra", "status"),
    [
        ("999", 600, (), 404),
        ("100", 30, (), 423),
        ("100", 600, (("Accept", "application/pidf+xml"),), 406),
        ("100", 600, (("Accept", "application/simple-message-summary, application/pidf+xml"),), 200),
        ("100", 600, (("Accept", "application/*"),), 200),
    ],
)
def test_subscribe_rejections(
    user: str, expires: int, extra: tuple[tuple[str, str], ...], status: int
) -> None:
    world = MwiWorld()
    _, handle = world.subscribe(user=user, expires=expires, extra=extra)
    resp = world.answer_to(handle)
    assert resp.status == status
    if status == 423:
        assert resp.headers.get("Min-Expires") == "60"
    assert len(world.take_notifies()) == (1 if status == 200 else 0)


def test_expires_defaults_and_clamp() -> None:
    world = MwiWorld()
    _, handle = world.subscribe(expires=None)
    assert world.answer_to(handle).headers.get("Expires") == "3600"
    _, handle = world.subscribe(expires=100000, call_id="sub2@phone")
    assert world.answer_to(handle).headers.get("Expires") == "7200"


def test_mailbox_from_to_user_when_request_uri_user_is_unknown() -> None:
    world = MwiWorld()
    # a proxy may rewrite the Request-URI to our contact; the To header still names the mailbox
    _, handle = world.subscribe(user="ums")
    assert world.answer_to(handle).status == 404  # the To is the Request-URI here: unknown
    mgr = world.mgr
    request = Request(
        headers=Headers.of(
            [
                ("Via", "SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bKx"),
                ("From", "<sip:phone@192.0.2.9>;tag=a"),
                ("To", "<sip:100@pbx.example>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 SUBSCRIBE"),
                ("Contact", "<sip:phone@192.0.2.9:5062>"),
                ("Event", "message-summary"),
            ]
        ),
        method="SUBSCRIBE",
        uri=f"sip:ums@{HOST_B}",
    )
    fake = FakePort()
    mgr.port = fake
    assert mgr.on_request(RequestReceived("in-x", request, Addr("udp", "192.0.2.9", 5062)), 0.0)
    assert fake.responses[0][1] == 200
    assert mgr.subscriptions("100")[-1].account == f"sip:100@{HOST_B}"


def test_two_phones_on_one_mailbox_both_get_notified() -> None:
    world = MwiWorld()
    subscribed(world)
    world.subscribe(call_id="sub2@phone")
    world.take_notifies()
    assert world.mgr.counts_changed("100", 1, 0, world.now) == 2
    world.pump()
    assert {r.call_id for r in world.take_notifies()} == {"sub1@phone", "sub2@phone"}


def test_refresh_in_unknown_dialog_gets_481_and_other_methods_are_not_ours() -> None:
    world = MwiWorld()
    dialog, _ = subscribed(world)
    dialog.remote_tag = "nosuch"
    assert world.refresh(dialog, 600).status == 481
    assert not world.mgr.on_request(
        RequestReceived("in-z", Request(method="MESSAGE", uri="sip:100@h"), Addr("udp", "h", 5060)), 0.0
    )


def test_shutdown_and_removed_mailbox_terminate() -> None:
    world = MwiWorld({"100": MailboxState(), "101": MailboxState()})
    subscribed(world)
    world.subscribe(user="101", call_id="sub2@phone")
    world.take_notifies()
    world.mgr.remove_mailbox("101", world.now)
    world.pump()
    (final,) = world.take_notifies()
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    world.mgr.shutdown(world.now)
    world.pump()
    (final,) = world.take_notifies()
    assert final.headers.get("Subscription-State") == "terminated;reason=deactivated"
    assert world.mgr.subscriptions() == []
    _, handle = world.subscribe(user="101", call_id="sub3@phone")
    assert world.answer_to(handle).status == 404


# ---------------------------------------------------------------- with a recording fake port
class FakePort:
    def __init__(self) -> None:
        self.responses: list[tuple[str, int, str, list[tuple[str, str]], str | None]] = []
        self.requests: list[tuple[str, Request, Addr | None]] = []
        self.n = 0

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
        self.responses.append((handle, status, reason, list(headers), to_tag))
        return to_tag

    def send_request(
        self, request: Request, dest: Addr | None, now: float, account: str | None = None
    ) -> str:
        self.n += 1
        handle = f"out-{self.n}"
        self.requests.append((handle, request, dest))
        return handle

    def local_contact(self, transport: str = "udp", user: str = "ums") -> str:
        return f"<sip:{user}@192.0.2.1:5060>"


def fake_subscribe(call_id: str = "c1", expires: str = "600") -> RequestReceived:
    request = Request(
        headers=Headers.of(
            [
                ("Via", "SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bKx"),
                ("From", "<sip:phone@192.0.2.9>;tag=a"),
                ("To", "<sip:100@192.0.2.1>"),
                ("Call-ID", call_id),
                ("CSeq", "1 SUBSCRIBE"),
                ("Contact", "<sip:phone@192.0.2.9:5062>"),
                ("Event", "message-summary;id=7"),
                ("Expires", expires),
            ]
        ),
        method="SUBSCRIBE",
        uri="sip:100@192.0.2.1",
    )
    return RequestReceived("in-1", request, Addr("udp", "192.0.2.9", 5062))


def ok_for(request: Request, status: int = 200) -> Response:
    return Response(
        headers=Headers.of([("Call-ID", request.call_id), ("CSeq", request.headers.get("CSeq") or "")]),
        status=status,
        reason="OK" if status == 200 else "Nope",
    )


def test_one_notify_in_flight_newest_state_follows() -> None:
    port = FakePort()
    mgr = SubscriptionManager(port, {"100": MailboxState()}, rng=random.Random(1))
    assert mgr.on_request(fake_subscribe(), 0.0)
    assert len(port.requests) == 1  # the initial NOTIFY, not yet answered
    handle, first, dest = port.requests[0]
    assert dest == Addr("udp", "192.0.2.9", 5062)
    assert first.headers.get("Event") == "message-summary;id=7"
    mgr.counts_changed("100", 1, 0, 1.0)
    mgr.counts_changed("100", 2, 0, 2.0)
    assert len(port.requests) == 1  # queued behind the one in flight
    assert mgr.on_response(ResponseReceived(handle, ok_for(first)), 3.0)
    assert len(port.requests) == 2
    handle2, second, _ = port.requests[1]
    assert b"Voice-Message: 2/0 (0/0)" in second.body and second.cseq[0] == first.cseq[0] + 1
    assert mgr.on_response(ResponseReceived(handle2, ok_for(second)), 3.1)
    assert len(port.requests) == 2
    assert not mgr.on_response(ResponseReceived("out-99", ok_for(second)), 3.2)
    assert not mgr.on_failure(RequestFailed("out-99", 408, "Request Timeout"), 3.2)


def test_termination_while_notify_in_flight_waits_for_it() -> None:
    port = FakePort()
    mgr = SubscriptionManager(port, {"100": MailboxState()}, rng=random.Random(1))
    mgr.on_request(fake_subscribe(expires="60"), 0.0)
    handle, first, _ = port.requests[0]
    mgr.advance(60.0)
    assert len(port.requests) == 1
    mgr.on_response(ResponseReceived(handle, ok_for(first)), 61.0)
    handle2, final, _ = port.requests[1]
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert mgr.subscriptions() != []
    mgr.on_failure(RequestFailed(handle2, 408, "Request Timeout"), 93.0)
    assert mgr.subscriptions() == []


def test_manager_settings_validated() -> None:
    with pytest.raises(ValueError):
        SubscriptionManager(FakePort(), min_expires=100, default_expires=50)
