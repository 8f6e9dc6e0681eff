"""Unsolicited message-summary NOTIFYs to configured URIs."""

from __future__ import annotations

import random

import pytest

from tests.unit.mwi.harness import MwiWorld
from tests.unit.sip.test_ua import HOST_A, HOST_B, challenge_response, final_response, make_ua, requests_out
from ums.config import Account
from ums.mwi.notifier import NotifyTarget, TargetState, UnsolicitedNotifier
from ums.mwi.subscriptions import MailboxState
from ums.mwi.summary import MessageCounts, MessageSummary
from ums.sip.digest import verify_authorization
from ums.sip.events import Addr, ResponseReceived
from ums.sip.message import Request
from ums.sip.uri import NameAddr

PHONE_URI = f"sip:100@{HOST_A}:5060"


def world_with_notifier(accepts: bool = True, **kwargs: object) -> MwiWorld:
    world = MwiWorld(phone_accepts_notify=accepts)
    world.notifier = UnsolicitedNotifier(
        world.pair.b,
        [NotifyTarget("100", PHONE_URI)],
        local_host=HOST_B,
        rng=random.Random(3),
        **kwargs,  # type: ignore[arg-type]
    )
    return world


def test_start_and_changes_send_out_of_dialog_notifies() -> None:
    world = world_with_notifier()
    assert world.notifier is not None
    world.notifier.start(world.now)
    world.pump()
    (first,) = world.take_notifies()
    assert first.uri == PHONE_URI
    assert NameAddr.parse(first.headers.get("To") or "").tag is None  # no dialog
    assert NameAddr.parse(first.headers.get("From") or "").uri.user == "100"
    assert first.headers.get("Event") == "message-summary"
    assert first.headers.get("Subscription-State") == "active"
    assert first.headers.get("Content-Type") == "application/simple-message-summary"
    assert first.body == (
        f"Messages-Waiting: no\r\nMessage-Account: sip:100@{HOST_B}\r\nVoice-Message: 0/0 (0/0)\r\n".encode()
    )
    world.pair.now = 10.0
    assert world.notifier.counts_changed("100", 1, 0, world.now) == 1
    world.pump()
    (second,) = world.take_notifies()
    assert second.call_id != first.call_id
    assert MessageSummary.parse(second.body).voice == MessageCounts(1, 0)
    assert world.notifier.counts_changed("100", 1, 0, world.now) == 0
    assert world.notifier.counts_changed("200", 1, 0, world.now) == 0  # no target for 200
    (target,) = world.notifier.targets()
    assert target.state is TargetState.IDLE and target.last_status == 200
    assert world.unhandled == []


def refused_world(answer: tuple[int, str] | None) -> MwiWorld:
    world = world_with_notifier(accepts=answer is not None)
    if answer is not None:
        world.phone_answer = lambda req: answer
    return world


@pytest.mark.parametrize("answer", [(489, "Bad Event"), (481, "Subscription Does Not Exist"), None])
def test_refusal_backs_off_until_the_next_change_or_an_hour(answer: tuple[int, str] | None) -> None:
    # None: the phone's UA does not take NOTIFY at all and answers 405 itself
    world = refused_world(answer)
    assert world.notifier is not None
    world.notifier.counts_changed("100", 1, 0, 0.0)
    world.pump()
    (target,) = world.notifier.targets()
    assert target.state is TargetState.REFUSED
    assert target.last_status == (answer[0] if answer else 405)
    assert world.notifier.next_deadline() == 3600.0
    world.run(3599.0)
    sent = [t for t in world.pair.sent("b", "NOTIFY")]
    assert sent == [0.0]  # no hammering
    world.notifier.counts_changed("100", 2, 0, world.now)  # a change tries again at once
    world.pump()
    assert world.pair.sent("b", "NOTIFY") == [0.0, 3599.0]
    world.run(3599.0 + 3600.0)
    assert world.pair.sent("b", "NOTIFY") == [0.0, 3599.0, 7199.0]


def test_timeouts_back_off_and_success_resets() -> None:
    world = world_with_notifier()
    assert world.notifier is not None
    world.pair.drop = lambda who, data: who == "b"  # the phone is unreachable
    world.notifier.counts_changed("100", 1, 0, 0.0)
    world.run(32.0)  # Timer F
    (target,) = world.notifier.targets()
    assert target.state is TargetState.BACKOFF and target.retry_at == 92.0
    world.run(92.0 + 32.0)
    assert target.retry_at == 124.0 + 120.0  # doubled
    world.pair.drop = lambda who, data: False
    world.run(250.0)
    (target,) = world.notifier.targets()
    assert target.state is TargetState.IDLE and target.failures == 0 and target.retry_at is None
    assert world.notifier.next_deadline() is None
    (last,) = world.take_notifies()
    assert MessageSummary.parse(last.body).voice == MessageCounts(1, 0)


def test_change_while_in_flight_sends_newest_state_after_answer() -> None:
    world = world_with_notifier()
    assert world.notifier is not None
    world.notifier.counts_changed("100", 1, 0, 0.0)
    world.notifier.counts_changed("100", 2, 0, 0.0)  # before the first is answered
    (target,) = world.notifier.targets()
    assert target.dirty
    world.pump()
    bodies = [MessageSummary.parse(r.body).voice for r in world.take_notifies()]
    assert bodies == [MessageCounts(1, 0), MessageCounts(2, 0)]


def test_subscription_state_header_choices() -> None:
    for value, expected in (("terminated", "terminated"), (None, None)):
        world = world_with_notifier(subscription_state=value)
        assert world.notifier is not None
        world.notifier.start(0.0)
        world.pump()
        (notify,) = world.take_notifies()
        assert notify.headers.get("Subscription-State") == expected


def test_bad_target_uri_is_a_config_error() -> None:
    ua = make_ua(HOST_B, 1)
    with pytest.raises(ValueError):
        UnsolicitedNotifier(ua, [NotifyTarget("100", "tel:+4989")], local_host=HOST_B)
    with pytest.raises(ValueError):
        UnsolicitedNotifier(ua, [NotifyTarget("100", "not a uri")], local_host=HOST_B)


ACCOUNT = Account(
    name="pbx",
    registrar="sip:pbx.example:5070",
    aor="sip:vm@pbx.example",
    auth_user="vm",
    password="secret",
    register=False,
)


def test_notify_to_a_pbx_answers_its_challenge() -> None:
    ua = make_ua(HOST_B, 4, (ACCOUNT,))
    notifier = UnsolicitedNotifier(
        ua,
        [NotifyTarget("100", "sip:100@pbx.example:5070", account="pbx")],
        local_host=HOST_B,
        rng=random.Random(2),
        mailboxes={"100": MailboxState(MessageCounts(3, 0))},
    )
    notifier.start(0.0)
    pbx = Addr("udp", "pbx.example", 5070)
    ((first, dest),) = requests_out(ua)
    assert dest == pbx
    ua.receive(challenge_response(first, 407, "n1"), pbx, 0.1)
    ((second, _),) = requests_out(ua)
    auth = second.headers.get("Proxy-Authorization") or ""
    assert verify_authorization(auth, method="NOTIFY", password="secret", realm="pbx.example")
    ua.receive(final_response(second, 200, "OK"), pbx, 0.2)
    (ev,) = ua.events()
    assert isinstance(ev, ResponseReceived) and notifier.on_response(ev, 0.2)
    (target,) = notifier.targets()
    assert target.state is TargetState.IDLE
    assert isinstance(second, Request) and b"Voice-Message: 3/0 (0/0)" in second.body
