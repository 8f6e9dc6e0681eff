"""Fax calls through the call manager: SIP between two of our user agents in memory (ours and a
"PBX"), fake RTP and UDPTL endpoints, an in-memory fax sink.

Covered: a fax number answers G.711 and runs the fax modems (a whole fax from our own transmitting
soft modem, and our BYE after DCN); a re-INVITE to T.38 mid-call is answered with T.38 and moves
the fax to UDPTL; a session refresh (the same SDP again) changes nothing; our own re-INVITE after
CED, refused with 488 (stays on G.711) or accepted; an initial INVITE offering audio and image;
CNG on a voice number switches from voicemail to fax; BYE mid-fax finishes the sink; lost packets
of a fax on G.711 go to the modems as fill-in; a 2xx to our T.38 re-INVITE after ``t38_timeout``
is followed by a re-INVITE back to audio (or a hang-up when the peer refuses it).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.calls.test_fax_leg import MemorySink, pages, sender
from ums.calls.fax import FaxLeg
from ums.calls.service import CallManager, FaxWiring, VoicemailWiring
from ums.config import Config, ConfigError, FaxConfig, Mailbox, ServerSettings, SipSettings, parse_config
from ums.fax_t38.sdp import make_t38_offer, t38_attributes
from ums.sip import events as ev
from ums.sip.events import Addr
from ums.sip.sdp import AudioParams, MediaDescription, SessionDescription, make_audio_offer, new_description
from ums.sip.ua import UaSettings, UserAgent
from ums.softfax_g711.terminal import AudioFaxTerminal
from ums.softfax_g711.tones import cng
from ums.voicemail.machine import VoicemailSettings

OURS = Addr("udp", "127.0.0.1", 5060)
PBX = Addr("udp", "127.0.0.2", 5060)


@dataclass
class Stats:
    def log_fields(self) -> dict[str, int | float]:
        return {}


_ports = itertools.count(30000, 2)


@dataclass
class FakeMedia:
    params: AudioParams
    on_audio: Callable[[np.ndarray], None]
    source: Callable[[int], np.ndarray | None] | None
    local_port: int = field(default_factory=lambda: next(_ports))
    remote: tuple[str, int] | None = None
    closed: bool = False
    #: set by the call layer for a fax leg (``RtpEndpoint.on_audio_lost``)
    on_audio_lost: Callable[[np.ndarray, list[tuple[int, int]]], None] | None = None

    moved: bool = False

    def set_remote(self, host: str, port: int) -> None:
        self.remote = (host, port)

    def move_remote(self, host: str, port: int) -> None:
        self.remote = (host, port)
        self.moved = True

    async def close(self) -> Stats:
        self.closed = True
        return Stats()


@dataclass
class FakeUdptl:
    local_port: int = field(default_factory=lambda: next(_ports))
    remote: tuple[str, int] | None = None
    driver: FaxLeg | None = None
    sent: list[bytes] = field(default_factory=list)
    closed: bool = False

    def set_remote(self, host: str, port: int) -> None:
        self.remote = (host, port)

    def attach(self, driver: FaxLeg, initial: list[bytes]) -> None:
        self.driver = driver
        self.sent += initial

    def send(self, datagrams: list[bytes]) -> None:
        self.sent += datagrams

    async def close(self) -> Stats:
        self.closed = True
        return Stats()


class FakeSip:
    """Our UA and the PBX's, datagrams delivered in memory; events of ours go to the manager."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ua = UserAgent(UaSettings(host=OURS.host, ports={"udp": 5060}))
        self.pbx = UserAgent(UaSettings(host=PBX.host, ports={"udp": 5060}))
        self.manager: CallManager | None = None
        self.pbx_events: list[ev.Event] = []
        self.pbx_handler: Callable[[ev.Event], None] | None = None
        self._scheduled = False

    def now(self) -> float:
        return self.loop.time()

    def kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        for _ in range(100):
            moved = False
            now = self.now()
            for src, ua in ((OURS, self.ua), (PBX, self.pbx)):
                ua.advance(now)
                for data, dest in ua.datagrams_to_send():
                    moved = True
                    target = self.pbx if dest.host == PBX.host else self.ua
                    target.receive(data, src, now)
            for e in self.ua.events():
                moved = True
                assert self.manager is not None
                self.manager.on_sip_event(e)
            for e in self.pbx.events():
                moved = True
                self.pbx_events.append(e)
                if self.pbx_handler is not None:
                    self.pbx_handler(e)
            if not moved:
                return


@dataclass
class Rig:
    sip: FakeSip
    manager: CallManager
    sinks: list[MemorySink]
    media: list[FakeMedia]
    udptl: list[FakeUdptl]

    async def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)
        self.sip.kick()
        for _ in range(rounds):
            await asyncio.sleep(0)

    def pbx_events_of(self, kind: type) -> list[Any]:
        return [e for e in self.sip.pbx_events if isinstance(e, kind)]


@dataclass
class FakeRecording:
    samples: int = 0
    aborted: bool = False

    def write(self, pcm: Any) -> None:
        self.samples += len(pcm)

    def finish(self, reason: str) -> Any:
        raise AssertionError("a voicemail recording was kept")

    def abort(self) -> None:
        self.aborted = True


def voicemail_wiring(recordings: list[FakeRecording]) -> VoicemailWiring:
    def begin(*_: Any) -> FakeRecording:
        recordings.append(FakeRecording())
        return recordings[-1]

    return VoicemailWiring(
        settings=VoicemailSettings(),
        greetings=lambda mb: {"default": np.zeros(4000, np.int16)},  # 0.5 s, then the beep
        goodbye=None,
        begin=begin,
        lookup=lambda number: ("", {}),
        announce=lambda message, mailbox: None,
    )


def make_rig(tmp_path: Path, voicemail: VoicemailWiring | None = None, **fax: Any) -> Rig:
    config = Config(
        source="<test>",
        server=ServerSettings(data_dir=tmp_path),
        sip=SipSettings(),
        mailboxes=(
            Mailbox(number="200", owner="fax@example.com", service="fax"),
            Mailbox(number="100", owner="vm@example.com", service="voice"),
        ),
        fax=replace(FaxConfig(ident="+49 30 1234", hangup_delay=0.0), **fax),
    )
    sip = FakeSip()
    sinks: list[MemorySink] = []
    media: list[FakeMedia] = []
    udptl: list[FakeUdptl] = []

    def open_sink(**kw: Any) -> MemorySink:
        assert isinstance(kw["started_at"], datetime) and kw["called"] in ("200", "100")
        sinks.append(MemorySink())
        return sinks[-1]

    async def open_media(
        params: AudioParams,
        on_audio: Callable[[np.ndarray], None],
        on_digit: Callable[[str], None],
        source: Callable[[int], np.ndarray | None] | None = None,
    ) -> FakeMedia:
        media.append(FakeMedia(params, on_audio, source))
        return media[-1]

    async def open_udptl() -> FakeUdptl:
        udptl.append(FakeUdptl())
        return udptl[-1]

    wiring = FaxWiring(config=config.fax, open_sink=open_sink, udptl=open_udptl, offload=False)
    manager = CallManager(
        config,
        sip,  # type: ignore[arg-type]
        open_media,
        OURS.host,
        voicemail=voicemail,
        fax=wiring,
    )
    sip.manager = manager
    return Rig(sip, manager, sinks, media, udptl)


def audio_offer(port: int = 40000, version: int = 1) -> bytes:
    return make_audio_offer(
        codecs=["PCMA"], local_host=PBX.host, local_port=port, session_id=77, version=version
    ).serialize()


def t38_offer(port: int = 40100, version: int = 2, with_audio: bool = True) -> bytes:
    sd = new_description(PBX.host, 77, version)
    if with_audio:
        sd.media.append(MediaDescription("audio", 0, "RTP/AVP", ["8"]))
    attrs = t38_attributes(make_t38_offer())
    sd.media.append(MediaDescription("image", port, "UDPTL", ["t38"], attributes=attrs))
    return sd.serialize()


async def call(rig: Rig, number: str, sdp: bytes) -> str:
    call_id = rig.sip.pbx.invite(f"sip:{number}@{OURS.host}:5060", sdp, rig.sip.now())
    rig.sip.kick()
    await rig.settle()
    return call_id


def answered_sdp(rig: Rig) -> SessionDescription:
    (answered,) = rig.pbx_events_of(ev.CallAnswered)
    return SessionDescription.parse(answered.sdp)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def test_fax_number_receives_over_g711_and_hangs_up_after_dcn(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        call_id = await call(rig, "200", audio_offer())
        sd = answered_sdp(rig)
        assert sd.media[0].media == "audio" and sd.media[0].port == rig.media[0].local_port
        leg = rig.manager.legs[call_id]
        assert leg.fax is not None and leg.fax.transport == "g711" and leg.recording is None
        media = rig.media[0]
        assert media.source is not None
        sent = pages(1, 200)
        far = AudioFaxTerminal(sender(sent))
        for _ in range(60 * 50):
            out = media.source(160)
            far.receive(out if out is not None else np.zeros(160, np.int16))
            media.on_audio(far.transmit(160))
            if rig.pbx_events_of(ev.CallEnded):
                break
        assert far.result is not None and far.result.success
        rig.sip.kick()
        await rig.settle()
        # nobody hung up after DCN: we sent BYE
        (ended,) = rig.pbx_events_of(ev.CallEnded)
        assert ended.reason == "remote-bye"
        await asyncio.gather(*rig.manager._finishing)
        (sink,) = rig.sinks
        assert len(sink.pages) == 1 and np.array_equal(sink.pages[0][1], sent[0])
        (result,) = sink.finished
        assert result["success"] is True and result["transport"] == "g711"

    run(main)


def test_fax_to_a_voice_number_is_received_after_cng(tmp_path: Path) -> None:
    """A fax machine calls a voicemail number: its CNG ends the greeting, we answer as a fax."""

    async def main() -> None:
        recordings: list[FakeRecording] = []
        rig = make_rig(tmp_path, voicemail=voicemail_wiring(recordings))
        call_id = await call(rig, "100", audio_offer())
        leg = rig.manager.legs[call_id]
        media = rig.media[0]
        assert media.source is not None
        sent = pages(1, 150)
        far = AudioFaxTerminal(sender(sent))
        switched_at = None
        for i in range(60 * 50):
            out = media.source(160)
            far.receive(out if out is not None else np.zeros(160, np.int16))
            media.on_audio(far.transmit(160))
            if switched_at is None and leg.fax is not None:
                switched_at = i / 50
            if rig.pbx_events_of(ev.CallEnded):
                break
        assert switched_at is not None and switched_at < 1.0
        assert far.result is not None and far.result.success, far.result
        rig.sip.kick()
        await rig.settle()
        await asyncio.gather(*rig.manager._finishing)
        (sink,) = rig.sinks
        assert len(sink.pages) == 1 and np.array_equal(sink.pages[0][1], sent[0])
        assert sink.finished[0]["success"] is True

    run(main)


def test_reinvite_to_t38_then_session_refresh_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        call_id = await call(rig, "200", audio_offer())
        leg = rig.manager.legs[call_id]
        assert leg.fax is not None
        media = rig.media[0]
        assert media.source is not None
        for _ in range(10):  # some audio: CED has started
            media.source(160)
        responses: list[ev.ResponseReceived] = []
        rig.sip.pbx_handler = lambda e: responses.append(e) if isinstance(e, ev.ResponseReceived) else None
        offer = t38_offer()
        assert rig.sip.pbx.reinvite(call_id, offer, rig.sip.now()) is not None
        rig.sip.kick()
        await rig.settle()
        (resp,) = responses
        assert resp.response.status == 200
        sd = SessionDescription.parse(resp.response.body)
        assert [(m.media, m.port) for m in sd.media] == [("audio", 0), ("image", rig.udptl[0].local_port)]
        assert sd.media[1].attribute("T38FaxVersion") is not None
        assert sd.media[1].attribute("T38FaxRateManagement") == "transferredTCF"
        assert leg.fax.transport == "t38" and rig.udptl[0].remote == (PBX.host, 40100)
        assert rig.udptl[0].driver is leg.fax and rig.udptl[0].sent  # CED / DIS under way
        assert media.closed and leg.media is None
        link = leg.fax.link
        # a session refresh: the same offer again, the same answer, nothing else happens
        rig.sip.pbx.reinvite(call_id, offer, rig.sip.now())
        rig.sip.kick()
        await rig.settle()
        assert len(responses) == 2 and responses[1].response.status == 200
        assert responses[1].response.body == resp.response.body
        assert leg.fax.link is link and len(rig.udptl) == 1 and not rig.udptl[0].closed
        # a new T.38 address mid-fax: the stream moves, T.30 goes on
        rig.sip.pbx.reinvite(call_id, t38_offer(port=40102, version=3), rig.sip.now())
        rig.sip.kick()
        await rig.settle()
        assert len(responses) == 3 and responses[2].response.status == 200
        assert leg.fax.link is link and rig.udptl[0].remote == (PBX.host, 40102)
        # BYE mid-fax: the sink is finished with what it has (nothing yet)
        rig.sip.pbx.hangup(call_id, rig.sip.now())
        rig.sip.kick()
        await rig.settle()
        await asyncio.gather(*rig.manager._finishing)
        (sink,) = rig.sinks
        assert sink.finished and sink.finished[0]["transport"] == "t38" and sink.finished[0]["pages"] == 0
        assert rig.udptl[0].closed

    run(main)


@pytest.mark.parametrize("pbx_answer", [488, 200, None])
def test_our_reinvite_after_ced(tmp_path: Path, pbx_answer: int | None) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path, t38_reinvite="after_ced", t38_timeout=0.5)
        reinvites: list[ev.ReInvite] = []

        def pbx(e: ev.Event) -> None:
            if not isinstance(e, ev.ReInvite):
                return
            reinvites.append(e)
            if pbx_answer == 488:
                rig.sip.pbx.answer_reinvite(e.call_id, None, rig.sip.now(), 488, "Not Acceptable Here")
            elif pbx_answer == 200:
                offered = SessionDescription.parse(e.sdp)
                assert [(m.media, m.proto) for m in offered.media] == [("image", "udptl")]
                body = t38_offer(port=40200, with_audio=False)
                rig.sip.pbx.answer_reinvite(e.call_id, body, rig.sip.now())
            rig.sip.kick()  # None: the PBX never answers

        rig.sip.pbx_handler = pbx
        call_id = await call(rig, "200", audio_offer())
        leg = rig.manager.legs[call_id]
        media = rig.media[0]
        assert media.source is not None and leg.fax is not None
        for _ in range(int(3.3 * 50)):  # 0.2 s silence + 3 s CED, then DIS
            media.source(160)
        await rig.settle()
        assert len(reinvites) == 1
        if pbx_answer is None:
            await asyncio.sleep(0.6)
            await rig.settle()
        if pbx_answer == 200:
            assert leg.fax.transport == "t38" and rig.udptl[0].remote == (PBX.host, 40200)
            assert media.closed and rig.udptl[0].driver is leg.fax
        else:
            assert leg.fax.transport == "g711" and leg.t38_handle is None
            assert rig.udptl[0].closed and not media.closed and leg.udptl is None
            out = media.source(160)
            assert out is not None and np.any(out)  # DIS goes on over G.711
        rig.sip.pbx.hangup(call_id, rig.sip.now())
        rig.sip.kick()
        await rig.settle()
        await asyncio.gather(*rig.manager._finishing)

    run(main)


def test_initial_invite_with_audio_and_image_is_answered_with_t38(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        offer = SessionDescription.parse(audio_offer())
        image = SessionDescription.parse(t38_offer(port=40300)).media[1]
        offer.media.append(image)
        call_id = await call(rig, "200", offer.serialize())
        sd = answered_sdp(rig)
        assert [(m.media, m.port) for m in sd.media] == [("audio", 0), ("image", rig.udptl[0].local_port)]
        leg = rig.manager.legs[call_id]
        assert leg.fax is not None and leg.fax.transport == "t38" and not rig.media
        assert rig.udptl[0].remote == (PBX.host, 40300) and rig.udptl[0].sent

    run(main)


def test_voice_number_offered_audio_and_image_stays_voice(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        offer = SessionDescription.parse(audio_offer())
        offer.media.append(SessionDescription.parse(t38_offer()).media[1])
        call_id = await call(rig, "100", offer.serialize())
        sd = answered_sdp(rig)
        assert [(m.media, m.port != 0) for m in sd.media] == [("audio", True), ("image", False)]
        assert rig.manager.legs[call_id].fax is None

    run(main)


def test_cng_on_a_voice_number_switches_to_fax(tmp_path: Path) -> None:
    async def main() -> None:
        recordings: list[FakeRecording] = []
        rig = make_rig(tmp_path, voicemail=voicemail_wiring(recordings))
        call_id = await call(rig, "100", audio_offer())
        leg = rig.manager.legs[call_id]
        assert leg.cng is not None and leg.fax is None and leg.vm is not None
        media = rig.media[0]
        assert media.source is not None
        tone = cng(-15.0)
        # the greeting and beep play while the caller's machine sends CNG (0.5 s on, 3 s off)
        for _ in range(250):
            media.source(160)
            media.on_audio(tone.generate(160))
            if leg.fax is not None:
                break
        assert leg.fax is not None and leg.fax.transport == "g711" and leg.vm is None
        assert all(r.aborted for r in recordings)
        assert media.source is not None
        out = np.concatenate([media.source(160) for _ in range(50)])
        assert np.any(out)  # CED (after 0.2 s of silence)
        assert len(rig.sinks) == 1

    run(main)


def test_cng_detection_can_be_turned_off(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path, cng_detect=False)
        call_id = await call(rig, "100", audio_offer())
        assert rig.manager.legs[call_id].cng is None

    run(main)


def test_fax_options_in_the_configuration() -> None:
    cfg = parse_config(
        {"fax": {"t38": False, "t38_reinvite": "after_ced", "t38_timeout": 3.5, "ident": "+49 30 1234"}}
    )
    assert (cfg.fax.t38, cfg.fax.t38_reinvite, cfg.fax.t38_timeout) == (False, "after_ced", 3.5)
    assert (cfg.fax.ident, cfg.fax.ecm, cfg.fax.cng_detect, cfg.fax.hangup_delay) == (
        "+49 30 1234",
        True,
        True,
        2.0,
    )
    assert parse_config({}).fax == FaxConfig()
    for bad in (
        {"t38_reinvite": "always"},
        {"ident": "ACME"},
        {"ident": "1" * 21},
        {"t38_timeout": 0},
        {"x": 1},
    ):
        with pytest.raises(ConfigError, match=r"fax\."):
            parse_config({"fax": bad})


def test_lost_audio_of_a_fax_goes_to_the_modems_as_fillin(tmp_path: Path) -> None:
    async def main() -> None:
        recordings: list[FakeRecording] = []
        rig = make_rig(tmp_path, voicemail=voicemail_wiring(recordings))
        fax_call = await call(rig, "200", audio_offer())
        voice_call = await call(rig, "100", audio_offer(port=40002))
        fax_media, voice_media = rig.media
        fax = rig.manager.legs[fax_call].fax
        assert fax is not None and fax.audio is not None
        # voicemail keeps the plain on_audio path
        assert voice_media.on_audio_lost is None and rig.manager.legs[voice_call].fax is None
        assert fax_media.on_audio_lost is not None
        calls: list[tuple[str, int]] = []
        audio = fax.audio
        fillin, receive = audio.fillin, audio.receive

        def spy_fillin(n: int, now: float | None = None) -> None:
            calls.append(("fillin", n))
            fillin(n, now)

        def spy_receive(samples: np.ndarray, now: float | None = None) -> None:
            calls.append(("receive", len(samples)))
            receive(samples, now)

        audio.fillin = spy_fillin  # type: ignore[method-assign]
        audio.receive = spy_receive  # type: ignore[method-assign,assignment]
        fax_media.on_audio_lost(np.zeros(800, np.int16), [(320, 160)])
        assert calls == [("receive", 320), ("fillin", 160), ("receive", 320)]

    run(main)


@pytest.mark.parametrize("restore_answer", [200, 488])
def test_late_2xx_to_our_t38_reinvite_brings_the_peer_back_to_audio(
    tmp_path: Path, restore_answer: int
) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path, t38_reinvite="after_ced", t38_timeout=0.3)
        offers: list[SessionDescription] = []

        def answer(call_id: str, body: bytes | None, status: int) -> None:
            reason = "OK" if status == 200 else "Not Acceptable Here"
            rig.sip.pbx.answer_reinvite(call_id, body, rig.sip.now(), status, reason)
            rig.sip.kick()

        def pbx(e: ev.Event) -> None:
            if not isinstance(e, ev.ReInvite):
                return
            offers.append(SessionDescription.parse(e.sdp))
            if len(offers) == 1:  # our T.38 offer: taken, but only after our t38_timeout
                body = t38_offer(port=40200, with_audio=False)
                rig.sip.loop.call_later(0.5, answer, e.call_id, body, 200)
            elif restore_answer == 200:  # back to audio, from a new port
                body = audio_offer(port=40010, version=4)
                answer(e.call_id, body, 200)
            else:
                answer(e.call_id, None, restore_answer)

        rig.sip.pbx_handler = pbx
        call_id = await call(rig, "200", audio_offer())
        leg = rig.manager.legs[call_id]
        media = rig.media[0]
        assert media.source is not None and leg.fax is not None
        for _ in range(int(3.3 * 50)):  # 0.2 s silence + 3 s CED: our re-INVITE goes out
            media.source(160)
        await rig.settle()
        await asyncio.sleep(0.4)  # t38_timeout: we stay on G.711
        await rig.settle()
        assert leg.fax.transport == "g711" and leg.udptl is None and rig.udptl[0].closed
        await asyncio.sleep(0.3)  # the PBX's late 2xx: ACKed, and we offer our audio again
        await rig.settle()
        assert len(offers) == 2
        (audio,) = offers[1].media
        assert (audio.media, audio.port) == ("audio", media.local_port)
        assert offers[1].origin.session_version == str(leg.sdp_version)
        if restore_answer == 200:
            assert leg.state == "answered" and not rig.pbx_events_of(ev.CallEnded)
            assert media.remote == (PBX.host, 40010) and media.moved and not media.closed
            assert leg.fax.transport == "g711"
            out = media.source(160)
            assert out is not None and np.any(out)  # T.30 goes on over G.711
            rig.sip.pbx.hangup(call_id, rig.sip.now())
            rig.sip.kick()
            await rig.settle()
        else:  # the peer stays on T.38: out of step, we hang up
            assert rig.pbx_events_of(ev.CallEnded)
        await asyncio.gather(*rig.manager._finishing)
        assert not rig.manager._late_t38 and not rig.manager._audio_restores
        (sink,) = rig.sinks
        assert sink.finished and sink.finished[0]["transport"] == "g711"

    run(main)
