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
local port.  Calls longer than ``max_call_seconds`` are hung up.

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import numpy.typing as npt

from ums.calls.router import Route, route
from ums.config import Config, Mailbox
from ums.log import kv
from ums.sip import events as ev
from ums.sip.sdp import AudioParams, SdpError, SessionDescription, answer_audio
from ums.sip.service import SipService
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

__all__ = ["CallManager", "MediaEndpoint", "MediaFactory"]

log = logging.getLogger("ums.calls")


class MediaStats(Protocol):
    def log_fields(self) -> dict[str, int | float]: ...


class MediaEndpoint(Protocol):
    """What a call leg needs from an RTP endpoint (opened and bound by the factory)."""

    local_port: int

    def set_remote(self, host: str, port: int) -> None: ...

    def close(self) -> Awaitable[MediaStats]: ...


class MediaFactory(Protocol):
    def __call__(
        self,
        params: AudioParams,
        on_audio: Callable[[np.ndarray], None],
        on_digit: Callable[[str], None],
        source: Callable[[int], np.ndarray | None] | None = None,
    ) -> Awaitable[MediaEndpoint]: ...


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
    ) -> None:
        self.config = config
        self.voicemail = voicemail
        self.sip = sip
        self.media_factory = media_factory
        self.host = host
        self.legs: dict[str, _Leg] = {}
        self.recordings_dir = config.server.data_dir / "recordings"
        self._loop = asyncio.get_running_loop()
        self._session_counter = int(datetime.now(UTC).timestamp())
        self._finishing: set[asyncio.Task[None]] = set()

    # -- SIP events ------------------------------------------------------------------------------
    def on_sip_event(self, event: ev.Event) -> None:
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
        if probe is None:
            log.info(kv("call.rejected", call_id=call_id, status=488, reason="no common codec"))
            self._reject(call_id, 488, "Not Acceptable Here")
            return
        leg = _Leg(call_id=call_id, route=rt, offer=offer, session_id=self._session_counter, params=probe[1])
        if self.voicemail is not None and rt.mailbox.service in ("voice", "both"):
            vmw = self.voicemail
            greeting = select_greeting(rt.reason, vmw.greetings(rt.mailbox))
            leg.vm = VoicemailSession(greeting, vmw.settings, goodbye=vmw.goodbye)
            leg.caller_name, leg.caller_meta = vmw.lookup(rt.caller.number) if rt.caller.number else ("", {})
            if not leg.caller_name:
                leg.caller_name = rt.caller.name
        self.legs[call_id] = leg
        leg.setup_task = self._loop.create_task(self._setup(leg))

    async def _setup(self, leg: _Leg) -> None:
        assert leg.params is not None
        try:
            leg.media = await self.media_factory(
                leg.params,
                lambda pcm: self._audio(leg, pcm),
                lambda digit: self._digit(leg.call_id, digit, "rfc4733"),
                (lambda n: self._vm_tx(leg, n)) if leg.vm is not None else None,
            )
        except OSError as exc:
            log.error(kv("call.media_failed", call_id=leg.call_id, reason=exc))
            leg.state = "ended"
            self.legs.pop(leg.call_id, None)
            self._reject(leg.call_id, 503, "Service Unavailable")
            return
        if leg.state == "ended":  # cancelled while the socket was being opened
            await leg.media.close()
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
        if leg.vm is None:
            leg.recording = _Recording(self.recordings_dir / name)
        leg.state = "answered"
        leg.answered_at = self._loop.time()
        self.sip.ua.answer(leg.call_id, answer.serialize(), self.sip.now())
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
        if leg is None or leg.media is None:
            self.sip.ua.answer_reinvite(event.call_id, None, now, status=488, reason="Not Acceptable Here")
            self.sip.kick()
            return
        try:
            offer = SessionDescription.parse(event.sdp)
        except SdpError:
            offer = None
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
            if offer is not None
            else None
        )
        if result is None:
            self.sip.ua.answer_reinvite(event.call_id, None, now, status=488, reason="Not Acceptable Here")
            self.sip.kick()
            return
        answer, params = result
        if params.remote_port and params.remote_host not in ("0.0.0.0", ""):
            leg.media.set_remote(params.remote_host, params.remote_port)
        leg.params = params
        self.sip.ua.answer_reinvite(event.call_id, answer.serialize(), now)
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
        duration = 0.0 if leg.answered_at is None else self._loop.time() - leg.answered_at
        stats: dict[str, int | float] = {}
        if leg.media is not None:
            stats = (await leg.media.close()).log_fields()  # delivers the last buffered audio
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
