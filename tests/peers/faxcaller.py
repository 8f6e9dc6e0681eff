"""A test-side fax caller: SIP over UDP, SpanDSP's fax machine over G.711 RTP or T.38 UDPTL.

What it does
------------
:func:`call_fax` places one call to ``ums serve`` (or any SIP UAS) and sends a TIFF with SpanDSP's
fax machine, in real time:

* audio: :class:`RtpFax` feeds :class:`~tests.peers.spandsp_fax.SpanFax` with the G.711 packets it
  receives and sends what it transmits, one 20 ms packet per tick;
* T.38: :class:`UdptlFax` feeds :class:`~tests.peers.spandsp_fax.SpanT38` with the IFP packets of
  the UDPTL datagrams it receives and sends its IFP packets in datagrams with redundancy (or parity
  FEC, as negotiated), optionally dropping a share of the datagrams each way (seeded);
* T.38 switch: ``t38="caller"`` sends a re-INVITE with ``m=image`` ``reinvite_after`` seconds after
  the answer; ``t38="server"`` waits for the far end's re-INVITE (any offer with ``m=image`` is
  answered with ``m=image``; an audio re-offer keeps the current media).  After the switch a new
  SpanDSP T.38 terminal starts the T.30 session again, as a T.38-native caller would.

When the fax machine reports phase E the caller waits ``tail`` seconds and hangs up (BYE), unless the
far end hung up first.  Field failures can be staged: ``t38_answer=488`` refuses the far end's
re-INVITE to T.38 (the fax stays on G.711); ``refresh_after`` sends a session-refresh re-INVITE (the
current SDP, version unchanged) that many seconds after the caller receives CFR, i.e. in phase C;
``hangup_after_page=n`` hangs up ``hangup_delay`` seconds after the phase D of page ``n`` (in the
middle of page n+1); ``after_dcn="media"`` or ``"silence"`` never hangs up after phase E and either
keeps sending media (silence RTP packets) or stops sending, until the far end hangs up.
:class:`FaxCallResult` has the SpanDSP result, which media carried the fax, the SIP exchange
(``sip_log``), a wall-clock ``timeline`` (phase B/D/E, re-INVITEs, BYE), who ended the call and the
media counters.

The media endpoints also work without SIP (:func:`run_media_pair` connects two of them on loopback),
which is how the harness checks itself; ``speed`` > 1 runs the clock faster than real time there.

How it works
------------
Everything runs on one asyncio loop: a SIP UAC of our own (UDP, RFC 3261 §17.1 retransmission of
INVITE/BYE at T1 doubling, ACK for every 2xx, 200 to BYE/OPTIONS/re-INVITE, 491 on glare), an RTP
socket and a UDPTL socket.  The UAC is written here, not scripted with SIPp, because the signalling
must follow the media: the re-INVITE goes out at a moment the test picks, the port of an
``m=image`` answer or offer must reach the UDPTL endpoint, and the BYE follows SpanDSP's phase E; a
SIPp scenario would need a control channel back to Python for each of these.

The media tick is paced by the monotonic clock (``t0 + n * 20 ms / speed``); a late tick processes
every frame that is due, so the sample clock never slips.  Received RTP goes into a FIFO (sequence
gaps filled with silence, reset on a new SSRC) that starts playing at three frames (60 ms) and
re-primes after an underrun; each tick the fax machine gets 160 samples from it (silence when
empty) and sends 160.
The T.38 terminal is advanced 160 samples per tick; each IFP packet it hands out becomes one UDPTL
datagram sent as many times as SpanDSP asks (indicator and end-of-data repetition, same sequence
number).  G.711 tables are the test's own (:mod:`tests.peers.pcap`); UDPTL framing and the T.38 SDP
attribute syntax come from :mod:`ums.fax_t38`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

import numpy as np

from tests.peers.pcap import g711_decode, g711_encode
from tests.peers.spandsp_fax import FaxResult, SpanFax, SpanT38
from ums.fax_t38.sdp import (
    RateManagement,
    T38Params,
    UdpEc,
    parse_t38_attributes,
    t38_attributes,
)
from ums.fax_t38.udptl import UdptlDecoder, UdptlEncoder, UdptlError

__all__ = [
    "FaxCallResult",
    "MediaStats",
    "RtpFax",
    "SdpMedia",
    "UdptlFax",
    "call_fax",
    "parse_sdp",
    "run_media_pair",
]

HOST = "127.0.0.1"
RATE = 8000
FRAME = 160  # 20 ms
PT = {"PCMU": 0, "PCMA": 8}
T1 = 0.5  # RFC 3261 timer T1
_CFR = 0x84  # T.30 FCF of CFR, bit-reversed as SpanDSP reports frames (X bit masked off)
_REASONS = {488: "Not Acceptable Here", 415: "Unsupported Media Type", 486: "Busy Here", 603: "Decline"}
T38Mode = Literal["none", "caller", "server"]
AfterDcn = Literal["bye", "media", "silence"]


# ------------------------------------------------------------------------------------------ UDP
class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable etc.
        pass

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


async def _bind(on_datagram: Callable[[bytes, tuple[str, int]], None], port: int = 0) -> _Udp:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _Udp(on_datagram), local_addr=(HOST, port))
    proto.transport = transport
    return proto


class _Clock:
    """Ticks of ``FRAME`` samples at ``speed`` times real time, from a monotonic schedule."""

    def __init__(self, speed: float = 1.0) -> None:
        self.period = FRAME / RATE / speed
        self.t0 = time.monotonic()
        self.ticks = 0

    async def due(self) -> int:
        """Sleep until the next tick; return how many ticks are due (>= 1)."""
        target = self.t0 + (self.ticks + 1) * self.period
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = max(1, int((time.monotonic() - self.t0) / self.period) - self.ticks)
        self.ticks += n
        return n


# ------------------------------------------------------------------------------------ media
@dataclass
class MediaStats:
    rtp_tx: int = 0
    rtp_rx: int = 0
    rtp_gap_frames: int = 0  # frames of silence inserted for sequence gaps
    underruns: int = 0
    udptl_tx: int = 0  # datagrams sent (repetitions included, dropped ones not)
    udptl_rx: int = 0
    udptl_dropped_tx: int = 0
    udptl_dropped_rx: int = 0
    ifp_tx: int = 0
    ifp_rx: int = 0
    ifp_lost: int = 0  # not recovered by the UDPTL decoder
    ifp_recovered: int = 0


class RtpFax:
    """SpanDSP's audio fax machine behind a G.711 RTP socket (20 ms packets, symmetric RTP)."""

    def __init__(self, fax: SpanFax, codec: str = "PCMA", stats: MediaStats | None = None) -> None:
        self.fax = fax
        self.codec = codec
        self.pt = PT[codec]
        self.stats = stats or MediaStats()
        self.remote: tuple[str, int] | None = None
        self.sock: _Udp | None = None
        self._fifo: deque[np.ndarray] = deque()
        self._playing = False
        self._ssrc_rx: int | None = None
        self._next_seq: int | None = None
        self._seq = secrets.randbelow(0x10000)
        self._ts = secrets.randbelow(1 << 32)
        self._ssrc = secrets.randbelow(1 << 32)
        self._first = True

    async def open(self, port: int = 0) -> int:
        self.sock = await _bind(self._on_datagram, port)
        return self.sock.port

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        cc = data[0] & 0x0F
        pt = data[1] & 0x7F
        seq, _ts, ssrc = struct.unpack("!HII", data[2:12])
        off = 12 + 4 * cc
        if data[0] & 0x10 and len(data) >= off + 4:
            off += 4 + 4 * struct.unpack("!H", data[off + 2 : off + 4])[0]
        payload = data[off:]
        if data[0] & 0x20 and payload:
            payload = payload[: -payload[-1]]
        codec = {v: k for k, v in PT.items()}.get(pt)
        if codec is None:
            return  # telephone-event, comfort noise
        self.stats.rtp_rx += 1
        if ssrc != self._ssrc_rx:
            self._ssrc_rx, self._next_seq = ssrc, None
        if self._next_seq is not None:
            gap = (seq - self._next_seq) & 0xFFFF
            if gap >= 0x8000:
                return  # late or duplicate
            if gap and gap <= 50:
                self.stats.rtp_gap_frames += gap
                self._fifo.extend(np.zeros(FRAME, np.int16) for _ in range(gap))
        self._next_seq = (seq + 1) & 0xFFFF
        pcm = g711_decode(codec, payload)
        for i in range(0, len(pcm), FRAME):
            chunk = pcm[i : i + FRAME]
            self._fifo.append(np.pad(chunk, (0, FRAME - len(chunk))) if len(chunk) < FRAME else chunk)
        while len(self._fifo) > 50:  # 1 s: drop the oldest rather than grow the delay further
            self._fifo.popleft()

    def _play(self) -> np.ndarray:
        if not self._playing and len(self._fifo) >= 3:
            self._playing = True
        if self._playing and self._fifo:
            return self._fifo.popleft()
        if self._playing:
            self._playing = False
            self.stats.underruns += 1
        return np.zeros(FRAME, np.int16)

    def step(self) -> None:
        """One 20 ms frame: received audio into the fax machine, its output onto the wire."""
        self.fax.rx(self._play())
        out = self.fax.tx(FRAME)
        if self.remote is None or self.sock is None:
            return
        head = struct.pack(
            "!BBHII", 0x80, self.pt | (0x80 if self._first else 0), self._seq, self._ts, self._ssrc
        )
        self.sock.send(head + g711_encode(self.codec, out), self.remote)
        self._first = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME) & 0xFFFFFFFF
        self.stats.rtp_tx += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class UdptlFax:
    """SpanDSP's T.38 terminal behind a UDPTL socket."""

    def __init__(
        self,
        fax: SpanT38,
        *,
        ec: Literal["redundancy", "fec", "none"] = "redundancy",
        depth: int = 3,
        loss_tx: float = 0.0,
        loss_rx: float = 0.0,
        seed: int = 1,
        stats: MediaStats | None = None,
    ) -> None:
        self.fax = fax
        self.encoder = UdptlEncoder(ec, depth=depth, fec_span=3, fec_entries=depth)
        self.decoder = UdptlDecoder(hold=0)
        self.loss_tx = loss_tx
        self.loss_rx = loss_rx
        self.rng_tx = random.Random(seed)
        self.rng_rx = random.Random(seed + 1)
        self.stats = stats or MediaStats()
        self.remote: tuple[str, int] | None = None
        self.sock: _Udp | None = None
        self.bad_datagrams = 0

    async def open(self, port: int = 0) -> int:
        self.sock = await _bind(self._on_datagram, port)
        return self.sock.port

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.loss_rx and self.rng_rx.random() < self.loss_rx:
            self.stats.udptl_dropped_rx += 1
            return
        self.stats.udptl_rx += 1
        try:
            items = self.decoder.receive(data)
        except UdptlError:
            self.bad_datagrams += 1
            return
        for item in items:
            self.stats.ifp_rx += 1
            self.fax.rx_packet(item.ifp, item.seq)
        self.stats.ifp_lost = self.decoder.lost
        self.stats.ifp_recovered = self.decoder.recovered

    def step(self) -> None:
        """One 20 ms tick: the terminal's clock moves on, what it sent goes onto the wire."""
        self.fax.advance(FRAME)
        for pkt in self.fax.take_packets():
            datagram = self.encoder.packet(pkt.data)
            self.stats.ifp_tx += 1
            for _ in range(max(pkt.count, 1)):
                if self.loss_tx and self.rng_tx.random() < self.loss_tx:
                    self.stats.udptl_dropped_tx += 1
                    continue
                if self.remote is not None and self.sock is not None:
                    self.sock.send(datagram, self.remote)
                    self.stats.udptl_tx += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


Endpoint = RtpFax | UdptlFax


async def _run_pair(a: Endpoint, b: Endpoint, max_seconds: float, speed: float, tail: float) -> float:
    clock = _Clock(speed)
    limit = int(max_seconds * RATE / FRAME)
    finished: int | None = None
    while clock.ticks < limit:
        for _ in range(await clock.due()):
            a.step()
            b.step()
            # let the loop read what was just sent before the next step: when ticks fall behind on a
            # busy machine, the frames of several ticks must still arrive in step, not in one burst
            await asyncio.sleep(0)
        if finished is None and a.fax.done and b.fax.done:
            finished = clock.ticks
        if finished is not None and (clock.ticks - finished) * FRAME >= tail * RATE:
            break
    for end in (a, b):
        end.fax.terminate()
    return clock.ticks * FRAME / RATE


def run_media_pair(
    a: Endpoint, b: Endpoint, *, max_seconds: float = 120.0, speed: float = 1.0, tail: float = 0.2
) -> float:
    """Connect two endpoints of the same kind over loopback sockets until both fax machines are
    done; returns the simulated seconds.  ``speed`` runs the clock faster than real time."""

    async def main() -> float:
        pa, pb = await a.open(), await b.open()
        a.remote, b.remote = (HOST, pb), (HOST, pa)
        try:
            return await _run_pair(a, b, max_seconds, speed, tail)
        finally:
            a.close()
            b.close()

    return asyncio.run(main())


# -------------------------------------------------------------------------------------- SIP
_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
}


@dataclass
class SipMessage:
    first: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:
                headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers.append((_COMPACT.get(key, key), value.strip()))
        return cls(lines[0], headers, body)

    def get(self, name: str) -> str:
        for k, v in self.headers:
            if k == name:
                return v
        return ""

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def is_response(self) -> bool:
        return self.first.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.first.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        return self.cseq[1] if self.is_response else self.first.split()[0]

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = self.get("cseq").partition(" ")
        return int(num), method.strip()


def _tag(header: str) -> str:
    for part in header.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.lower() == "tag":
            return v
    return ""


def _uri(header: str) -> str:
    if "<" in header:
        return header.split("<", 1)[1].split(">", 1)[0]
    return header.split(";", 1)[0].strip()


@dataclass
class SdpMedia:
    media: str
    port: int
    proto: str
    formats: list[str]
    host: str
    attributes: list[tuple[str, str | None]]


def parse_sdp(body: bytes) -> list[SdpMedia]:
    """The media sections of an SDP body (connection address resolved per section)."""
    session_host = ""
    out: list[SdpMedia] = []
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            out.append(SdpMedia(parts[0], int(parts[1]), parts[2], parts[3:], session_host, []))
        elif kind == "c":
            host = value.split()[-1].split("/")[0]
            if out:
                out[-1].host = host
            else:
                session_host = host
        elif kind == "a" and out:
            name, sep, val = value.partition(":")
            out[-1].attributes.append((name, val if sep else None))
    return out


#: what the caller writes in an m=image offer or answer (SpanDSP's terminal speaks IFP version 0)
T38_LOCAL = T38Params(
    version=0,
    max_bit_rate=14400,
    rate_management=RateManagement.TRANSFERRED_TCF,
    max_buffer=2000,
    max_datagram=400,
    udp_ec=UdpEc.REDUNDANCY,
)


@dataclass
class FaxCallResult:
    """How a call went."""

    answered: bool = False
    status: int = 0  # final status of the INVITE
    call_id: str = ""
    fax: FaxResult | None = None
    t38: bool = False  # the fax ended on T.38
    t38_switch: str = ""  # "", "caller", "server"; "rejected <status>" when our re-INVITE failed
    ended_by: str = ""  # "local-bye", "remote-bye", "timeout", "t38-rejected"
    seconds: float = 0.0  # from the answer to the end of the call
    stats: MediaStats = field(default_factory=MediaStats)
    sip_log: list[str] = field(default_factory=list)
    server_reinvites: int = 0
    refresh_status: int = 0  # final status of our session-refresh re-INVITE
    #: (wall-clock time.time(), what): "answered", "phase-b", "cfr", "page 1" (phase D), "phase-e", "refresh",
    #: "t38-refused", "bye-sent", "bye-received"; comparable with the server's log timestamps
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def at(self, what: str) -> float | None:
        """Wall-clock time of the first ``what`` in :attr:`timeline`."""
        return next((t for t, w in self.timeline if w == what), None)

    @property
    def ok(self) -> bool:
        return self.fax is not None and self.fax.ok

    def describe(self) -> str:
        fax = self.fax.completion_text if self.fax else "no fax result"
        return (
            f"status={self.status} answered={self.answered} fax={fax} t38={self.t38} "
            f"switch={self.t38_switch!r} ended_by={self.ended_by} seconds={self.seconds:.1f} {self.stats}\n"
            + "\n".join(self.sip_log[-30:])
        )


class _Caller:
    def __init__(
        self,
        server: tuple[str, int],
        number: str,
        tiff: Path,
        *,
        caller: str,
        codec: str,
        t38: T38Mode,
        reinvite_after: float,
        ecm: bool,
        modems: tuple[str, ...],
        ident: str,
        loss: float,
        redundancy: int,
        seed: int,
        max_seconds: float,
        tail: float,
        fallback: bool,
        t38_answer: int = 200,
        refresh_after: float | None = None,
        hangup_after_page: int | None = None,
        hangup_delay: float = 1.0,
        after_dcn: AfterDcn = "bye",
    ) -> None:
        self.fallback = fallback
        self.t38_answer = t38_answer
        self.refresh_after = refresh_after
        self.hangup_after_page = hangup_after_page
        self.hangup_delay = hangup_delay
        self.after_dcn = after_dcn
        self.current_sdp = b""
        self.server = server
        self.number = number
        self.tiff = tiff
        self.caller = caller
        self.codec = codec
        self.t38_mode = t38
        self.reinvite_after = reinvite_after
        self.ecm = ecm
        self.modems = modems
        self.ident = ident
        self.loss = loss
        self.redundancy = redundancy
        self.seed = seed
        self.max_seconds = max_seconds
        self.tail = tail
        self.result = FaxCallResult(call_id=f"{secrets.token_hex(8)}@faxcaller")
        self.call_id = self.result.call_id
        self.local_tag = secrets.token_hex(4)
        self.remote_tag = ""
        self.remote_target = f"sip:{number}@{server[0]}:{server[1]}"
        self.cseq = 1
        self.sdp_version = 1
        self.sip: _Udp | None = None
        self.audio = RtpFax(
            SpanFax(True, transmit_tiff=tiff, ecm=ecm, modems=modems, ident=ident), codec, self.result.stats
        )
        self.t38: UdptlFax | None = None
        self.udptl_port = 0
        self.pending: dict[tuple[int, str], asyncio.Future[SipMessage]] = {}
        self.acks: dict[int, bytes] = {}
        self.answered_requests: dict[tuple[int, str], bytes] = {}
        self.bye = asyncio.Event()
        self.reinvite_pending = False
        self._provisional = False
        self._invite_branch: dict[int, str] = {}

    # -- SIP plumbing ------------------------------------------------------------------------------
    def _mark(self, what: str) -> None:
        self.result.timeline.append((time.time(), what))

    def _log(self, direction: str, msg: bytes) -> None:
        first = msg.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        self.result.sip_log.append(f"{time.monotonic():.3f} {direction} {first}")

    def _send(self, data: bytes) -> None:
        assert self.sip is not None
        self._log(">", data)
        self.sip.send(data, self.server)

    def _request(self, method: str, cseq: int, body: bytes = b"", branch: str = "", uri: str = "") -> bytes:
        port = self.sip.port if self.sip else 0
        to = f"<sip:{self.number}@{self.server[0]}:{self.server[1]}>"
        if self.remote_tag:
            to += f";tag={self.remote_tag}"
        lines = [
            f"{method} {uri or self.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{port};branch={branch or 'z9hG4bK' + secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f'From: "Fax {self.caller}" <sip:{self.caller}@{HOST}>;tag={self.local_tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:fax@{HOST}:{port}>",
            "User-Agent: ums-test-faxcaller",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _response(self, req: SipMessage, status: int, reason: str, body: bytes = b"") -> bytes:
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in req.get_all("via")]
        to = req.get("to")
        if not _tag(to):
            to += f";tag={self.local_tag}"
        lines += [f"From: {req.get('from')}", f"To: {to}", f"Call-ID: {req.get('call-id')}"]
        lines += [f"CSeq: {req.get('cseq')}"]
        if self.sip is not None:
            lines.append(f"Contact: <sip:fax@{HOST}:{self.sip.port}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _transaction(self, data: bytes, cseq: int, method: str, timeout: float = 32.0) -> SipMessage:
        """Send a request, retransmit it until a response; return the final response."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SipMessage] = loop.create_future()
        self.pending[(cseq, method)] = fut
        self._provisional = False
        interval, deadline = T1, loop.time() + timeout
        try:
            self._send(data)
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), interval)
                except TimeoutError:
                    if loop.time() >= deadline:
                        raise
                    if not (method == "INVITE" and self._provisional):
                        self._send(data)
                    interval = min(interval * 2, 4.0)
        finally:
            self.pending.pop((cseq, method), None)

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = SipMessage.parse(data)
            if msg.get("call-id") != self.call_id:
                return
            self._log("<", data)
            if msg.is_response:
                self._on_response(msg)
            else:
                self._on_request(msg)
        except (ValueError, IndexError):
            self.result.sip_log.append(f"bad SIP message: {data[:80]!r}")

    def _on_response(self, msg: SipMessage) -> None:
        num, method = msg.cseq
        if method == "INVITE" and msg.status < 200:
            self._provisional = True
            return
        if method == "INVITE" and 200 <= msg.status < 300:
            if not self.remote_tag:
                self.remote_tag = _tag(msg.get("to"))
            contact = msg.get("contact")
            if contact:
                self.remote_target = _uri(contact)
            if num in self.acks:  # a retransmitted 2xx: ACK again
                self._send(self.acks[num])
            else:
                self.acks[num] = self._request("ACK", num)
                self._send(self.acks[num])
        elif method == "INVITE" and msg.status >= 300:
            if num == 1:
                self.remote_tag = _tag(msg.get("to"))
            ack = self._request("ACK", num, branch=self._invite_branch.get(num, ""))
            self._send(ack)
        fut = self.pending.get((num, method))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _on_request(self, msg: SipMessage) -> None:
        method = msg.method
        key = msg.cseq
        if method == "ACK":
            return
        if key in self.answered_requests:
            self._send(self.answered_requests[key])
            return
        if method == "BYE":
            resp = self._response(msg, 200, "OK")
            if not self.bye.is_set():
                self.result.ended_by = self.result.ended_by or "remote-bye"
                self._mark("bye-received")
                self.bye.set()
        elif method == "INVITE":
            self.result.server_reinvites += 1
            if self.reinvite_pending:
                resp = self._response(msg, 491, "Request Pending")
            else:
                resp = self._answer_reinvite(msg)
        elif method in ("OPTIONS", "INFO", "UPDATE", "NOTIFY"):
            resp = self._response(msg, 200, "OK")
        else:
            resp = self._response(msg, 501, "Not Implemented")
        self.answered_requests[key] = resp
        self._send(resp)

    # -- SDP ---------------------------------------------------------------------------------------
    def _sdp(self, media: str) -> bytes:
        self.sdp_version += 1
        lines = [
            "v=0",
            f"o=faxcaller 4711 {self.sdp_version} IN IP4 {HOST}",
            "s=fax",
            f"c=IN IP4 {HOST}",
            "t=0 0",
        ]
        if media == "audio":
            assert self.audio.sock is not None
            pt = PT[self.codec]
            lines += [
                f"m=audio {self.audio.sock.port} RTP/AVP {pt} 101",
                f"a=rtpmap:{pt} {self.codec}/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-15",
                "a=ptime:20",
                "a=sendrecv",
            ]
        else:
            lines += [f"m=image {self.udptl_port} udptl t38"]
            lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in t38_attributes(self._t38_params)]
        self.current_sdp = ("\r\n".join(lines) + "\r\n").encode()
        return self.current_sdp

    _t38_params = T38_LOCAL

    def _answer_reinvite(self, msg: SipMessage) -> bytes:
        sections = parse_sdp(msg.body)
        image = next((m for m in sections if m.media == "image" and m.port), None)
        if image is not None and self.t38_answer >= 300:
            self._mark("t38-refused")
            return self._response(msg, self.t38_answer, _REASONS.get(self.t38_answer, "Refused"))
        if image is not None:
            try:
                offered = parse_t38_attributes(image.attributes)
            except ValueError:
                return self._response(msg, 488, "Not Acceptable Here")
            ec = offered.udp_ec or UdpEc.REDUNDANCY
            self._t38_params = replace(T38_LOCAL, udp_ec=ec)
            self._start_t38((image.host or self.server[0], image.port), ec, "server")
            return self._response(msg, 200, "OK", self._sdp("image"))
        return self._response(msg, 200, "OK", self._sdp("image" if self.t38 else "audio"))

    def _start_t38(self, remote: tuple[str, int], ec: UdpEc, who: str) -> None:
        if self.t38 is None:
            raise RuntimeError("UDPTL socket not open")
        scheme: Literal["redundancy", "fec", "none"] = (
            "fec" if ec is UdpEc.FEC else "none" if ec is UdpEc.NONE else "redundancy"
        )
        self.t38.encoder = UdptlEncoder(
            scheme, depth=self.redundancy, fec_span=3, fec_entries=self.redundancy
        )
        self.t38.remote = remote
        self.result.t38 = True
        self.result.t38_switch = self.result.t38_switch or who

    # -- the call ----------------------------------------------------------------------------------
    async def run(self) -> FaxCallResult:
        self.sip = await _bind(self._on_sip)
        await self.audio.open()
        term = SpanT38(True, transmit_tiff=self.tiff, ecm=self.ecm, ident=self.ident)
        self.t38 = UdptlFax(
            term,
            depth=self.redundancy,
            loss_tx=self.loss,
            loss_rx=self.loss,
            seed=self.seed,
            stats=self.result.stats,
        )
        self.udptl_port = await self.t38.open()
        try:
            await self._call()
        finally:
            self.audio.close()
            self.t38.close()
            self.sip.close()
        return self.result

    async def _call(self) -> None:
        assert self.t38 is not None
        branch = "z9hG4bK" + secrets.token_hex(6)
        self._invite_branch[1] = branch
        invite = self._request("INVITE", 1, self._sdp("audio"), branch=branch)
        try:
            final = await self._transaction(invite, 1, "INVITE", timeout=15.0)
        except TimeoutError:
            self.result.ended_by = "timeout"
            return
        self.result.status = final.status
        if final.status >= 300:
            return
        self.result.answered = True
        self._mark("answered")
        audio = next((m for m in parse_sdp(final.body) if m.media == "audio" and m.port), None)
        if audio is not None:
            self.audio.remote = (audio.host or self.server[0], audio.port)
        clock = _Clock()
        limit = int(self.max_seconds * RATE / FRAME)
        reinvite_at = int(self.reinvite_after * RATE / FRAME)
        tasks: list[asyncio.Task[None]] = []
        reinvite_task: asyncio.Task[None] | None = None
        finished: int | None = None
        watched: object = None
        seen_b = seen_d = seen_f = 0
        refresh_at: int | None = None
        hangup_at: int | None = None
        while clock.ticks < limit and not self.bye.is_set():
            if self.result.t38_switch.startswith("rejected") and not self.fallback:
                break
            quiet = finished is not None and self.after_dcn == "silence"
            for _ in range(await clock.due()):
                if quiet:
                    continue
                if self.result.t38:
                    self.t38.step()
                else:
                    self.audio.step()
            if self.t38_mode == "caller" and reinvite_task is None and clock.ticks >= reinvite_at:
                reinvite_task = asyncio.create_task(self._reinvite_t38())
                tasks.append(reinvite_task)
            fax: SpanFax | SpanT38 = self.t38.fax if self.result.t38 else self.audio.fax
            if fax is not watched:  # a new T.30 session (after the switch to T.38)
                watched, seen_b, seen_d, seen_f = fax, 0, 0, 0
            if len(fax.phase_b) > seen_b:
                seen_b = len(fax.phase_b)
                self._mark("phase-b")
            for frame in fax.frames[seen_f:]:
                if not frame.sent and len(frame.data) > 2 and frame.data[2] & 0xFE == _CFR:
                    self._mark("cfr")  # phase C begins
                    if self.refresh_after is not None and refresh_at is None:
                        refresh_at = clock.ticks + int(self.refresh_after * RATE / FRAME)
            seen_f = len(fax.frames)
            while len(fax.page_stats) > seen_d:
                seen_d += 1
                self._mark(f"page {seen_d}")
                if self.hangup_after_page == seen_d:
                    hangup_at = clock.ticks + int(self.hangup_delay * RATE / FRAME)
            if refresh_at is not None and clock.ticks >= refresh_at and not self.result.refresh_status:
                self.result.refresh_status = -1  # sent, no answer yet
                tasks.append(asyncio.create_task(self._refresh()))
            if hangup_at is not None and clock.ticks >= hangup_at:
                break
            if finished is None and fax.done:
                finished = clock.ticks
                self._mark("phase-e")
            if (
                finished is not None
                and self.after_dcn == "bye"
                and (clock.ticks - finished) * FRAME >= self.tail * RATE
            ):
                break
        self.result.seconds = clock.ticks * FRAME / RATE
        fax = self.t38.fax if self.result.t38 else self.audio.fax
        if not fax.done:
            fax.terminate()
        self.result.fax = fax.result
        for task in tasks:
            if not task.done():
                task.cancel()
        if self.bye.is_set():
            await asyncio.sleep(0.2)  # retransmitted BYEs get the stored 200
            return
        if finished is not None or hangup_at is not None:
            self.result.ended_by = "timeout" if self.after_dcn != "bye" and hangup_at is None else "local-bye"
        elif self.result.t38_switch.startswith("rejected") and not self.fallback:
            self.result.ended_by = "t38-rejected"
        else:
            self.result.ended_by = "timeout"
        self.cseq += 1
        self._mark("bye-sent")
        try:
            await self._transaction(self._request("BYE", self.cseq), self.cseq, "BYE", timeout=8.0)
        except TimeoutError:
            self.result.sip_log.append("no response to BYE")

    async def _refresh(self) -> None:
        """A session-refresh re-INVITE: the SDP last sent, o= version unchanged (RFC 4028 §7.4)."""
        self.cseq += 1
        cseq = self.cseq
        branch = "z9hG4bK" + secrets.token_hex(6)
        self._invite_branch[cseq] = branch
        self.reinvite_pending = True
        self._mark("refresh")
        try:
            resp = await self._transaction(
                self._request("INVITE", cseq, self.current_sdp, branch=branch), cseq, "INVITE", 15.0
            )
            self.result.refresh_status = resp.status
        except TimeoutError:
            self.result.refresh_status = 408
        finally:
            self.reinvite_pending = False

    async def _reinvite_t38(self) -> None:
        self.cseq += 1
        cseq = self.cseq
        branch = "z9hG4bK" + secrets.token_hex(6)
        self._invite_branch[cseq] = branch
        self.reinvite_pending = True
        previous = self.current_sdp
        try:
            resp = await self._transaction(
                self._request("INVITE", cseq, self._sdp("image"), branch=branch), cseq, "INVITE", 15.0
            )
        except TimeoutError:
            self.result.t38_switch = "rejected timeout"
            self.current_sdp = previous
            return
        finally:
            self.reinvite_pending = False
        if resp.status >= 300:
            self.result.t38_switch = f"rejected {resp.status}"
            self.current_sdp = previous
            return
        image = next((m for m in parse_sdp(resp.body) if m.media == "image" and m.port), None)
        if image is None:
            self.result.t38_switch = "rejected no-image-in-answer"
            return
        params = parse_t38_attributes(image.attributes)
        self._start_t38(
            (image.host or self.server[0], image.port), params.udp_ec or UdpEc.REDUNDANCY, "caller"
        )


def call_fax(
    server: str,
    number: str,
    tiff: Path,
    *,
    caller: str = "+4930555",
    codec: str = "PCMA",
    t38: T38Mode = "none",
    reinvite_after: float = 1.0,
    ecm: bool = True,
    modems: tuple[str, ...] = ("v27ter", "v29", "v17"),
    ident: str = "+49 30 555",
    loss: float = 0.0,
    redundancy: int = 3,
    seed: int = 1,
    max_seconds: float = 90.0,
    tail: float = 0.5,
    fallback: bool = True,
    t38_answer: int = 200,
    refresh_after: float | None = None,
    hangup_after_page: int | None = None,
    hangup_delay: float = 1.0,
    after_dcn: AfterDcn = "bye",
) -> FaxCallResult:
    """Call ``number`` at ``server`` ("host:port", UDP) and send ``tiff``; blocks until the call ends.

    ``t38``: "none" stays on G.711 (``codec``), "caller" sends a re-INVITE to T.38 ``reinvite_after``
    seconds after the answer, "server" answers the far end's re-INVITE to T.38 (it is answered in every
    mode).  ``loss`` drops that share of UDPTL datagrams in each direction; ``redundancy`` is the
    number of earlier IFP packets in each datagram (or of FEC parity blocks).  The call is ended
    ``tail`` seconds after SpanDSP's phase E, or after ``max_seconds``; with ``fallback=False`` it is
    ended at once when our re-INVITE to T.38 fails (else the fax goes on over G.711).

    Field failures: ``t38_answer`` is the status for the far end's re-INVITE to T.38 (488 refuses it);
    ``refresh_after`` sends a session-refresh re-INVITE (same SDP) that many seconds after the first
    CFR (in the middle of the first page);
    ``hangup_after_page=n`` sends BYE ``hangup_delay`` seconds after the phase D of page ``n``;
    ``after_dcn`` is "bye" (hang up ``tail`` seconds after phase E), "media" (keep sending RTP, never
    hang up) or "silence" (stop sending, never hang up); without a BYE from the far end the call is
    ended by us at ``max_seconds`` (``ended_by="timeout"``).
    """
    host, _, port = server.rpartition(":")
    c = _Caller(
        (host, int(port)),
        number,
        Path(tiff),
        caller=caller,
        codec=codec,
        t38=t38,
        reinvite_after=reinvite_after,
        ecm=ecm,
        modems=modems,
        ident=ident,
        loss=loss,
        redundancy=redundancy,
        seed=seed,
        max_seconds=max_seconds,
        tail=tail,
        fallback=fallback,
        t38_answer=t38_answer,
        refresh_after=refresh_after,
        hangup_after_page=hangup_after_page,
        hangup_delay=hangup_delay,
        after_dcn=after_dcn,
    )
    return asyncio.run(c.run())
