"""Call legs: answer incoming calls, bind their media, record them.

What it does
------------
:class:`CallManager` receives the SIP user agent's events.  For an incoming call
it picks the mailbox (:func:`ums.calls.router.route`), refuses what it must
(404 unknown number, 486 over the channel limit, 488 no common codec), opens a
media endpoint, rings for the configured delay, answers with an SDP answer and
records the caller's audio to ``<data_dir>/recordings/<stamp>-<number>-<id>.wav``
with a JSON record beside it.  Digits (RFC 4733 or SIP INFO) are logged and
kept.  A re-INVITE (hold / unhold / new address) is answered from the same
local port.  Calls longer than ``max_call_seconds`` are hung up.  :meth:`CallManager.send_fax`
places an outgoing fax call (:mod:`ums.calls.outgoing`) as one more leg of the same kind.

How it works
------------
All SIP decisions go through the user agent's call-control methods followed by
``sip.kick()``.  The media endpoint comes from a factory passed in by the
server, so this module does not depend on the media shell.  A recording is
written with small buffered writes as audio arrives and fsynced, then its JSON
record is written atomically (temp file, fsync, rename) before the call is
reported finished: "recording complete" means durable on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import wave
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ums.calls.fax import (
    FaxLeg,
    FaxReceptionSink,
    FaxSettings,
    FaxSinkFactory,
    StoredFax,
    inline_runner,
)
from ums.calls.router import Route, route
from ums.config import Config, FaxConfig, Mailbox
from ums.fax_t38.sdp import (
    T38Params,
    T38SdpError,
    T38Session,
    accept_t38_answer,
    answer_t38,
    make_t38_offer,
    parse_t38_attributes,
    t38_attributes,
)
from ums.log import kv
from ums.sip import events as ev
from ums.sip.message import Response
from ums.sip.sdp import (
    AudioParams,
    MediaDescription,
    SdpError,
    SessionDescription,
    answer_audio,
    is_udptl_image,
    new_description,
    parse_answer,
)
from ums.sip.service import SipService
from ums.softfax_g711.pool import ModemPool
from ums.softfax_g711.tones import Tone, ToneDetector, ToneSpec
from ums.voicemail.machine import (
    DigitReceived,
    HangupRequested,
    RecordingDiscarded,
    RecordingFinished,
    RecordingStarted,
    VoicemailSession,
    VoicemailSettings,
)
from ums.voicemail.prompts import select_greeting

if TYPE_CHECKING:
    from ums.calls.outgoing import FaxSendRequest, OutgoingFax
    from ums.outbound.jobs import Attempt

__all__ = ["CallManager", "FaxWiring", "MediaEndpoint", "MediaFactory", "UdptlEndpointLike", "UdptlFactory"]

log = logging.getLogger("ums.calls")


class MediaStats(Protocol):
    def log_fields(self) -> dict[str, int | float]: ...


class MediaEndpoint(Protocol):
    """What a call leg needs from an RTP endpoint (opened and bound by the factory)."""

    local_port: int

    def set_remote(self, host: str, port: int) -> None: ...

    def close(self) -> Awaitable[MediaStats]: ...


@runtime_checkable
class LossReportingMedia(Protocol):
    """An RTP endpoint that can say which received frames were lost (``RtpEndpoint`` can): a fax
    leg on the audio line sets ``on_audio_lost`` so that gaps reach the modems as fill-in."""

    on_audio_lost: Callable[[Any, list[tuple[int, int]]], None] | None


@runtime_checkable
class MovableMedia(Protocol):
    """An RTP endpoint that can follow a signalled move past its latched source (``RtpEndpoint``)."""

    def move_remote(self, host: str, port: int) -> None: ...


class MediaFactory(Protocol):
    def __call__(
        self,
        params: AudioParams,
        on_audio: Callable[[np.ndarray], None],
        on_digit: Callable[[str], None],
        source: Callable[[int], np.ndarray | None] | None = None,
    ) -> Awaitable[MediaEndpoint]: ...


class UdptlEndpointLike(Protocol):
    """What a T.38 leg needs from a UDPTL endpoint (``ums.fax_t38.service.UdptlEndpoint``)."""

    local_port: int

    def set_remote(self, host: str, port: int) -> None: ...

    def attach(self, driver: FaxLeg, initial: list[bytes]) -> None: ...

    def send(self, datagrams: list[bytes]) -> None: ...

    def close(self) -> Awaitable[MediaStats]: ...


#: opens and binds a UDPTL endpoint
UdptlFactory = Callable[[], Awaitable[UdptlEndpointLike]]


class StoredMessage(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def duration(self) -> float | None: ...


class VoiceRecordingSink(Protocol):
    """A message being recorded (``ums.voicemail.service.VoiceRecording``)."""

    samples: int

    def write(self, pcm: npt.NDArray[np.int16]) -> None: ...

    def finish(self, reason: str) -> StoredMessage: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class VoicemailWiring:
    """What voice mailboxes need; the server builds it (store, greetings, directory, announce)."""

    settings: VoicemailSettings
    #: greetings of a mailbox by kind ("default", "busy", "unavailable")
    greetings: Callable[[Mailbox], Mapping[str, np.ndarray]]
    goodbye: np.ndarray | None
    #: open a recording: (mailbox, caller number, caller name, meta) -> sink
    begin: Callable[[Mailbox, str, str, dict[str, Any]], VoiceRecordingSink]
    #: caller number -> (name, meta) from the directory
    lookup: Callable[[str], tuple[str, dict[str, Any]]]
    #: a message is durable and indexed: hand it to the pipeline and the lamps (event loop)
    announce: Callable[[StoredMessage, Mailbox], None]


@dataclass(frozen=True)
class FaxWiring:
    """What fax reception needs; the server builds it (sink, UDPTL sockets, announce)."""

    config: FaxConfig
    #: opens the sink of one incoming fax (keyword arguments, ``FaxSinkFactory.open``)
    open_sink: FaxSinkFactory
    #: opens a UDPTL endpoint (None: no T.38)
    udptl: UdptlFactory | None
    #: a fax is durable and indexed: hand it on (event loop); None when the sink announces itself
    announce: Callable[[StoredFax, Mailbox], None] | None = None
    #: run blocking sink calls in a thread (False: inline, for tests)
    offload: bool = True


class _Recording:
    """WAV (8 kHz mono 16-bit) written as audio arrives; synced and described when closed.

    The file is created with the first audio, so a call that never sends any leaves
    nothing behind (and costs no file system work).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self.samples = 0
        self.closed = False

    @property
    def started(self) -> bool:
        return self._file is not None

    def write(self, pcm: np.ndarray) -> None:
        if self.closed or pcm.size == 0:
            return
        if self._wav is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
            self._wav = wave.open(self._file, "wb")
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(8000)
        self._wav.writeframesraw(np.asarray(pcm, dtype="<i2").tobytes())
        self.samples += int(pcm.size)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._wav is None or self._file is None:
            return
        self._wav.close()  # rewrites the header sizes
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Leg:
    call_id: str
    route: Route
    offer: SessionDescription
    state: str = "setup"  # setup -> ringing -> answered -> ended
    params: AudioParams | None = None
    media: MediaEndpoint | None = None
    recording: _Recording | None = None
    digits: list[str] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    answered_at: float | None = None
    session_id: int = 0
    sdp_version: int = 1
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    setup_task: asyncio.Task[None] | None = None
    vm: VoicemailSession | None = None
    vm_rec: VoiceRecordingSink | None = None
    vm_task: asyncio.Task[None] | None = None
    #: caller samples given to the voicemail session, silence we inserted included
    rx_samples: int = 0
    #: the media endpoint's ``stream_starts`` when the caller's audio was last aligned
    rx_stream_starts: int | None = 0
    caller_name: str = ""
    caller_meta: dict[str, Any] = field(default_factory=dict)
    #: fax reception (a fax number, CNG heard, or a T.38 re-INVITE)
    fax: FaxLeg | None = None
    fax_number: bool = False
    cng: ToneDetector | None = None
    udptl: UdptlEndpointLike | None = None
    #: the initial offer is answered with T.38 (m=image)
    t38_initial: bool = False
    #: the last offer's media (to tell a session refresh) and our answer to it
    offer_sig: tuple[Any, ...] | None = None
    answer_sdp: bytes | None = None
    #: our own re-INVITE to T.38 in progress
    t38_handle: str | None = None
    t38_offer: T38Params | None = None
    t38_tried: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: called when the leg is closed (an outgoing call's result is complete then)
    on_finished: Callable[[], None] | None = None


_SAFE = re.compile(r"[^A-Za-z0-9]+")

#: Seconds received audio may trail the answer clock (the jitter buffer holds about 60 ms).
RX_ALIGN_SLACK = 0.06
#: A larger gap than this (seconds) between the caller's audio and the clock is filled with silence.
RX_ALIGN_THRESHOLD = 0.25


class CallManager:
    def __init__(
        self,
        config: Config,
        sip: SipService,
        media_factory: MediaFactory,
        host: str,
        voicemail: VoicemailWiring | None = None,
        fax: FaxWiring | None = None,
    ) -> None:
        self.config = config
        self.voicemail = voicemail
        self.fax = fax
        #: the receivers of every G.711 fax call, stepped together
        self.modem_pool = ModemPool()
        self.sip = sip
        self.media_factory = media_factory
        self.host = host
        self.legs: dict[str, _Leg] = {}
        self.recordings_dir = config.server.data_dir / "recordings"
        self._loop = asyncio.get_running_loop()
        self._session_counter = int(datetime.now(UTC).timestamp())
        self._finishing: set[asyncio.Task[None]] = set()
        #: handle of our re-INVITE -> call id
        self._reinvites: dict[str, str] = {}
        #: our T.38 re-INVITEs given up after ``t38_timeout``, still in their transaction
        self._late_t38: dict[str, str] = {}
        #: our re-INVITEs back to audio after a late 2xx to one of those
        self._audio_restores: dict[str, str] = {}
        #: outgoing fax calls by call id (until their leg is closed)
        self._outgoing: dict[str, OutgoingFax] = {}
        #: outgoing calls: our re-INVITE with the codec the far end took -> its call
        self._codec_swaps: dict[str, OutgoingFax] = {}

    # -- outgoing fax ----------------------------------------------------------------------------
    async def send_fax(self, req: FaxSendRequest) -> Attempt:
        """Dial ``req.dial`` and send the fax; returns how the try ended (``ums.calls.outgoing``).

        Cancelling the awaiting task hangs the call up.
        """
        from ums.calls.outgoing import OutgoingFax

        if self.fax is None:
            raise RuntimeError("fax is not configured")
        return await OutgoingFax(self, req).run()

    def cancel_fax(self, call_id_hint: str) -> bool:
        """Hang up the outgoing fax call of this job (``FaxSendRequest.call_id_hint``); its
        ``send_fax`` returns ``CANCELLED`` (or ``OK`` if every page was already confirmed).
        False when no such call is under way."""
        found = [o for o in self._outgoing.values() if call_id_hint and o.req.call_id_hint == call_id_hint]
        for outgoing in found:
            outgoing.cancel()
        return bool(found)

    # -- SIP events ------------------------------------------------------------------------------
    def on_sip_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.CallProgress | ev.CallAnswered | ev.CallFailed):
            outgoing = self._outgoing.get(event.call_id)
            if outgoing is not None:
                outgoing.sip_event(event)
                return
        if isinstance(event, ev.ResponseReceived | ev.RequestFailed) and event.handle in self._codec_swaps:
            self._codec_swaps.pop(event.handle).reinvite_answered(event.handle, event)
            return
        if isinstance(event, ev.IncomingCall):
            self._incoming(event)
        elif isinstance(event, ev.CallEstablished):
            log.debug(kv("call.established", call_id=event.call_id))
        elif isinstance(event, ev.CallEnded):
            self._ended(event.call_id, event.reason)
        elif isinstance(event, ev.ReInvite):
            self._reinvite(event)
        elif isinstance(event, ev.DtmfInfo):
            self._digit(event.call_id, event.digit, "info")
        elif isinstance(event, ev.CallFailed):
            log.info(kv("call.failed", call_id=event.call_id, status=event.status, reason=event.reason))
        elif isinstance(event, ev.ResponseReceived) and event.handle in self._reinvites:
            self._t38_answered(self._reinvites.pop(event.handle), event.handle, event.response)
        elif isinstance(event, ev.RequestFailed) and event.handle in self._reinvites:
            self._t38_answered(self._reinvites.pop(event.handle), event.handle, None)
        elif isinstance(event, ev.ResponseReceived) and event.handle in self._late_t38:
            self._t38_late_answer(self._late_t38.pop(event.handle), event.response)
        elif isinstance(event, ev.RequestFailed) and event.handle in self._late_t38:
            self._late_t38.pop(event.handle)
        elif isinstance(event, ev.ResponseReceived) and event.handle in self._audio_restores:
            self._audio_restored(self._audio_restores.pop(event.handle), event.response)
        elif isinstance(event, ev.RequestFailed) and event.handle in self._audio_restores:
            self._audio_restored(self._audio_restores.pop(event.handle), None)

    def _reject(self, call_id: str, status: int, reason: str) -> None:
        self.sip.ua.reject(call_id, status, reason, self.sip.now())
        self.sip.kick()

    def _incoming(self, event: ev.IncomingCall) -> None:
        request = event.request
        call_id = event.call_id
        rt = route(request, self.config)
        log.info(
            kv(
                "call.incoming",
                call_id=call_id,
                number=rt.number,
                caller=rt.caller.number or rt.caller.uri,
                caller_name=rt.caller.name or None,
                via=rt.matched_by,
                diversion_reason=rt.reason or None,
                source=f"{event.source.transport}:{event.source.host}:{event.source.port}",
            )
        )
        if rt.mailbox is None:
            log.info(
                kv("call.rejected", call_id=call_id, status=404, reason="unknown number", number=rt.number)
            )
            self._reject(call_id, 404, "Not Found")
            return
        active = len(self.legs)  # ended legs leave the table at once
        if active >= self.config.sip.max_channels:
            log.warning(
                kv("call.rejected", call_id=call_id, status=486, reason="channel limit", active=active)
            )
            self._reject(call_id, 486, "Busy Here")
            return
        if not request.body:
            log.info(kv("call.rejected", call_id=call_id, status=488, reason="no SDP offer"))
            self._reject(call_id, 488, "Not Acceptable Here")
            return
        try:
            offer = SessionDescription.parse(request.body)
        except SdpError as exc:
            log.info(kv("call.rejected", call_id=call_id, status=400, reason=f"bad SDP: {exc}"))
            self._reject(call_id, 400, "Bad SDP")
            return
        self._session_counter += 1
        probe = answer_audio(
            offer, codecs=self.config.sip.codecs, local_host=self.host, local_port=9, session_id=1
        )
        fax_number = self.fax is not None and rt.mailbox.service == "fax"
        t38_initial = fax_number and self._t38_answer(offer) is not None
        if probe is None and not t38_initial:
            log.info(kv("call.rejected", call_id=call_id, status=488, reason="no common codec"))
            self._reject(call_id, 488, "Not Acceptable Here")
            return
        leg = _Leg(
            call_id=call_id,
            route=rt,
            offer=offer,
            session_id=self._session_counter,
            params=probe[1] if probe is not None else None,
            fax_number=fax_number,
            t38_initial=t38_initial,
        )
        if self.fax is not None and rt.mailbox.service in ("fax", "both"):
            leg.caller_name = (
                self.voicemail.lookup(rt.caller.number)[0]
                if (self.voicemail is not None and rt.caller.number)
                else ""
            )
            leg.caller_name = leg.caller_name or rt.caller.name
        if self.voicemail is not None and rt.mailbox.service in ("voice", "both"):
            vmw = self.voicemail
            greeting = select_greeting(rt.reason, vmw.greetings(rt.mailbox))
            leg.vm = VoicemailSession(greeting, vmw.settings, goodbye=vmw.goodbye)
            leg.caller_name, leg.caller_meta = vmw.lookup(rt.caller.number) if rt.caller.number else ("", {})
            if not leg.caller_name:
                leg.caller_name = rt.caller.name
        if self.fax is not None and self.fax.config.cng_detect and rt.mailbox.service in ("voice", "both"):
            leg.cng = ToneDetector([ToneSpec.cng()])
        self.legs[call_id] = leg
        leg.setup_task = self._loop.create_task(self._setup(leg))

    async def _setup(self, leg: _Leg) -> None:
        try:
            if leg.t38_initial:
                assert self.fax is not None and self.fax.udptl is not None
                leg.udptl = await self.fax.udptl()
            else:
                assert leg.params is not None
                leg.media = await self.media_factory(
                    leg.params,
                    lambda pcm: self._audio(leg, pcm),
                    lambda digit: self._digit(leg.call_id, digit, "rfc4733"),
                    (lambda n: self._tx(leg, n))
                    if leg.vm is not None or leg.fax_number or leg.cng is not None
                    else None,
                )
        except OSError as exc:
            log.error(kv("call.media_failed", call_id=leg.call_id, reason=exc))
            leg.state = "ended"
            self.legs.pop(leg.call_id, None)
            self._reject(leg.call_id, 503, "Service Unavailable")
            return
        if leg.state == "ended":  # cancelled while the socket was being opened
            if leg.media is not None:
                await leg.media.close()
            if leg.udptl is not None:
                await leg.udptl.close()
            return
        delay = self.config.sip.ring_delay
        if delay > 0:
            leg.state = "ringing"
            self.sip.ua.ring(leg.call_id)
            self.sip.kick()
            await asyncio.sleep(delay)
            if leg.state == "ended":
                return
        self._answer(leg)

    def _answer(self, leg: _Leg) -> None:
        if leg.t38_initial:
            self._answer_t38_initial(leg)
            return
        assert leg.media is not None
        result = answer_audio(
            leg.offer,
            codecs=self.config.sip.codecs,
            local_host=self.host,
            local_port=leg.media.local_port,
            session_id=leg.session_id,
        )
        if result is None:  # cannot happen: the probe succeeded on the same offer
            self._reject(leg.call_id, 488, "Not Acceptable Here")
            return
        answer, params = result
        leg.params = params
        leg.media.set_remote(params.remote_host, params.remote_port)
        stamp = leg.started.strftime("%Y%m%d-%H%M%S")
        number = _SAFE.sub("_", leg.route.number)
        name = f"{stamp}-{number}-{secrets.token_hex(4)}-{_SAFE.sub('', leg.call_id)[:12]}.wav"
        if leg.fax_number:
            if not self._start_fax(leg, "fax number"):
                self._reject(leg.call_id, 503, "Service Unavailable")
                return
        elif leg.vm is None:
            leg.recording = _Recording(self.recordings_dir / name)
        leg.state = "answered"
        leg.answered_at = self._loop.time()
        leg.offer_sig = _media_signature(leg.offer)
        leg.answer_sdp = answer.serialize()
        self.sip.ua.answer(leg.call_id, leg.answer_sdp, self.sip.now())
        self.sip.kick()
        leg.timers.append(
            self._loop.call_later(self.config.sip.max_call_seconds, self._max_duration, leg.call_id)
        )
        log.info(
            kv(
                "call.answered",
                call_id=leg.call_id,
                number=leg.route.number,
                owner=leg.route.mailbox.owner if leg.route.mailbox else None,
                codec=params.codec,
                remote=f"{params.remote_host}:{params.remote_port}",
                local_port=leg.media.local_port,
            )
        )

    def _max_duration(self, call_id: str) -> None:
        leg = self.legs.get(call_id)
        if leg is None or leg.state != "answered":
            return
        log.info(kv("call.hangup", call_id=call_id, reason="max duration"))
        self.sip.ua.hangup(call_id, self.sip.now())
        self.sip.kick()

    def _audio(self, leg: _Leg, pcm: np.ndarray) -> None:
        if leg.fax is not None:
            leg.fax.rx_audio(pcm)
            return
        if leg.cng is not None and leg.state == "answered":
            if any(e.tone is Tone.CNG and e.on for e in leg.cng.receive(pcm)):
                self._cng_heard(leg)
                return
        if leg.vm is not None:
            # "ended" after the answer: the audio the endpoint hands over while it closes (what
            # the jitter buffer and the socket still held at the BYE) is the end of the message
            if leg.state == "answered" or (leg.state == "ended" and leg.answered_at is not None):
                starts = getattr(leg.media, "stream_starts", None)
                if starts is None or starts != leg.rx_stream_starts:
                    # the caller's stream (re)started: place it on the answer timeline.  Within one
                    # stream the RTP timestamps keep it there, also when packets come in late.
                    leg.rx_stream_starts = starts
                    self._vm_align(leg, len(pcm))
                leg.vm.rx(pcm)
                leg.rx_samples += len(pcm)
                self._vm_drain(leg)
        elif leg.recording is not None:
            leg.recording.write(pcm)

    # -- voicemail legs ------------------------------------------------------------------------------
    def _vm_align(self, leg: _Leg, incoming: int) -> None:
        """Keep the caller's audio on the answer timeline the session counts in.

        The session takes received sample *k* as the caller's audio at *k* / 8000 s after the
        answer.  A phone that sends nothing until it has heard the beep (silence suppression),
        or restarts its stream after a pause, would otherwise shift everything after it earlier;
        so when a stream starts and the caller's audio so far ends before ``now - answer -
        jitter allowance``, the missing stretch is given to the session as silence first.
        (Only at a stream start: within a stream the jitter buffer fills gaps from the RTP
        timestamps, and packets that are merely late — a loaded sender or server — must not
        be taken for a pause.)
        """
        assert leg.vm is not None and leg.answered_at is not None
        elapsed = int((self._loop.time() - leg.answered_at - RX_ALIGN_SLACK) * 8000)
        gap = elapsed - (leg.rx_samples + incoming)
        if gap > RX_ALIGN_THRESHOLD * 8000:
            leg.vm.rx(np.zeros(gap, dtype=np.int16))
            leg.rx_samples += gap
            log.debug(kv("voicemail.rx_gap", call_id=leg.call_id, seconds=gap / 8000))

    def _vm_tx(self, leg: _Leg, n: int) -> np.ndarray | None:
        if leg.vm is None or leg.state != "answered":
            return None
        pcm = leg.vm.tx_active(n)  # None while nothing plays: the endpoint sends encoded silence
        if leg.vm.has_output:
            self._vm_drain(leg)
        return pcm

    def _vm_drain(self, leg: _Leg) -> None:
        """Move recorded audio to the store and act on the session's events."""
        vm = leg.vm
        assert vm is not None and self.voicemail is not None
        chunk = vm.take_recorded()
        if chunk.size:
            if leg.vm_rec is None:  # the first audio that will be kept: open the message
                mailbox = leg.route.mailbox
                assert mailbox is not None
                meta = dict(leg.caller_meta)
                if leg.route.reason:
                    meta["diversion_reason"] = leg.route.reason
                meta["call_id"] = leg.call_id
                leg.vm_rec = self.voicemail.begin(mailbox, leg.route.caller.number, leg.caller_name, meta)
            leg.vm_rec.write(chunk)
        for event in vm.events():
            if isinstance(event, RecordingFinished):
                leg.vm_task = self._loop.create_task(self._vm_store(leg, event.reason))
            elif isinstance(event, RecordingDiscarded):
                if leg.vm_rec is not None:
                    leg.vm_rec.abort()
                    leg.vm_rec = None
                log.info(
                    kv(
                        "voicemail.discarded",
                        call_id=leg.call_id,
                        number=leg.route.number,
                        reason=event.reason,
                    )
                )
            elif isinstance(event, HangupRequested):
                if leg.state == "answered":
                    log.info(kv("call.hangup", call_id=leg.call_id, reason=event.reason))
                    self.sip.ua.hangup(leg.call_id, self.sip.now())
                    self.sip.kick()
            elif isinstance(event, DigitReceived):
                log.debug(kv("voicemail.digit", call_id=leg.call_id, digit=event.digit, action=event.action))
            elif isinstance(event, RecordingStarted):
                log.debug(kv("voicemail.recording", call_id=leg.call_id))

    async def _vm_store(self, leg: _Leg, reason: str) -> None:
        """The recording ended: make it durable (in a thread), then announce the message."""
        rec = leg.vm_rec
        assert self.voicemail is not None
        mailbox = leg.route.mailbox
        if rec is None or mailbox is None:  # nothing was kept (cannot happen for a finished recording)
            log.info(kv("voicemail.discarded", call_id=leg.call_id, number=leg.route.number, reason="empty"))
            return
        try:
            message = await asyncio.to_thread(rec.finish, reason)
        except Exception:
            log.exception(kv("voicemail.store_failed", call_id=leg.call_id))
            return
        log.info(
            kv(
                "voicemail.recorded",
                id=message.id,
                call_id=leg.call_id,
                number=leg.route.number,
                caller=leg.route.caller.number or None,
                caller_name=leg.caller_name or None,
                duration=message.duration,
                reason=reason,
            )
        )
        self.voicemail.announce(message, mailbox)

    def _digit(self, call_id: str, digit: str, how: str) -> None:
        leg = self.legs.get(call_id)
        if leg is None:
            return
        leg.digits.append(digit)
        log.info(kv("call.dtmf", call_id=call_id, digit=digit, method=how))
        if leg.vm is not None and leg.state == "answered":
            leg.vm.digit(digit)
            self._vm_drain(leg)

    def _reinvite(self, event: ev.ReInvite) -> None:
        leg = self.legs.get(event.call_id)
        now = self.sip.now()
        if leg is None or (leg.media is None and leg.udptl is None):
            self.sip.ua.answer_reinvite(event.call_id, None, now, status=488, reason="Not Acceptable Here")
            self.sip.kick()
            return
        try:
            offer = SessionDescription.parse(event.sdp)
        except SdpError:
            offer = None
        if offer is not None and leg.answer_sdp is not None and _media_signature(offer) == leg.offer_sig:
            # a session refresh (RFC 4028) or a repeated offer: nothing changes, same answer
            self.sip.ua.answer_reinvite(event.call_id, leg.answer_sdp, now)
            self.sip.kick()
            log.info(kv("call.reinvite", call_id=event.call_id, change="none"))
            return
        if offer is not None and self._t38_wanted(leg) and self._t38_answer(offer) is not None:
            self._spawn(leg, self._accept_t38(leg, offer))
            return
        leg.sdp_version += 1
        result = (
            answer_audio(
                offer,
                codecs=self.config.sip.codecs,
                local_host=self.host,
                local_port=leg.media.local_port,
                session_id=leg.session_id,
                version=leg.sdp_version,
            )
            if offer is not None and leg.media is not None
            else None
        )
        if result is None:
            self.sip.ua.answer_reinvite(event.call_id, None, now, status=488, reason="Not Acceptable Here")
            self.sip.kick()
            return
        answer, params = result
        assert leg.media is not None and offer is not None
        if params.remote_port and params.remote_host not in ("0.0.0.0", ""):
            leg.media.set_remote(params.remote_host, params.remote_port)
        leg.params = params
        leg.offer_sig = _media_signature(offer)
        leg.answer_sdp = answer.serialize()
        self.sip.ua.answer_reinvite(event.call_id, leg.answer_sdp, now)
        self.sip.kick()
        log.info(kv("call.reinvite", call_id=event.call_id, direction=params.direction, codec=params.codec))

    def _ended(self, call_id: str, reason: str) -> None:
        leg = self.legs.pop(call_id, None)
        if leg is None:
            return
        previous = leg.state
        leg.state = "ended"
        for timer in leg.timers:
            timer.cancel()
        task = self._loop.create_task(self._finish(leg, previous, reason))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, leg: _Leg, previous: str, reason: str) -> None:
        """Close the media (which flushes the last audio), then make the recording durable."""
        try:
            await self._finish_leg(leg, previous, reason)
        finally:
            if leg.on_finished is not None:
                leg.on_finished()

    async def _finish_leg(self, leg: _Leg, previous: str, reason: str) -> None:
        duration = 0.0 if leg.answered_at is None else self._loop.time() - leg.answered_at
        stats: dict[str, int | float] = {}
        if leg.t38_handle is not None:
            self._reinvites.pop(leg.t38_handle, None)
        for pending in (self._late_t38, self._audio_restores):
            for handle in [h for h, c in pending.items() if c == leg.call_id]:
                del pending[handle]
        for task in list(leg.tasks):
            task.cancel()
        if leg.media is not None:
            stats = (await leg.media.close()).log_fields()  # delivers the last buffered audio
        if leg.udptl is not None:
            stats.update((await leg.udptl.close()).log_fields())
        if leg.fax is not None:
            await self._fax_finish(leg, reason)
        if leg.vm is not None:
            if previous == "answered":
                leg.vm.hangup()
                self._vm_drain(leg)
            elif leg.vm_rec is not None:
                leg.vm_rec.abort()
            if leg.vm_task is not None:
                await leg.vm_task
        fields: dict[str, Any] = {"call_id": leg.call_id, "number": leg.route.number, "reason": reason}
        if previous == "answered" and leg.recording is not None and leg.recording.started:
            # closing means fsync (file, sidecar, directory): keep it off the event loop
            await asyncio.to_thread(self._finish_recording, leg, reason, duration)
            fields["duration"] = round(duration, 3)
            fields["digits"] = "".join(leg.digits) or None
            fields["recording"] = str(leg.recording.path)
        fields.update(stats)
        log.info(kv("call.ended", **fields))

    def _finish_recording(self, leg: _Leg, reason: str, duration: float) -> None:
        assert leg.recording is not None
        rec = leg.recording
        rec.close()
        mailbox = leg.route.mailbox
        record = {
            "call_id": leg.call_id,
            "number": leg.route.number,
            "owner": mailbox.owner if mailbox else "",
            "service": mailbox.service if mailbox else "",
            "caller": leg.route.caller.number,
            "caller_name": leg.route.caller.name,
            "caller_uri": leg.route.caller.uri,
            "matched_by": leg.route.matched_by,
            "diversion_reason": leg.route.reason,
            "codec": leg.params.codec if leg.params else "",
            "digits": "".join(leg.digits),
            "duration": round(rec.samples / 8000.0, 3),
            "call_duration": round(duration, 3),
            "end_reason": reason,
            "started": leg.started.isoformat(),
            "ended": datetime.now(UTC).isoformat(),
            "wav": rec.path.name,
        }
        _write_json_atomic(rec.path.with_suffix(".json"), record)
        log.info(kv("call.recording", call_id=leg.call_id, path=str(rec.path), seconds=record["duration"]))

    # -- fax legs ------------------------------------------------------------------------------------
    def _tx(self, leg: _Leg, n: int) -> np.ndarray | None:
        """What the media endpoint sends: the fax modems, else the voicemail prompts."""
        if leg.fax is not None:
            return leg.fax.tx_audio(n) if leg.state == "answered" else None
        return self._vm_tx(leg, n)

    def _spawn(self, leg: _Leg, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        leg.tasks.add(task)
        task.add_done_callback(leg.tasks.discard)

    def _fax_settings(self) -> FaxSettings:
        assert self.fax is not None
        cfg = self.fax.config
        return FaxSettings(ident=cfg.ident, ecm=cfg.ecm, hangup_delay=cfg.hangup_delay)

    def _runner(
        self, job: Callable[[], object], done: Callable[[object, BaseException | None], None]
    ) -> None:
        future = self._loop.run_in_executor(None, job)

        def finished(f: asyncio.Future[object]) -> None:
            if f.cancelled():
                done(None, asyncio.CancelledError())
            elif f.exception() is not None:
                done(None, f.exception())
            else:
                done(f.result(), None)

        future.add_done_callback(finished)

    def _new_fax_leg(self, leg: _Leg, why: str) -> FaxLeg | None:
        """Open the sink and the fax leg (no transport started yet); None if the sink fails."""
        assert self.fax is not None
        mailbox = leg.route.mailbox
        assert mailbox is not None
        try:
            sink: FaxReceptionSink = self.fax.open_sink(
                mailbox=mailbox,
                caller=leg.route.caller.number,
                caller_name=leg.caller_name or leg.route.caller.name or None,
                called=leg.route.number,
                call_id=leg.call_id,
                started_at=leg.started,
            )
        except Exception:
            log.exception(kv("fax.sink_failed", call_id=leg.call_id))
            return None
        log.info(kv("fax.call", call_id=leg.call_id, number=leg.route.number, why=why))
        fax = FaxLeg(
            self._fax_settings(),
            sink,
            call_id=leg.call_id,
            clock=self._loop.time,
            on_hangup=lambda reason: self._fax_hangup(leg, reason),
            on_ced_done=lambda: self._ced_done(leg),
            runner=self._runner if self.fax.offload else inline_runner,
            modem_pool=self.modem_pool,
        )
        leg.fax = fax
        leg.cng = None
        return fax

    def _start_fax(self, leg: _Leg, why: str) -> bool:
        """Fax reception on the audio line (answering: CED, then DIS)."""
        fax = self._new_fax_leg(leg, why)
        if fax is None:
            return False
        fax.start_audio()
        if isinstance(leg.media, LossReportingMedia):
            # lost packets reach the modems as fill-in, not as the jitter buffer's silence
            leg.media.on_audio_lost = fax.rx_audio
        return True

    def _cng_heard(self, leg: _Leg) -> None:
        """CNG on a voice number: the voicemail session gives way to fax reception."""
        log.info(kv("fax.cng_detected", call_id=leg.call_id, number=leg.route.number))
        self._drop_voicemail(leg)
        if not self._start_fax(leg, "cng"):
            self._fax_hangup(leg, "fax sink failed")

    def _drop_voicemail(self, leg: _Leg) -> None:
        leg.cng = None
        if leg.vm_rec is not None:
            leg.vm_rec.abort()
            leg.vm_rec = None
        leg.vm = None

    def _fax_hangup(self, leg: _Leg, reason: str) -> None:
        if leg.state != "answered":
            return
        log.info(kv("call.hangup", call_id=leg.call_id, reason=reason))
        self.sip.ua.hangup(leg.call_id, self.sip.now())
        self.sip.kick()

    async def _fax_finish(self, leg: _Leg, reason: str) -> None:
        """The call is over: finish the sink (durable), then announce the fax."""
        fax = leg.fax
        assert fax is not None and self.fax is not None
        fax.hangup()
        await fax.wait_idle()
        try:
            if self.fax.offload:
                message = await asyncio.to_thread(fax.close, reason)
            else:
                message = fax.close(reason)
        except Exception:
            log.exception(kv("fax.store_failed", call_id=leg.call_id))
            return
        outcome = fax.outcome(reason)
        log.info(
            kv(
                "fax.call_done",
                call_id=leg.call_id,
                number=leg.route.number,
                id=message.id if message is not None else None,
                pages=outcome["pages"],
                success=outcome["success"],
                transport=outcome["transport"],
                reason=outcome["reason"],
            )
        )
        mailbox = leg.route.mailbox
        if message is not None and mailbox is not None and self.fax.announce is not None:
            self.fax.announce(message, mailbox)

    # -- T.38 ----------------------------------------------------------------------------------------
    def _t38_wanted(self, leg: _Leg) -> bool:
        """A T.38 offer for this leg is answered with T.38."""
        if self.fax is None or not self.fax.config.t38 or self.fax.udptl is None:
            return False
        if leg.state != "answered" or leg.t38_handle is not None:
            return False
        return leg.fax is not None or leg.vm is not None or leg.fax_number

    def _t38_answer(self, offer: SessionDescription) -> tuple[MediaDescription, T38Params, T38Session] | None:
        """The offer's T.38 stream and our answer to it (None: none we can take)."""
        if self.fax is None or not self.fax.config.t38 or self.fax.udptl is None:
            return None
        for md in offer.media:
            if not is_udptl_image(md):
                continue
            try:
                answered = answer_t38(parse_t38_attributes(md.attributes))
            except T38SdpError:
                return None
            if answered is None or not (md.connection or offer.connection):
                return None
            return md, answered[0], answered[1]
        return None

    def _t38_sdp(
        self, leg: _Leg, offer: SessionDescription, chosen: MediaDescription, params: T38Params
    ) -> bytes:
        assert leg.udptl is not None
        sd = new_description(self.host, leg.session_id, leg.sdp_version)
        for md in offer.media:
            if md is chosen:
                attrs = t38_attributes(params)
                sd.media.append(
                    MediaDescription("image", leg.udptl.local_port, md.proto, ["t38"], attributes=attrs)
                )
            else:  # RFC 3264 §6: the other streams are refused with port 0
                sd.media.append(MediaDescription(md.media, 0, md.proto, list(md.formats) or ["0"]))
        return sd.serialize()

    def _switch_to_t38(self, leg: _Leg, session: T38Session, host: str, port: int) -> None:
        """Fax reception moves to UDPTL (a fresh T.30 engine); the RTP endpoint is closed."""
        assert leg.udptl is not None
        if leg.fax is None:
            if leg.vm is not None:
                self._drop_voicemail(leg)
            if self._new_fax_leg(leg, "t38") is None:
                self._fax_hangup(leg, "fax sink failed")
                return
        assert leg.fax is not None
        leg.udptl.set_remote(host, port)
        first = leg.fax.start_t38(session, leg.udptl.send)
        leg.udptl.attach(leg.fax, first)
        media, leg.media = leg.media, None
        if media is not None:
            self._spawn(leg, _close_quietly(media))

    def _answer_t38_initial(self, leg: _Leg) -> None:
        found = self._t38_answer(leg.offer)
        assert found is not None and leg.udptl is not None
        md, params, session = found
        sdp = self._t38_sdp(leg, leg.offer, md, params)
        if self._new_fax_leg(leg, "t38 offer") is None:
            self._reject(leg.call_id, 503, "Service Unavailable")
            return
        leg.state = "answered"
        leg.answered_at = self._loop.time()
        leg.offer_sig = _media_signature(leg.offer)
        leg.answer_sdp = sdp
        self.sip.ua.answer(leg.call_id, sdp, self.sip.now())
        self.sip.kick()
        host = md.connection or leg.offer.connection or ""
        self._switch_to_t38(leg, session, host, md.port)
        leg.timers.append(
            self._loop.call_later(self.config.sip.max_call_seconds, self._max_duration, leg.call_id)
        )
        log.info(
            kv(
                "call.answered",
                call_id=leg.call_id,
                number=leg.route.number,
                owner=leg.route.mailbox.owner if leg.route.mailbox else None,
                codec="t38",
                remote=f"{host}:{md.port}",
                local_port=leg.udptl.local_port,
            )
        )

    async def _accept_t38(self, leg: _Leg, offer: SessionDescription) -> None:
        """Answer a re-INVITE to T.38 (the PBX or gateway heard CNG/CED, or a fax call moves over)."""
        assert self.fax is not None and self.fax.udptl is not None
        found = self._t38_answer(offer)
        assert found is not None
        md, params, session = found
        if leg.udptl is None:
            try:
                leg.udptl = await self.fax.udptl()
            except OSError as exc:
                log.error(kv("fax.udptl_failed", call_id=leg.call_id, reason=exc))
                self.sip.ua.answer_reinvite(leg.call_id, None, self.sip.now(), 503, "Service Unavailable")
                self.sip.kick()
                return
        if leg.state != "answered":
            return
        leg.sdp_version += 1
        sdp = self._t38_sdp(leg, offer, md, params)
        leg.offer_sig = _media_signature(offer)
        leg.answer_sdp = sdp
        self.sip.ua.answer_reinvite(leg.call_id, sdp, self.sip.now())
        self.sip.kick()
        host = md.connection or offer.connection or ""
        if leg.fax is not None and leg.fax.transport == "t38":
            # already on T.38 (a new address, or new attributes): the fax goes on where it is
            leg.udptl.set_remote(host, md.port)
            log.info(
                kv("call.reinvite", call_id=leg.call_id, change="t38-update", remote=f"{host}:{md.port}")
            )
            return
        log.info(kv("call.reinvite", call_id=leg.call_id, change="t38", remote=f"{host}:{md.port}"))
        self._switch_to_t38(leg, session, host, md.port)

    def _ced_done(self, leg: _Leg) -> None:
        """CED has been sent on G.711: ask for T.38 when configured to."""
        fax = self.fax
        if fax is None or fax.config.t38_reinvite != "after_ced" or not self._t38_wanted(leg):
            return
        if leg.t38_tried or leg.udptl is not None:
            return
        leg.t38_tried = True
        self._spawn(leg, self._offer_t38(leg))

    async def _offer_t38(self, leg: _Leg) -> None:
        assert self.fax is not None and self.fax.udptl is not None
        try:
            udptl = await self.fax.udptl()
        except OSError as exc:
            log.error(kv("fax.udptl_failed", call_id=leg.call_id, reason=exc))
            return
        if leg.state != "answered" or leg.fax is None or leg.fax.finished:
            await udptl.close()
            return
        leg.udptl = udptl
        params = make_t38_offer()
        leg.sdp_version += 1
        sd = new_description(self.host, leg.session_id, leg.sdp_version)
        attrs = t38_attributes(params)
        sd.media.append(MediaDescription("image", udptl.local_port, "udptl", ["t38"], attributes=attrs))
        handle = self.sip.ua.reinvite(leg.call_id, sd.serialize(), self.sip.now())
        self.sip.kick()
        if handle is None:
            leg.udptl = None
            await udptl.close()
            return
        leg.t38_handle = handle
        leg.t38_offer = params
        self._reinvites[handle] = leg.call_id
        log.info(kv("fax.t38_reinvite", call_id=leg.call_id, local_port=udptl.local_port))
        assert self.fax is not None
        leg.timers.append(self._loop.call_later(self.fax.config.t38_timeout, self._t38_timeout, leg, handle))

    def _t38_timeout(self, leg: _Leg, handle: str) -> None:
        if leg.t38_handle != handle:
            return
        if self._reinvites.pop(handle, None) is not None:
            self._late_t38[handle] = leg.call_id  # its transaction goes on: a 2xx may still come
        self._t38_fallback(leg, "timeout")

    def _t38_late_answer(self, call_id: str, response: Response) -> None:
        """The final response to a T.38 re-INVITE we gave up on (``t38_timeout``).

        The user agent has ACKed a 2xx, so the peer has moved to T.38 while we stayed on G.711
        with the UDPTL port closed.  We offer our audio stream again (the last audio SDP we gave,
        same RTP port and codec, new version) so that both ends are back on G.711 where our T.30
        goes on; if the peer refuses it, the call is hung up (the pages stored so far are kept).
        Any other final response changed nothing.
        """
        leg = self.legs.get(call_id)
        if leg is None or not 200 <= response.status < 300:
            return
        log.info(kv("fax.t38_late_answer", call_id=call_id, status=response.status))
        if leg.state != "answered":
            return
        if leg.media is None or leg.answer_sdp is None or leg.params is None:
            self._fax_hangup(leg, "t38 late answer")
            return
        try:
            sd = SessionDescription.parse(leg.answer_sdp)
        except SdpError:
            self._fax_hangup(leg, "t38 late answer")
            return
        leg.sdp_version += 1
        sd.origin = replace(sd.origin, session_version=str(leg.sdp_version))
        body = sd.serialize()
        handle = self.sip.ua.reinvite(call_id, body, self.sip.now())
        self.sip.kick()
        if handle is None:
            self._fax_hangup(leg, "t38 late answer")
            return
        leg.answer_sdp = body  # our current SDP (same media, this version)
        self._audio_restores[handle] = call_id
        log.info(kv("fax.audio_reinvite", call_id=call_id, local_port=leg.media.local_port))

    def _audio_restored(self, call_id: str, response: Response | None) -> None:
        """The answer to our re-INVITE back to audio: G.711 again, or a hang-up."""
        leg = self.legs.get(call_id)
        if leg is None or leg.state != "answered":
            return
        params = None
        if response is not None and 200 <= response.status < 300 and leg.params is not None:
            try:
                params = parse_answer(SessionDescription.parse(response.body), [leg.params.codec])
            except SdpError:
                params = None
        if params is None or leg.media is None or not params.remote_port:
            if response is None:
                why = "no response"
            elif not 200 <= response.status < 300:
                why = f"{response.status} {response.reason}"
            else:
                why = "answer without audio"
            log.info(kv("fax.audio_refused", call_id=call_id, reason=why))
            self._fax_hangup(leg, "t38 out of step")
            return
        if isinstance(leg.media, MovableMedia):
            leg.media.move_remote(params.remote_host, params.remote_port)  # a new address must win
        else:
            leg.media.set_remote(params.remote_host, params.remote_port)
        log.info(
            kv("fax.audio_restored", call_id=call_id, remote=f"{params.remote_host}:{params.remote_port}")
        )

    def _t38_fallback(self, leg: _Leg, why: str) -> None:
        """Our re-INVITE to T.38 failed: the fax goes on over G.711."""
        log.info(kv("fax.t38_refused", call_id=leg.call_id, reason=why))
        leg.t38_handle = None
        leg.t38_offer = None
        udptl, leg.udptl = leg.udptl, None
        if udptl is not None:
            self._spawn(leg, _close_quietly(udptl))

    def _t38_answered(self, call_id: str, handle: str, response: Response | None) -> None:
        leg = self.legs.get(call_id)
        if leg is None or leg.t38_handle != handle:
            return
        if response is None:
            self._t38_fallback(leg, "no response")
            return
        if not 200 <= response.status < 300:
            self._t38_fallback(leg, f"{response.status} {response.reason}")
            return
        try:
            answer = SessionDescription.parse(response.body)
        except SdpError:
            answer = None
        session: T38Session | None = None
        host, port = "", 0
        if answer is not None and leg.t38_offer is not None:
            for md in answer.media:
                if is_udptl_image(md):
                    try:
                        session = accept_t38_answer(leg.t38_offer, parse_t38_attributes(md.attributes))
                    except T38SdpError:
                        session = None
                    host, port = md.connection or answer.connection or "", md.port
                    break
        if session is None or not host:
            self._t38_fallback(leg, "answer without T.38")
            return
        leg.t38_handle = None
        log.info(kv("fax.t38_accepted", call_id=leg.call_id, remote=f"{host}:{port}"))
        self._switch_to_t38(leg, session, host, port)

    # -- shutdown --------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """BYE every call, close every recording (the UA's CallEnded may never come)."""
        now = self.sip.now()
        for call_id, leg in list(self.legs.items()):
            if leg.setup_task is not None and not leg.setup_task.done():
                leg.setup_task.cancel()
            with contextlib.suppress(Exception):
                self.sip.ua.hangup(call_id, now)
            self.sip.kick()
            self._ended(call_id, "shutdown")
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)


def _media_signature(sd: SessionDescription) -> tuple[Any, ...]:
    """What an offer asks for, without its o= line: equal signatures mean nothing changed."""
    return (
        sd.connection,
        tuple(sd.attributes),
        tuple(
            (md.media, md.port, md.proto, tuple(md.formats), md.connection, tuple(md.attributes))
            for md in sd.media
        ),
    )


async def _close_quietly(endpoint: MediaEndpoint | UdptlEndpointLike) -> None:
    with contextlib.suppress(Exception):
        await endpoint.close()
