"""RFC 4733 telephone-events: payload format, a digit receiver and a packet sequence generator.

What it does
------------
* ``TelephoneEvent.parse(payload)`` / ``.serialize()``: the 4-octet event payload of RFC 4733 §2.3
  (event code, E bit, R bit, volume, duration).
* ``DtmfReceiver.feed(packet) -> list[str]``: turns the telephone-event packets of a call into
  key presses, each reported exactly once.
* ``dtmf_events(digit, ...)`` / ``dtmf_packets(digit, ...)``: the RFC 4733 §2.5 sender sequence for
  one key press: first packet with the marker bit, an update every ``ptime`` with the same RTP
  timestamp and a growing duration, and the final (E bit) packet sent three times (§2.5.1.4).

How it works
------------
An event is identified by its RTP timestamp (RFC 4733 §2.5.1.1: all packets of one event carry the
timestamp of its start). The receiver **reports a digit on the first packet it sees with a new
timestamp**, not on the end packet: a lost end packet can then never lose or delay a digit, and
retransmitted, duplicated or reordered packets of an event already seen are ignored because its
timestamp is remembered (the last 32 events, per SSRC). Two guards keep one key press from being
reported twice:

* a packet for an *older* timestamp than the current event (a straggler) is ignored;
* a new timestamp for the *same* event code while the current event has not ended, starting no
  later than the current event's reported span plus ``CONTINUATION_SLACK`` samples, continues the
  current event. This covers long events split into segments (RFC 4733 §2.5.1.3) and senders that
  (wrongly) restamp every update.

Event 16 (flash) and codes above 16 are parsed and ignored.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

from .rtp import RtpPacket, ts_diff

__all__ = [
    "DTMF_EVENTS",
    "DtmfReceiver",
    "TelephoneEvent",
    "digit_for_event",
    "dtmf_events",
    "dtmf_packets",
    "event_for_digit",
]

#: RFC 4733 §3.2 Table 7: DTMF named events 0-15.
DTMF_EVENTS = "0123456789*#ABCD"
#: RFC 4733 §3.2 Table 7: event 16 is "Flash".
EVENT_FLASH = 16
#: RFC 4733 §2.5.1.4: "the final packet ... MUST be sent a total of three times".
END_PACKET_REPEATS = 3
#: RFC 4733 §2.3.5: the duration field is 16 bits of timestamp units.
MAX_DURATION = 0xFFFF
#: Slack (timestamp units; 40 ms at 8 kHz, the shortest pause between key presses that ITU-T Q.24
#: asks receivers to accept) within which a new timestamp with the same event code continues an
#: unfinished event instead of starting a new one.
CONTINUATION_SLACK = 320

_PAYLOAD = struct.Struct("!BBH")


def event_for_digit(digit: str) -> int:
    """RFC 4733 event code of a DTMF key ('0'-'9', '*', '#', 'A'-'D'; case-insensitive)."""
    code = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def digit_for_event(event: int) -> str | None:
    """The DTMF key of an event code 0-15, None for anything else (flash, tones)."""
    return DTMF_EVENTS[event] if 0 <= event < len(DTMF_EVENTS) else None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The RFC 4733 §2.3 payload: event(8) E(1) R(1) volume(6) duration(16)."""

    event: int
    end: bool = False
    volume: int = 10  # RFC 4733 §2.3.4: power level in -dBm0, 0-63
    duration: int = 0  # timestamp units
    reserved: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError("event code is 8 bits")
        if not 0 <= self.volume <= 63:
            raise ValueError("volume is 6 bits (0-63, in -dBm0)")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError("duration is 16 bits")

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first event of a payload; raises ``ValueError`` when shorter than 4 octets."""
        if len(payload) < _PAYLOAD.size:
            raise ValueError(f"telephone-event payload too short ({len(payload)} octets)")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(
            event=event,
            end=bool(flags & 0x80),
            reserved=bool(flags & 0x40),
            volume=flags & 0x3F,
            duration=duration,
        )

    def serialize(self) -> bytes:
        flags = (0x80 if self.end else 0) | (0x40 if self.reserved else 0) | self.volume
        return _PAYLOAD.pack(self.event, flags, self.duration)

    @property
    def digit(self) -> str | None:
        return digit_for_event(self.event)


@dataclass
class _Current:
    ssrc: int
    timestamp: int
    event: int
    duration: int
    ended: bool


class DtmfReceiver:
    """Key presses from RFC 4733 telephone-event packets, each reported once (see module notes)."""

    def __init__(self, memory: int = 32) -> None:
        self._seen: deque[tuple[int, int]] = deque(maxlen=memory)
        self._current: _Current | None = None
        self.events = 0  # digits reported
        self.ignored = 0  # malformed payloads and non-DTMF events

    def feed(self, packet: RtpPacket) -> list[str]:
        """Account for one telephone-event packet; returns the digits that start with it (0 or 1)."""
        try:
            ev = TelephoneEvent.parse(packet.payload)
        except ValueError:
            self.ignored += 1
            return []
        key = (packet.ssrc, packet.timestamp)
        cur = self._current
        if key in self._seen:
            if cur is not None and (cur.ssrc, cur.timestamp) == key:
                cur.duration = max(cur.duration, ev.duration)
                cur.ended = cur.ended or ev.end
            return []
        if cur is not None and cur.ssrc == packet.ssrc:
            delta = ts_diff(packet.timestamp, cur.timestamp)
            if delta < 0:
                return []  # straggler from an event before the current one
            if ev.event == cur.event and not cur.ended and delta <= cur.duration + CONTINUATION_SLACK:
                # Next segment of a long event, or a sender restamping its updates.
                self._seen.append(key)
                cur.timestamp = packet.timestamp
                cur.duration = ev.duration
                cur.ended = ev.end
                return []
        self._seen.append(key)
        self._current = _Current(packet.ssrc, packet.timestamp, ev.event, ev.duration, ev.end)
        digit = ev.digit
        if digit is None:
            self.ignored += 1
            return []
        self.events += 1
        return [digit]


def dtmf_events(
    digit: str, duration_ms: int = 100, *, volume: int = 10, ptime: int = 20, rate: int = 8000
) -> list[TelephoneEvent]:
    """Payloads of one key press, one per ``ptime`` (RFC 4733 §2.5.1).

    The k-th update (k = 1, 2, ...) reports ``k * ptime`` of duration; the last one reports the
    full duration with the E bit and is repeated ``END_PACKET_REPEATS`` times. The first payload
    goes with the marker bit (RFC 4733 §2.5.1.1).
    """
    code = event_for_digit(digit)
    if duration_ms <= 0 or ptime <= 0:
        raise ValueError("duration and ptime must be positive")
    total = duration_ms * rate // 1000
    if total > MAX_DURATION:
        raise ValueError("events longer than 65535 timestamp units are not generated")
    step = ptime * rate // 1000
    updates = math.ceil(total / step)
    out = [TelephoneEvent(code, False, volume, k * step) for k in range(1, updates)]
    out += [TelephoneEvent(code, True, volume, total)] * END_PACKET_REPEATS
    return out


def dtmf_packets(
    digit: str,
    duration_ms: int = 100,
    *,
    volume: int = 10,
    ptime: int = 20,
    payload_type: int = 101,
    ssrc: int = 0,
    sequence: int = 0,
    timestamp: int = 0,
    rate: int = 8000,
) -> list[RtpPacket]:
    """The RFC 4733 §2.5 packet sequence for one key press.

    All packets carry ``timestamp`` (the start of the event); sequence numbers increase by one
    per packet (including the repeated end packets, RFC 3550 §5.1); the first has the marker bit.
    """
    events = dtmf_events(digit, duration_ms, volume=volume, ptime=ptime, rate=rate)
    return [
        RtpPacket(
            payload_type=payload_type,
            sequence=(sequence + i) & 0xFFFF,
            timestamp=timestamp & 0xFFFFFFFF,
            ssrc=ssrc,
            marker=i == 0,
            payload=ev.serialize(),
        )
        for i, ev in enumerate(events)
    ]
