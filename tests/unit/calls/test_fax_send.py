"""Outgoing fax calls through the call manager, SIP and media in memory (the rig of test_fax_calls).

Covered: final SIP answers to our INVITE and the causes they mean (busy, no answer, rejected,
congestion), our CANCEL after the ring timeout, a cancel while it rings, digits to a trunk, a whole
fax to our own receiving soft modem on the "PBX" side (pixel-equal pages, our BYE after DCN) and to
SpanDSP's fax machine (through A-law), a call nobody answers with fax signals (NOT_FAX), a BYE in
the middle of the fax (LINE_ERROR), our T.38 re-INVITE after CED refused (the fax goes on over
G.711), a T.38 re-INVITE from the far end that moves the fax to UDPTL and resumes at the first page,
an answer with only the codec we did not open the endpoint with, and the pure helpers (cause
mapping, dial targets, request checks).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from tests.peers import spandsp_fax as sf
from tests.unit.calls.test_fax_calls import PBX, Rig, make_rig, t38_offer
from tests.unit.calls.test_fax_leg import pages
from ums.calls.outgoing import FaxSendLeg, FaxSendRequest, dial_target, fax_cause, sip_failure_cause
from ums.fax.t30 import FaxResult, PageReceived, T30Config, T30Engine
from ums.fax_t38.terminal import T38Terminal, UdptlLink
from ums.outbound.jobs import Attempt, Cause
from ums.render.page import FaxPage
from ums.sip import events as ev
from ums.sip.sdp import SessionDescription, answer_audio
from ums.softfax_g711.terminal import AudioFaxTerminal

TARGET = f"sip:+4930123@{PBX.host}:5060"


def docs(count: int, rows: int = 200) -> list[FaxPage]:
    return [FaxPage.at(p, "fine") for p in pages(count, rows)]


def receiver() -> T30Engine:
    return T30Engine(T30Config(ident="+49 89 7777"), "answering", "receive")


def pbx_answers(rig: Rig, codecs: tuple[str, ...] = ("PCMA",), port: int = 40000) -> None:
    """The PBX answers every INVITE with audio (and answers nothing else)."""

    def handler(e: ev.Event) -> None:
        if isinstance(e, ev.IncomingCall):
            offer = SessionDescription.parse(e.request.body)
            result = answer_audio(offer, codecs=codecs, local_host=PBX.host, local_port=port, session_id=9)
            assert result is not None
            rig.sip.pbx.answer(e.call_id, result[0].serialize(), rig.sip.now())
            rig.sip.kick()

    rig.sip.pbx_handler = handler


async def start(rig: Rig, **kw: Any) -> asyncio.Task[Attempt]:
    kw.setdefault("dial", TARGET)
    kw.setdefault("pages", docs(1))
    task = asyncio.create_task(rig.manager.send_fax(FaxSendRequest(**kw)))
    await rig.settle()
    return task


async def finish(rig: Rig, task: asyncio.Task[Attempt]) -> Attempt:
    for _ in range(50):
        if task.done():
            break
        rig.sip.kick()
        await rig.settle()
    assert task.done()
    return task.result()


def run(coro: Any) -> None:
    asyncio.run(coro())


# -- before an answer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phrase", "cause"),
    [
        (486, "Busy Here", Cause.BUSY),
        (600, "Busy Everywhere", Cause.BUSY),
        (480, "Temporarily Unavailable", Cause.NO_ANSWER),
        (404, "Not Found", Cause.REJECTED),
        (603, "Decline", Cause.REJECTED),
        (503, "Service Unavailable", Cause.CONGESTION),
    ],
)
def test_final_answer_to_the_invite(tmp_path: Path, status: int, phrase: str, cause: Cause) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        invites: list[ev.IncomingCall] = []

        def handler(e: ev.Event) -> None:
            if isinstance(e, ev.IncomingCall):
                invites.append(e)
                rig.sip.pbx.ring(e.call_id)
                rig.sip.pbx.reject(e.call_id, status, phrase, rig.sip.now())
                rig.sip.kick()

        rig.sip.pbx_handler = handler
        task = await start(rig, call_id_hint="job-1")
        attempt = await finish(rig, task)
        assert attempt.cause is cause and attempt.sip_code == status
        assert attempt.reason == f"{status} {phrase}" and attempt.pages_sent == 0 and attempt.transport == ""
        (invite,) = invites
        offer = SessionDescription.parse(invite.request.body)
        (audio,) = offer.media
        assert audio.media == "audio" and audio.formats == ["8", "0", "101"]
        assert audio.port == rig.media[0].local_port
        assert invite.request.uri == TARGET
        assert rig.media[0].closed and not rig.manager.legs and not rig.manager._outgoing

    run(main)


def test_ring_timeout_cancels_the_call(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)

        def handler(e: ev.Event) -> None:
            if isinstance(e, ev.IncomingCall):
                rig.sip.pbx.ring(e.call_id)
                rig.sip.kick()

        rig.sip.pbx_handler = handler
        task = await start(rig, ring_timeout=0.2)
        await asyncio.sleep(0.3)
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.NO_ANSWER and attempt.sip_code == 487
        assert "no answer within 0.2 s" in attempt.reason
        (ended,) = rig.pbx_events_of(ev.CallEnded)
        assert ended.reason == "cancelled"  # our CANCEL reached the PBX
        assert rig.media[0].closed and not rig.manager.legs

    run(main)


def test_cancel_while_ringing(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)

        def handler(e: ev.Event) -> None:
            if isinstance(e, ev.IncomingCall):
                rig.sip.pbx.ring(e.call_id)
                rig.sip.kick()

        rig.sip.pbx_handler = handler
        task = await start(rig, call_id_hint="job-7")
        assert not rig.manager.cancel_fax("job-8")
        assert rig.manager.cancel_fax("job-7")
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.CANCELLED and attempt.pages_sent == 0
        (ended,) = rig.pbx_events_of(ev.CallEnded)
        assert ended.reason == "cancelled"
        assert not rig.manager._outgoing and not rig.manager.legs

    run(main)


def test_digits_go_to_the_trunk_and_bad_targets_are_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        uris: list[str] = []

        def handler(e: ev.Event) -> None:
            if isinstance(e, ev.IncomingCall):
                uris.append(e.request.uri)
                rig.sip.pbx.reject(e.call_id, 486, "Busy Here", rig.sip.now())
                rig.sip.kick()

        rig.sip.pbx_handler = handler
        task = await start(rig, dial="0301234", trunk=f"{PBX.host}:5060")
        assert (await finish(rig, task)).cause is Cause.BUSY
        assert uris == [f"sip:0301234@{PBX.host}:5060"]
        # digits with neither an account nor a trunk, an unknown account: nothing is dialled
        for kw in ({"dial": "0301234"}, {"dial": "0301234", "account": "nope"}):
            attempt = await rig.manager.send_fax(FaxSendRequest(pages=docs(1), **kw))  # type: ignore[arg-type]
            assert attempt.cause is Cause.REJECTED and attempt.sip_code == 0
        assert len(uris) == 1 and all(m.closed for m in rig.media)

    run(main)


# -- a whole fax -------------------------------------------------------------------------------------


def test_fax_to_our_receiving_soft_modem_over_g711(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        pbx_answers(rig)
        sent = docs(2)
        confirmed: list[int] = []
        task = await start(rig, pages=sent, ident="+49 30 1111", on_page_sent=confirmed.append)
        media = rig.media[0]
        assert media.source is not None and media.remote == (PBX.host, 40000)
        leg = next(iter(rig.manager.legs.values()))
        assert isinstance(leg.fax, FaxSendLeg) and leg.fax.transport == "g711"
        far = AudioFaxTerminal(receiver())
        received: list[PageReceived] = []
        for _ in range(120 * 50):
            out = media.source(160)
            far.receive(out if out is not None else np.zeros(160, np.int16))
            for r in far.take_reports():
                if isinstance(r, PageReceived):
                    received.append(r)
                    far.page_stored(r.page_no)
            media.on_audio(far.transmit(160))
            if far.finished and leg.fax.hangup_requested:
                break
        assert far.result is not None and far.result.success, far.result
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.OK and attempt.pages_sent == 2, attempt
        assert attempt.transport == "g711" and attempt.sip_code == 200
        assert attempt.remote_csid == "+49 89 7777" and attempt.rate > 0
        assert far.result.remote_ident == "+49 30 1111"
        assert confirmed == [1, 2]
        assert len(received) == 2
        for got, want in zip(received, sent, strict=True):
            assert np.array_equal(got.pels, want.pels)
        (ended,) = rig.pbx_events_of(ev.CallEnded)
        assert ended.reason == "remote-bye"  # we sent BYE after DCN
        assert media.closed and not rig.manager.legs

    run(main)


@pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")
def test_fax_to_spandsp_over_alaw(tmp_path: Path) -> None:
    """SpanDSP's fax machine answers behind the fake media; both directions pass through A-law."""

    async def main() -> None:
        rig = make_rig(tmp_path)
        pbx_answers(rig)
        sent = docs(2, 300)
        task = await start(rig, pages=sent, ident="+49 30 1111")
        media = rig.media[0]
        assert media.source is not None
        leg = next(iter(rig.manager.legs.values()))
        assert leg.fax is not None
        rx_tiff = tmp_path / "rx.tif"
        span = sf.SpanFax(False, receive_tiff=rx_tiff, ident="SPANDSP 7")
        for _ in range(120 * 50):
            out = media.source(160)
            span.rx(line.g711(out if out is not None else np.zeros(160, np.int16), "PCMA"))
            media.on_audio(line.g711(span.tx(160), "PCMA"))
            if span.done and leg.fax.hangup_requested:
                break
        assert span.done and span.result.ok, span.result
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.OK and attempt.pages_sent == 2, attempt
        assert attempt.remote_csid == "SPANDSP 7" and span.result.remote_ident == "+49 30 1111"
        got = sf.read_fax_tiff(rx_tiff)
        assert len(got) == 2
        for g, want in zip(got, sent, strict=True):
            assert np.array_equal(g, want.pels)

    run(main)


def test_answered_without_fax_is_not_fax(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        pbx_answers(rig)
        task = await start(rig)
        media = rig.media[0]
        assert media.source is not None
        leg = next(iter(rig.manager.legs.values()))
        assert leg.fax is not None
        out = np.concatenate([media.source(160) for _ in range(25)])
        assert np.any(out)  # CNG
        for _ in range(36 * 50):  # T.30 T1 (35 s) of silence from a person who said nothing
            media.source(160)
            media.on_audio(np.zeros(160, np.int16))
            if leg.fax.hangup_requested:
                break
        assert leg.fax.result is not None and leg.fax.result.code == "t1"
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.NOT_FAX and attempt.transport == "g711", attempt
        assert attempt.sip_code == 200 and attempt.pages_sent == 0

    run(main)


def test_our_t38_reinvite_after_ced_refused_and_the_fax_goes_on_over_g711(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path, t38_reinvite="after_ced")
        pbx_answers(rig)
        answer_invite = rig.sip.pbx_handler
        assert answer_invite is not None
        offers: list[SessionDescription] = []

        def handler(e: ev.Event) -> None:
            answer_invite(e)
            if isinstance(e, ev.ReInvite):
                offers.append(SessionDescription.parse(e.sdp))
                rig.sip.pbx.answer_reinvite(e.call_id, None, rig.sip.now(), 488, "Not Acceptable Here")
                rig.sip.kick()

        rig.sip.pbx_handler = handler
        task = await start(rig, pages=docs(1))
        media = rig.media[0]
        assert media.source is not None
        leg = next(iter(rig.manager.legs.values()))
        assert leg.fax is not None
        far = AudioFaxTerminal(receiver())
        ced_at = None
        for i in range(120 * 50):
            out = media.source(160)
            far.receive(out if out is not None else np.zeros(160, np.int16))
            for r in far.take_reports():
                if isinstance(r, PageReceived):
                    far.page_stored(r.page_no)
            media.on_audio(far.transmit(160))
            if ced_at is None and leg.t38_tried:
                ced_at = i / 50
            if i % 25 == 0:
                await rig.settle(2)
            if far.finished and leg.fax.hangup_requested:
                break
        assert ced_at is not None and ced_at < 1.5  # CED starts 0.2 s after the answer
        (offer,) = offers
        assert [(m.media, m.proto) for m in offer.media] == [("image", "udptl")]
        assert leg.udptl is None and rig.udptl[0].closed
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.OK and attempt.pages_sent == 1 and attempt.transport == "g711", attempt

    run(main)


def test_bye_in_the_middle_of_the_fax_is_a_line_error(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        pbx_answers(rig)
        sent = docs(3, 400)
        confirmed: list[int] = []
        task = await start(rig, pages=sent, on_page_sent=confirmed.append)
        media = rig.media[0]
        assert media.source is not None
        far = AudioFaxTerminal(receiver())
        for _ in range(120 * 50):
            out = media.source(160)
            far.receive(out if out is not None else np.zeros(160, np.int16))
            for r in far.take_reports():
                if isinstance(r, PageReceived):
                    far.page_stored(r.page_no)
            media.on_audio(far.transmit(160))
            if confirmed:
                break
        assert confirmed == [1]
        (call_id,) = rig.manager.legs
        rig.sip.pbx.hangup(call_id, rig.sip.now())
        rig.sip.kick()
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.LINE_ERROR and attempt.pages_sent == 1, attempt
        assert attempt.reason and attempt.remote_csid == "+49 89 7777"

    run(main)


# -- T.38 ----------------------------------------------------------------------------------------------


class _Net:
    """The far end's T.38 receiver and our leg's driver, datagrams delayed by 30 ms, virtual time."""

    def __init__(self, rig: Rig, far: UdptlLink, t0: float) -> None:
        self.rig, self.far, self.t = rig, far, t0
        self.q: list[tuple[float, int, str, bytes]] = []
        self.seq = itertools.count()
        self.received: list[npt.NDArray[np.uint8]] = []

    def push(self, who: str, dgs: list[bytes]) -> None:
        for d in dgs:
            heapq.heappush(self.q, (self.t + 0.03, next(self.seq), who, d))

    def step(self) -> bool:
        udptl = self.rig.udptl[0]
        leg = udptl.driver
        assert leg is not None
        self.push("far", udptl.sent)
        udptl.sent = []
        times = [t for t in (leg.next_deadline(), self.far.next_deadline()) if t is not None]
        if self.q:
            times.append(self.q[0][0])
        if not times:
            return False
        self.t = max(self.t, min(times))
        while self.q and self.q[0][0] <= self.t:
            _, _, who, d = heapq.heappop(self.q)
            if who == "far":
                self.push("leg", self.far.datagram(d, self.t))
            else:
                self.push("far", leg.datagram(d, self.t))
        self.push("leg", self.far.poll(self.t))
        self.push("far", leg.poll(self.t))
        for r in self.far.terminal.take_reports():
            if isinstance(r, PageReceived):
                self.received.append(r.pels)
                self.push("leg", self.far.page_stored(r.page_no, self.t))
        return True


def test_far_end_reinvites_to_t38_and_the_fax_resumes(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        pbx_answers(rig)
        sent = docs(3)
        confirmed: list[int] = []
        task = await start(rig, pages=sent, first_page=2, on_page_sent=confirmed.append)
        media = rig.media[0]
        assert media.source is not None
        for _ in range(25):  # our CNG: the gateway asks for T.38
            media.source(160)
        (call_id,) = rig.manager.legs
        responses: list[ev.ResponseReceived] = []
        rig.sip.pbx_handler = lambda e: responses.append(e) if isinstance(e, ev.ResponseReceived) else None
        assert rig.sip.pbx.reinvite(call_id, t38_offer(), rig.sip.now()) is not None
        rig.sip.kick()
        await rig.settle()
        (resp,) = responses
        assert resp.response.status == 200
        answer = SessionDescription.parse(resp.response.body)
        assert [(m.media, m.port) for m in answer.media] == [("audio", 0), ("image", rig.udptl[0].local_port)]
        leg = rig.manager.legs[call_id]
        assert isinstance(leg.fax, FaxSendLeg) and leg.fax.transport == "t38"
        assert media.closed and rig.udptl[0].driver is leg.fax and rig.udptl[0].remote == (PBX.host, 40100)
        version = answer.media[1].attribute("T38FaxVersion")
        assert version is not None
        far = UdptlLink(T38Terminal(receiver(), version=int(version)))
        net = _Net(rig, far, rig.sip.now())
        net.push("leg", far.start(net.t))
        while not leg.fax.hangup_requested and net.t < rig.sip.now() + 200 and net.step():
            pass
        assert far.terminal.result is not None and far.terminal.result.success, far.terminal.result
        attempt = await finish(rig, task)
        assert attempt.cause is Cause.OK and attempt.pages_sent == 2 and attempt.transport == "t38", attempt
        assert confirmed == [2, 3]
        assert len(net.received) == 2
        for got, want in zip(net.received, sent[1:], strict=True):
            assert np.array_equal(got, want.pels)
        assert rig.udptl[0].closed and not rig.manager.legs

    run(main)


def test_answer_with_the_other_codec_moves_to_a_new_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        pbx_answers(rig, codecs=("PCMU",))
        reinvites: list[ev.ReInvite] = []
        answer_first = rig.sip.pbx_handler
        assert answer_first is not None

        def handler(e: ev.Event) -> None:
            answer_first(e)
            if isinstance(e, ev.ReInvite):
                reinvites.append(e)
                offer = SessionDescription.parse(e.sdp)
                result = answer_audio(
                    offer, codecs=["PCMU"], local_host=PBX.host, local_port=40004, session_id=9
                )
                assert result is not None
                rig.sip.pbx.answer_reinvite(e.call_id, result[0].serialize(), rig.sip.now())
                rig.sip.kick()

        rig.sip.pbx_handler = handler
        task = await start(rig)
        await rig.settle()
        first, second = rig.media
        assert first.params.codec == "PCMA" and first.closed
        assert second.params.codec == "PCMU" and second.remote == (PBX.host, 40004)
        (reinvite,) = reinvites
        (audio,) = SessionDescription.parse(reinvite.sdp).media
        assert audio.port == second.local_port and audio.formats == ["0", "101"]
        (call_id,) = rig.manager.legs
        leg = rig.manager.legs[call_id]
        assert leg.fax is not None and leg.fax.transport == "g711"
        assert second.source is not None
        assert np.any(np.concatenate([second.source(160) for _ in range(25)]))  # CNG
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rig.sip.kick()
        await rig.settle()
        assert rig.pbx_events_of(ev.CallEnded) and not rig.manager.legs

    run(main)


# -- pure helpers ------------------------------------------------------------------------------------


def test_sip_failure_causes() -> None:
    assert sip_failure_cause(486) is Cause.BUSY
    assert sip_failure_cause(408) is Cause.NO_ANSWER
    assert sip_failure_cause(408, provisional=False) is Cause.CONGESTION
    assert sip_failure_cause(487) is Cause.NO_ANSWER
    assert sip_failure_cause(500) is Cause.CONGESTION
    for status in (403, 404, 410, 484, 488, 603, 301):
        assert sip_failure_cause(status) is Cause.REJECTED


def test_fax_causes() -> None:
    def result(code: str, **kw: Any) -> FaxResult:
        return FaxResult(False, code, f"{code} happened", 0, "calling", "transmit", **kw)

    assert fax_cause(None, 2, 2) == (Cause.OK, "")
    assert fax_cause(result("t1"), 0, 2)[0] is Cause.NOT_FAX
    assert fax_cause(result("hangup"), 0, 2)[0] is Cause.NOT_FAX
    assert fax_cause(result("hangup", modem="v17", rate=14400), 0, 2) == (Cause.LINE_ERROR, "hangup happened")
    assert fax_cause(result("hangup"), 1, 2)[0] is Cause.LINE_ERROR
    assert fax_cause(result("ftt", modem="v27ter"), 0, 1) == (Cause.LINE_ERROR, "ftt happened")


def test_requests_and_targets() -> None:
    page = docs(1)
    assert dial_target(FaxSendRequest(dial="sip:1@h", pages=page)) == "sip:1@h"
    assert dial_target(FaxSendRequest(dial="123", pages=page, account="pbx")) == "123"
    assert dial_target(FaxSendRequest(dial="123", pages=page, trunk="sip:gw.example.com:5080")) == (
        "sip:123@gw.example.com:5080"
    )
    with pytest.raises(ValueError, match="no SIP account and no trunk"):
        dial_target(FaxSendRequest(dial="123", pages=page))
    bads: list[dict[str, Any]] = [
        {"pages": []},
        {"first_page": 2},
        {"first_page": 0},
        {"dial": " "},
        {"ring_timeout": 0},
    ]
    for bad in bads:
        kw: dict[str, Any] = {"dial": "1", "pages": page, **bad}
        with pytest.raises(ValueError):
            FaxSendRequest(**kw)
