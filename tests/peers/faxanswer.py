"""A test-side fax answerer: the PBX trunk and a remote fax machine behind it, as one SIP UAS on UDP.

What it does
------------
:class:`FaxAnswerer` listens for INVITEs (from ``ums`` dialling out, or any SIP UAC) and plays the
line the test asks for.  Each INVITE takes the next :class:`AnswerPlan` from the queue (then the
default plan):

* ``"fax"``: 200 with SDP, then SpanDSP's fax machine answers (CED, DIS) and receives, in real time:
  :class:`~tests.peers.spandsp_fax.SpanFax` over G.711 RTP, or
  :class:`~tests.peers.spandsp_fax.SpanT38` over UDPTL.  ``t38`` decides the T.38 behaviour:
  ``"never"`` answers a re-INVITE to T.38 with 488, ``"accept"`` accepts it, ``"reinvite"`` sends
  our own re-INVITE to ``m=image`` after ``reinvite_after`` seconds of audio (and also accepts the
  caller's), ``"offer_answer"`` accepts an ``m=image`` stream offered in the INVITE itself.  After
  a switch a new SpanDSP T.38 terminal starts the T.30 session again, as a T.38 gateway does.
* ``"busy"`` (486), ``"reject"`` (``code``), ``"no_answer"`` (180, then 487 on CANCEL, or 480
  after ``ring_seconds`` when that is set), ``"voice"`` (200, a talking line of tone bursts, BYE
  after ``voice_seconds``).

``hangup_after_page=n`` drops the line ``hangup_delay`` seconds after the phase D of page ``n``
(after the MCF has gone out), a line failure in the middle of page n+1.  The call ends on the
caller's BYE (answered 200), or with our own BYE ``bye_after_dcn`` seconds after SpanDSP's phase E
if the caller does not hang up.  Session-refresh re-INVITEs are answered with the current SDP
(``o=`` version unchanged), CANCEL, ACK, OPTIONS, INFO/UPDATE/NOTIFY and REGISTER (a trunk
registration) are handled.

Every call becomes an :class:`AnsweredCall`: request URI and its user part (the dialled number),
From, plan, final status, transport of the fax (``"g711"``/``"t38"``), the received pages as pel
arrays (uint8, 1 = black) and :class:`~ums.render.page.FaxPage`, SpanDSP's
:class:`~tests.peers.spandsp_fax.FaxResult`, an event timeline and the SIP log.
:meth:`FaxAnswerer.wait_calls` waits for calls to finish.  :class:`AnswererThread` runs the
answerer on a loop of its own for synchronous tests (``ums`` as a subprocess).

How it works
------------
One asyncio loop carries the SIP socket and, per call, an RTP and a UDPTL socket (the media
endpoints :class:`~tests.peers.faxcaller.RtpFax` and :class:`~tests.peers.faxcaller.UdptlFax` of
the test caller, with their jitter FIFO, pacing and UDPTL framing).  The SIP side is a small UAS
of its own, not ums's SIP core, so it stays an independent peer: RFC 3261 §8.2.6 responses (Via
copied, ``received`` added and ``rport`` filled in per RFC 3581, To tag, Contact, Record-Route
on 18x/2xx), §13.3.1.4 2xx retransmission until the ACK (BYE if none comes within 64*T1),
§17.2.1 non-2xx final retransmission until the ACK, stored responses for retransmitted
requests, §9.2 CANCEL (200, then 487 to the INVITE), §14.2 491/500 for overlapping
re-INVITEs and our own in-dialog requests (BYE, re-INVITE) in client transactions with T1
doubling retransmission.  Responses go back to the source address of the request.

The SDP answer is the peer's own (first offered of PCMU/PCMA, or the plan's codec; one ``m=``
line per offered line, RFC 3264 §6); the T.38 attributes are read and answered with
:mod:`ums.fax_t38.sdp` (version 0, which SpanDSP's terminal speaks).  The media tick is the
caller's monotonic 20 ms clock (``speed`` > 1 runs faster than real time, useful only when the
far end is paced by the same clock).  An INVITE without SDP gets our audio offer in the 200 and
the answer is taken from the ACK.  SpanDSP writes each received TIFF when its session ends; the
pages are read back with :func:`ums.render.tiff.read_tiff`, as
:func:`~tests.peers.spandsp_fax.read_fax_tiff` does.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from tests.peers.faxcaller import (
    FRAME,
    PT,
    RATE,
    T1,
    MediaStats,
    RtpFax,
    SdpMedia,
    SipMessage,
    UdptlFax,
    _Clock,
    _tag,
    _Udp,
    _uri,
    parse_sdp,
)
from tests.peers.spandsp_fax import FaxResult, SpanFax, SpanT38
from ums.fax_t38.sdp import (
    RateManagement,
    T38Capabilities,
    T38Params,
    T38Session,
    UdpEc,
    accept_t38_answer,
    answer_t38,
    parse_t38_attributes,
    t38_attributes,
)
from ums.render.page import FaxPage
from ums.render.tiff import read_tiff

__all__ = ["AnswerPlan", "AnsweredCall", "AnswererThread", "FaxAnswerer"]

Action = Literal["fax", "busy", "no_answer", "voice", "reject"]
T38Policy = Literal["never", "accept", "reinvite", "offer_answer"]
T2 = 4.0  # RFC 3261 timer T2
REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    603: "Decline",
}
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"
USER_AGENT = "ums-test-faxanswer"
#: what we write in an m=image offer or answer: SpanDSP's terminal speaks IFP version 0
T38_CAPS = T38Capabilities(max_version=0, max_bit_rate=14400, fec=True, max_buffer=2000, max_datagram=400)
T38_OFFER = T38Params(
    version=0,
    max_bit_rate=14400,
    rate_management=RateManagement.TRANSFERRED_TCF,
    max_buffer=2000,
    max_datagram=400,
    udp_ec=UdpEc.REDUNDANCY,
)


@dataclass
class AnswerPlan:
    """What the line does on the next INVITE."""

    #: "fax" | "busy" (486) | "no_answer" (180; 487 on CANCEL, or 480 after ``ring_seconds`` when set)
    #: | "voice" (200, tone bursts, BYE after ``voice_seconds``) | "reject" (final status ``code``)
    action: Action = "fax"
    code: int = 486
    #: ring (180) this long before answering ("fax", "voice") or before the 480 ("no_answer")
    ring_seconds: float = 0.0
    #: "never" (488 to a T.38 re-INVITE) | "accept" | "reinvite" (we re-INVITE after ``reinvite_after``
    #: seconds of audio) | "offer_answer" (accept m=image offered in the INVITE)
    t38: T38Policy = "never"
    ecm: bool = True
    hangup_after_page: int | None = None  # BYE ``hangup_delay`` s after phase D of this page
    hangup_delay: float = 2.0
    voice_seconds: float = 5.0
    codec: str | None = None  # "PCMU"/"PCMA" (488 when not offered), else the first offered
    reinvite_after: float = 1.5
    bye_after_dcn: float = 2.0  # our BYE this long after phase E when the caller keeps the line
    max_seconds: float = 300.0  # BYE after this long in any case
    modems: tuple[str, ...] = ("v27ter", "v29", "v17")


@dataclass
class AnsweredCall:
    """One INVITE and what became of it."""

    call_id: str
    request_uri: str
    user: str  # user part of the Request-URI: the number dialled
    from_: str  # the From header as received
    caller: str  # user part of the From URI
    to: str
    started: float  # wall clock (time.time()) of the INVITE
    plan: AnswerPlan
    source: tuple[str, int] = ("", 0)
    status: int = 0  # final status we sent for the INVITE
    codec: str = ""  # G.711 codec of the audio stream, "" without one
    transport: str = ""  # what carried the fax at the end: "g711" | "t38" | ""
    t38_switch: str = ""  # "", "offer" (in the INVITE), "remote" (their re-INVITE), "local" (ours),
    #                      "refused 488" (theirs refused), "rejected <status>" (ours refused)
    fax: FaxResult | None = None
    fax_pages: list[FaxPage] = field(default_factory=list)
    pages: list[npt.NDArray[np.uint8]] = field(default_factory=list)
    ended_by: str = ""  # "remote-bye", "local-bye", "cancel", "rejected", "no-ack", "stopped"
    hangup_reason: str = ""  # why we sent BYE: "dcn", "page N", "voice", "max-seconds", "no-ack"
    bye_status: int = 0  # final status to our BYE
    reinvites_received: int = 0
    refreshes: int = 0  # re-INVITEs answered with the unchanged SDP
    seconds: float = 0.0  # media time from the answer to the end
    stats: MediaStats = field(default_factory=MediaStats)
    #: (time.time(), what): "invite", "180", "200", "ack", "cancel", "phase-b", "cfr", "page N", "phase-e",
    #: "reinvite-received", "refresh", "t38-offer-sent", "t38 <who>", "bye-received", "bye-sent", "end"
    events: list[tuple[float, str]] = field(default_factory=list)
    sip_log: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def ok(self) -> bool:
        """SpanDSP reported a successful fax reception."""
        return self.fax is not None and self.fax.ok

    def at(self, what: str) -> float | None:
        """Wall-clock time of the first ``what`` in :attr:`events`."""
        return next((t for t, w in self.events if w == what), None)

    def describe(self) -> str:
        fax = self.fax.completion_text if self.fax else "no fax"
        head = (
            f"call {self.call_id} to {self.user!r} plan={self.plan.action}/{self.plan.t38} "
            f"status={self.status} "
            f"transport={self.transport or '-'} switch={self.t38_switch!r} fax={fax} pages={len(self.pages)} "
            f"ended_by={self.ended_by} ({self.hangup_reason}) {self.stats}"
        )
        t0 = self.started
        events = " ".join(f"{t - t0:.2f}:{w}" for t, w in self.events)
        return head + "\n  events: " + events + "\n  " + "\n  ".join(self.sip_log[-40:])


# ------------------------------------------------------------------------------------------ helpers
class _Voice:
    """The audio of a line without a fax machine: bursts of a 400 Hz tone (a voice, an announcement)
    or silence; counts what it hears.  Has the methods :class:`RtpFax` uses of a fax machine."""

    def __init__(self, talk: bool = True) -> None:
        self.talk = talk
        self.sample = 0
        self.heard_frames = 0
        self.done = False

    def rx(self, samples: npt.ArrayLike) -> None:
        if np.any(np.asarray(samples)):
            self.heard_frames += 1

    def tx(self, n: int) -> npt.NDArray[np.int16]:
        t = np.arange(self.sample, self.sample + n)
        self.sample += n
        if not self.talk:
            return np.zeros(n, np.int16)
        on = (t // 4000) % 3 != 2  # 0.5 s tone, 0.5 s tone, 0.5 s pause
        wave = 4000.0 * np.sin(2 * math.pi * 400.0 * t / RATE) * on
        return np.asarray(np.rint(wave), dtype=np.int16)


def _split_commas(value: str) -> list[str]:
    """Comma-separated header values, commas inside <> or quotes kept."""
    out, depth, quoted, cur = [], 0, False, ""
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _vias(msg: SipMessage) -> list[str]:
    return [v for line in msg.get_all("via") for v in _split_commas(line)]


def _branch(via: str) -> str:
    for part in via.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.lower() == "branch":
            return v
    return ""


def _via_for_response(via: str, source: tuple[str, int]) -> str:
    """The top Via with ``received`` (RFC 3261 §18.2.1) and a filled-in ``rport`` (RFC 3581)."""
    sent_by, *params = via.split(";")
    kept: list[str] = []
    for p in params:
        name = p.strip().partition("=")[0].lower()
        if name == "received":
            continue
        kept.append(f"rport={source[1]}" if name == "rport" else p.strip())
    return ";".join([sent_by.strip(), *kept, f"received={source[0]}"])


def _host_port(uri: str) -> tuple[str, int]:
    """Host and port of a SIP URI (5060 when none)."""
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    rest = rest.split("@", 1)[-1]
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        return host, int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else 5060
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else 5060


def _user(uri: str) -> str:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""


def _codec_of(section: SdpMedia, fmt: str) -> str | None:
    for name, value in section.attributes:
        if name.lower() == "rtpmap" and value is not None:
            pt, _, enc = value.partition(" ")
            if pt == fmt:
                codec = enc.split("/")[0].upper()
                return codec if codec in PT else None
    return {"0": "PCMU", "8": "PCMA"}.get(fmt)


def _telephone_event(section: SdpMedia) -> str | None:
    for name, value in section.attributes:
        if name.lower() == "rtpmap" and value is not None:
            pt, _, enc = value.partition(" ")
            if enc.lower().startswith("telephone-event/8000") and pt in section.formats:
                return pt
    return None


def _rejected(m: SdpMedia) -> str:
    """A refused stream in an answer: the offered line with port 0 (RFC 3264 §6)."""
    return f"m={m.media} 0 {m.proto} {' '.join(m.formats)}"


def _reason(status: int) -> str:
    return REASONS.get(status, "Failed" if status >= 300 else "OK")


def _response(
    req: SipMessage,
    source: tuple[str, int],
    status: int,
    *,
    tag: str = "",
    contact: str = "",
    body: bytes = b"",
    extra: Sequence[str] = (),
) -> bytes:
    """A response to ``req`` (RFC 3261 §8.2.6): Vias (top one marked), From, To (+ tag), Call-ID, CSeq."""
    vias = _vias(req)
    lines = [f"SIP/2.0 {status} {_reason(status)}"]
    if vias:
        lines.append(f"Via: {_via_for_response(vias[0], source)}")
        lines += [f"Via: {v}" for v in vias[1:]]
    to = req.get("to")
    if tag and not _tag(to):
        to += f";tag={tag}"
    lines += [f"From: {req.get('from')}", f"To: {to}", f"Call-ID: {req.get('call-id')}"]
    lines.append(f"CSeq: {req.get('cseq')}")
    if contact:
        lines.append(f"Contact: {contact}")
    lines.append(f"Server: {USER_AGENT}")
    lines += list(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _open(endpoint: RtpFax | UdptlFax, host: str) -> int:
    """Bind an endpoint's socket on ``host`` (the caller's endpoints bind 127.0.0.1 only)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Udp(endpoint._on_datagram), local_addr=(host, 0)
    )
    proto.transport = transport
    endpoint.sock = proto
    return proto.port


def _read_pages(path: Path) -> list[FaxPage]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        return read_tiff(path.read_bytes())
    except (OSError, ValueError, SyntaxError):
        return []


# --------------------------------------------------------------------------------------------- call
class _Call:
    """One UAS dialog: the INVITE's answer, in-dialog requests, media and the fax machine."""

    def __init__(
        self, owner: FaxAnswerer, invite: SipMessage, source: tuple[str, int], rec: AnsweredCall, index: int
    ) -> None:
        self.owner = owner
        self.invite = invite
        self.source = source
        self.rec = rec
        self.plan = rec.plan
        self.dir = owner.workdir / f"call{index:03d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.local_tag = secrets.token_hex(4)
        contact = invite.get("contact")
        self.remote_target = _uri(contact) if contact else _uri(invite.get("from"))
        # RFC 3261 §12.1.1: the UAS's route set is the Record-Route list in order
        self.route = [v for line in invite.get_all("record-route") for v in _split_commas(line)]
        self.dest = _host_port(_uri(self.route[0]) if self.route else self.remote_target)
        self.invite_cseq = invite.cseq[0]
        self.invite_branch = _branch(_vias(invite)[0]) if _vias(invite) else ""
        self.local_cseq = 0
        self.sdp_version = 1
        self.session_id = random.randrange(10**6, 10**7)
        self.current_sdp = b""
        self.last_invite_response = b""
        self.final_sent = False
        self.responses: dict[tuple[int, str], bytes] = {}
        self.acked: set[int] = set()
        self.ack_events: dict[int, asyncio.Event] = {}
        self.our_acks: dict[int, bytes] = {}
        self.pending: dict[tuple[int, str], asyncio.Future[SipMessage]] = {}
        self.provisional: set[tuple[int, str]] = set()
        self.cancelled = asyncio.Event()
        self.bye = asyncio.Event()
        self.established = False
        self.reinvite_pending = False
        self.tasks: list[asyncio.Task[None]] = []
        self.codec = "PCMA"
        self.te_pt: str | None = None
        self.mode: Literal["audio", "t38"] = "audio"
        self.audio: RtpFax | None = None
        self.t38: UdptlFax | None = None
        self.audio_fax: SpanFax | None = None
        self.t38_fax: SpanT38 | None = None
        self.late_offer = False
        self._invite_branches: dict[int, str] = {}

    # -- plumbing ----------------------------------------------------------------------------------
    def mark(self, what: str) -> None:
        self.rec.events.append((time.time(), what))

    def log(self, direction: str, data: bytes) -> None:
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        self.rec.sip_log.append(f"{time.monotonic():.3f} {direction} {first}")

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.log(">", data)
        self.owner.send(data, addr)

    @property
    def contact(self) -> str:
        host, port = self.owner.address
        return f"<sip:{self.rec.user or 'fax'}@{host}:{port}>"

    def respond(self, req: SipMessage, status: int, body: bytes = b"", extra: Sequence[str] = ()) -> bytes:
        is_invite = req.method == "INVITE"
        dialog = status > 100
        extra = list(extra)
        if is_invite and 100 < status < 300:
            extra = [f"Record-Route: {r}" for r in self.route] + extra
        if (is_invite and 200 <= status < 300) or req.method == "OPTIONS":
            extra += [f"Allow: {ALLOW}", "Accept: application/sdp"]
        data = _response(
            req,
            self.source,
            status,
            tag=self.local_tag if dialog else "",
            contact=self.contact if (is_invite and dialog and status < 300) else "",
            body=body,
            extra=extra,
        )
        self.send(data, self.source)
        return data

    def request(self, method: str, cseq: int, body: bytes = b"", branch: str = "", to: str = "") -> bytes:
        host, port = self.owner.address
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        local = self.invite.get("to")
        if not _tag(local):
            local += f";tag={self.local_tag}"
        lines = [
            f"{method} {self.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {local}",
            f"To: {to or self.invite.get('from')}",
            f"Call-ID: {self.rec.call_id}",
            f"CSeq: {cseq} {method}",
            *(f"Route: {r}" for r in self.route),
            f"Contact: {self.contact}",
            f"User-Agent: {USER_AGENT}",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def transaction(self, method: str, body: bytes = b"", timeout: float = 32.0) -> SipMessage:
        """Send an in-dialog request, retransmit it (T1 doubling, to T2), return the final response."""
        self.local_cseq += 1
        cseq = self.local_cseq
        branch = "z9hG4bK" + secrets.token_hex(8)
        data = self.request(method, cseq, body, branch)
        if method == "INVITE":
            self._invite_branches[cseq] = branch
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SipMessage] = loop.create_future()
        key = (cseq, method)
        self.pending[key] = fut
        interval, deadline = T1, loop.time() + timeout
        try:
            self.send(data, self.dest)
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), interval)
                except TimeoutError:
                    if loop.time() >= deadline:
                        raise
                    if key not in self.provisional:
                        self.send(data, self.dest)
                    interval = min(interval * 2, T2)
        finally:
            self.pending.pop(key, None)

    async def reliable(self, data: bytes, cseq: int) -> None:
        """Retransmit a final response to an INVITE until its ACK (§13.3.1.4, §17.2.1)."""
        event = self.ack_events.setdefault(cseq, asyncio.Event())
        interval, waited = T1, 0.0
        while waited < 64 * T1:
            try:
                await asyncio.wait_for(event.wait(), interval)
                return
            except TimeoutError:
                waited += interval
                self.send(data, self.source)
                interval = min(interval * 2, T2)
        self.mark("no-ack")

    # -- incoming ----------------------------------------------------------------------------------
    def on_response(self, msg: SipMessage) -> None:
        num, method = msg.cseq
        if method == "INVITE":
            if msg.status < 200:
                self.provisional.add((num, method))
                return
            if msg.status < 300:
                ack = self.our_acks.get(num)
                if ack is None:
                    ack = self.our_acks[num] = self.request("ACK", num)
                self.send(ack, self.dest)  # again for a retransmitted 2xx
            else:
                branch = self._invite_branches.get(num, "")
                self.send(self.request("ACK", num, branch=branch, to=msg.get("to")), self.dest)
        fut = self.pending.get((num, method))
        if fut is not None and not fut.done() and msg.status >= 200:
            fut.set_result(msg)

    def on_request(self, msg: SipMessage, source: tuple[str, int]) -> None:
        method = msg.method
        key = msg.cseq
        if method == "ACK":
            if key[0] not in self.acked:
                self.acked.add(key[0])
                self.ack_events.setdefault(key[0], asyncio.Event()).set()
                self.mark("ack")
                if key[0] == self.invite_cseq and self.late_offer and msg.body:
                    self._late_answer(msg.body)
            return
        if method == "CANCEL":
            self.send(_response(msg, source, 200, tag=self.local_tag), source)
            if not self.final_sent:
                self.mark("cancel")
                self.cancelled.set()
            return
        if method == "INVITE" and key[0] == self.invite_cseq:
            if self.last_invite_response:  # a retransmitted INVITE
                self.send(self.last_invite_response, self.source)
            return
        stored = self.responses.get(key)
        if stored is not None:
            self.send(stored, source)
            return
        if method == "BYE":
            resp = self.respond(msg, 200)
            if not self.bye.is_set():
                self.rec.ended_by = self.rec.ended_by or "remote-bye"
                self.mark("bye-received")
                self.bye.set()
        elif method == "INVITE":
            self.rec.reinvites_received += 1
            self.mark("reinvite-received")
            if self.reinvite_pending:
                resp = self.respond(msg, 491)
            elif not self.final_sent:
                resp = self.respond(msg, 500, extra=["Retry-After: 1"])  # §14.2
            else:
                status, body = self._answer_reinvite(msg)
                resp = self.respond(msg, status, body)
            self.tasks.append(asyncio.create_task(self.reliable(resp, key[0])))
        elif method in ("OPTIONS", "INFO", "UPDATE", "NOTIFY"):
            resp = self.respond(msg, 200)
        else:
            resp = self.respond(msg, 501, extra=[f"Allow: {ALLOW}"])
        self.responses[key] = resp

    # -- SDP ---------------------------------------------------------------------------------------
    def _sdp(self, sections: list[str]) -> bytes:
        host = self.owner.host
        lines = [
            "v=0",
            f"o=faxanswer {self.session_id} {self.sdp_version} IN IP4 {host}",
            "s=fax",
            f"c=IN IP4 {host}",
            "t=0 0",
            *sections,
        ]
        self.sdp_version += 1
        return ("\r\n".join(lines) + "\r\n").encode()

    def _audio_lines(self) -> list[str]:
        assert self.audio is not None and self.audio.sock is not None
        pt = PT[self.codec]
        fmts = f"{pt} {self.te_pt}" if self.te_pt else f"{pt}"
        lines = [f"m=audio {self.audio.sock.port} RTP/AVP {fmts}", f"a=rtpmap:{pt} {self.codec}/8000"]
        if self.te_pt:
            lines += [f"a=rtpmap:{self.te_pt} telephone-event/8000", f"a=fmtp:{self.te_pt} 0-15"]
        return [*lines, "a=ptime:20", "a=sendrecv"]

    def _image_lines(self, params: T38Params) -> list[str]:
        assert self.t38 is not None and self.t38.sock is not None
        attrs = [f"a={k}" if v is None else f"a={k}:{v}" for k, v in t38_attributes(params)]
        return [f"m=image {self.t38.sock.port} udptl t38", *attrs]

    def _pick_codec(self, section: SdpMedia) -> str | None:
        offered = [c for c in (_codec_of(section, f) for f in section.formats) if c is not None]
        if self.plan.codec is not None:
            return self.plan.codec if self.plan.codec in offered else None
        return offered[0] if offered else None

    def _answer_offer(self, body: bytes) -> tuple[int, bytes]:
        """Answer the INVITE's offer (RFC 3264 §6): status and SDP; sets up the remote media."""
        try:
            sections = parse_sdp(body)
        except (ValueError, IndexError):
            return 400, b""
        image = next(
            (m for m in sections if m.media == "image" and m.port and m.proto.lower() == "udptl"), None
        )
        audio = next((m for m in sections if m.media == "audio" and m.port and "RTP/AVP" in m.proto), None)
        use_image = image is not None and self.plan.t38 == "offer_answer"
        codec = self._pick_codec(audio) if audio is not None else None
        session: T38Session | None = None
        answer_params: T38Params | None = None
        if use_image and image is not None:
            try:
                answered = answer_t38(parse_t38_attributes(image.attributes), T38_CAPS)
            except ValueError:
                answered = None
            if answered is None:
                use_image = False
            else:
                answer_params, session = answered
        if not use_image and codec is None:
            return 488, b""
        out: list[str] = []
        for m in sections:
            if use_image and m is image and answer_params is not None:
                out += self._image_lines(answer_params)
            elif not use_image and m is audio and codec is not None:
                self.codec = codec
                self.rec.codec = codec
                self.te_pt = _telephone_event(m)
                out += self._audio_lines()
            else:
                out.append(_rejected(m))
        if use_image and image is not None and session is not None:
            self._switch_t38((image.host or self.source[0], image.port), session, "offer")
        elif audio is not None:
            assert self.audio is not None
            self.audio.remote = (audio.host or self.source[0], audio.port)
        self.current_sdp = self._sdp(out)
        return 200, self.current_sdp

    def _late_answer(self, body: bytes) -> None:
        audio = next((m for m in parse_sdp(body) if m.media == "audio" and m.port), None)
        if audio is not None and self.audio is not None:
            self.audio.remote = (audio.host or self.source[0], audio.port)

    def _answer_reinvite(self, msg: SipMessage) -> tuple[int, bytes]:
        if not msg.body:
            return 200, self.current_sdp  # offer in our 200, answer in the ACK
        try:
            sections = parse_sdp(msg.body)
        except (ValueError, IndexError):
            return 400, b""
        image = next((m for m in sections if m.media == "image" and m.port), None)
        audio = next((m for m in sections if m.media == "audio" and m.port), None)
        if image is not None:
            remote = (image.host or self.source[0], image.port)
            if self.mode == "t38":
                assert self.t38 is not None
                self.t38.remote = remote
                self.rec.refreshes += 1
                self.mark("refresh")
                return 200, self.current_sdp
            if self.plan.t38 == "never":
                self.rec.t38_switch = "refused 488"
                self.mark("t38-refused")
                return 488, b""
            try:
                answered = answer_t38(parse_t38_attributes(image.attributes), T38_CAPS)
            except ValueError:
                answered = None
            if answered is None:
                return 488, b""
            params, session = answered
            out: list[str] = []
            for m in sections:
                out += self._image_lines(params) if m is image else [_rejected(m)]
            self.current_sdp = self._sdp(out)
            self._switch_t38(remote, session, "remote")
            return 200, self.current_sdp
        if audio is not None:
            assert self.audio is not None
            self.audio.remote = (audio.host or self.source[0], audio.port)
            if self.mode == "audio":
                self.rec.refreshes += 1
                self.mark("refresh")
                return 200, self.current_sdp
            # back to audio after T.38: the line carries silence from now on
            codec = self._pick_codec(audio)
            if codec is None:
                return 488, b""
            self.codec = codec
            self.audio.codec, self.audio.pt = codec, PT[codec]
            self.audio.fax = cast(SpanFax, _Voice(talk=False))
            self.mode = "audio"
            self.mark("back-to-audio")
            self.current_sdp = self._sdp(self._audio_lines())
            return 200, self.current_sdp
        return 488, b""

    def _switch_t38(self, remote: tuple[str, int], session: T38Session, who: str) -> None:
        assert self.t38 is not None
        self.t38.encoder = session.encoder(depth=3)
        self.t38.remote = remote
        if self.audio_fax is not None and not self.audio_fax.done:
            self.audio_fax.terminate()
        self.t38_fax = self.t38.fax
        self.mode = "t38"
        self.rec.t38_switch = who
        self.mark(f"t38 {who}")

    async def _reinvite_t38(self) -> None:
        """Our re-INVITE to ``m=image`` (one retry after a 491, §14.1: 0-2 s as the non-owner)."""
        for attempt in range(2):
            if self.mode == "t38" or self.bye.is_set():
                return
            previous, version = self.current_sdp, self.sdp_version
            body = self._sdp(self._image_lines(T38_OFFER))
            self.reinvite_pending = True
            self.mark("t38-offer-sent")
            try:
                resp = await self.transaction("INVITE", body, timeout=16.0)
            except TimeoutError:
                self.rec.t38_switch = "rejected timeout"
                self.current_sdp = previous
                return
            finally:
                self.reinvite_pending = False
            if resp.status == 491 and attempt == 0:
                self.current_sdp = previous
                await asyncio.sleep(random.uniform(0.0, 2.0))
                continue
            image = next((m for m in parse_sdp(resp.body) if m.media == "image" and m.port), None)
            session = None
            if resp.status < 300 and image is not None:
                try:
                    session = accept_t38_answer(T38_OFFER, parse_t38_attributes(image.attributes), T38_CAPS)
                except ValueError:
                    session = None
            if image is None or session is None:
                self.rec.t38_switch = f"rejected {resp.status}"
                self.mark(f"t38-rejected {resp.status}")
                self.current_sdp = previous
                self.sdp_version = max(self.sdp_version, version)
                return
            self.current_sdp = body
            self._switch_t38((image.host or self.source[0], image.port), session, "local")
            return

    # -- the call ----------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self.rec.ended_by = self.rec.ended_by or "stopped"
            if self.established and not self.bye.is_set():
                self.local_cseq += 1
                self.send(self.request("BYE", self.local_cseq), self.dest)
            raise
        finally:
            for task in self.tasks:
                if not task.done():
                    task.cancel()
            self._collect()
            for end in (self.audio, self.t38):
                if end is not None:
                    end.close()
            self.mark("end")
            self.rec.finished = True
            self.owner.call_finished()

    def _final(self, status: int, body: bytes = b"") -> bytes:
        data = self.respond(self.invite, status, body)
        self.last_invite_response = data
        self.final_sent = True
        self.rec.status = status
        self.mark(str(status))
        return data

    async def _run(self) -> None:
        plan = self.plan
        self.last_invite_response = self.respond(self.invite, 100)
        if plan.action in ("busy", "reject"):
            status = 486 if plan.action == "busy" else plan.code
            await self._reject(status)
            return
        if plan.action == "no_answer" or plan.ring_seconds > 0:
            self.last_invite_response = self.respond(self.invite, 180)
            self.mark("180")
            timeout = plan.ring_seconds if plan.ring_seconds > 0 else None
            try:
                await asyncio.wait_for(self.cancelled.wait(), timeout)
            except TimeoutError:
                pass
            if self.cancelled.is_set():
                await self._reject(487, "cancel")
                return
            if plan.action == "no_answer":
                await self._reject(480)
                return
        if self.cancelled.is_set():
            await self._reject(487, "cancel")
            return
        await self._answer()

    async def _reject(self, status: int, ended_by: str = "rejected") -> None:
        self.rec.ended_by = ended_by
        data = self._final(status)
        await self.reliable(data, self.invite_cseq)

    async def _answer(self) -> None:
        plan = self.plan
        stats = self.rec.stats
        if plan.action == "fax":
            self.audio_fax = SpanFax(
                False,
                receive_tiff=self.dir / "g711.tif",
                ecm=plan.ecm,
                modems=plan.modems,
                ident=self.owner.csid,
            )
            source: SpanFax = self.audio_fax
        else:
            source = cast(SpanFax, _Voice())
        self.audio = RtpFax(source, "PCMA", stats)
        await _open(self.audio, self.owner.host)
        term = SpanT38(False, receive_tiff=self.dir / "t38.tif", ecm=plan.ecm, ident=self.owner.csid)
        self.t38 = UdptlFax(term, depth=3, stats=stats)
        await _open(self.t38, self.owner.host)
        if self.invite.body:
            status, body = self._answer_offer(self.invite.body)
        else:  # no offer: ours goes in the 200, the answer comes in the ACK (RFC 3261 §13.2.1)
            self.late_offer = True
            self.codec = plan.codec or "PCMA"
            self.rec.codec = self.codec
            self.current_sdp = body = self._sdp(self._audio_lines())
            status = 200
        if status >= 300:
            await self._reject(status)
            return
        self.audio.codec, self.audio.pt = self.codec, PT[self.codec]
        data = self._final(200, body)
        self.established = True
        self.tasks.append(asyncio.create_task(self.reliable(data, self.invite_cseq)))
        await self._media()

    def _fax(self) -> SpanFax | SpanT38 | None:
        if self.mode == "t38":
            return self.t38_fax
        return self.audio_fax

    async def _media(self) -> None:
        plan = self.plan
        clock = _Clock(self.owner.speed)
        per_second = RATE / FRAME
        limit = int((plan.voice_seconds if plan.action == "voice" else plan.max_seconds) * per_second)
        reinvite_at = int(plan.reinvite_after * per_second) if plan.t38 == "reinvite" else None
        no_ack_at = int(64 * T1 * per_second)
        watched: object = None
        seen_b = seen_d = seen_f = 0
        done_at: int | None = None
        hangup_at: int | None = None
        reason = ""
        while not self.bye.is_set():
            for _ in range(await clock.due()):
                if self.mode == "t38":
                    assert self.t38 is not None
                    self.t38.step()
                else:
                    assert self.audio is not None
                    self.audio.step()
                await asyncio.sleep(0)  # let the loop deliver what was just sent (see faxcaller)
            if self.bye.is_set():
                break
            if reinvite_at is not None and clock.ticks >= reinvite_at and self.mode == "audio":
                reinvite_at = None
                self.tasks.append(asyncio.create_task(self._reinvite_t38()))
            fax = self._fax()
            if fax is not None:
                if fax is not watched:  # a new T.30 session (after a switch to T.38)
                    watched, seen_b, seen_d, seen_f, done_at = fax, 0, 0, 0, None
                if len(fax.phase_b) > seen_b:
                    seen_b = len(fax.phase_b)
                    self.mark("phase-b")
                for frame in fax.frames[seen_f:]:
                    if frame.sent and len(frame.data) > 2 and frame.data[2] & 0xFE == 0x84:
                        self.mark("cfr")
                seen_f = len(fax.frames)
                while len(fax.page_stats) > seen_d:
                    seen_d += 1
                    self.mark(f"page {seen_d}")
                    if plan.hangup_after_page == seen_d and hangup_at is None:
                        hangup_at = clock.ticks + int(plan.hangup_delay * per_second)
                if done_at is None and fax.done:
                    done_at = clock.ticks
                    self.mark("phase-e")
            if hangup_at is not None and clock.ticks >= hangup_at:
                reason = f"page {plan.hangup_after_page}"
                break
            if done_at is not None and clock.ticks - done_at >= plan.bye_after_dcn * per_second:
                reason = "dcn"
                break
            if clock.ticks >= limit:
                reason = "voice" if plan.action == "voice" else "max-seconds"
                break
            if clock.ticks >= no_ack_at and self.invite_cseq not in self.acked:
                reason = "no-ack"
                break
        self.rec.seconds = clock.ticks * FRAME / RATE
        if self.bye.is_set():
            await asyncio.sleep(0.2)  # a retransmitted BYE gets the stored 200
            return
        self.rec.ended_by = "no-ack" if reason == "no-ack" else "local-bye"
        self.rec.hangup_reason = reason
        self._terminate()
        self.mark("bye-sent")
        try:
            resp = await self.transaction("BYE", timeout=8.0)
            self.rec.bye_status = resp.status
        except TimeoutError:
            self.rec.bye_status = 408
        self.bye.set()

    def _terminate(self) -> None:
        for fax in (self.audio_fax, self.t38_fax):
            if fax is not None and not fax.done:
                fax.terminate()

    def _collect(self) -> None:
        """The outcome: SpanDSP's result of the session that carried the fax, and the pages."""
        self._terminate()
        fax = self.t38_fax if self.t38_fax is not None else self.audio_fax
        if fax is not None and self.established:
            self.rec.fax = fax.result
            self.rec.transport = "t38" if fax is self.t38_fax else "g711"
        pages: list[FaxPage] = []
        for name in ("g711.tif", "t38.tif"):
            pages += _read_pages(self.dir / name)
        self.rec.fax_pages = pages
        self.rec.pages = [p.pels for p in pages]


# ------------------------------------------------------------------------------------------ answerer
class FaxAnswerer:
    """A SIP UAS on UDP that answers each INVITE by the next :class:`AnswerPlan` (then ``default``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        plans: Sequence[AnswerPlan] | None = None,
        default: AnswerPlan | None = None,
        csid: str = "+49 30 123456",
        speed: float = 1.0,
        workdir: Path | None = None,
        number_plans: Mapping[str, Sequence[AnswerPlan]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.plans: deque[AnswerPlan] = deque(plans or ())
        #: plans for INVITEs to one number (the Request-URI's user part), used before ``plans``
        self.number_plans: dict[str, deque[AnswerPlan]] = {
            k: deque(v) for k, v in (number_plans or {}).items()
        }
        self.default = default if default is not None else AnswerPlan()
        self.csid = csid
        self.speed = speed
        self.calls: list[AnsweredCall] = []
        self.log: list[str] = []  # SIP messages outside any call
        self._own_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="faxanswer-"))
        self._sock: _Udp | None = None
        self._calls: dict[str, _Call] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._changed: asyncio.Event | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def add_plans(self, *plans: AnswerPlan) -> None:
        """Queue plans for the next INVITEs."""
        self.plans.extend(plans)

    async def start(self) -> int:
        """Bind the SIP socket; returns its port."""
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Udp(self._on_sip), local_addr=(self.host, self.port)
        )
        proto.transport = transport
        self._sock = proto
        self.port = proto.port
        return self.port

    async def stop(self) -> None:
        """End every call (BYE for established ones) and close the sockets."""
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def wait_calls(self, n: int, timeout: float) -> list[AnsweredCall]:
        """The first ``n`` calls, once all of them have finished; TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert self._changed is not None, "start() first"
        while True:
            done = [c for c in self.calls if c.finished]
            if len(self.calls) >= n and all(c.finished for c in self.calls[:n]):
                return self.calls[:n]
            left = deadline - loop.time()
            if left <= 0:
                summary = "\n".join(c.describe() for c in self.calls) or "no INVITE received"
                raise TimeoutError(f"{len(done)} of {n} calls finished in {timeout} s:\n{summary}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def call_finished(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._sock is not None:
            self._sock.send(data, addr)

    # -- SIP dispatch ------------------------------------------------------------------------------
    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            msg = SipMessage.parse(data)
            call_id = msg.get("call-id")
            call = self._calls.get(call_id)
            if call is not None:
                call.log("<", data)
            else:
                first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
                self.log.append(f"{time.monotonic():.3f} < {first}")
            if msg.is_response:
                if call is not None:
                    call.on_response(msg)
                return
            method = msg.method
            if method == "INVITE" and not _tag(msg.get("to")):
                if call is not None and call.invite.cseq == msg.cseq:
                    call.on_request(msg, addr)  # retransmission
                elif call is not None and not call.rec.finished:
                    self.send(_response(msg, addr, 482, tag=secrets.token_hex(4)), addr)
                else:
                    self._new_call(msg, addr)
            elif call is not None:
                call.on_request(msg, addr)
            elif method == "OPTIONS":
                extra = [f"Allow: {ALLOW}", "Accept: application/sdp"]
                self.send(_response(msg, addr, 200, tag=secrets.token_hex(4), extra=extra), addr)
            elif method == "REGISTER":
                contact = msg.get("contact")
                expires = msg.get("expires") or "3600"
                extra = [f"Contact: {contact};expires={expires}"] if contact and contact != "*" else []
                self.send(_response(msg, addr, 200, tag=secrets.token_hex(4), extra=extra), addr)
            elif method != "ACK":
                self.send(_response(msg, addr, 481, tag=secrets.token_hex(4)), addr)
        except (ValueError, IndexError) as exc:
            self.log.append(f"bad SIP message ({exc}): {data[:80]!r}")

    def _new_call(self, invite: SipMessage, addr: tuple[str, int]) -> None:
        ruri = invite.first.split()[1]
        number = ruri.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]
        own = self.number_plans.get(number)
        if own:
            plan = own.popleft()
        else:
            plan = self.plans.popleft() if self.plans else self.default
        plan = replace(plan)
        frm = invite.get("from")
        rec = AnsweredCall(
            call_id=invite.get("call-id"),
            request_uri=ruri,
            user=_user(ruri),
            from_=frm,
            caller=_user(_uri(frm)),
            to=invite.get("to"),
            started=time.time(),
            plan=plan,
            source=addr,
        )
        rec.events.append((rec.started, "invite"))
        call = _Call(self, invite, addr, rec, len(self.calls))
        call.log("<", invite.first.encode())
        self.calls.append(rec)
        self._calls[rec.call_id] = call
        self._tasks.append(asyncio.create_task(call.run()))


class AnswererThread:
    """A :class:`FaxAnswerer` on an event loop of its own thread, for synchronous tests.

    ``with AnswererThread(plans=[...]) as line: ... line.port ... line.wait_calls(1, 120)``.
    """

    def __init__(self, **kwargs: object) -> None:
        self.answerer = FaxAnswerer(**kwargs)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="faxanswer", daemon=True)
        self.port = 0

    def __enter__(self) -> AnswererThread:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.answerer.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.answerer.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def calls(self) -> list[AnsweredCall]:
        return list(self.answerer.calls)

    def add_plans(self, *plans: AnswerPlan) -> None:
        self.loop.call_soon_threadsafe(self.answerer.add_plans, *plans)

    def wait_calls(self, n: int, timeout: float) -> list[AnsweredCall]:
        fut = asyncio.run_coroutine_threadsafe(self.answerer.wait_calls(n, timeout), self.loop)
        return fut.result(timeout + 10)
