"""UDPTL (T.38 Annex A): wire format, redundancy and parity FEC recovery, ordering, fuzzing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ums.fax_t38.ifp import Data, Indicator, T30Indicator, decode_ifp, encode_ifp
from ums.fax_t38.udptl import (
    FecInfo,
    Recovery,
    UdptlDecoder,
    UdptlEncoder,
    UdptlError,
    UdptlPacket,
    build_udptl,
    parse_udptl,
)

H = bytes.fromhex
HDLC = H("c001800002ff1380")  # V.21 hdlc-data ff 13 80 (PEERS.md §10)
CED = H("04")


# ------------------------------------------------------------------------------ wire vectors
# Every vector equals the aligned-PER output of an ASN.1 compiler for T.38 Annex A UDPTLPacket.
WIRE = [
    (UdptlPacket(7, HDLC, (CED,)), "000708c001800002ff138000010104"),  # PEERS.md §10
    (UdptlPacket(1, CED), "000101040000"),  # no recovery data
    (UdptlPacket(0x1234, CED, fec=FecInfo(3, (H("0102"), H("03")))), "12340104800103020201020103"),
    (UdptlPacket(1, CED, fec=FecInfo(200, ())), "00010104800200c800"),  # span >= 128: two octets
    (UdptlPacket(65535, CED, fec=FecInfo(0, ())), "ffff01048001" + "0000"),
]


@pytest.mark.parametrize(("packet", "hexbytes"), WIRE)
def test_wire_vectors(packet: UdptlPacket, hexbytes: str) -> None:
    assert build_udptl(packet).hex() == hexbytes
    if packet.fec is None or packet.fec.span <= 64:
        assert parse_udptl(H(hexbytes)) == packet


def test_long_packets_use_two_octet_lengths() -> None:
    big = bytes(range(256)) + bytes(44)
    wire = build_udptl(UdptlPacket(1, big, (CED,)))
    assert wire[:4] == H("0001812c") and wire[4:304] == big and wire[304:] == H("00010104")
    assert parse_udptl(wire) == UdptlPacket(1, big, (CED,))


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(0, 65535),
    primary=st.binary(min_size=1, max_size=300),
    secondary=st.lists(st.binary(min_size=1, max_size=200), max_size=8),
    span=st.one_of(st.none(), st.integers(0, 64)),
)
def test_wire_round_trip(seq: int, primary: bytes, secondary: list[bytes], span: int | None) -> None:
    if span is None:
        packet = UdptlPacket(seq, primary, tuple(secondary))
    else:
        packet = UdptlPacket(seq, primary, fec=FecInfo(span, tuple(secondary)))
    assert parse_udptl(build_udptl(packet)) == packet


@pytest.mark.parametrize(
    "hexbytes",
    [
        "",
        "00",
        "0001",  # no primary
        "000100",  # empty primary
        "00010104",  # no error-recovery
        "0001010440",  # non-zero padding after the choice bit
        "00010104000102",  # secondary shorter than its length
        "0001010400010104ff",  # trailing octet
        "000101048001",  # FEC span missing
        "00010104800103",  # FEC entries missing
        "00010104800300000300",  # FEC span of 3 octets
        "000101048001ff00",  # negative FEC span
        "0001010480014100",  # FEC span 65 > MAX_FEC_SPAN
        "00010104c0",  # fragmented length
        "0001c0",  # fragmented primary length
        "0001010400" + "21",  # 33 secondary packets
    ],
)
def test_garbage(hexbytes: str) -> None:
    with pytest.raises(UdptlError):
        parse_udptl(H(hexbytes))


# ----------------------------------------------------------------------------------- encoder
def test_redundancy_encoder_winds_up_to_depth() -> None:
    enc = UdptlEncoder("redundancy", depth=3)
    ifps = [bytes([0x02 * i + 2]) for i in range(6)]
    packets = [parse_udptl(enc.packet(x)) for x in ifps]
    assert [p.seq for p in packets] == [0, 1, 2, 3, 4, 5]
    assert [len(p.secondary) for p in packets] == [0, 1, 2, 3, 3, 3]
    assert packets[5].secondary == (ifps[4], ifps[3], ifps[2])  # newest first
    assert enc.seq == 6


def test_fec_encoder_groups() -> None:
    enc = UdptlEncoder("fec", fec_span=3, fec_entries=2)
    ifps = [bytes([i + 1] * (1 + i % 4)) for i in range(10)]
    packets = [parse_udptl(enc.packet(x)) for x in ifps]
    # wind-up: as many parity blocks as there is history for
    assert [len(p.fec.data) for p in packets if p.fec] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # datagram 9, block m covers packets 9 + m - 2j, j = 1..3
    p9 = packets[9]
    assert p9.fec is not None and p9.fec.span == 3

    def xor(*blocks: bytes) -> bytes:
        size = max(map(len, blocks))
        out = bytearray(size)
        for b in blocks:
            for i, v in enumerate(b):
                out[i] ^= v
        return bytes(out)

    assert p9.fec.data == (xor(ifps[7], ifps[5], ifps[3]), xor(ifps[8], ifps[6], ifps[4]))


def test_sequence_wraps() -> None:
    enc = UdptlEncoder("none", first_seq=65534)
    assert [parse_udptl(enc.packet(CED)).seq for _ in range(4)] == [65534, 65535, 0, 1]


def test_max_datagram_cuts_recovery_data() -> None:
    enc = UdptlEncoder("redundancy", depth=3, max_datagram=30)
    sizes = []
    for _ in range(6):
        wire = enc.packet(bytes(10))
        assert len(wire) <= 30
        sizes.append(len(parse_udptl(wire).secondary))
    assert sizes == [0, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError):
        enc.packet(bytes(40))
    fec = UdptlEncoder("fec", fec_span=2, fec_entries=3, max_datagram=40)
    for _ in range(12):
        packet = parse_udptl(fec.packet(bytes(10)))
        assert packet.fec is not None and len(packet.fec.data) <= 2


def test_encoder_arguments() -> None:
    with pytest.raises(ValueError):
        UdptlEncoder("parity")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UdptlEncoder(depth=-1)
    with pytest.raises(ValueError):
        UdptlEncoder("fec", fec_span=0)
    with pytest.raises(ValueError):
        UdptlEncoder().packet(b"")


# ----------------------------------------------------------------------------------- decoder
def _stream(n: int, seed: int) -> list[bytes]:
    """Realistic IFP packets (indicators and data of varied lengths)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 7 == 0:
            out.append(encode_ifp(Indicator(T30Indicator.V21_PREAMBLE), 2))
        else:
            body = rng.randbytes(rng.randrange(1, 60))
            out.append(encode_ifp(Data("v17-14400", [("t4-non-ecm-data", body)]), 2))
    return out


def test_in_order_stream() -> None:
    enc, dec = UdptlEncoder(), UdptlDecoder()
    ifps = _stream(50, 1)
    got = []
    for x in ifps:
        got += dec.receive(enc.packet(x))
    assert [g.ifp for g in got] == ifps
    assert [g.seq for g in got] == list(range(50))
    assert {g.source for g in got} == {Recovery.PRIMARY}
    assert (dec.lost, dec.recovered, dec.duplicates, dec.late) == (0, 0, 0, 0)


def test_duplicates_and_reordering() -> None:
    enc, dec = UdptlEncoder("redundancy", depth=1), UdptlDecoder()
    wires = [enc.packet(bytes([i + 1])) for i in range(6)]
    got = []
    for i in [0, 1, 1, 3, 2, 4, 5, 5]:
        got += dec.receive(wires[i])
    # packet 2 arrives after 3, which carries it as redundancy: delivered from there, in order
    assert [(g.seq, g.source) for g in got] == [
        (0, Recovery.PRIMARY),
        (1, Recovery.PRIMARY),
        (2, Recovery.REDUNDANCY),
        (3, Recovery.PRIMARY),
        (4, Recovery.PRIMARY),
        (5, Recovery.PRIMARY),
    ]
    assert (dec.duplicates, dec.late, dec.lost, dec.recovered) == (3, 0, 0, 1)


def test_hold_waits_for_reordered_packets() -> None:
    enc, dec = UdptlEncoder("none"), UdptlDecoder(hold=2)
    wires = [enc.packet(bytes([i + 1])) for i in range(8)]
    got = []
    for i in [0, 2, 3, 1, 5, 6]:  # 1 comes late, 4 never
        got += dec.receive(wires[i])
    assert [g.seq for g in got] == [0, 1, 2, 3]
    assert dec.lost == 0 and dec.late == 0
    assert [g.seq for g in dec.flush()] == [5, 6] and dec.lost == 1
    # a packet three ahead of the gap gives up on it
    dec = UdptlDecoder(hold=2)
    got = []
    for i in [0, 2, 3, 5]:
        got += dec.receive(wires[i])
    assert [g.seq for g in got] == [0, 2, 3] and dec.lost == 1
    assert dec.receive(wires[1]) == [] and dec.late == 1
    # without hold the late packet is dropped at once
    dec0 = UdptlDecoder()
    got = []
    for i in [0, 2, 3, 1]:
        got += dec0.receive(wires[i])
    assert [g.seq for g in got] == [0, 2, 3] and dec0.late == 1 and dec0.lost == 1


def test_sequence_wrap_with_loss() -> None:
    enc = UdptlEncoder("redundancy", depth=2, first_seq=65530)
    dec = UdptlDecoder()
    ifps = [bytes([i + 1]) for i in range(12)]
    wires = [enc.packet(x) for x in ifps]
    got = []
    for i, w in enumerate(wires):
        if i not in (5, 6):  # seq 65535 and 0 lost
            got += dec.receive(w)
    assert [g.ifp for g in got] == ifps
    assert [g.seq for g in got] == [(65530 + i) & 0xFFFF for i in range(12)]


def test_start_and_restart() -> None:
    enc = UdptlEncoder("redundancy", depth=3)
    wires = [enc.packet(bytes([i + 1])) for i in range(5)]
    dec = UdptlDecoder()
    got = dec.receive(wires[2])  # 0 and 1 lost, carried by 2
    assert [g.seq for g in got] == [0, 1, 2]
    # the far end starts numbering again somewhere else
    enc2 = UdptlEncoder("redundancy", depth=3, first_seq=40000)
    got = dec.receive(enc2.packet(b"\x09")) + dec.receive(enc2.packet(b"\x0a"))
    assert [(g.seq, g.ifp) for g in got] == [(40000, b"\x09"), (40001, b"\x0a")]
    assert dec.restarts == 1
    # a stream joined late starts at its first packet
    late = UdptlDecoder()
    assert [g.seq for g in late.receive(enc2.packet(b"\x0b"))] == [40002]


def test_garbage_leaves_decoder_unchanged() -> None:
    enc, dec = UdptlEncoder(), UdptlDecoder()
    assert dec.datagram(enc.packet(CED)) == [CED]
    with pytest.raises(UdptlError):
        dec.datagram(b"\x00\x01\x05")
    assert dec.datagram(enc.packet(HDLC)) == [HDLC]


def _run(enc: UdptlEncoder, dec: UdptlDecoder, ifps: list[bytes], drop: set[int]) -> list[tuple[int, bytes]]:
    got = []
    for i, x in enumerate(ifps):
        wire = enc.packet(x)
        if i not in drop:
            got += dec.receive(wire)
    got += dec.flush()
    return [(g.seq, g.ifp) for g in got]


def test_redundancy_recovers_random_loss() -> None:
    """10 % random loss, depth 3: a packet is lost only when it and the next three datagrams are."""
    n = 20000
    rng = random.Random(10)
    ifps = _stream(n, 2)
    drop = {i for i in range(n) if rng.random() < 0.10}
    dec = UdptlDecoder()
    got = _run(UdptlEncoder("redundancy", depth=3), dec, ifps, drop)
    last = max(i for i in range(n) if i not in drop)  # nothing tells of packets after this one
    unrecoverable = {i for i in drop if i < last and all(j in drop for j in range(i + 1, i + 4))}
    expected = [(i, ifps[i]) for i in range(last + 1) if i not in unrecoverable]
    assert len(drop) > 1800
    assert got == expected
    assert dec.lost == len(unrecoverable)
    assert dec.recovered == len([i for i in drop if i < last]) - len(unrecoverable)


def test_fec_recovers_isolated_losses_exactly() -> None:
    n = 3000
    ifps = _stream(n, 3)
    drop = set(range(25, n, 10))  # one loss in every 10: at most one per parity group
    dec = UdptlDecoder()
    got = _run(UdptlEncoder("fec", fec_span=3, fec_entries=3), dec, ifps, drop)
    assert [s for s, _ in got] == list(range(n))
    assert dec.lost == 0 and dec.recovered == len(drop)
    for seq, ifp in got:
        # rebuilt packets are zero-padded to the longest of their group; IFP decoding ignores that
        assert ifp[: len(ifps[seq])] == ifps[seq] and not any(ifp[len(ifps[seq]) :])
        assert decode_ifp(ifp, 2) == decode_ifp(ifps[seq], 2)


def test_fec_recovers_bursts_across_interleaved_groups() -> None:
    ifps = _stream(40, 4)
    # two and three consecutive losses fall in different groups of one datagram's parity blocks
    drop = {20, 21, 30, 31, 32}
    dec = UdptlDecoder()
    got = _run(UdptlEncoder("fec", fec_span=3, fec_entries=3), dec, ifps, drop)
    assert [s for s, _ in got] == list(range(40)) and dec.recovered == 5


def test_fec_random_loss() -> None:
    """10 % random loss, span 3 x 3 entries: most losses repaired, the rest reported lost."""
    n = 10000
    rng = random.Random(12)
    ifps = _stream(n, 5)
    drop = {i for i in range(n) if rng.random() < 0.10}
    results = {}
    for hold in (0, 9):
        dec = UdptlDecoder(hold=hold)
        got = _run(UdptlEncoder("fec", fec_span=3, fec_entries=3), dec, ifps, drop)
        seqs = [s for s, _ in got]
        last = max(i for i in range(n) if i not in drop)
        assert seqs == sorted(seqs) and len(seqs) + dec.lost == last + 1
        for seq, ifp in got:
            assert decode_ifp(ifp, 2) == decode_ifp(ifps[seq], 2)
        results[hold] = dec.lost
    # a loss is final only when its parity group has a second unrepaired loss: 4+ in a row, or
    # two a multiple of 3 apart before the next datagram; waiting for later groups repairs those
    assert len(drop) > 900 and 0 < results[0] <= 5 and results[9] == 0


def test_mixed_redundancy_and_fec() -> None:
    """Peers may switch scheme mid-stream (SpanDSP's T.38 notes); both kinds repair."""
    ifps = _stream(60, 6)
    red = UdptlEncoder("redundancy", depth=2)
    fec = UdptlEncoder("fec", fec_span=2, fec_entries=2)
    dec = UdptlDecoder()
    got = []
    for i, x in enumerate(ifps):
        a, b = red.packet(x), fec.packet(x)
        wire = a if (i // 10) % 2 == 0 else b
        if i not in (9, 15, 26, 44):
            got += dec.receive(wire)
    assert [g.seq for g in got] == list(range(60))
    assert {g.source for g in got} == {Recovery.PRIMARY, Recovery.REDUNDANCY, Recovery.FEC}


# --------------------------------------------------------------------------------- fuzzing
def test_fuzz_only_udptl_error() -> None:
    """20 000 mutated datagrams into parse_udptl and a live decoder: nothing but UdptlError."""
    rng = random.Random(12)
    ifps = _stream(300, 7)
    pool: list[bytes] = []
    for enc in (
        UdptlEncoder("redundancy", depth=3),
        UdptlEncoder("fec", fec_span=3, fec_entries=3),
        UdptlEncoder("none", first_seq=65500),
        UdptlEncoder("fec", fec_span=1, fec_entries=4, first_seq=65530),
    ):
        pool += [enc.packet(x) for x in ifps]
    decoders = [UdptlDecoder(), UdptlDecoder(hold=4)]
    errors = delivered = 0
    for i in range(20000):
        if i % 5 == 0:
            blob = rng.randbytes(rng.randrange(0, 40))
        else:
            buf = bytearray(rng.choice(pool))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(5)
                if op == 0 and buf:
                    buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
                elif op == 1 and buf:
                    del buf[rng.randrange(len(buf)) :]
                elif op == 2:
                    buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
                elif op == 3 and len(buf) > 2:
                    buf[:2] = rng.randrange(65536).to_bytes(2, "big")  # valid, wild sequence number
                elif buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            blob = bytes(buf)
        try:
            parse_udptl(blob)
        except UdptlError:
            errors += 1
        for dec in decoders:
            try:
                out = dec.receive(blob)
            except UdptlError:
                continue
            delivered += len(out)
            assert all(isinstance(o.ifp, bytes) and o.ifp and 0 <= o.seq <= 0xFFFF for o in out)
        if i % 1000 == 999:
            for dec in decoders:
                delivered += len(dec.flush())
    assert 2000 < errors < 18000 and delivered > 1000
