"""Outgoing fax calls: dial a number, send the pages over G.711 or T.38, say how the try ended.

What it does
------------
:meth:`ums.calls.service.CallManager.send_fax` takes a :class:`FaxSendRequest` (the number, the pages,
the page to resume from) and returns an :class:`~ums.outbound.jobs.Attempt`.  It opens an RTP
endpoint, sends an INVITE offering G.711 audio (our codecs and telephone-event) through a SIP
account, to a SIP URI or to a trunk, CANCELs after ``ring_timeout`` without an answer, and once
answered runs T.30 in the calling / transmit role (:class:`FaxSendLeg`): CNG, then DCS, training and
the pages after the far end's DIS.  When the far end re-INVITEs to T.38 (a PBX or gateway that heard
our CNG or its own CED) the call moves to UDPTL with a fresh engine that resumes at the first page
not yet confirmed; with ``[fax] t38_reinvite = "after_ced"`` we ask for T.38 ourselves once we hear
CED (or the far end's DIS) and stay on G.711 after a 488 or ``t38_timeout``, exactly as on incoming
fax calls.  After DCN we hang up within ``hangup_delay``.

How the try ended (:func:`sip_failure_cause` for the INVITE, :func:`fax_cause` after an answer):

* 486 / 600 -> ``BUSY``; 408 / 480, our CANCEL after ``ring_timeout`` -> ``NO_ANSWER``;
* 500 / 502 / 503 / 504, and no response at all (INVITE timer B, RFC 3261 §17.1.1.2, or
  ``ring_timeout``, without even a provisional response: a transport failure) -> ``CONGESTION``;
* every other final status (404, 484, 403, 410, 488, 603 ...) -> ``REJECTED``, with ``sip_code``;
* answered, but no T.30 contact (T.30 timer T1 expired, or the far end hung up before any frame)
  -> ``NOT_FAX``;
* T.30 failed after contact (no MCF, training failed, DCN, a BYE in the middle of a page) ->
  ``LINE_ERROR`` with the engine's reason;
* every remaining page confirmed -> ``OK``.

``pages_sent`` counts the pages confirmed in this call (MCF, RTP, PIP or ERR: T.30 §5.3.6.1.7);
``on_page_sent`` gets the absolute page number of each as soon as it is confirmed.
:meth:`~ums.calls.service.CallManager.cancel_fax` hangs a job's call up (``CANCELLED``, or ``OK``
when every page was confirmed already); cancelling the task that awaits ``send_fax`` hangs up too.

How it works
------------
The call is one more leg of the call manager (:class:`ums.calls.service._Leg`), so media, re-INVITEs
to and from T.38, the fall-back to G.711, the hang-up after T.30 and the shutdown are the code that
serves incoming fax calls.  :class:`FaxSendLeg` is a :class:`~ums.calls.fax.FaxLeg` whose engines
transmit (``T30Engine(cfg, "calling", "transmit", pages)``) and whose sink keeps nothing.  The G.711
front end comes from the manager's shared :class:`~ums.softfax_g711.pool.ModemPool`.
:class:`OutgoingFax` follows the INVITE (``CallProgress`` / ``CallAnswered`` / ``CallFailed`` from
the user agent, routed here by call id) and resolves its future when the manager has closed the leg
(``_Leg.on_finished``).
The media endpoint is opened with the first configured codec; an answer that takes only the other
one is followed by a re-INVITE from a new endpoint with that codec (RFC 3264 §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ums.calls.fax import FaxLeg, FaxSettings, StoredFax
from ums.calls.router import Caller, Route
from ums.calls.service import CallManager, LossReportingMedia, MediaEndpoint, _Leg, _media_signature
from ums.fax.t30 import (
    Command,
    FaxResult,
    Finished,
    Negotiated,
    PageSent,
    SourcePage,
    T30Config,
    T30Engine,
)
from ums.log import kv
from ums.outbound.jobs import Attempt, Cause
from ums.sip import events as ev
from ums.sip.message import SipParseError
from ums.sip.sdp import (
    DEFAULT_PTIME,
    STATIC_PAYLOAD_TYPES,
    TELEPHONE_EVENT_PT,
    AudioParams,
    SdpError,
    SessionDescription,
    make_audio_offer,
    parse_answer,
)
from ums.sip.uri import SipUri
from ums.softfax_g711.pool import ModemPool
from ums.softfax_g711.tones import ToneDetector, ToneSpec

__all__ = [
    "FaxSendLeg",
    "FaxSendRequest",
    "OutgoingFax",
    "dial_target",
    "fax_cause",
    "sip_failure_cause",
]

log = logging.getLogger("ums.calls.fax")

#: final statuses of an INVITE and the cause they mean (the rest: REJECTED)
_SIP_CAUSES: dict[int, Cause] = {
    486: Cause.BUSY,
    600: Cause.BUSY,
    408: Cause.NO_ANSWER,
    480: Cause.NO_ANSWER,
    487: Cause.NO_ANSWER,
    500: Cause.CONGESTION,
    502: Cause.CONGESTION,
    503: Cause.CONGESTION,
    504: Cause.CONGESTION,
}
#: FaxResult codes of a call that never got a T.30 frame from the far end
_NO_CONTACT_CODES = frozenset({"t1", "hangup"})


@dataclass(frozen=True)
class FaxSendRequest:
    """One call to send a fax (see the module notes)."""

    #: digits, or a full SIP URI ("sip:+4930123@127.0.0.1:5080")
    dial: str
    #: every page of the document (``ums.render.page.FaxPage`` fits)
    pages: Sequence[SourcePage]
    #: resume: send ``pages[first_page - 1:]``
    first_page: int = 1
    #: SIP account to call through; None: straight to ``dial`` (a URI), or to ``trunk``
    account: str | None = None
    #: our TSI ("" = the ``[fax] ident``)
    ident: str = ""
    ecm: bool = True
    #: the job id, for log lines
    call_id_hint: str = ""
    #: seconds without an answer before we CANCEL (-> NO_ANSWER)
    ring_timeout: float = 60.0
    #: called with the absolute page number of every page the far end confirmed
    on_page_sent: Callable[[int], None] | None = None
    #: without an account: where digits go ("sip:pbx.example.com:5060" or "host:port")
    trunk: str = ""

    def __post_init__(self) -> None:
        if not self.pages:
            raise ValueError("a fax needs at least one page")
        if not 1 <= self.first_page <= len(self.pages):
            raise ValueError(f"first_page must be 1..{len(self.pages)}, got {self.first_page}")
        if not self.dial.strip():
            raise ValueError("nothing to dial")
        if self.ring_timeout <= 0:
            raise ValueError("ring_timeout must be > 0")


def dial_target(req: FaxSendRequest) -> str:
    """What to put in the INVITE's Request-URI (the user agent adds the account's host to digits).

    Raises ValueError for digits with neither an account nor a trunk, or a bad trunk.
    """
    dial = req.dial.strip()
    if req.account is not None or dial.lower().startswith(("sip:", "sips:")) or "@" in dial:
        return dial
    if not req.trunk:
        raise ValueError(f"cannot dial {dial!r}: no SIP account and no trunk")
    trunk = req.trunk.strip()
    try:
        uri = SipUri.parse(trunk if trunk.lower().startswith(("sip:", "sips:")) else "sip:" + trunk)
    except SipParseError as exc:
        raise ValueError(f"bad trunk {req.trunk!r}: {exc}") from exc
    return str(SipUri(uri.scheme, dial, uri.host, uri.port))


def sip_failure_cause(status: int, provisional: bool = True) -> Cause:
    """The cause of an INVITE that ended with final ``status`` (our own timer B gives 408: without
    any provisional response before it, nothing reached the far end -> ``CONGESTION``)."""
    if status == 408 and not provisional:
        return Cause.CONGESTION
    return _SIP_CAUSES.get(status, Cause.REJECTED)


def fax_cause(result: FaxResult | None, confirmed: int, remaining: int) -> tuple[Cause, str]:
    """The cause and reason of an answered call from the T.30 result and the pages confirmed."""
    if confirmed >= remaining:
        return Cause.OK, ""
    if result is None:
        return Cause.LINE_ERROR, "the call ended before T.30 did"
    contact = result.modem is not None or bool(result.remote_ident) or confirmed > 0
    if result.code in _NO_CONTACT_CODES and not contact:
        if result.code == "t1":
            return Cause.NOT_FAX, "no fax answered (no DIS within T.30 T1)"
        return Cause.NOT_FAX, "hung up without fax signals"
    return Cause.LINE_ERROR, result.reason


class _NoSink:
    """A transmitting leg stores nothing."""

    def store_page(
        self, page_no: int, pels: np.ndarray, xdpi: float, ydpi: float, info: dict[str, object]
    ) -> None:
        raise RuntimeError("a transmitting fax leg received a page")

    def finish(self, result: dict[str, object]) -> StoredFax | None:
        return None

    def abort(self) -> None:
        return None


class FaxSendLeg(FaxLeg):
    """The fax part of an outgoing call: T.30 calling / transmit over G.711 or T.38.

    ``pages`` are the pages still to send in this call; ``first_page`` is the absolute number of the
    first of them.  ``on_ced_done`` (from :class:`~ums.calls.fax.FaxLeg`) is called once when CED or
    the far end's DIS is heard on G.711 (our own re-INVITE to T.38 follows it when configured).
    """

    def __init__(
        self,
        settings: FaxSettings,
        pages: Sequence[SourcePage],
        *,
        first_page: int,
        call_id: str,
        clock: Callable[[], float],
        on_hangup: Callable[[str], None],
        on_ced_done: Callable[[], None] | None = None,
        on_page_sent: Callable[[int], None] | None = None,
        modem_pool: ModemPool | None = None,
    ) -> None:
        super().__init__(
            settings,
            _NoSink(),
            call_id=call_id,
            clock=clock,
            on_hangup=on_hangup,
            on_ced_done=on_ced_done,
            modem_pool=modem_pool,
        )
        self.remaining = list(pages)
        self.first_page = first_page
        self.on_page_sent = on_page_sent
        self.contact = False  # CED or DIS heard, or training agreed (a fax machine is there)
        self._answer_tone: ToneDetector | None = ToneDetector([ToneSpec.ans()])

    @property
    def all_sent(self) -> bool:
        return self.confirmed >= len(self.remaining)

    def _engine(self) -> T30Engine:
        cfg = T30Config(ident=self.settings.ident, ecm=self.settings.ecm)
        return T30Engine(cfg, "calling", "transmit", self.remaining[self.confirmed :])

    def rx_audio(self, pcm: np.ndarray, lost: Sequence[tuple[int, int]] = ()) -> None:
        super().rx_audio(pcm, lost)
        detector = self._answer_tone
        if detector is None or self.audio is None or self.closed:
            return
        heard = any(e.on for e in detector.receive(pcm))
        # the terminal transmits something other than CNG only after DIS came (DCS, TCF)
        if heard or self.audio.transmitting:
            self._answer_tone = None
            self.contact = True
            log.info(kv("fax.out.ced", call_id=self.call_id, how="ced" if heard else "dis"))
            if self.on_ced_done is not None:
                self.on_ced_done()

    def _reports(self, reports: list[Command]) -> None:
        for r in reports:
            if isinstance(r, PageSent):
                self.confirmed += 1
                page = self.first_page + self.confirmed - 1
                log.info(
                    kv(
                        "fax.out.page",
                        call_id=self.call_id,
                        page=page,
                        response=r.response,
                        rows=r.rows,
                        transport=self.transport,
                    )
                )
                if self.on_page_sent is not None:
                    try:
                        self.on_page_sent(page)
                    except Exception:
                        log.exception(kv("fax.out.page_callback_failed", call_id=self.call_id, page=page))
            elif isinstance(r, Negotiated):
                self.contact = True
                self._negotiated(r)
            elif isinstance(r, Finished):
                self._finished(r, self.confirmed)

    def outcome(self, reason: str = "hangup") -> dict[str, object]:
        fields = super().outcome(reason)
        fields["pages"] = self.confirmed
        fields["success"] = self.all_sent
        return fields


class OutgoingFax:
    """One outgoing fax call of a :class:`~ums.calls.service.CallManager` (see the module notes)."""

    def __init__(self, manager: CallManager, req: FaxSendRequest) -> None:
        self.manager = manager
        self.req = req
        self.remaining = list(req.pages[req.first_page - 1 :])
        self.call_id = ""
        self.leg: _Leg | None = None
        self.fax: FaxSendLeg | None = None
        self.started = time.time()
        self.provisional = False
        self.cancelled = False  # our CANCEL after ring_timeout
        self.cancel_requested = False  # :meth:`cancel`
        self.failed: tuple[int, str] | None = None
        self.answered = False
        self.codec_swap: str | None = None  # handle of our re-INVITE with the answer's codec
        self._done: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        self._ring_timer: asyncio.TimerHandle | None = None

    # -- the call ----------------------------------------------------------------------------------
    async def run(self) -> Attempt:
        mgr = self.manager
        assert mgr.fax is not None
        req = self.req
        try:
            target = dial_target(req)
        except ValueError as exc:
            return self._attempt(Cause.REJECTED, str(exc))
        if len(mgr.legs) >= mgr.config.sip.max_channels:
            return self._attempt(Cause.CONGESTION, "channel limit reached")
        codec = mgr.config.sip.codecs[0]
        holder: list[_Leg] = []
        try:
            media = await self._open_media(codec, holder)
        except OSError as exc:
            log.error(kv("fax.out.media_failed", job=req.call_id_hint or None, reason=exc))
            return self._attempt(Cause.CONGESTION, f"no RTP port: {exc}")
        mgr._session_counter += 1
        session_id = mgr._session_counter
        offer = make_audio_offer(
            codecs=mgr.config.sip.codecs,
            local_host=mgr.host,
            local_port=media.local_port,
            session_id=session_id,
        )
        body = offer.serialize()
        try:
            self.call_id = mgr.sip.ua.invite(target, body, mgr.sip.now(), account=req.account)
        except ValueError as exc:
            await _close_quietly(media)
            return self._attempt(Cause.REJECTED, str(exc))
        leg = _Leg(
            call_id=self.call_id,
            route=outgoing_route(req.dial),
            offer=offer,
            session_id=session_id,
            media=media,
            answer_sdp=body,  # our current SDP (a session refresh is answered with it)
            on_finished=self._leg_finished,
        )
        mgr.legs[self.call_id] = leg
        holder.append(leg)
        self.leg = leg
        mgr._outgoing[self.call_id] = self
        log.info(
            kv(
                "fax.out.dialling",
                call_id=self.call_id,
                job=req.call_id_hint or None,
                target=target,
                account=req.account,
                pages=len(self.remaining),
                first_page=req.first_page,
                local_port=media.local_port,
            )
        )
        self._ring_timer = mgr._loop.call_later(req.ring_timeout, self._ring_timeout)
        mgr.sip.kick()
        try:
            return await asyncio.shield(self._done)
        except asyncio.CancelledError:
            self.cancel_requested = True
            self.hangup("cancelled")
            raise

    async def _open_media(self, codec: str, holder: list[_Leg]) -> MediaEndpoint:
        mgr = self.manager
        params = AudioParams(
            codec=codec,
            payload_type=STATIC_PAYLOAD_TYPES[codec],
            remote_host="",
            remote_port=0,
            telephone_event_pt=TELEPHONE_EVENT_PT,
            ptime=DEFAULT_PTIME,
            direction="sendrecv",
        )
        return await mgr.media_factory(
            params,
            lambda pcm: mgr._audio(holder[0], pcm) if holder else None,
            lambda digit: mgr._digit(self.call_id, digit, "rfc4733"),
            lambda n: mgr._tx(holder[0], n) if holder else None,
        )

    def hangup(self, why: str) -> None:
        """End the call now (BYE, or CANCEL while it rings)."""
        mgr = self.manager
        if self.leg is None or self.leg.state == "ended":
            return
        log.info(kv("call.hangup", call_id=self.call_id, reason=why))
        mgr.sip.ua.hangup(self.call_id, mgr.sip.now())
        mgr.sip.kick()

    def cancel(self) -> None:
        """Stop sending: hang up; the attempt ends ``CANCELLED`` (``OK`` if every page was confirmed)."""
        self.cancel_requested = True
        log.info(kv("fax.out.cancel", call_id=self.call_id, job=self.req.call_id_hint or None))
        self.hangup("cancelled")

    def _ring_timeout(self) -> None:
        self._ring_timer = None
        if self.answered or self.leg is None or self.leg.state != "setup":
            return
        self.cancelled = True
        log.info(kv("fax.out.no_answer", call_id=self.call_id, after=self.req.ring_timeout))
        self.hangup("ring timeout")

    # -- SIP events (routed by the manager) --------------------------------------------------------
    def sip_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.CallProgress):
            self.provisional = True
            log.debug(kv("fax.out.progress", call_id=self.call_id, status=event.status))
        elif isinstance(event, ev.CallFailed):
            self.failed = (event.status, event.reason)
            self.manager._ended(self.call_id, "failed")
        elif isinstance(event, ev.CallAnswered):
            self._answered(event.sdp)

    def reinvite_answered(self, handle: str, response: ev.ResponseReceived | ev.RequestFailed) -> None:
        """The answer to our re-INVITE that moved the audio to the codec the far end took."""
        leg = self.leg
        if leg is None or handle != self.codec_swap or leg.state != "answered":
            return
        self.codec_swap = None
        params = None
        if isinstance(response, ev.ResponseReceived) and 200 <= response.response.status < 300:
            with contextlib.suppress(SdpError):
                params = parse_answer(SessionDescription.parse(response.response.body), [self._codec()])
        if params is None or not params.remote_port or leg.media is None:
            log.info(kv("fax.out.codec_refused", call_id=self.call_id))
            self.failed = (488, f"the far end took {self._codec()} but refused it on our re-INVITE")
            self.hangup("codec refused")
            return
        self._start(params)

    def _codec(self) -> str:
        leg = self.leg
        assert leg is not None and leg.params is not None
        return leg.params.codec

    def _answered(self, sdp: bytes) -> None:
        mgr = self.manager
        leg = self.leg
        assert leg is not None and mgr.fax is not None
        self.answered = True
        if self._ring_timer is not None:
            self._ring_timer.cancel()
            self._ring_timer = None
        assert leg.media is not None
        opened = self._opened_codec()
        params = None
        other = None
        try:
            answer = SessionDescription.parse(sdp)
            params = parse_answer(answer, [opened])
            other = parse_answer(answer, mgr.config.sip.codecs)
        except SdpError:
            answer = None
        leg.state = "answered"
        leg.answered_at = mgr._loop.time()
        if answer is not None:
            leg.offer_sig = _media_signature(answer)
        leg.timers.append(
            mgr._loop.call_later(mgr.config.sip.max_call_seconds, mgr._max_duration, self.call_id)
        )
        if params is None and other is not None:
            leg.params = other
            mgr._spawn(leg, self._swap_codec(other))
            return
        if params is None or not params.remote_port:
            log.info(kv("fax.out.bad_answer", call_id=self.call_id, reason="no G.711 audio we offered"))
            self.failed = (488, "answer without audio we offered")
            self.hangup("bad answer")
            return
        self._start(params)

    def _opened_codec(self) -> str:
        return self.manager.config.sip.codecs[0]

    async def _swap_codec(self, params: AudioParams) -> None:
        """The far end took only the codec our endpoint was not opened with: a new endpoint with that
        codec, offered in a re-INVITE (the old one is closed)."""
        mgr = self.manager
        leg = self.leg
        assert leg is not None
        holder = [leg]
        try:
            media = await self._open_media(params.codec, holder)
        except OSError as exc:
            log.error(kv("fax.out.media_failed", call_id=self.call_id, reason=exc))
            self.hangup("no RTP port")
            return
        if leg.state != "answered":
            await _close_quietly(media)
            return
        old, leg.media = leg.media, media
        if old is not None:
            await _close_quietly(old)
        leg.sdp_version += 1
        sd = make_audio_offer(
            codecs=[params.codec],
            local_host=mgr.host,
            local_port=media.local_port,
            session_id=leg.session_id,
            version=leg.sdp_version,
        )
        body = sd.serialize()
        handle = mgr.sip.ua.reinvite(self.call_id, body, mgr.sip.now())
        mgr.sip.kick()
        if handle is None:
            self.hangup("codec re-INVITE not sent")
            return
        leg.answer_sdp = body
        self.codec_swap = handle
        mgr._codec_swaps[handle] = self
        log.info(kv("fax.out.codec_reinvite", call_id=self.call_id, codec=params.codec))

    def _start(self, params: AudioParams) -> None:
        """Audio is agreed: T.30 starts on G.711 (CNG, then wait for DIS)."""
        mgr = self.manager
        leg = self.leg
        assert leg is not None and leg.media is not None and mgr.fax is not None
        leg.params = params
        leg.media.set_remote(params.remote_host, params.remote_port)
        cfg = mgr.fax.config
        settings = FaxSettings(
            ident=self.req.ident or cfg.ident, ecm=self.req.ecm and cfg.ecm, hangup_delay=cfg.hangup_delay
        )
        fax = FaxSendLeg(
            settings,
            self.remaining,
            first_page=self.req.first_page,
            call_id=self.call_id,
            clock=mgr._loop.time,
            on_hangup=lambda reason: mgr._fax_hangup(leg, reason),
            on_ced_done=lambda: mgr._ced_done(leg),
            on_page_sent=self.req.on_page_sent,
            modem_pool=mgr.modem_pool,
        )
        self.fax = fax
        leg.fax = fax
        fax.start_audio()
        if isinstance(leg.media, LossReportingMedia):
            leg.media.on_audio_lost = fax.rx_audio
        log.info(
            kv(
                "fax.out.answered",
                call_id=self.call_id,
                job=self.req.call_id_hint or None,
                codec=params.codec,
                remote=f"{params.remote_host}:{params.remote_port}",
                local_port=leg.media.local_port,
            )
        )

    # -- the end -----------------------------------------------------------------------------------
    def _leg_finished(self) -> None:
        """The manager has closed the leg (media, T.30): the attempt is complete."""
        self.manager._outgoing.pop(self.call_id, None)
        if self.codec_swap is not None:
            self.manager._codec_swaps.pop(self.codec_swap, None)
        if self._ring_timer is not None:
            self._ring_timer.cancel()
            self._ring_timer = None
        if self._done.done():
            return
        self._done.set_result(self._outcome())

    def _outcome(self) -> Attempt:
        fax = self.fax
        if fax is not None:
            cause, reason = fax_cause(fax.result, fax.confirmed, len(self.remaining))
            if cause is Cause.NOT_FAX and fax.contact:
                cause, reason = Cause.LINE_ERROR, fax.result.reason if fax.result else reason
            if self.cancel_requested and cause is not Cause.OK:
                cause, reason = Cause.CANCELLED, "cancelled during the call"
            result = fax.result
            rate = (result.rate if result is not None else None) or (
                fax.negotiated.rate if fax.negotiated is not None else 0
            )
            csid = (result.remote_ident if result is not None else "") or (
                fax.negotiated.remote_ident if fax.negotiated is not None else ""
            )
            return self._attempt(
                cause,
                reason,
                pages_sent=fax.confirmed,
                remote_csid=csid,
                rate=rate or 0,
                sip_code=200,
                transport=fax.transport or "",
            )
        if self.failed is not None:
            status, phrase = self.failed
            if self.answered:
                return self._attempt(Cause.REJECTED, f"{status} {phrase}", sip_code=200)
            cause = sip_failure_cause(status, self.provisional)
            if cause is Cause.CONGESTION and status == 408:
                phrase = "no response to the INVITE"
            return self._attempt(cause, f"{status} {phrase}", sip_code=status)
        if self.cancel_requested:
            return self._attempt(Cause.CANCELLED, "cancelled before the answer")
        if self.cancelled and not self.provisional:
            return self._attempt(
                Cause.CONGESTION, f"no response to the INVITE within {self.req.ring_timeout:g} s"
            )
        if self.cancelled:
            return self._attempt(
                Cause.NO_ANSWER, f"no answer within {self.req.ring_timeout:g} s", sip_code=487
            )
        if self.answered:
            return self._attempt(Cause.LINE_ERROR, "the call ended before the fax started", sip_code=200)
        return self._attempt(Cause.CONGESTION, "the call was ended here before it was answered")

    def _attempt(
        self,
        cause: Cause,
        reason: str,
        *,
        pages_sent: int = 0,
        remote_csid: str = "",
        rate: int = 0,
        sip_code: int = 0,
        transport: str = "",
    ) -> Attempt:
        attempt = Attempt(
            start=self.started,
            end=time.time(),
            cause=cause,
            pages_sent=pages_sent,
            reason=reason,
            remote_csid=remote_csid,
            rate=rate,
            sip_code=sip_code,
            transport=transport,
        )
        log.info(
            kv(
                "fax.out.result",
                call_id=self.call_id or None,
                job=self.req.call_id_hint or None,
                cause=cause.value,
                pages_sent=attempt.pages_sent,
                sip_code=attempt.sip_code or None,
                transport=attempt.transport or None,
                rate=attempt.rate or None,
                remote_csid=attempt.remote_csid or None,
                reason=reason or None,
                duration=round(attempt.end - attempt.start, 3),
            )
        )
        return attempt


async def _close_quietly(endpoint: MediaEndpoint) -> None:
    with contextlib.suppress(Exception):
        await endpoint.close()


def outgoing_route(number: str) -> Route:
    """The route record of an outgoing leg (no mailbox: nothing is announced)."""
    return Route(number=number, mailbox=None, matched_by="outgoing", reason="", caller=Caller("", "", ""))
