"""The RTP I/O shell: one UDP socket per call leg, paced sending, symmetric RTP.

What it does
------------
``RtpEndpoint`` binds an even UDP port from a range, receives RTP, and sends one packet every
``ptime`` milliseconds:

* receive: parse -> audio payload type into a ``JitterBuffer`` -> decoded int16 PCM to
  ``on_audio(pcm)`` in timestamp order; telephone-event payload type -> ``DtmfReceiver`` ->
  ``on_digit(digit)``; RTCP (also multiplexed on the RTP port, RFC 5761) is recognised and ignored;
  a consumer that must know which audio was lost (a fax modem: silence would drop its carrier)
  sets ``on_audio_lost(pcm, lost)`` instead, which gets the same blocks with the
  ``(offset, length)`` of each fill-in frame (one per missing packet; zeros in ``pcm``);
* send: each tick pulls ``ptime * 8`` samples from ``source(n)`` (``None`` -> encoded silence),
  encodes them with the negotiated G.711 codec and sends them; ``send_digit(digit)`` replaces the
  audio of the next ticks with RFC 4733 event packets (or with in-band DTMF tones when no
  telephone-event payload type was negotiated);
* symmetric RTP (RFC 4961): the remote address is latched to the source of the first valid packet
  (expected payload type), so peers behind NAT are reached where they really send from;
  ``move_remote`` (a signalled move) drops the latch, ``set_remote`` keeps it;
* ``close()`` flushes the jitter buffer to ``on_audio`` (the tail of a recording is kept) and
  closes the socket. ``stats`` gives counters for the end-of-call log line.

How it works
------------
All protocol work is done by the pure modules (``rtp``, ``g711``, ``jitter``, ``dtmf``, ``tones``);
this module only moves datagrams and keeps time. Sending is paced from a monotonic schedule,
``TxSchedule``: tick k is due at ``start + k * ptime``, so timing errors never accumulate; when the
event loop falls more than ``max_late_ticks`` behind, the missed ticks are skipped (the RTP
timestamp still advances over them) instead of being sent in a burst. The clock is ``loop.time()``
unless one is injected.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import random
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from . import g711
from .dtmf import DtmfReceiver, TelephoneEvent, dtmf_events
from .jitter import Frame, JitterBuffer
from .rtp import ReceiverStats, RtpError, RtpPacket, RtpStreamTx, is_rtcp, parse_plain, parse_rtcp
from .tones import DtmfDetector, dtmf_freqs, tone

__all__ = ["AudioWithLoss", "EndpointStats", "LostFrames", "RtpEndpoint", "RtpSettings", "TxSchedule"]

log = logging.getLogger("ums.media")

Pcm = npt.NDArray[np.int16]
Source = Callable[[int], npt.NDArray[np.int16] | None]
Address = tuple[str, int]
#: ``(offset, length)`` in a delivered block of each frame the jitter buffer filled in
LostFrames = list[tuple[int, int]]
AudioWithLoss = Callable[[Pcm, LostFrames], None]

#: RFC 3551 §4.5.14: G.711 is sampled at 8000 Hz.
RATE = 8000
#: Pause sent between queued digits (ITU-T Q.24: at least 40 ms between key presses).
DIGIT_GAP_MS = 60
#: Most datagrams read from the socket at close (10 s of 20 ms packets).
MAX_DRAIN_AT_CLOSE = 500
#: In-band DTMF level per tone when no telephone-event payload type was negotiated.
INBAND_LEVEL_DBM0 = -10.0


@dataclass(frozen=True)
class RtpSettings:
    """What the SDP negotiation decided, and where to bind."""

    codec: str = "PCMA"
    payload_type: int | None = None  # None: the static type of ``codec`` (RFC 3551: PCMU 0, PCMA 8)
    telephone_event_pt: int | None = 101
    ptime: int = 20  # ms
    local_host: str = "0.0.0.0"
    port_min: int = 20000
    port_max: int = 29999
    jitter_target_ms: int = 60
    max_late_ticks: int = 3
    inband_dtmf: bool | None = None  # detect DTMF in the audio; None: only without telephone-event
    #: received audio goes to ``on_audio`` in blocks of this many ms, on the send ticks (0: as each
    #: packet arrives). Received digits first hand over the audio before them, so order is kept.
    deliver_ms: int = 100


@dataclass(frozen=True)
class EndpointStats:
    """Counters of one endpoint (snapshot)."""

    packets_in: int = 0
    packets_out: int = 0
    expected: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    late: int = 0
    duplicates: int = 0
    filled_ms: float = 0.0
    malformed: int = 0
    rtcp_in: int = 0
    foreign: int = 0
    digits_in: int = 0
    digits_out: int = 0
    skipped_ticks: int = 0
    backlog: int = 0  # datagrams still queued in the socket at close (read then)

    def log_fields(self) -> dict[str, int | float]:
        return {
            "rtp_in": self.packets_in,
            "rtp_out": self.packets_out,
            "lost": self.lost,
            "jitter_ms": round(self.jitter_ms, 1),
            "late": self.late,
            "filled_ms": round(self.filled_ms, 1),
            "skipped_ticks": self.skipped_ticks,
            "backlog": self.backlog,
        }


class TxSchedule:
    """Tick k is due at ``start + k * interval``; computed, never accumulated.

    ``due(now)`` returns ``(run, skipped)``: the ticks to run now and, when more than
    ``max_late_ticks`` were overdue, how many were skipped (only the latest overdue tick runs).
    """

    def __init__(self, start: float, interval: float, max_late_ticks: int = 3) -> None:
        if interval <= 0 or max_late_ticks < 1:
            raise ValueError("interval must be positive and max_late_ticks at least 1")
        self.start = start
        self.interval = interval
        self.max_late_ticks = max_late_ticks
        self.tick = 0  # index of the next tick
        self.skipped = 0

    @property
    def next_time(self) -> float:
        return self.start + self.tick * self.interval

    def due(self, now: float) -> tuple[int, int]:
        if now < self.next_time:
            return 0, 0
        # Ticks 0..last are due; a 1e-9 guard keeps float rounding from missing a tick due exactly now.
        last = math.floor((now - self.start) / self.interval + 1e-9)
        run = max(1, last - self.tick + 1)
        skipped = 0
        if run > self.max_late_ticks:
            skipped = run - 1
            run = 1
        self.tick += run + skipped
        self.skipped += skipped
        return run, skipped


class PortPool:
    """Even RTP ports of a range, handed out in turn; a returned port goes to the back.

    The server shares one pool between all endpoints, so opening an endpoint costs one
    ``bind`` in the common case instead of a search through ports that our own calls hold.
    A port another process holds fails its bind, goes to the back, and the next is tried.
    """

    def __init__(self, port_min: int, port_max: int, rng: random.Random | None = None) -> None:
        first = port_min + (port_min & 1)
        evens = list(range(first, port_max + 1, 2))
        if not evens:
            raise ValueError(f"no even port in {port_min}-{port_max}")
        offset = (rng or random.Random()).randrange(len(evens))
        self._free: deque[int] = deque(evens[offset:] + evens[:offset])
        self.size = len(evens)

    def acquire(self) -> int | None:
        return self._free.popleft() if self._free else None

    def release(self, port: int) -> None:
        self._free.append(port)

    def __len__(self) -> int:
        return len(self._free)


class MediaClock:
    """One timer for many endpoints: every ``interval`` seconds each one sends what is due.

    Each endpoint keeps its own :class:`TxSchedule` (so its packets stay on its own
    ``start + k * ptime`` grid); the clock only decides when to look.  One wake-up per
    interval serves every call, instead of one task and one sleep per call and packet.
    """

    def __init__(self, interval: float = 0.01, clock: Callable[[], float] | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._clock = clock
        self._endpoints: dict[int, RtpEndpoint] = {}
        self._task: asyncio.Task[None] | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def add(self, endpoint: RtpEndpoint) -> None:
        self._endpoints[id(endpoint)] = endpoint
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def remove(self, endpoint: RtpEndpoint) -> None:
        self._endpoints.pop(id(endpoint), None)

    def __len__(self) -> int:
        return len(self._endpoints)

    async def _run(self) -> None:
        schedule = TxSchedule(self._now(), self.interval, max_late_ticks=1)
        while self._endpoints:
            now = self._now()
            schedule.due(now)
            for endpoint in list(self._endpoints.values()):
                try:
                    endpoint.on_clock(now)
                except Exception:
                    log.exception("event=rtp.tick_failed port=%d", endpoint.local_port)
            await asyncio.sleep(max(0.0, schedule.next_time - self._now()))

    async def close(self) -> None:
        self._endpoints.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._endpoint.receive_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer is not (yet) listening. Not fatal.
        log.debug("event=rtp.socket_error error=%s", exc)


class RtpEndpoint:
    """The RTP side of one call leg: ``open()``, ``set_remote()`` from the SDP, ``close()`` at the end.

    Parameters
    ----------
    settings : codec, payload types, ptime, bind address and port range.
    on_audio : called with each block of received, decoded int16 PCM, in order, gaps filled.
        The attribute ``on_audio_lost`` (settable at any time, default None) takes its place when
        set: ``on_audio_lost(pcm, lost)`` with ``lost`` the ``(offset, length)`` of each frame that
        was filled in for a lost packet (in ``pcm`` it is zeros).
    on_digit : called with each received DTMF key.
    source : ``source(n) -> int16 array | None``, audio to send; None (or no source) sends silence.
    rng : randomness for the port choice, SSRC, initial sequence number and timestamp.
    clock : monotonic seconds for pacing; default ``loop.time``.
    media_clock : a shared :class:`MediaClock` to send from (default: a task of its own).
    port_pool : a shared :class:`PortPool` to take the port from (default: search the range).
    """

    def __init__(
        self,
        settings: RtpSettings | None = None,
        *,
        on_audio: Callable[[Pcm], None] | None = None,
        on_digit: Callable[[str], None] | None = None,
        source: Source | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        media_clock: MediaClock | None = None,
        port_pool: PortPool | None = None,
    ) -> None:
        self.settings = s = settings if settings is not None else RtpSettings()
        self._media_clock = media_clock
        self._port_pool = port_pool
        self._schedule: TxSchedule | None = None
        self.codec = s.codec.upper()
        pt = s.payload_type
        self.payload_type = pt if pt is not None else g711.payload_type_for(self.codec)
        self.telephone_event_pt = s.telephone_event_pt
        if s.ptime <= 0 or (s.ptime * RATE) % 1000:
            raise ValueError(f"ptime {s.ptime} ms is not a whole number of samples")
        self.frame_samples = s.ptime * RATE // 1000
        self.on_audio = on_audio
        self.on_audio_lost: AudioWithLoss | None = None
        self.on_digit = on_digit
        self.source = source
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._stream = RtpStreamTx(None, self.payload_type, rng=self._rng)
        self._decode = g711.decoder(self.codec)
        self._encode = g711.encoder(self.codec)
        self._silence = g711.silence(self.codec, self.frame_samples)
        self._jitter = JitterBuffer(
            self.frame_samples,
            decode=partial(g711.decode, self.codec),
            payload_type=self.payload_type,
            target_ms=s.jitter_target_ms,
        )
        self._deliver_ticks = max(0, math.ceil(s.deliver_ms / s.ptime)) if s.deliver_ms > 0 else 0
        self._deliver_countdown = self._deliver_ticks
        self._dtmf_rx = DtmfReceiver()
        inband = s.inband_dtmf if s.inband_dtmf is not None else s.telephone_event_pt is None
        self._inband_rx = DtmfDetector(RATE) if inband else None
        self._rx_stats: dict[int, ReceiverStats] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._send_errors = 0
        self._backlog = 0  # datagrams still queued in the socket at close
        self._task: asyncio.Task[None] | None = None
        self._sdp_remote: Address | None = None
        self._latched: Address | None = None
        self._latched_ssrc: int | None = None
        self._abandoned: Address | None = None  # the source latched before move_remote
        self._closed = False  # close() has begun: nothing more is sent
        self._rx_done = False  # close() has read the socket out: nothing more is received
        self.local_port = 0
        # outgoing digits
        self._digits: deque[tuple[str, int]] = deque()
        self._event: list[TelephoneEvent] = []
        self._event_ts = 0
        self._event_index = 0
        self._gap_ticks = 0
        self._inband_tx: deque[Pcm] = deque()
        # counters
        self._packets_in = 0
        self._malformed = 0
        self._rtcp_in = 0
        self._foreign = 0
        self._digits_in = 0
        self._digits_out = 0
        self._skipped_ticks = 0

    # -- setup -------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def open(self) -> int:
        """Bind an even port in ``[port_min, port_max]`` and start the send/playout ticks."""
        if self._port_pool is not None:
            await self._bind_from_pool(self._port_pool)
        else:
            await self._bind_search()
        if self._media_clock is not None:
            ptime_s = self.settings.ptime / 1000.0
            self._schedule = TxSchedule(self._now(), ptime_s, self.settings.max_late_ticks)
            self._media_clock.add(self)
        else:
            self._task = asyncio.get_running_loop().create_task(self._run())
        log.debug("event=rtp.open port=%d codec=%s pt=%d", self.local_port, self.codec, self.payload_type)
        return self.local_port

    async def _bind(self, port: int) -> bool:
        """Bind ``port``; False when it is taken (or not ours to use).

        The socket is ours (the transport only reads it), so a packet is sent with one plain
        ``sendto`` instead of going through the transport's buffering checks.
        """
        loop = asyncio.get_running_loop()
        host = self.settings.local_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            return False
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        self._sock = sock
        self.local_port = port
        return True

    async def _bind_from_pool(self, pool: PortPool) -> None:
        for _ in range(pool.size):
            port = pool.acquire()
            if port is None:
                break
            try:
                bound = await self._bind(port)
            except BaseException:
                pool.release(port)
                raise
            if bound:
                return
            pool.release(port)
        s = self.settings
        raise OSError(errno.EADDRINUSE, f"no free RTP port in {s.port_min}-{s.port_max}")

    async def _bind_search(self) -> None:
        s = self.settings
        first = s.port_min + (s.port_min & 1)
        evens = list(range(first, s.port_max + 1, 2))
        if not evens:
            raise ValueError(f"no even port in {s.port_min}-{s.port_max}")
        offset = self._rng.randrange(len(evens))
        for i in range(len(evens)):
            if await self._bind(evens[(offset + i) % len(evens)]):
                return
        raise OSError(errno.EADDRINUSE, f"no free RTP port in {s.port_min}-{s.port_max}")

    def set_remote(self, host: str, port: int) -> None:
        """Where to send, from the SDP (``c=`` and ``m=``); 0.0.0.0 or port 0 means do not send."""
        if port == 0 or host in ("0.0.0.0", "::", ""):
            self._sdp_remote = None
        else:
            self._sdp_remote = (host, port)

    def move_remote(self, host: str, port: int) -> None:
        """A signalled move (a re-INVITE to a new address): like :meth:`set_remote`, and the latched
        source is dropped, so we send to the new address at once, ignore the old source and latch
        again on the first packet from elsewhere.  ``set_remote`` keeps the latch (NAT)."""
        before = self._sdp_remote
        self.set_remote(host, port)
        new = self._sdp_remote
        if new is not None and new != before and self._latched is not None and self._latched != new:
            self._abandoned = self._latched
            self._latched = None
            self._latched_ssrc = None
            log.info("event=rtp.moved port=%d remote=%s:%d", self.local_port, host, port)

    @property
    def remote(self) -> Address | None:
        """The address packets go to: the latched source if any, else the SDP address."""
        return self._latched if self._latched is not None else self._sdp_remote

    def send_digit(self, digit: str, duration_ms: int = 100) -> None:
        """Queue a DTMF key: RFC 4733 events if negotiated, in-band tones otherwise."""
        dtmf_freqs(digit)  # validates the key
        self._digits.append((digit.upper(), duration_ms))

    async def close(self) -> EndpointStats:
        """Stop sending, deliver the audio still buffered, close the socket; returns the stats."""
        if self._closed:
            return self.stats
        self._closed = True
        if self._media_clock is not None:
            self._media_clock.remove(self)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._drain_socket()
        self._rx_done = True
        self._deliver(self._jitter.flush())
        if self._transport is not None:
            self._transport.close()
            if self._port_pool is not None:
                self._port_pool.release(self.local_port)
        st = self.stats
        log.info(
            "event=rtp.closed port=%d %s",
            self.local_port,
            " ".join(f"{k}={v}" for k, v in st.log_fields().items()),
        )
        return st

    @property
    def stream_starts(self) -> int:
        """How often the received audio started afresh: its first packet, then each new SSRC or
        timestamp jump the jitter buffer resynchronised on.  Between two starts, the audio given to
        ``on_audio`` follows the sender's RTP clock (gaps filled); across a start it does not, and a
        caller that keeps audio on a wall-clock timeline re-aligns there."""
        return self._jitter.streams

    @property
    def stats(self) -> EndpointStats:
        sources = list(self._rx_stats.values())
        main = max(sources, key=lambda r: r.total_received, default=None)
        return EndpointStats(
            packets_in=self._packets_in,
            packets_out=self._stream.packets_sent,
            expected=sum(r.expected for r in sources),
            lost=sum(r.lost for r in sources),
            jitter_ms=main.jitter_ms if main is not None else 0.0,
            late=self._jitter.late,
            duplicates=self._jitter.duplicates,
            filled_ms=1000.0 * self._jitter.filled_samples / RATE,
            malformed=self._malformed,
            rtcp_in=self._rtcp_in,
            foreign=self._foreign,
            digits_in=self._digits_in,
            digits_out=self._digits_out,
            skipped_ticks=self._skipped_ticks,
            backlog=self._backlog,
        )

    # -- receive -----------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address) -> None:
        """Handle one datagram from ``addr`` (called by the socket protocol)."""
        if not self._rx_done:
            self._receive(data, addr)

    def _receive(self, data: bytes, addr: Address) -> None:
        now = self._now()
        plain = parse_plain(data)
        if plain is not None and plain[0] == self.payload_type and addr == self._latched:
            # the per-packet path: audio of the latched stream with a bare 12-octet header
            _, seq, ts, ssrc, _ = plain
            if ssrc == self._latched_ssrc:
                self._packets_in += 1
                stats = self._rx_stats.get(ssrc)
                if stats is None:
                    stats = self._rx_stats[ssrc] = ReceiverStats(RATE)
                stats.update_fields(ssrc, seq, ts, now)
                self._jitter.push_audio(ssrc, seq, ts, self._decode(data[12:]), now)
                if not self._deliver_ticks:
                    self._deliver(self._jitter.pop_ready(now))
                return
        if is_rtcp(data):
            self._rtcp_in += 1
            try:
                parse_rtcp(data)
            except RtpError:
                self._malformed += 1
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self._malformed += 1
            return
        pt = packet.payload_type
        if pt != self.payload_type and pt != self.telephone_event_pt:
            self._foreign += 1  # comfort noise, unnegotiated codecs, ...
            return
        if not self._accept_source(packet, addr):
            self._foreign += 1
            return
        self._packets_in += 1
        stats = self._rx_stats.get(packet.ssrc)
        if stats is None:
            stats = self._rx_stats[packet.ssrc] = ReceiverStats(RATE)
        stats.update(packet, now, timing=pt == self.payload_type)
        if pt == self.telephone_event_pt:
            digits = self._dtmf_rx.feed(packet)
            if digits:
                self._deliver(self._jitter.pop_ready(now))  # the audio before the key goes first
            for digit in digits:
                self._digit_received(digit)
        else:
            self._jitter.push(packet, now)
            if not self._deliver_ticks:
                self._deliver(self._jitter.pop_ready(now))

    def _drain_socket(self) -> None:
        """At close: take what the kernel still holds for us (sent before the hang-up, not yet read
        because the event loop was busy), so the end of a recording is not lost under load."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(MAX_DRAIN_AT_CLOSE):
            try:
                data, addr = sock.recvfrom(2048)
            except OSError:  # BlockingIOError: nothing left
                return
            self._backlog += 1
            self._receive(data, (str(addr[0]), int(addr[1])))

    def _accept_source(self, packet: RtpPacket, addr: Address) -> bool:
        if (self._latched is None and addr != self._abandoned) or (
            self._latched is not None and addr == self._latched
        ):
            if self._latched is None:
                if addr != self._sdp_remote:
                    log.info("event=rtp.latched port=%d remote=%s:%d", self.local_port, addr[0], addr[1])
                self._latched = addr
                self._latched_ssrc = packet.ssrc
            return True
        if packet.ssrc == self._latched_ssrc and addr != self._abandoned:  # NAT rebinding
            log.info("event=rtp.relatched port=%d remote=%s:%d", self.local_port, addr[0], addr[1])
            self._latched = addr
            return True
        return False

    def _deliver(self, frames: list[Frame]) -> None:
        """Hand released frames over as one block (one ``on_audio`` or ``on_audio_lost`` call)."""
        if not frames:
            return
        pcm = frames[0].pcm if len(frames) == 1 else np.concatenate([f.pcm for f in frames])
        if self._inband_rx is not None:
            for digit in self._inband_rx.process(pcm):
                self._digit_received(digit)
        if self.on_audio_lost is not None:
            lost: LostFrames = []
            offset = 0
            for f in frames:
                if f.lost:
                    lost.append((offset, len(f.pcm)))
                offset += len(f.pcm)
            try:
                self.on_audio_lost(pcm, lost)
            except Exception:
                log.exception("event=rtp.on_audio_failed port=%d", self.local_port)
            return
        if self.on_audio is not None:
            try:
                self.on_audio(pcm)
            except Exception:
                log.exception("event=rtp.on_audio_failed port=%d", self.local_port)

    def _digit_received(self, digit: str) -> None:
        self._digits_in += 1
        if self.on_digit is not None:
            try:
                self.on_digit(digit)
            except Exception:
                log.exception("event=rtp.on_digit_failed port=%d", self.local_port)

    # -- send --------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._schedule = schedule = TxSchedule(
            self._now(), self.settings.ptime / 1000.0, self.settings.max_late_ticks
        )
        while True:
            self.on_clock(self._now())
            await asyncio.sleep(max(0.0, schedule.next_time - self._now()))

    def on_clock(self, now: float) -> None:
        """Send the packets due at ``now`` (called by our own task or a :class:`MediaClock`)."""
        schedule = self._schedule
        if schedule is None or self._closed:
            return
        run, skipped = schedule.due(now)
        if skipped:
            self._skipped_ticks += skipped
            self._stream.skip(skipped * self.frame_samples)
        for _ in range(run):
            self._tick(now)

    def _pull(self, n: int) -> Pcm | None:
        if self.source is None:
            return None
        try:
            block = self.source(n)
        except Exception:
            log.exception("event=rtp.source_failed port=%d", self.local_port)
            return None
        if block is None:
            return None
        if type(block) is np.ndarray and block.dtype == np.int16 and block.shape == (n,):
            return block
        pcm = np.asarray(block).reshape(-1)
        if pcm.dtype != np.int16:
            pcm = np.clip(pcm, -32768, 32767).astype(np.int16)
        if len(pcm) != n:
            pcm = np.concatenate([pcm[:n], np.zeros(max(0, n - len(pcm)), dtype=np.int16)])
        return pcm

    def _tick(self, now: float) -> None:
        """One ptime: release received audio (every ``deliver_ms``), send one packet."""
        if self._deliver_ticks:
            self._deliver_countdown -= 1
            if self._deliver_countdown <= 0:
                self._deliver_countdown = self._deliver_ticks
                self._deliver(self._jitter.pop_ready(now))
        else:
            self._deliver(self._jitter.pop_ready(now))
        dest = self.remote
        if dest is None or self._transport is None:
            return
        n = self.frame_samples
        pcm = self._pull(n)
        if self._digits or self._event or self._inband_tx or self._gap_ticks:
            self._tick_digits(pcm, dest)
            return
        payload = self._encode(pcm) if pcm is not None else self._silence
        self._send(self._stream.packet_bytes(payload, n), dest)

    def _send(self, data: bytes, dest: Address) -> None:
        sock = self._sock
        if sock is None:  # a transport made elsewhere (tests)
            assert self._transport is not None
            self._transport.sendto(data, dest)
            return
        try:
            sock.sendto(data, dest)
        except OSError as exc:  # full send buffer, unreachable: RTP is loss-tolerant, drop it
            self._send_errors += 1
            if self._send_errors == 1:
                log.info("event=rtp.send_failed port=%d error=%s", self.local_port, exc)

    def _tick_digits(self, pcm: Pcm | None, dest: Address) -> None:
        """A tick while outgoing digits are queued or playing."""
        n = self.frame_samples
        if not self._event and not self._inband_tx and self._digits and self._gap_ticks == 0:
            self._start_digit()
        if self._event:
            ev = self._event[self._event_index]
            assert self.telephone_event_pt is not None
            packet = self._stream.packet(
                ev.serialize(),
                n,
                marker=self._event_index == 0,
                payload_type=self.telephone_event_pt,
                timestamp=self._event_ts,
            )
            self._event_index += 1
            if self._event_index == len(self._event):
                self._event = []
                self._stream.mark_next()
                self._gap_ticks = math.ceil(DIGIT_GAP_MS / self.settings.ptime)
            self._send(packet.serialize(), dest)
            return
        if self._inband_tx:
            pcm = self._inband_tx.popleft()
        elif self._gap_ticks:
            self._gap_ticks -= 1
        payload = self._encode(pcm) if pcm is not None else self._silence
        self._send(self._stream.packet_bytes(payload, n), dest)

    def _start_digit(self) -> None:
        digit, duration_ms = self._digits.popleft()
        self._digits_out += 1
        if self.telephone_event_pt is not None:
            self._event = dtmf_events(digit, duration_ms, ptime=self.settings.ptime, rate=RATE)
            self._event_ts = self._stream.timestamp
            self._event_index = 0
            return
        n = self.frame_samples
        tone_pcm, _ = tone(dtmf_freqs(digit), duration_ms / 1000.0, INBAND_LEVEL_DBM0, RATE)
        total = math.ceil((len(tone_pcm) + DIGIT_GAP_MS * RATE // 1000) / n) * n
        padded = np.zeros(total, dtype=np.int16)
        padded[: len(tone_pcm)] = tone_pcm
        self._inband_tx.extend(padded.reshape(-1, n))
