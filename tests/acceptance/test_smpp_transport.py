"""The SMPP transport against a real SMSC simulator process (smpp34's server, ``tests.peers.smsc``).

What it does
------------
Our :class:`ums.sms.smpp.SmppTransport` runs in the test's event loop; the simulator runs as its
own process and logs every ``submit_sm`` it accepted.  The tests check: a long text with an emoji
leaves as concatenated UCS-2 parts that rejoin to the same text; receipts and texts from handsets
(single and concatenated, parts all at once or one at a time) reach the callbacks; the transport
rebinds by itself after the SMSC is killed and restarted, and no submit is lost silently; a
callback that raises is answered ESME_RX_T_APPN and the text comes through when sent again.

How it works
------------
The simulator's control commands block, so the coroutines call them with ``asyncio.to_thread``
(the transport must keep answering meanwhile).  Skipped only when smpp34 is not installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "smpp34", reason="smpp34 (the SMSC simulator's server, a test dependency) is not installed"
)

from tests.peers.ports import free_port
from tests.peers.smsc import SmscProcess
from ums.sms.gsm import join_sms, parse_part
from ums.sms.smpp import SmppSettings, SmppTransport
from ums.sms.transport import DeliveryReceipt, IncomingSms, OutgoingSms, SubmitResult

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

OURS = "+15550199"
HANDSET = "+15550100"
ESME_RX_T_APPN = 0x64
TEXT_300 = ("Your fax to +1 555 0100 was delivered: 3 pages in 1:12. Thank you 👍 — " * 5)[:299] + "✅"


@pytest.fixture
def smsc(run_dir: Path, dump_logs_on_failure: None) -> Iterator[SmscProcess]:
    proc = SmscProcess(free_port(), run_dir / "smsc").start()
    yield proc
    proc.stop()


class Inbox:
    """What the transport handed to the callbacks; ``fail`` makes the next callbacks raise."""

    def __init__(self) -> None:
        self.texts: list[IncomingSms] = []
        self.receipts: list[DeliveryReceipt] = []
        self.fail = 0

    async def on_incoming(self, sms: IncomingSms) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("spool disk full")
        self.texts.append(sms)

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("spool disk full")
        self.receipts.append(receipt)


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


Scenario = Callable[[SmppTransport, Inbox], Awaitable[None]]


def run(smsc: SmscProcess, scenario: Scenario, **overrides: Any) -> Inbox:
    """Start a transport against ``smsc``, bind, run ``scenario``, stop."""
    inbox = Inbox()
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": "ums",
        "password": "secret",
        "submit_timeout": 3.0,
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
        "enquire_link": 1.0,
        **overrides,
    }

    async def main() -> None:
        transport = SmppTransport(SmppSettings(**options))
        await transport.start(inbox.on_incoming, inbox.on_receipt)
        try:
            assert await transport.wait_bound(10.0), "the transport did not bind"
            await scenario(transport, inbox)
        finally:
            await transport.stop()

    asyncio.run(main())
    return inbox


def rejoin(submits: list[dict[str, Any]]) -> str:
    parts = [
        parse_part(bytes.fromhex(s["short_message"]), s["data_coding"], udhi=bool(s["esm_class"] & 0x40))
        for s in submits
    ]
    return join_sms(parts)


def test_long_ucs2_text_leaves_as_concatenated_parts_and_receipts_come_back(smsc: SmscProcess) -> None:
    results: list[SubmitResult] = []

    async def scenario(transport: SmppTransport, inbox: Inbox) -> None:
        result = await transport.submit(OutgoingSms("job-300", OURS, HANDSET, TEXT_300))
        results.append(result)
        await until(lambda: len(inbox.receipts) == result.parts, what="a receipt per part")
        # a receipt the SMSC sends later, text only, for a part that was not delivered
        status = await asyncio.to_thread(
            smsc.send_receipt, result.message_ids[1], "UNDELIV", err="0b1", tlvs=False
        )
        assert status == 0
        await until(lambda: len(inbox.receipts) == result.parts + 1, what="the UNDELIV receipt")

    inbox = run(smsc, scenario)
    (result,) = results
    assert result.accepted and result.parts == 5 and len(result.message_ids) == 5, result
    submits = smsc.submits()
    assert sorted(s["message_id"] for s in submits) == sorted(
        result.message_ids
    )  # the log order is the simulator's
    assert {(s["data_coding"], s["esm_class"], s["registered_delivery"]) for s in submits} == {(8, 0x40, 1)}
    assert {(s["source"], s["destination"], s["source_ton"], s["dest_ton"]) for s in submits} == {
        ("15550199", "15550100", 1, 1)
    }
    assert rejoin(submits) == TEXT_300
    assert sorted(r.message_id for r in inbox.receipts[:5]) == sorted(result.message_ids)
    assert all(r.delivered and r.status == "DELIVRD" for r in inbox.receipts[:5])
    assert inbox.receipts[5] == DeliveryReceipt(result.message_ids[1], False, "UNDELIV", "0b1")


def test_refusals_are_permanent_or_temporary_by_status(smsc: SmscProcess) -> None:
    async def scenario(transport: SmppTransport, inbox: Inbox) -> None:
        await asyncio.to_thread(smsc.set_options, refuse={"15550000": 0x0B, "15550001": 0x58}, receipts=False)
        bad = await transport.submit(OutgoingSms("r1", OURS, "+15550000", "hello"))
        assert (bad.accepted, bad.permanent) == (False, True) and "ESME_RINVDSTADR" in bad.reason
        busy = await transport.submit(OutgoingSms("r2", OURS, "+15550001", "hello"))
        assert (busy.accepted, busy.permanent) == (False, False) and "ESME_RTHROTTLED" in busy.reason
        plain = await transport.submit(
            OutgoingSms("r3", OURS, HANDSET, "Fax received: 2 pages", receipt=False)
        )
        assert plain.accepted and plain.parts == 1

    run(smsc, scenario)
    (only,) = smsc.submits()
    assert (only["data_coding"], only["esm_class"], only["registered_delivery"]) == (0, 0, 0)
    assert bytes.fromhex(only["short_message"]) == b"Fax received: 2 pages"
    assert len(smsc.events("submit_refused")) == 2


def test_texts_from_handsets_single_and_concatenated(smsc: SmscProcess) -> None:
    long_gsm = "Can you resend the contract? Page 2 was cut off at the bottom, thanks! " * 4
    long_ucs2 = "Danke für das Fax 😀 " * 12

    async def scenario(transport: SmppTransport, inbox: Inbox) -> None:
        assert await asyncio.to_thread(smsc.send_mo, HANDSET[1:], OURS[1:], "Call me back") == [0]
        statuses = await asyncio.to_thread(smsc.send_mo, HANDSET[1:], OURS[1:], long_gsm, ref=7)
        assert statuses == [0, 0]
        statuses = await asyncio.to_thread(smsc.send_mo, HANDSET[1:], OURS[1:], long_ucs2, ref=8)
        assert statuses == [0, 0, 0, 0]
        # an SMSC that sends one part at a time: the held parts are answered after mo_part_hold
        statuses = await asyncio.to_thread(
            smsc.send_mo, HANDSET[1:], OURS[1:], long_gsm[:200], ref=9, sequential=True
        )
        assert statuses == [0, 0]
        # to a short number (TON unknown): no "+" is added
        assert await asyncio.to_thread(smsc.send_mo, HANDSET[1:], "100", "to the mailbox") == [0]
        await until(lambda: len(inbox.texts) == 5, what="five texts")

    inbox = run(smsc, scenario, mo_part_hold=0.3)
    assert [t.text for t in inbox.texts] == [
        "Call me back",
        long_gsm,
        long_ucs2,
        long_gsm[:200],
        "to the mailbox",
    ]
    assert {(t.sender, t.to, t.via) for t in inbox.texts[:4]} == {(HANDSET, OURS, "smpp")}
    assert (inbox.texts[4].sender, inbox.texts[4].to) == (HANDSET, "100")


def test_a_raising_callback_gets_a_temporary_error_and_the_text_comes_again(smsc: SmscProcess) -> None:
    long_text = "Please fax the signed offer to the office before Friday noon, thank you. " * 3

    async def scenario(transport: SmppTransport, inbox: Inbox) -> None:
        inbox.fail = 1
        assert await asyncio.to_thread(smsc.send_mo, HANDSET[1:], OURS[1:], "first try") == [ESME_RX_T_APPN]
        assert await asyncio.to_thread(smsc.send_mo, HANDSET[1:], OURS[1:], "first try") == [0]
        inbox.fail = 1
        statuses = await asyncio.to_thread(smsc.send_mo, HANDSET[1:], OURS[1:], long_text, ref=3)
        assert statuses == [ESME_RX_T_APPN] * 2
        assert await asyncio.to_thread(smsc.send_mo, HANDSET[1:], OURS[1:], long_text, ref=3) == [0, 0]
        inbox.fail = 1
        assert await asyncio.to_thread(smsc.send_receipt, "9-9", "DELIVRD") == ESME_RX_T_APPN
        assert await asyncio.to_thread(smsc.send_receipt, "9-9", "DELIVRD") == 0

    inbox = run(smsc, scenario)
    assert [t.text for t in inbox.texts] == ["first try", long_text]
    assert [r.message_id for r in inbox.receipts] == ["9-9"]
    statuses = [e.get("status") for e in smsc.events("deliver_resp")]
    assert statuses == [ESME_RX_T_APPN, 0, ESME_RX_T_APPN, ESME_RX_T_APPN, 0, 0, ESME_RX_T_APPN, 0]


def test_smsc_killed_and_restarted_rebinds_and_loses_no_submit(smsc: SmscProcess) -> None:
    results: dict[str, SubmitResult] = {}

    async def scenario(transport: SmppTransport, inbox: Inbox) -> None:
        async def submit(job: str) -> None:
            results[job] = await transport.submit(OutgoingSms(job, OURS, HANDSET, f"text of {job}"))

        await submit("before")
        await asyncio.to_thread(smsc.kill)
        await until(lambda: not transport.bound, what="the transport to notice the lost SMSC")
        await submit("outage")  # nobody to bind to for longer than submit_timeout
        during = asyncio.ensure_future(submit("during"))  # the SMSC comes back while it waits
        await asyncio.sleep(0.3)
        await asyncio.to_thread(smsc.start)
        await during
        await until(lambda: transport.bound, what="a new bind")
        await submit("after")
        # the receipt of "before" may have died with the first SMSC; the new one's must come
        new_ids = {i for r in results.values() for i in r.message_ids if i.startswith("2-")}
        await until(lambda: new_ids <= {r.message_id for r in inbox.receipts}, what="the new run's receipts")

    run(smsc, scenario, submit_timeout=2.0)
    assert results["before"].accepted and results["after"].accepted
    outage = results["outage"]
    assert (outage.accepted, outage.permanent) == (False, False) and "not bound" in outage.reason
    # "during" got through after the rebind, or was refused as temporary: either way not lost silently
    logged = {s["message_id"]: s for s in smsc.submits()}
    accepted = [(job, r.message_ids[0]) for job, r in results.items() if r.accepted]
    assert sorted(logged) == sorted(message_id for _, message_id in accepted)
    for job, message_id in accepted:
        assert bytes.fromhex(logged[message_id]["short_message"]).decode() == f"text of {job}"
    assert all(not r.permanent for r in results.values())
    assert logged[results["after"].message_ids[0]]["incarnation"] == 2
    assert len(smsc.events("bound")) == 2


def test_smsc_unbind_leads_to_a_new_bind(smsc: SmscProcess) -> None:
    async def scenario(transport: SmppTransport, inbox: Inbox) -> None:
        await asyncio.to_thread(smsc.unbind)
        await until(lambda: len(smsc.events("bound")) == 2 and transport.bound, what="the second bind")
        result = await transport.submit(OutgoingSms("u1", OURS, HANDSET, "still here"))
        assert result.accepted

    run(smsc, scenario)
    assert len(smsc.submits()) == 1
