"""SmsService with a scripted transport: SMTP policy, durable jobs, submits, retries, receipts, texts in."""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from ums.config import Mailbox
from ums.mailgate.mime import ComposeSettings
from ums.mailgate.smtp_in import Reject
from ums.outbound.addresses import GatewayAddressing, SenderPolicy
from ums.outbound.numbers import DenyList, DialPlan, deny_rules
from ums.sms.jobs import SmsJob, SmsRetryPolicy, SmsState
from ums.sms.service import SmsService, SmsSettings
from ums.sms.transport import (
    DeliveryReceipt,
    IncomingSms,
    OnIncoming,
    OnReceipt,
    OutgoingSms,
    SubmitResult,
)
from ums.store.fax_jobs import FaxJobStore
from ums.store.index import MessageIndex
from ums.store.models import MessageRecord

T0 = 1_800_000_000.0


@dataclass
class Transport:
    name: str = "sip"
    results: list[SubmitResult] = field(default_factory=list)
    sent: list[OutgoingSms] = field(default_factory=list)
    up: bool = True
    started: bool = False

    async def start(self, on_incoming: OnIncoming, on_receipt: OnReceipt) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def ready(self) -> bool:
        return self.up

    async def submit(self, sms: OutgoingSms) -> SubmitResult:
        self.sent.append(sms)
        if self.results:
            return self.results.pop(0)
        return SubmitResult(True, message_ids=(f"m{len(self.sent)}",))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    service: SmsService
    transport: Transport
    clock: Clock
    reports: list[tuple[str, bytes]]
    announced: list[MessageRecord]
    index: MessageIndex
    store: FaxJobStore[SmsJob]


def settings() -> SmsSettings:
    plan = DialPlan(country_code="49", area_code="30", dial_format="e164")
    return SmsSettings(
        addressing=GatewayAddressing("sms", domains=("sms.example.com",)),
        senders=SenderPolicy(allow=("@example.com",)),
        plan=plan,
        deny=DenyList(deny_rules(("default",))),
        policy=SmsRetryPolicy(intervals=(30.0,), max_tries=3, jitter=0.0),
        compose=ComposeSettings(from_addr="ums@example.com"),
        sender="+49301234500",
        did_prefixes=("+4930123450",),
    )


def make_rig(tmp_path: Path, transport: Transport | None = None) -> Rig:
    reports: list[tuple[str, bytes]] = []
    announced: list[MessageRecord] = []
    index = MessageIndex(tmp_path / "index.sqlite")
    store: FaxJobStore[SmsJob] = FaxJobStore(tmp_path / "sms", SmsJob.from_json)
    clock = Clock()
    t = transport or Transport()
    service = SmsService(
        settings(),
        store,
        t,
        lambda to, data: reports.append((to, data)),
        index=index,
        mailboxes=(Mailbox("100", "alice@example.com"), Mailbox("200", "bob@example.com", service="fax")),
        domain="example.com",
        announce=announced.append,
        clock=clock,
        rng=random.Random(7),
    )
    return Rig(service, t, clock, reports, announced, index, store)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def mail(to: str = "01511234567@sms.example.com", body: str = "Parcel at gate 4.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "carol@example.com"
    msg["To"] = to
    msg["Subject"] = "pickup"
    msg["Message-ID"] = "<p1@example.com>"
    msg.set_content(body)
    return msg.as_bytes()


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def settle(rig: Rig) -> None:
    await asyncio.sleep(0)  # the call_soon_threadsafe hand-over from accept
    await rig.service.tick()
    await rig.service.drain()


def test_smtp_policy_refuses_with_reasons(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    with pytest.raises(Reject) as info:
        rig.service.check_sender("eve@elsewhere.org", None)
    assert info.value.code == 550
    rig.service.check_sender("carol@example.com", None)
    assert rig.service.claims("<+4915112345678@sms.example.com>")
    assert not rig.service.claims("+4915112345678@fax.example.com")
    with pytest.raises(Reject, match="no such SMS address"):
        rig.service.check_recipient("x@fax.example.com", "carol@example.com", None)
    with pytest.raises(Reject, match="hello"):
        rig.service.check_recipient("hello@sms.example.com", "carol@example.com", None)
    with pytest.raises(Reject) as empty:
        rig.service.accept("carol@example.com", ["01511234567@sms.example.com"], mail(body="\n"), None, "p")
    assert empty.value.code == 554
    assert rig.store.load_all() == []


def test_mail_becomes_a_durable_job_then_a_message_and_a_sent_report(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.service.start(run=False)
        await asyncio.to_thread(
            rig.service.accept, "carol@example.com", ["0151 1234567@sms.example.com"], mail(), None, "p"
        )
        (job,) = rig.store.load_all()  # on disk when accept returns (before SMTP says 250)
        assert (job.state, job.dest, job.number) == (SmsState.QUEUED, "+491511234567", "0151 1234567")
        await settle(rig)
        await rig.service.stop()

    loop.run_until_complete(run())
    (sms,) = rig.transport.sent
    assert (sms.to, sms.sender, sms.text) == ("+491511234567", "+49301234500", "Parcel at gate 4.")
    ((to, data),) = rig.reports
    report = parse(data)
    assert to == "carol@example.com" and report["X-UMS-SMS-Result"] == "sent"
    assert report["In-Reply-To"] == "<p1@example.com>"
    assert rig.store.load_all() == [] and len(rig.store.archived()) == 1


def test_premium_number_is_reported_without_a_submit(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.service.start(run=False)
        await asyncio.to_thread(
            rig.service.accept, "carol@example.com", ["+4990012345678@sms.example.com"], mail(), None, "p"
        )
        await settle(rig)

    loop.run_until_complete(run())
    assert rig.transport.sent == []
    ((_, data),) = rig.reports
    report = parse(data)
    assert report["X-UMS-SMS-Result"] == "failed"
    body = report.get_body(("plain",))
    assert body is not None and "not allowed" in body.get_content()


def test_temporary_refusal_is_retried_and_a_down_transport_holds_the_queue(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    rig = make_rig(tmp_path)
    rig.transport.results = [SubmitResult(False, reason="SIP 503 Service Unavailable")]

    async def run() -> None:
        await rig.service.start(run=False)
        await asyncio.to_thread(
            rig.service.accept, "carol@example.com", ["01511234567@sms.example.com"], mail(), None, "p"
        )
        await settle(rig)
        assert len(rig.transport.sent) == 1 and rig.reports == []
        (job,) = rig.store.load_all()
        assert job.state is SmsState.QUEUED and job.next_try == T0 + 30.0
        rig.clock.now = T0 + 31.0
        rig.transport.up = False
        await settle(rig)
        assert len(rig.transport.sent) == 1  # held while the transport is down: no try used
        rig.transport.up = True
        await settle(rig)

    loop.run_until_complete(run())
    assert len(rig.transport.sent) == 2
    ((_, data),) = rig.reports
    assert parse(data)["X-UMS-SMS-Result"] == "sent"


def test_smpp_receipt_ends_the_job_as_delivered(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rig = make_rig(tmp_path, Transport(name="smpp"))
    rig.transport.results = [SubmitResult(True, message_ids=("a1", "a2"), parts=2)]

    async def run() -> None:
        await rig.service.start(run=False)
        await asyncio.to_thread(
            rig.service.accept, "carol@example.com", ["01511234567@sms.example.com"], mail(), None, "p"
        )
        await settle(rig)
        (job,) = rig.store.load_all()
        assert job.state is SmsState.SUBMITTED and rig.reports == []
        await rig.service.on_receipt(DeliveryReceipt("a1", True, "DELIVRD"))
        assert rig.reports == []  # one part of two
        await rig.service.on_receipt(DeliveryReceipt("a2", True, "DELIVRD"))

    loop.run_until_complete(run())
    ((_, data),) = rig.reports
    assert parse(data)["X-UMS-SMS-Result"] == "delivered"
    assert rig.store.load_all() == []


def test_a_job_in_flight_at_a_crash_is_sent_after_the_restart(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    first = make_rig(tmp_path)

    async def crash() -> None:
        await first.service.start(run=False)
        await asyncio.to_thread(
            first.service.accept, "carol@example.com", ["01511234567@sms.example.com"], mail(), None, "p"
        )
        await asyncio.sleep(0)
        (job,) = first.service.scheduler.due(T0)  # marked SENDING and saved, then the process dies
        first.store.save(job)

    loop.run_until_complete(crash())
    assert first.store.load_all()[0].state is SmsState.SENDING
    second = make_rig(tmp_path)

    async def restart() -> None:
        await second.service.start(run=False)
        await settle(second)

    loop.run_until_complete(restart())
    assert len(second.transport.sent) == 1 and len(second.reports) == 1


def test_incoming_text_is_indexed_before_it_is_announced(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    rig = make_rig(tmp_path)
    assert rig.service.mailbox_number("100") == "100"
    assert rig.service.mailbox_number("+4930123450100") == "100"  # DID prefix + mailbox
    assert rig.service.mailbox_number("+4930123459999") is None

    async def run() -> None:
        await rig.service.on_incoming(
            IncomingSms("+4915112345678", "+4930123450200", "Grüße 👋", "sip", "c1")
        )
        with pytest.raises(LookupError):
            await rig.service.on_incoming(IncomingSms("+4915112345678", "999", "x", "sip"))

    loop.run_until_complete(run())
    (record,) = rig.announced
    stored = rig.index.get(record.id)
    assert stored is not None
    assert (stored.kind, stored.mailbox, stored.owner) == ("sms", "200", "bob@example.com")
    assert stored.caller_number == "+4915112345678" and stored.meta["text"] == "Grüße 👋"
