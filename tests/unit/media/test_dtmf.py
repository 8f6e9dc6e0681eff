"""RFC 4733 telephone-event payload, the sender sequence and the digit receiver."""

from __future__ import annotations

import random

import pytest

from ums.media.dtmf import (
    DtmfReceiver,
    TelephoneEvent,
    digit_for_event,
    dtmf_events,
    dtmf_packets,
    event_for_digit,
)
from ums.media.rtp import RtpPacket

# SIPp's dtmf_2833_1.pcap: digit '1', ten packets; the three end packets share one sequence number.
SIPP_DIGIT_1 = [
    bytes.fromhex(h)
    for h in (
        "80e51f30000033e00e05384e010a0000",
        "80651f31000033e00e05384e010a0140",
        "80651f32000033e00e05384e010a0280",
        "80651f33000033e00e05384e010a03c0",
        "80651f34000033e00e05384e010a0500",
        "80651f35000033e00e05384e010a0640",
        "80651f36000033e00e05384e010a0780",
        "80651f37000033e00e05384e018a08c0",
        "80651f37000033e00e05384e018a08c0",
        "80651f37000033e00e05384e018a08c0",
    )
]


def feed_all(rx: DtmfReceiver, packets: list[RtpPacket]) -> list[str]:
    out: list[str] = []
    for p in packets:
        out += rx.feed(p)
    return out


def test_payload_round_trip() -> None:
    ev = TelephoneEvent.parse(bytes.fromhex("018a08c0"))
    assert ev == TelephoneEvent(event=1, end=True, volume=10, duration=2240)
    assert ev.serialize() == bytes.fromhex("018a08c0")
    assert ev.digit == "1"
    r = TelephoneEvent(11, end=False, volume=63, duration=65535, reserved=True)
    assert TelephoneEvent.parse(r.serialize()) == r
    with pytest.raises(ValueError):
        TelephoneEvent.parse(b"\x01\x0a\x00")
    with pytest.raises(ValueError):
        TelephoneEvent(1, volume=64)


def test_event_codes() -> None:
    assert [event_for_digit(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert event_for_digit("a") == 12
    assert digit_for_event(10) == "*" and digit_for_event(11) == "#" and digit_for_event(15) == "D"
    assert digit_for_event(16) is None
    with pytest.raises(ValueError):
        event_for_digit("E")


def test_sender_sequence_follows_rfc4733_2_5() -> None:
    pkts = dtmf_packets("5", 100, payload_type=101, ssrc=7, sequence=65534, timestamp=1000)
    events = [TelephoneEvent.parse(p.payload) for p in pkts]
    assert len(pkts) == 4 + 3
    assert [p.marker for p in pkts] == [True] + [False] * 6
    assert {p.timestamp for p in pkts} == {1000}
    assert [p.sequence for p in pkts] == [65534, 65535, 0, 1, 2, 3, 4]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5} and {e.volume for e in events} == {10}
    # a duration that is not a multiple of ptime: the end packet carries the exact duration
    odd = dtmf_events("#", 50, ptime=20)
    assert [(e.duration, e.end) for e in odd] == [(160, False), (320, False)] + [(400, True)] * 3


def test_sipp_recording_gives_one_digit() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, [RtpPacket.parse(b) for b in SIPP_DIGIT_1]) == ["1"]


def test_each_event_reported_once_despite_duplicates_reordering_and_loss() -> None:
    rng = random.Random(4733)
    for _ in range(200):
        packets: list[RtpPacket] = []
        digits = "".join(rng.choice("0123456789*#ABCD") for _ in range(6))
        seq, ts = rng.getrandbits(16), rng.getrandbits(32)
        for d in digits:
            burst = dtmf_packets(d, rng.choice([40, 60, 100, 200]), sequence=seq, timestamp=ts, ssrc=3)
            seq = (seq + len(burst)) & 0xFFFF
            ts = (ts + 8 * 300) & 0xFFFFFFFF
            kept = [p for p in burst if rng.random() > 0.3] or [burst[rng.randrange(len(burst))]]
            kept += [p for p in kept if rng.random() < 0.3]  # duplicates
            rng.shuffle(kept)  # reordering within the event
            packets += kept
        assert feed_all(DtmfReceiver(), packets) == list(digits)


def test_lost_end_packets_do_not_merge_repeated_digits() -> None:
    first = dtmf_packets("5", 100, timestamp=8000)[:3]  # no end packet arrives
    second = dtmf_packets("5", 100, timestamp=8000 + 800 + 400)  # 50 ms pause
    assert feed_all(DtmfReceiver(), first + second) == ["5", "5"]


def test_stragglers_of_an_earlier_event_are_ignored() -> None:
    one = dtmf_packets("1", 100, timestamp=0)
    two = dtmf_packets("2", 100, timestamp=2400)
    assert feed_all(DtmfReceiver(), one[:2] + two[:2] + one[2:] + two[2:]) == ["1", "2"]


def test_restamped_updates_and_long_event_segments_count_once() -> None:
    # A sender that (wrongly) gives each update its own timestamp.
    restamped = [
        RtpPacket(101, i, 1000 + 160 * i, 9, i == 0, TelephoneEvent(7, i == 5, 10, 160 * (i + 1)).serialize())
        for i in range(6)
    ]
    assert feed_all(DtmfReceiver(), restamped) == ["7"]
    # RFC 4733 §2.5.1.3: an event longer than 65535 units continues in a segment with a new timestamp.
    seg1 = [
        RtpPacket(101, i, 0, 9, i == 0, TelephoneEvent(0, False, 10, min(65535, 8000 * (i + 1))).serialize())
        for i in range(9)
    ]
    seg2 = [
        RtpPacket(101, 9 + i, 65535, 9, False, TelephoneEvent(0, i == 2, 10, 800).serialize())
        for i in range(3)
    ]
    assert feed_all(DtmfReceiver(), seg1 + seg2) == ["0"]


def test_flash_and_malformed_payloads_are_ignored() -> None:
    rx = DtmfReceiver()
    flash = RtpPacket(101, 1, 0, 9, True, TelephoneEvent(16, True, 10, 800).serialize())
    short = RtpPacket(101, 2, 800, 9, True, b"\x01")
    assert rx.feed(flash) == [] and rx.feed(short) == []
    assert rx.ignored == 2
    assert feed_all(rx, dtmf_packets("9", timestamp=4000, ssrc=9)) == ["9"]


def test_rfc4733_style_exchange_two_digits_with_50ms_updates() -> None:
    """Modelled on the RFC 4733 examples: digit '9' then '1', updates every 50 ms (400 units),
    three end packets each, audio packets of the same stream in between (routed elsewhere)."""
    rx = DtmfReceiver()
    seq = 0
    got: list[str] = []
    for digit, start, duration in (("9", 0, 1600), ("1", 7040, 1200)):
        updates = list(range(400, duration, 400)) + [duration] * 3
        for i, d in enumerate(updates):
            ev = TelephoneEvent(event_for_digit(digit), d == duration and i >= len(updates) - 3, 10, d)
            got += rx.feed(RtpPacket(101, seq, start, 0x5EED, i == 0, ev.serialize()))
            seq += 1
    assert got == ["9", "1"]
    assert rx.events == 2
