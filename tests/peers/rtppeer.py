"""A test-side RTP endpoint: sends G.711 and RFC 4733 digits in real time, records what it hears.

What it does
------------
:class:`RtpPeer` is the media half of a caller whose signalling SIPp does: it binds a loopback
UDP port (the one the SDP offer advertises), sends 20 ms G.711 packets paced by the monotonic
clock from that same port (symmetric RTP), and keeps every packet it receives.

* ``play(pcm)`` queues int16 audio, ``digit("#")`` an RFC 4733 event; with ``fill=True`` (the
  default) the peer sends silence whenever its queue is empty, like a phone with a muted
  microphone, so the far end sees one continuous stream;
* ``audio()`` is the decoded audio received (timestamp order, gaps as silence), ``digits()`` the
  RFC 4733 events received, ``sent_audio()`` everything sent (digit time as silence) and
  ``sent_samples`` the length of the send timeline so far, for "what was sent after X" sums;
* the far end's address is learnt from its first packet unless ``remote`` is given; sending
  starts once it is known.

Also here: :func:`read_g711_wav` (A-law / µ-law WAV files such as ``testdata/audio``'s speech),
:func:`write_rtp_pcap` (a pcap of PCMA packets for SIPp's ``play_pcap_audio``), and
:func:`tone_frames` / :func:`find_tone` (Goertzel detection of a tone, e.g. the record beep).

How it works
------------
Two daemon threads: a receiver (blocking ``recvfrom`` with a short timeout) and a sender whose
frame ``n`` is due at ``t0 + n * ptime``; it sleeps until then and sends late frames at once
(no catch-up skipping), so the RTP timestamps always advance by exactly 160 per frame.  A digit
follows RFC 4733 §2.5: the first packet has the marker bit, every packet of the event carries
the event's start timestamp and a growing duration, the end packet is sent three times
(§2.5.1.4); audio is not sent while the event lasts and the audio timestamp resumes after it.
Received packets are decoded with the test's own G.711 tables (:mod:`tests.peers.pcap`).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.peers.pcap import (
    STATIC_PT,
    RtpPacket,
    TelephoneEvent,
    decode_stream,
    event_digits,
    g711_decode,
    g711_encode,
    parse_events,
)
from tests.peers.procs import wait_until

__all__ = [
    "SPEECH_WAV",
    "RtpPeer",
    "find_tone",
    "read_g711_wav",
    "sip_trigger",
    "speech",
    "tone_frames",
    "write_rtp_pcap",
]

REPO = Path(__file__).resolve().parents[2]
#: About 11 s of espeak-ng speech, 8 kHz A-law (testdata/audio/make-speech.sh).
SPEECH_WAV = REPO / "testdata" / "audio" / "speech-alaw.wav"
RATE = 8000
#: RFC 4733 §3.2 Table 3: events 0-15 are the DTMF digits in this order.
DTMF_EVENTS = "0123456789*#ABCD"
#: WAVE format tags (RFC 2361 Appendix A): 6 = ITU G.711 A-law, 7 = ITU G.711 µ-law.
_WAVE_ALAW, _WAVE_ULAW, _WAVE_PCM = 6, 7, 1


def read_g711_wav(path: str | Path) -> np.ndarray:
    """int16 samples of a mono 8 kHz WAV file in A-law, µ-law or 16-bit PCM."""
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if channels != 1 or rate != RATE:
        raise ValueError(f"{path}: {channels} channel(s) at {rate} Hz, expected mono 8000 Hz")
    if tag == _WAVE_ALAW:
        return g711_decode("PCMA", payload)
    if tag == _WAVE_ULAW:
        return g711_decode("PCMU", payload)
    if tag == _WAVE_PCM and bits == 16:
        return np.frombuffer(payload, dtype="<i2").astype(np.int16)
    raise ValueError(f"{path}: WAVE format {tag} ({bits} bits) not supported")


def speech() -> np.ndarray:
    """The stored speech sample as int16 (exactly representable in A-law)."""
    return read_g711_wav(SPEECH_WAV)


def write_rtp_pcap(
    path: str | Path,
    pcm: np.ndarray,
    *,
    codec: str = "PCMA",
    ptime_ms: int = 20,
    src: tuple[str, int] = ("127.0.0.1", 6000),
    dst: tuple[str, int] = ("127.0.0.1", 7000),
    ssrc: int = 0x5EEC4,
) -> Path:
    """A classic pcap (Ethernet link type, as SIPp reads) of G.711 RTP packets carrying ``pcm``.

    SIPp's ``play_pcap_audio`` replays the UDP payloads with the capture's timing and its own
    addresses, so ``src``/``dst`` only have to be plausible.
    """
    pt = {v: k for k, v in STATIC_PT.items()}[codec.upper()]
    frame = RATE * ptime_ms // 1000
    x = np.asarray(pcm, dtype=np.int16)
    x = np.concatenate([x, np.zeros(-len(x) % frame, dtype=np.int16)])
    payload = g711_encode(codec, x)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # link type Ethernet
    ether = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"  # IPv4
    src_ip = bytes(int(p) for p in src[0].split("."))
    dst_ip = bytes(int(p) for p in dst[0].split("."))
    for i in range(len(x) // frame):
        rtp = struct.pack("!BBHII", 0x80, pt | (0x80 if i == 0 else 0), i & 0xFFFF, i * frame, ssrc)
        rtp += payload[i * frame : (i + 1) * frame]
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(rtp), 0) + rtp
        total = 20 + len(udp)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, i & 0xFFFF, 0, 64, 17, 0, src_ip, dst_ip)
        csum = sum(struct.unpack("!10H", ip))
        csum = (csum & 0xFFFF) + (csum >> 16)
        csum = (csum & 0xFFFF) + (csum >> 16)
        ip = ip[:10] + struct.pack("!H", ~csum & 0xFFFF) + ip[12:]
        t_us = i * ptime_ms * 1000
        pkt = ether + ip + udp
        out += struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(pkt), len(pkt)) + pkt
    p = Path(path)
    p.write_bytes(bytes(out))
    return p


def tone_frames(pcm: np.ndarray, freq: float, rate: int = RATE, frame: int = 160) -> np.ndarray:
    """Per frame: the share of the frame's energy at ``freq`` (Goertzel, 0..1) — one row each."""
    x = np.asarray(pcm, dtype=np.float64)
    n = len(x) // frame
    if n == 0:
        return np.zeros(0)
    blocks = x[: n * frame].reshape(n, frame)
    t = np.arange(frame) / rate
    c, s = np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)
    # power of the projection on a sinusoid of freq (2/N normalised) vs mean-square power
    tone_power = ((blocks @ c) ** 2 + (blocks @ s) ** 2) * 2.0 / frame**2
    total = np.mean(blocks**2, axis=1)
    share: np.ndarray = np.where(total > 1.0, tone_power / np.maximum(total, 1e-9), 0.0)
    return share


def find_tone(
    pcm: np.ndarray,
    freq: float,
    rate: int = RATE,
    min_seconds: float = 0.1,
    min_share: float = 0.8,
    min_level: float = 300.0,
    start: int = 0,
) -> tuple[int, int] | None:
    """First run of 20 ms frames (from sample ``start``) dominated by ``freq``, as sample indices
    ``(begin, end)``; None when no run of at least ``min_seconds`` is there (yet)."""
    frame = rate // 50
    x = np.asarray(pcm[start:], dtype=np.float64)
    share = tone_frames(x, freq, rate, frame)
    n = len(share)
    if n == 0:
        return None
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    on = (share >= min_share) & (rms >= min_level)
    need = max(1, round(min_seconds * rate / frame))
    i = 0
    while i < n:
        if on[i]:
            j = i
            while j < n and on[j]:
                j += 1
            if j - i >= need:
                return start + i * frame, start + j * frame
            i = j
        else:
            i += 1
    return None


@dataclass(frozen=True)
class Received:
    """One packet as it arrived: monotonic arrival time, source and the parsed RTP."""

    time: float
    source: tuple[str, int]
    packet: RtpPacket


class RtpPeer:
    """A G.711 RTP endpoint on loopback for tests (see the module docstring)."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        codec: str = "PCMA",
        event_pt: int = 101,
        ptime_ms: int = 20,
        remote: tuple[str, int] | None = None,
        fill: bool = True,
        seed: int = 4733,
    ) -> None:
        self.codec = codec.upper()
        self.payload_type = {v: k for k, v in STATIC_PT.items()}[self.codec]
        self.event_pt = event_pt
        self.frame = RATE * ptime_ms // 1000
        self.ptime = ptime_ms / 1000.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.host, self.port = self.sock.getsockname()[:2]
        self.remote = remote
        self.fill = fill
        rng = random.Random(seed)
        self.ssrc = rng.getrandbits(32)
        self._seq = rng.getrandbits(16)
        self._ts = rng.getrandbits(32)
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, object]] = deque()
        self._pending: np.ndarray | None = None  # the rest of the audio item being sent
        self._sent: list[np.ndarray] = []
        self.sent_samples = 0
        self.received: list[Received] = []
        self.first_sent: float | None = None
        self.last_sent: float | None = None
        self._stop = threading.Event()
        self._remote_known = threading.Event()
        if remote is not None:
            self._remote_known.set()
        self._rx = threading.Thread(target=self._receive_loop, name=f"rtp-rx-{self.port}", daemon=True)
        self._tx = threading.Thread(target=self._send_loop, name=f"rtp-tx-{self.port}", daemon=True)

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> RtpPeer:
        self._rx.start()
        self._tx.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._remote_known.set()
        for t in (self._tx, self._rx):
            if t.is_alive():
                t.join(2.0)
        self.sock.close()

    def __enter__(self) -> RtpPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sending ----------------------------------------------------------------------------------
    def play(self, pcm: np.ndarray) -> None:
        """Queue int16 audio (padded with silence to whole frames)."""
        x = np.asarray(pcm, dtype=np.int16)
        with self._lock:
            self._queue.append(("audio", x.copy()))

    def silence(self, seconds: float) -> None:
        self.play(np.zeros(round(seconds * RATE), dtype=np.int16))

    def digit(self, digit: str, duration_ms: int = 100, volume: int = 10) -> None:
        """Queue an RFC 4733 event for ``digit`` (0-9 * # A-D)."""
        if digit not in DTMF_EVENTS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        with self._lock:
            self._queue.append(("digit", (DTMF_EVENTS.index(digit), duration_ms, volume)))

    def set_fill(self, fill: bool) -> None:
        """Send silence when idle (True) or nothing at all (False)."""
        self.fill = fill

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and self._pending is None

    def wait_idle(self, timeout: float) -> int:
        """Wait until everything queued was sent; return ``sent_samples`` then."""
        wait_until(self.idle, timeout, 0.005, "the RTP peer to send its queue")
        return self.sent_samples

    def sent_audio(self) -> np.ndarray:
        """Everything sent so far on the audio timeline (digit time as zeros)."""
        with self._lock:
            parts = list(self._sent)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def _send_loop(self) -> None:
        self._remote_known.wait()
        next_due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if next_due > now:
                time.sleep(next_due - now)
            if self._stop.is_set():
                break
            frames = self._next_packets()
            for data in frames:
                self._send(data)
            next_due += self.ptime

    def _send(self, data: bytes) -> None:
        if self.remote is None:
            return
        try:
            self.sock.sendto(data, self.remote)
        except OSError:
            return
        t = time.monotonic()
        if self.first_sent is None:
            self.first_sent = t
        self.last_sent = t

    def _rtp(self, pt: int, payload: bytes, ts: int, marker: bool = False) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        head = struct.pack(
            "!BBHII", 0x80, pt | (0x80 if marker else 0), self._seq, ts & 0xFFFFFFFF, self.ssrc
        )
        return head + payload

    def _next_packets(self) -> list[bytes]:
        """The packets due in this 20 ms slot."""
        with self._lock:
            if self._pending is None and self._queue:
                kind, item = self._queue.popleft()
                if kind == "audio":
                    self._pending = item  # type: ignore[assignment]
                else:
                    self._start_event(*item)  # type: ignore[misc]
            if self._event is not None:
                return self._event_packets()
            if self._pending is not None:
                chunk = self._pending[: self.frame]
                rest = self._pending[self.frame :]
                self._pending = rest if len(rest) else None
                if len(chunk) < self.frame:
                    chunk = np.concatenate([chunk, np.zeros(self.frame - len(chunk), dtype=np.int16)])
            elif self.fill:
                chunk = np.zeros(self.frame, dtype=np.int16)
            else:
                return []
            data = self._rtp(self.payload_type, g711_encode(self.codec, chunk), self._ts)
            self._ts += self.frame
            self._sent.append(chunk)
            self.sent_samples += self.frame
            return [data]

    # RFC 4733 state: (event, total duration in samples, volume, start timestamp, elapsed samples)
    _event: tuple[int, int, int, int, int] | None = None

    def _start_event(self, event: int, duration_ms: int, volume: int) -> None:
        total = max(self.frame, round(duration_ms * RATE / 1000 / self.frame) * self.frame)
        self._event = (event, total, volume, self._ts, 0)

    def _event_packets(self) -> list[bytes]:
        assert self._event is not None
        event, total, volume, ts0, elapsed = self._event
        elapsed += self.frame
        self._sent.append(np.zeros(self.frame, dtype=np.int16))
        self.sent_samples += self.frame
        end = elapsed >= total
        payload = struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), min(elapsed, 0xFFFF))
        packets = [self._rtp(self.event_pt, payload, ts0, marker=elapsed == self.frame)]
        if end:
            # RFC 4733 §2.5.1.4: the final packet is retransmitted (three times in all)
            packets += [self._rtp(self.event_pt, payload, ts0) for _ in range(2)]
            self._event = None
            self._ts = ts0 + elapsed
        else:
            self._event = (event, total, volume, ts0, elapsed)
        return packets

    # -- receiving --------------------------------------------------------------------------------
    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            now = time.monotonic()
            p = RtpPacket.parse(data, now)
            if p is None:
                continue
            if self.remote is None:
                self.remote = (addr[0], addr[1])
                self._remote_known.set()
            with self._lock:
                self.received.append(Received(now, (addr[0], addr[1]), p))

    def packets(self, payload_type: int | None = None) -> list[RtpPacket]:
        with self._lock:
            got = [r.packet for r in self.received]
        return [p for p in got if payload_type is None or p.payload_type == payload_type]

    def audio(self) -> np.ndarray:
        """Decoded G.711 audio received (the most frequent G.711 payload type), timestamp order."""
        pkts = [p for p in self.packets() if p.payload_type in STATIC_PT]
        if not pkts:
            return np.zeros(0, dtype=np.int16)
        counts: dict[int, int] = {}
        for p in pkts:
            counts[p.payload_type] = counts.get(p.payload_type, 0) + 1
        pt = max(counts, key=lambda k: counts[k])
        return decode_stream([p for p in pkts if p.payload_type == pt], STATIC_PT[pt])

    def events(self) -> list[TelephoneEvent]:
        return parse_events(self.packets(self.event_pt))

    def digits(self) -> str:
        return event_digits(self.events())

    def wait_audio(self, seconds: float, timeout: float) -> np.ndarray:
        """Wait until at least ``seconds`` of audio were received; return it."""
        wait_until(lambda: len(self.audio()) >= seconds * RATE, timeout, 0.02, f"{seconds} s of RTP audio")
        return self.audio()

    def last_received(self) -> float | None:
        with self._lock:
            return self.received[-1].time if self.received else None


def sip_trigger(host: str, port: int, call_id: str, method: str = "OPTIONS") -> None:
    """Send a request carrying ``call_id`` to a SIPp instance over UDP (no answer is awaited: SIPp in
    client mode would send it to its remote host).  Scenarios such as ``vm_uac.xml`` wait for it to
    hang up at a moment the test chooses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        tag = random.Random().getrandbits(40)
        msg = (
            f"{method} sip:trigger@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{tag:x}\r\n"
            f"From: <sip:test@127.0.0.1:{lport}>;tag={tag:x}\r\n"
            f"To: <sip:sipp@{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (host, port))
    finally:
        s.close()
