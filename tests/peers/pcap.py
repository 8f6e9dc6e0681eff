"""RTP out of classic pcap files, and G.711 decoding for reference audio.

What it does
------------
:func:`read_pcap` yields ``(time, payload)`` for every UDP datagram of a
classic (libpcap) capture; :func:`rtp_packets` parses those that look like RTP
(RFC 3550 §5.1).  :func:`reference_audio` decodes the G.711 packets of one
payload type into int16 samples, in timestamp order with gaps as silence, which
is what a recorder should end up with when SIPp plays that pcap.
:func:`telephone_events` and :func:`event_digits` read RFC 4733 events.
:func:`g711_decode` has its own 256-entry tables (ITU-T G.711 Tables 1a/2a),
so the reference never depends on the code under test.

How it works
------------
``struct`` over the file: 24-byte global header (either byte order, µs or ns
timestamps), 16-byte record headers; link types Ethernet (with 802.1Q tags),
Linux cooked v1/v2, BSD loopback and raw IP; IPv4 only, unfragmented UDP.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "STATIC_PT",
    "RtpPacket",
    "TelephoneEvent",
    "alaw_table",
    "decode_stream",
    "event_digits",
    "g711_decode",
    "g711_encode",
    "parse_events",
    "read_pcap",
    "reference_audio",
    "rtp_packets",
    "telephone_events",
    "ulaw_table",
]

# libpcap link-layer header types (https://www.tcpdump.org/linktypes.html)
_LINK_NULL, _LINK_ETHERNET, _LINK_RAW, _LINK_RAW2, _LINK_SLL, _LINK_SLL2 = 0, 1, 101, 12, 113, 276
_ETH_IPV4, _ETH_VLAN = 0x0800, 0x8100
_IPPROTO_UDP = 17


def read_pcap(path: str | Path) -> Iterator[tuple[float, str, int, str, int, bytes]]:
    """Yield ``(time, src_ip, src_port, dst_ip, dst_port, udp_payload)`` for each IPv4/UDP packet."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a pcap file")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic {magic.hex()})")
    frac = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    off = 24
    rec = struct.Struct(endian + "IIII")
    while off + 16 <= len(data):
        sec, sub, incl, _orig = rec.unpack_from(data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        ip = _ip_of(frame, linktype)
        if ip is None:
            continue
        udp = _udp_of(ip)
        if udp is not None:
            yield (sec + sub * frac, *udp)


def _ip_of(frame: bytes, linktype: int) -> bytes | None:
    if linktype == _LINK_ETHERNET:
        off, ethertype = 14, int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
        while ethertype == _ETH_VLAN and len(frame) >= off + 4:
            ethertype = int.from_bytes(frame[off + 2 : off + 4], "big")
            off += 4
        return frame[off:] if ethertype == _ETH_IPV4 else None
    if linktype == _LINK_SLL:
        return frame[16:] if int.from_bytes(frame[14:16], "big") == _ETH_IPV4 else None
    if linktype == _LINK_SLL2:
        return frame[20:] if int.from_bytes(frame[0:2], "big") == _ETH_IPV4 else None
    if linktype == _LINK_NULL:
        return frame[4:] if frame[:4] in (b"\x02\x00\x00\x00", b"\x00\x00\x00\x02") else None
    if linktype in (_LINK_RAW, _LINK_RAW2):
        return frame
    return None


def _udp_of(ip: bytes) -> tuple[str, int, str, int, bytes] | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != _IPPROTO_UDP:
        return None
    ihl = (ip[0] & 0x0F) * 4
    flags_frag = int.from_bytes(ip[6:8], "big")
    if flags_frag & 0x3FFF:  # more-fragments flag or a fragment offset: not reassembled here
        return None
    total = int.from_bytes(ip[2:4], "big") or len(ip)
    seg = ip[ihl:total]
    if len(seg) < 8:
        return None
    sport, dport, ulen = struct.unpack("!HHH", seg[:6])
    src = ".".join(str(b) for b in ip[12:16])
    dst = ".".join(str(b) for b in ip[16:20])
    return src, sport, dst, dport, seg[8 : max(8, ulen)]


@dataclass(frozen=True)
class RtpPacket:
    """RFC 3550 §5.1 fixed header fields plus the payload (CSRCs, extension and padding removed)."""

    time: float
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes

    @classmethod
    def parse(cls, data: bytes, time: float = 0.0) -> RtpPacket | None:
        """None when ``data`` is not an RTP version 2 packet."""
        if len(data) < 12 or data[0] >> 6 != 2:
            return None
        cc = data[0] & 0x0F
        off = 12 + 4 * cc
        if data[0] & 0x10:  # header extension (RFC 3550 §5.3.1)
            if len(data) < off + 4:
                return None
            off += 4 + 4 * int.from_bytes(data[off + 2 : off + 4], "big")
        end = len(data)
        if data[0] & 0x20:  # padding: the last octet counts the padding octets
            end -= data[-1]
        if off > end:
            return None
        seq, ts, ssrc = struct.unpack("!HII", data[2:12])
        return cls(time, data[1] & 0x7F, seq, ts, ssrc, bool(data[1] & 0x80), data[off:end])


def rtp_packets(path: str | Path, payload_type: int | None = None) -> list[RtpPacket]:
    """RTP packets of a pcap, in capture order; only ``payload_type`` when given."""
    out = []
    for t, _s, _sp, _d, _dp, payload in read_pcap(path):
        p = RtpPacket.parse(payload, t)
        if p is not None and (payload_type is None or p.payload_type == payload_type):
            out.append(p)
    return out


# -- G.711 ----------------------------------------------------------------------------------------
def alaw_table() -> np.ndarray:
    """int16 value of each A-law code (ITU-T G.711 Table 1a; even bits inverted, XOR 0x55)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    mant = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    mag = np.where(seg == 0, mant + 8, (mant + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


def ulaw_table() -> np.ndarray:
    """int16 value of each µ-law code (ITU-T G.711 Table 2a; all bits inverted, bias 0x84)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


_TABLES = {"PCMA": alaw_table(), "PCMU": ulaw_table()}


def g711_decode(codec: str, payload: bytes) -> np.ndarray:
    """Decode PCMA or PCMU bytes to int16 samples."""
    return _TABLES[codec.upper()][np.frombuffer(payload, dtype=np.uint8)]


def g711_encode(codec: str, pcm: np.ndarray) -> bytes:
    """Encode int16 samples by nearest decoded value (slow-ish but exact; for tests only)."""
    table = _TABLES[codec.upper()].astype(np.int32)
    order = np.argsort(table)
    sorted_vals = table[order]
    x = np.asarray(pcm, dtype=np.int32)
    idx = np.clip(np.searchsorted(sorted_vals, x), 1, 255)
    lo, hi = sorted_vals[idx - 1], sorted_vals[idx]
    pick = np.where(np.abs(x - lo) <= np.abs(hi - x), idx - 1, idx)
    return bytes(order[pick].astype(np.uint8).tobytes())


#: RFC 3551 §6 Table 4: static payload types of the G.711 codecs
STATIC_PT = {0: "PCMU", 8: "PCMA"}


def decode_stream(packets: list[RtpPacket], codec: str) -> np.ndarray:
    """Decode G.711 packets into int16 audio ordered by RTP timestamp.

    Duplicates are dropped; a timestamp gap becomes silence.  8 kHz, one channel.
    """
    pkts = {p.timestamp: p for p in packets}
    if not pkts:
        return np.zeros(0, dtype=np.int16)
    ts0 = min(pkts)
    chunks: list[np.ndarray] = []
    pos = 0
    for ts in sorted(pkts):
        start = (ts - ts0) & 0xFFFFFFFF
        if start > pos:
            chunks.append(np.zeros(start - pos, dtype=np.int16))
            pos = start
        pcm = g711_decode(codec, pkts[ts].payload)
        if start < pos:  # overlap: keep what is already there
            pcm = pcm[pos - start :]
        chunks.append(pcm)
        pos += len(pcm)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def reference_audio(path: str | Path, payload_type: int = 8, codec: str | None = None) -> np.ndarray:
    """Decoded int16 audio of one G.711 payload type in a pcap (see :func:`decode_stream`)."""
    name = codec or STATIC_PT.get(payload_type)
    if name is None:
        raise ValueError(f"payload type {payload_type} is not static G.711; pass codec=")
    return decode_stream(rtp_packets(path, payload_type), name)


@dataclass(frozen=True)
class TelephoneEvent:
    """RFC 4733 §2.3 payload: event, end bit, volume, duration (timestamp units)."""

    timestamp: int
    event: int
    end: bool
    volume: int
    duration: int


_EVENT_CHARS = "0123456789*#ABCD"  # RFC 4733 §3.2 Table 3: events 0-15


def telephone_events(path: str | Path, payload_type: int = 101) -> list[TelephoneEvent]:
    """RFC 4733 events of one payload type in a pcap."""
    return parse_events(rtp_packets(path, payload_type))


def parse_events(packets: list[RtpPacket]) -> list[TelephoneEvent]:
    """RFC 4733 payloads of the given packets (all assumed to be telephone-event)."""
    out = []
    for p in packets:
        if len(p.payload) >= 4:
            ev, flags, dur = struct.unpack("!BBH", p.payload[:4])
            out.append(TelephoneEvent(p.timestamp, ev, bool(flags & 0x80), flags & 0x3F, dur))
    return out


def event_digits(events: list[TelephoneEvent]) -> str:
    """One character per distinct event (by RTP timestamp), in order."""
    seen: dict[int, int] = {}
    for e in events:
        seen.setdefault(e.timestamp, e.event)
    return "".join(_EVENT_CHARS[ev] if ev < 16 else "?" for _, ev in sorted(seen.items()))
