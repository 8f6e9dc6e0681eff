"""RTP header parse/serialize, serial arithmetic, the sending stream, receiver statistics, RTCP."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ums.media.rtp import (
    ReceiverStats,
    RtcpPacket,
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpStreamTx,
    is_rtcp,
    parse_plain,
    parse_rtcp,
    seq_diff,
    seq_lt,
    ts_diff,
)

# Recorded by SIPp (dtmf_2833_1.pcap): first RFC 4733 packet of digit '1', marker set, PT 101.
SIPP_DTMF_START = bytes.fromhex("80e51f30000033e00e05384e010a0000")
# Recorded by SIPp (g711a.pcap, packet 52): PCMA, 30 ms, first 32 payload octets kept.
SIPP_PCMA = bytes.fromhex(
    "8008e731000031b0dee0ee8f" + "72724a4a4a4a724a4a4a4a4a4a4a4a4a4a4a5a5a4a5a5a5a5a5a5a5a5a5a5a5a"
)
# Hand-assembled: CC=2 (two CSRCs), PT 8, seq 1, ts 100, SSRC 0x11223344, 4 payload octets.
WITH_CSRC = bytes.fromhex("8208000100000064112233440a0b0c0d01020304d5d5d5d5")
# Hand-assembled: X bit, PT 0 with marker, RFC 8285 one-byte header block (0xBEDE, 1 word).
WITH_EXTENSION = bytes.fromhex("90801234000003e8deadbeefbede000110ff00007f7f")
# Hand-assembled: P bit, 2 payload octets followed by 3 padding octets (last = count).
WITH_PADDING = bytes.fromhex("a008000500000fa000000001d5d5000003")


def test_recorded_sipp_packets() -> None:
    p = RtpPacket.parse(SIPP_DTMF_START)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (101, True, 7984, 13280, 0x0E05384E)
    assert p.payload == bytes.fromhex("010a0000")
    q = RtpPacket.parse(SIPP_PCMA)
    assert (q.payload_type, q.marker, q.sequence, q.timestamp, q.ssrc) == (8, False, 59185, 12720, 0xDEE0EE8F)
    assert len(q.payload) == 32
    for data in (SIPP_DTMF_START, SIPP_PCMA):
        assert RtpPacket.parse(data).serialize() == data


def test_csrc_extension_padding_round_trip() -> None:
    p = RtpPacket.parse(WITH_CSRC)
    assert p.csrc == (0x0A0B0C0D, 0x01020304)
    assert (p.sequence, p.timestamp, p.ssrc, p.payload) == (1, 100, 0x11223344, b"\xd5" * 4)
    e = RtpPacket.parse(WITH_EXTENSION)
    assert e.marker and e.payload_type == 0
    assert e.extension == RtpExtension(0xBEDE, bytes.fromhex("10ff0000"))
    assert e.payload == b"\x7f\x7f"
    d = RtpPacket.parse(WITH_PADDING)
    assert d.padding == 3 and d.payload == b"\xd5\xd5"
    for data in (WITH_CSRC, WITH_EXTENSION, WITH_PADDING):
        assert RtpPacket.parse(data).serialize() == data


def test_constructed_packet_serializes_to_known_bytes() -> None:
    p = RtpPacket(101, 7984, 13280, 0x0E05384E, True, bytes.fromhex("010a0000"))
    assert p.serialize() == SIPP_DTMF_START
    with pytest.raises(ValueError):
        RtpPacket(128, 0, 0, 0)
    with pytest.raises(ValueError):
        RtpPacket(0, 70000, 0, 0)


@pytest.mark.parametrize("data", [WITH_CSRC, WITH_EXTENSION])
def test_truncated_headers_raise(data: bytes) -> None:
    header_end = {WITH_CSRC: 20, WITH_EXTENSION: 20}[data]
    for n in range(header_end):
        with pytest.raises(RtpError):
            RtpPacket.parse(data[:n])


def test_malformed_packets_raise() -> None:
    with pytest.raises(RtpError, match="version"):
        RtpPacket.parse(b"\x40" + SIPP_DTMF_START[1:])
    with pytest.raises(RtpError, match="padding"):
        RtpPacket.parse(WITH_PADDING[:-1] + b"\x00")  # count 0
    with pytest.raises(RtpError, match="padding"):
        RtpPacket.parse(WITH_PADDING[:-1] + b"\x09")  # more than the payload
    assert issubclass(RtpError, ValueError)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_raise_only_rtp_error(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    if not p.padding:
        assert p.serialize() == data


def test_serial_arithmetic_wraps() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(5, 5) == 0
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768
    assert seq_lt(65530, 3) and not seq_lt(3, 65530)
    assert ts_diff(0, 0xFFFFFF60) == 160
    assert ts_diff(0xFFFFFF60, 0) == -160
    assert ts_diff(2**31 - 1, 0) == 2**31 - 1


def test_stream_tx_numbers_packets() -> None:
    tx = RtpStreamTx(None, 8, rng=random.Random(7), sequence=65534, timestamp=0xFFFFFF00)
    a = tx.packet(b"\xd5" * 160, 160)
    b = tx.packet(b"\xd5" * 160, 160)
    c = tx.packet(b"\x00\x0a\x00\xa0", 160, True, payload_type=101, timestamp=a.timestamp)
    d = tx.packet(b"\xd5" * 160, 160)
    assert [p.sequence for p in (a, b, c, d)] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in (a, b, c, d)] == [0xFFFFFF00, 0xFFFFFFA0, 0xFFFFFF00, 224]
    assert [p.marker for p in (a, b, c, d)] == [True, False, True, False]
    assert c.payload_type == 101 and a.ssrc == d.ssrc
    tx.skip(800)
    e = tx.packet(b"\xd5" * 160, 160)
    assert e.marker and e.timestamp == 224 + 160 + 800
    assert tx.packets_sent == 5


def test_stream_tx_initial_values_come_from_the_rng() -> None:
    one = RtpStreamTx(None, 0, rng=random.Random(1))
    two = RtpStreamTx(None, 0, rng=random.Random(1))
    three = RtpStreamTx(None, 0, rng=random.Random(2))
    assert (one.ssrc, one.sequence, one.timestamp) == (two.ssrc, two.sequence, two.timestamp)
    assert (one.ssrc, one.sequence, one.timestamp) != (three.ssrc, three.sequence, three.timestamp)
    assert RtpStreamTx(1234, 0, rng=random.Random(1)).ssrc == 1234


def _feed(stats: ReceiverStats, seqs: list[int], ssrc: int = 1) -> None:
    for i, s in enumerate(seqs):
        stats.update(RtpPacket(0, s & 0xFFFF, 160 * i, ssrc), 0.02 * i)


def test_receiver_stats_in_order_and_loss() -> None:
    st_ok = ReceiverStats()
    _feed(st_ok, list(range(100, 200)))
    assert (st_ok.expected, st_ok.total_received, st_ok.lost) == (100, 100, 0)
    st_loss = ReceiverStats()
    _feed(st_loss, [s for s in range(100, 200) if s % 10 != 3])
    assert st_loss.expected == 100 and st_loss.lost == 10


def test_receiver_stats_sequence_wrap_and_reorder() -> None:
    stats = ReceiverStats()
    seqs = list(range(65500, 65536)) + list(range(0, 64))
    seqs[40], seqs[41] = seqs[41], seqs[40]  # reordered across the wrap
    _feed(stats, seqs)
    assert stats.cycles == 65536
    assert stats.extended_max_seq == 65536 + 63
    assert stats.expected == 100 and stats.lost == 0


def test_receiver_stats_duplicates_make_loss_negative() -> None:
    stats = ReceiverStats()
    _feed(stats, [1, 2, 3, 3, 4, 5])
    assert stats.expected == 5 and stats.lost == -1


def test_receiver_stats_ssrc_change_keeps_totals() -> None:
    stats = ReceiverStats()
    _feed(stats, [10, 11, 12, 14], ssrc=1)
    _feed(stats, [5000, 5001, 5002], ssrc=2)
    assert stats.sources == 2
    assert stats.expected == 5 + 3 and stats.lost == 1


def test_receiver_jitter_follows_rfc3550_a8() -> None:
    steady = ReceiverStats()
    for i in range(200):
        steady.update(RtpPacket(0, i, 160 * i, 9), 5.0 + 0.02 * i)
    assert steady.jitter == pytest.approx(0.0, abs=1e-6)
    wobbly = ReceiverStats()
    for i in range(400):
        offset = 0.001 if i % 2 else -0.001  # transit alternates by 2 ms = 16 timestamp units
        wobbly.update(RtpPacket(0, i, 160 * i, 9), 5.0 + 0.02 * i + offset)
    assert wobbly.jitter == pytest.approx(16.0, rel=1e-3)
    assert wobbly.jitter_ms == pytest.approx(2.0, rel=1e-3)


def test_rtcp_is_told_apart_from_rtp() -> None:
    sr = struct.pack("!BBHI", 0x80, 200, 6, 0x1234) + bytes(20)
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    assert is_rtcp(sr) and is_rtcp(rr)
    assert not is_rtcp(SIPP_DTMF_START)  # PT 101 with marker: second octet 229
    assert not is_rtcp(SIPP_PCMA)
    assert not is_rtcp(RtpPacket(0, 1, 1, 1, marker=True).serialize())


def test_parse_compound_rtcp() -> None:
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0xAABBCCDD)
    sdes = struct.pack("!BBHI", 0x81, 202, 3, 0xAABBCCDD) + b"\x01\x02ab\x00\x00\x00\x00"
    bye = struct.pack("!BBHII", 0x82, 203, 2, 1, 2)
    packets = parse_rtcp(rr + sdes + bye)
    assert [p.packet_type for p in packets] == [201, 202, 203]
    assert packets[0] == RtcpPacket(201, 0, 0xAABBCCDD, struct.pack("!I", 0xAABBCCDD))
    assert packets[2].sources == (1, 2)
    with pytest.raises(RtpError):
        parse_rtcp(rr + sdes[:-1])
    with pytest.raises(RtpError):
        parse_rtcp(struct.pack("!BBH", 0x82, 203, 0))  # BYE claiming 2 sources in no room


def test_packet_bytes_equals_the_serialised_packet() -> None:
    a = RtpStreamTx(0x1234ABCD, 8, sequence=65534, timestamp=2**32 - 100)
    b = RtpStreamTx(0x1234ABCD, 8, sequence=65534, timestamp=2**32 - 100)
    for i in range(4):
        payload = bytes([i]) * 160
        assert a.packet_bytes(payload, 160) == b.packet(payload, 160).serialize()
    b.skip(160)
    a.skip(160)
    assert a.packet_bytes(b"x", 1) == b.packet(b"x", 1).serialize()  # marker after a skip
    assert (a.sequence, a.timestamp, a.packets_sent) == (b.sequence, b.timestamp, b.packets_sent)


def test_parse_plain_reads_bare_headers_and_declines_the_rest() -> None:
    pkt = RtpPacket(8, 513, 160_000, 0xCAFE0001, True, b"\xd5" * 160)
    assert parse_plain(pkt.serialize()) == (8, 513, 160_000, 0xCAFE0001, True)
    assert parse_plain(RtpPacket(0, 1, 2, 3, False, b"\xff").serialize()) == (0, 1, 2, 3, False)
    for data in (WITH_CSRC, WITH_EXTENSION, WITH_PADDING, pkt.serialize()[:12], b"\x80"):
        assert parse_plain(data) is None  # CSRC, extension, padding, no payload, truncated
    rr = struct.pack("!BBHI", 0x80, 201, 1, 77)  # RTCP RR without report blocks: never audio
    assert parse_plain(rr + b"\x00") is None


def test_receiver_stats_update_fields_equals_update() -> None:
    a, b = ReceiverStats(), ReceiverStats()
    rng = random.Random(5)
    for i in range(200):
        seq = (60_000 + i + rng.choice((0, 0, 0, 1, -1))) & 0xFFFF
        pkt = RtpPacket(8, seq, (i * 160) & 0xFFFFFFFF, 9)
        arrival = 0.02 * i + rng.uniform(0, 0.01)
        assert a.update(pkt, arrival) == b.update_fields(9, seq, pkt.timestamp, arrival)
    assert (a.expected, a.lost, a.jitter) == (b.expected, b.lost, b.jitter)
