"""RTP packets (RFC 3550), serial-number arithmetic, a sending stream, receiver statistics, RTCP headers.

What it does
------------
* ``RtpPacket.parse(data)`` / ``RtpPacket.serialize()``: the fixed header of RFC 3550 §5.1 with
  padding, the header extension (§5.3.1, kept opaque) and the CSRC list. Malformed input raises
  ``RtpError`` (a ``ValueError``), never anything else.
* ``seq_diff`` / ``seq_lt`` / ``ts_diff``: wrap-safe comparisons of 16-bit sequence numbers and
  32-bit timestamps (RFC 1982 serial-number arithmetic).
* ``RtpStreamTx``: numbers outgoing packets. Random initial sequence number, timestamp and SSRC
  (RFC 3550 §5.1), the timestamp advances by the samples each packet carries, the marker bit is set
  on the first packet of a talkspurt (RFC 3551 §4.1).
* ``ReceiverStats``: the receiver side of RFC 3550 Appendix A.1 (sequence validation, extended
  highest sequence number, expected / lost) and A.8 (interarrival jitter), fed with the arrival
  time by the caller.
* ``is_rtcp`` / ``parse_rtcp``: tell RTCP from RTP on a multiplexed port (RFC 5761 §4) and walk a
  compound RTCP packet (RFC 3550 §6.4-6.6) far enough to ignore it safely.

How it works
------------
Everything is pure: bytes and numbers in, bytes and numbers out. Time is a float in seconds passed
in by the caller. ``struct`` does the header packing.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

__all__ = [
    "ReceiverStats",
    "RtcpPacket",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "RtpStreamTx",
    "is_rtcp",
    "parse_plain",
    "parse_rtcp",
    "seq_diff",
    "seq_lt",
    "ts_diff",
]

#: RFC 3550 §5.1: "V: 2 bits ... The version defined by this specification is two (2)."
RTP_VERSION = 2
#: RFC 3550 §5.1: the fixed header is 12 octets.
RTP_HEADER_SIZE = 12
#: RFC 5761 §4: with RTP and RTCP on one port, a second octet of 192-223 (RTCP packet types 192-223,
#: i.e. RTP marker set and payload type 64-95, which must not be used for RTP then) is RTCP.
RTCP_SECOND_OCTET = range(192, 224)
#: RFC 3550 §12.1: RTCP packet types.
RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE, RTCP_APP = 200, 201, 202, 203, 204

_HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP or RTCP packet."""


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, in [-32768, 32767] (RFC 1982 serial arithmetic)."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def seq_lt(a: int, b: int) -> bool:
    """True if sequence number ``a`` comes before ``b`` (wrap-safe)."""
    return seq_diff(a, b) < 0


def ts_diff(a: int, b: int) -> int:
    """``a - b`` for 32-bit RTP timestamps, in [-2**31, 2**31 - 1]."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """RFC 3550 §5.3.1 header extension: 16 profile-defined bits and a body of 32-bit words."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise ValueError("extension profile field must fit in 16 bits")
        if len(self.data) % 4 or len(self.data) > 4 * 0xFFFF:
            raise ValueError("extension data must be a whole number of 32-bit words")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``padding`` is the number of padding octets (including the final count octet) the packet
    carries; ``serialize`` writes them as zeros followed by the count.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    payload: bytes = b""
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range 0-127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise ValueError(f"sequence number {self.sequence} out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError("timestamp and SSRC are 32-bit unsigned")
        if len(self.csrc) > 15 or any(not 0 <= c <= 0xFFFFFFFF for c in self.csrc):
            raise ValueError("at most 15 32-bit CSRC identifiers")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding is 0-255 octets")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raises ``RtpError`` when it is not RTP version 2 or is truncated."""
        if len(data) < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short ({len(data)} octets)")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        cc = b0 & 0x0F
        pos = RTP_HEADER_SIZE
        if len(data) < pos + 4 * cc:
            raise RtpError("RTP packet has truncated CSRC list")
        csrc = struct.unpack_from(f"!{cc}I", data, pos)
        pos += 4 * cc
        extension = None
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise RtpError("RTP packet has truncated extension header")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpError("RTP packet has truncated extension")
            extension = RtpExtension(profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or padding > end - pos:
                raise RtpError(f"RTP padding count {padding} is invalid")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            marker=bool(b1 & 0x80),
            payload=bytes(data[pos:end]),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts.append(struct.pack("!HH", ext.profile, len(ext.data) // 4) + ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


#: RFC 3550 §5.1 fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
_FIXED_HEADER = struct.Struct("!BBHII")
#: RFC 3550 §5.1 first octet of a packet with nothing but the fixed header: V=2, P=0, X=0, CC=0.
_PLAIN_B0 = RTP_VERSION << 6


def parse_plain(data: bytes) -> tuple[int, int, int, int, bool] | None:
    """``(payload_type, sequence, timestamp, ssrc, marker)`` of a packet that has only the 12-octet
    fixed header (RFC 3550 §5.1: V=2, no padding, extension or CSRC) and a payload; None for any
    other datagram (use :meth:`RtpPacket.parse`). The per-packet receive path of a voice call.
    The payload is ``data[12:]``; RTCP (RFC 5761 §4: second octet 192-223) is never plain RTP."""
    if len(data) <= RTP_HEADER_SIZE or data[0] != _PLAIN_B0 or 192 <= data[1] <= 223:
        return None
    _, b1, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
    return b1 & 0x7F, sequence, timestamp, ssrc, b1 >= 0x80


class RtpStreamTx:
    """Sequence numbers, timestamps and marker bits of one outgoing RTP stream.

    The stream keeps a media clock: ``timestamp`` is the RTP timestamp of the next sample to be
    sent. ``packet(payload, samples)`` stamps a packet with it and advances it by ``samples``.
    Packets that must keep an earlier timestamp (RFC 4733 event updates) pass ``timestamp=``; the
    clock still advances, so audio after the event continues in real time.
    """

    def __init__(
        self,
        ssrc: int | None,
        payload_type: int,
        *,
        rng: random.Random | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        rng = rng if rng is not None else random.Random()
        # RFC 3550 §5.1: "The initial value of the sequence number SHOULD be random"; likewise the
        # timestamp; §8.1: the SSRC is chosen at random.
        self.ssrc = ssrc if ssrc is not None else rng.getrandbits(32)
        self.payload_type = payload_type
        self.sequence = sequence if sequence is not None else rng.getrandbits(16)
        self.timestamp = timestamp if timestamp is not None else rng.getrandbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self._mark_next = True  # the first packet opens a talkspurt (RFC 3551 §4.1)

    def packet(
        self,
        payload: bytes,
        samples: int,
        marker: bool = False,
        *,
        payload_type: int | None = None,
        timestamp: int | None = None,
    ) -> RtpPacket:
        """The next packet; advances the sequence number by 1 and the media clock by ``samples``."""
        pt = self.payload_type if payload_type is None else payload_type
        if pt == self.payload_type and self._mark_next:
            marker = True
            self._mark_next = False
        pkt = RtpPacket(
            payload_type=pt,
            sequence=self.sequence,
            timestamp=self.timestamp if timestamp is None else timestamp & 0xFFFFFFFF,
            ssrc=self.ssrc,
            marker=marker,
            payload=payload,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return pkt

    def packet_bytes(self, payload: bytes, samples: int) -> bytes:
        """The next packet of the stream's own payload type, serialised (the per-packet fast path).

        Same result as ``packet(payload, samples).serialize()`` without building the dataclass:
        a 12-octet RFC 3550 §5.1 header (V=2, no padding, extension or CSRC) and the payload.
        """
        marker = self._mark_next
        self._mark_next = False
        header = _FIXED_HEADER.pack(
            0x80, (0x80 if marker else 0) | self.payload_type, self.sequence, self.timestamp, self.ssrc
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload

    def skip(self, samples: int) -> None:
        """Advance the media clock without sending (silence); the next audio packet gets the marker."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._mark_next = True

    def mark_next(self) -> None:
        """Set the marker bit on the next packet of the stream's own payload type."""
        self._mark_next = True


#: RFC 3550 Appendix A.1 constants.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
_SEQ_MOD = 1 << 16


@dataclass
class ReceiverStats:
    """RFC 3550 receiver statistics of the incoming stream (Appendix A.1, A.3 and A.8).

    Call ``update(packet, arrival)`` for every RTP packet of the stream (``arrival`` in seconds from
    any monotonic clock). Pass ``timing=False`` for packets whose timestamp does not advance with
    their sending time (RFC 4733 event updates) so they do not disturb the jitter estimate.
    A change of SSRC restarts the sequence state; counts of earlier sources are kept in the totals.
    """

    clock_rate: int = 8000
    ssrc: int | None = None
    received: int = 0
    cycles: int = 0
    base_seq: int = 0
    max_seq: int = 0
    bad_seq: int = _SEQ_MOD + 1
    probation: int = MIN_SEQUENTIAL
    jitter: float = 0.0  # in timestamp units (A.8)
    _transit: float | None = field(default=None, repr=False)
    _prior_expected: int = field(default=0, repr=False)
    _prior_received: int = field(default=0, repr=False)
    sources: int = 0

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0

    def update(self, packet: RtpPacket, arrival: float, *, timing: bool = True) -> bool:
        """Account for one packet; returns False when A.1 treats it as not (yet) valid."""
        return self.update_fields(packet.ssrc, packet.sequence, packet.timestamp, arrival, timing=timing)

    def update_fields(
        self, ssrc: int, seq: int, timestamp: int, arrival: float, *, timing: bool = True
    ) -> bool:
        """``update`` from the header fields (the per-packet path, without an :class:`RtpPacket`)."""
        if ssrc != self.ssrc:
            if self.ssrc is not None and self.probation == 0:
                self._prior_expected += self._expected_current()
                self._prior_received += self.received
            self.ssrc = ssrc
            self.sources += 1
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = MIN_SEQUENTIAL
            self._transit = None
        if not self._update_seq(seq):
            return False
        if timing:
            self._update_jitter(timestamp, arrival)
        return True

    def _update_seq(self, seq: int) -> bool:
        # RFC 3550 Appendix A.1 update_seq().
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    # The probation packets count: the source is valid from the first of them.
                    self._init_seq((seq - (MIN_SEQUENTIAL - 1)) & 0xFFFF)
                    self.max_seq = seq
                    self.received = MIN_SEQUENTIAL
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                self._init_seq(seq)  # the sender restarted its sequence
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet
        self.received += 1
        return True

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        # RFC 3550 Appendix A.8: J += (|D(i-1, i)| - J) / 16, in timestamp units.
        arrival_ts = arrival * self.clock_rate
        transit = arrival_ts - timestamp
        if self._transit is not None:
            d = transit - self._transit
            # Undo a 32-bit timestamp wrap between the two packets.
            d = (d + 2**31) % 2**32 - 2**31
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit

    def _expected_current(self) -> int:
        if self.ssrc is None or self.probation:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number received, extended with the count of wraps (A.1 cycles)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected over all sources seen (A.3)."""
        return self._prior_expected + self._expected_current()

    @property
    def total_received(self) -> int:
        return self._prior_received + (0 if self.probation else self.received)

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates outnumber losses."""
        return self.expected - self.total_received

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate


def is_rtcp(data: bytes) -> bool:
    """True for an RTCP packet on an RTP port (RFC 5761 §4: second octet 192-223)."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and data[1] in RTCP_SECOND_OCTET


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of an RTCP compound packet (RFC 3550 §6.4-6.6): common header and raw body.

    ``ssrc`` is the sender SSRC of SR/RR/APP (and of the first chunk of SDES); ``sources`` lists the
    SSRCs of a BYE.
    """

    packet_type: int
    count: int
    ssrc: int | None
    body: bytes
    sources: tuple[int, ...] = ()


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split a compound RTCP packet; raises ``RtpError`` when a length field does not fit."""
    out: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtpError("RTCP packet truncated in header")
        b0, pt, words = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {b0 >> 6}, expected 2")
        size = 4 * (words + 1)  # RFC 3550 §6.4.1: "length in 32-bit words minus one"
        if pos + size > len(data):
            raise RtpError("RTCP length field exceeds the datagram")
        chunk = bytes(data[pos : pos + size])
        count = b0 & 0x1F
        if b0 & 0x20:  # padding: only valid on the last packet
            pad = chunk[-1]
            if pad == 0 or pad > size - 4:
                raise RtpError("RTCP padding count is invalid")
            chunk = chunk[: size - pad]
        body = chunk[4:]
        ssrc = struct.unpack_from("!I", body)[0] if len(body) >= 4 else None
        sources: tuple[int, ...] = ()
        if pt == RTCP_BYE:
            if len(body) < 4 * count:
                raise RtpError("RTCP BYE shorter than its source count")
            sources = struct.unpack_from(f"!{count}I", body)
        out.append(RtcpPacket(packet_type=pt, count=count, ssrc=ssrc, body=body, sources=sources))
        pos += size
    return out
