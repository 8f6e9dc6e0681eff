"""T.38 IFP packets (T.38 Annex A, ALIGNED PER): byte vectors, both ASN.1 versions, decoding robustness."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ums.fax_t38.ifp import (
    Data,
    FieldType,
    IfpError,
    IfpPacket,
    Indicator,
    T30Data,
    T30Indicator,
    decode_ifp,
    encode_ifp,
)

F = FieldType
H = bytes.fromhex


def data(dt: str, *fields: tuple[str, bytes]) -> Data:
    return Data(dt, fields)


# ----------------------------------------------------------------------------- byte vectors
# (packet, version, X.691 bytes).  Every vector equals the output of an ASN.1 compiler (asn1tools
# 0.169.0, aligned PER) given the T.38 Annex A module of that version (1998 for 0, 2002 else).
# Those whose data-less fields come last and that use no V.34 field type are also SpanDSP 0.0.6's
# bytes (PEERS.md §10, and t38_core_send_indicator/_send_data_multi_field called through ctypes).
VECTORS: list[tuple[IfpPacket, int, str]] = [
    (Indicator(T30Indicator.CED), 0, "04"),
    (Indicator(T30Indicator.CED), 2, "04"),
    (Indicator(T30Indicator.NO_SIGNAL), 2, "00"),
    (Indicator(T30Indicator.CNG), 0, "02"),
    (Indicator(T30Indicator.V21_PREAMBLE), 2, "06"),
    (Indicator(T30Indicator.V17_14400_LONG_TRAINING), 2, "1e"),
    (Indicator(T30Indicator.V8_ANSAM), 1, "2000"),
    (Indicator(T30Indicator.V8_SIGNAL), 2, "2040"),
    (Indicator(T30Indicator.V33_14400_TRAINING), 3, "2180"),
    (data("v21", ("hdlc-data", H("ff1380"))), 2, "c001800002ff1380"),
    (data("v21", ("hdlc-data", H("ff1380"))), 0, "c001800002ff1380"),
    (data("v21", ("hdlc-data", H("ff13")), ("hdlc-fcs-OK", b"")), 2, "c002800001ff1310"),
    (data("v21", ("hdlc-data", H("ff13")), ("hdlc-fcs-OK", b"")), 0, "c002800001ff1320"),
    (data("v21", ("hdlc-fcs-OK-sig-end", b"")), 2, "c00120"),
    (data("v21", ("hdlc-fcs-OK-sig-end", b"")), 0, "c00140"),
    (data("v17-14400", ("t4-non-ecm-sig-end", b"")), 2, "d00138"),
    (data("v17-14400", ("t4-non-ecm-sig-end", b"")), 0, "d00170"),
    (data("v29-9600", ("t4-non-ecm-data", H("00ff"))), 2, "c801b00001" + "00ff"),
    (data("v27-2400"), 2, "42"),
    (data("v21"), 0, "40"),
    # data-less fields that are not last: X.691 packs them (4 bits in v0, 5 bits in v1+)
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-sig-end", b"")), 2, "c0021040"),
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-sig-end", b"")), 0, "c00221"),
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-data", b"\x01")), 2, "c0021400000001"),
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-data", b"\x01")), 0, "c00228000001"),
    (
        data("v29-9600", ("hdlc-fcs-OK", b""), ("hdlc-sig-end", b""), ("t4-non-ecm-sig-end", b"")),
        2,
        "c803104e",
    ),
    (
        data("v29-9600", ("hdlc-fcs-OK", b""), ("hdlc-sig-end", b""), ("t4-non-ecm-sig-end", b"")),
        0,
        "c8032170",
    ),
    # extension values (2002 ASN.1 only)
    (data("v8", ("hdlc-data", b"\x01")), 1, "e0000180000001"),
    (data("v33-14400"), 2, "6140"),
    (data("v21", ("cm-message", b"1")), 2, "c001c000000031"),
    (data("v21", ("v34rate", b"")), 2, "c0014180"),
]


@pytest.mark.parametrize(("packet", "version", "hexbytes"), VECTORS)
def test_vectors(packet: IfpPacket, version: int, hexbytes: str) -> None:
    assert encode_ifp(packet, version).hex() == hexbytes
    assert decode_ifp(H(hexbytes), version) == packet


def test_long_field_and_many_fields() -> None:
    body = bytes(range(256)) * 2
    packet = data("v17-9600", ("t4-non-ecm-data", body))
    wire = encode_ifp(packet, 2)
    assert wire[:5] == H("cc01b001ff") and wire[5:] == body
    many = Data("v21", [("hdlc-data", bytes([i + 1])) for i in range(200)])
    wire = encode_ifp(many, 2)
    assert wire[:3] == H("c080c8")  # 200 fields: two-octet length determinant
    assert decode_ifp(wire, 2) == many


# ------------------------------------------------------------- SpanDSP's octet-per-field layout
# SpanDSP 0.0.6 writes every field from a fresh octet (bytes from t38_core_send_data_multi_field)
SPANDSP_LAYOUT = [
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-sig-end", b"")), 2, "c0021008"),
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-sig-end", b"")), 0, "c0022010"),
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-data", b"\x01")), 2, "c0021080000001"),
    (data("v21", ("hdlc-fcs-OK", b""), ("hdlc-data", b"\x01")), 0, "c0022080000001"),
    (
        data("v29-7200", ("t4-non-ecm-data", b"\x01"), ("hdlc-sig-end", b""), ("hdlc-fcs-OK", b"")),
        2,
        "c603b00000010810",
    ),
    (data("v29-7200", ("t4-non-ecm-data", b""), ("hdlc-fcs-OK", b"")), 2, "c6023010"),
]


@pytest.mark.parametrize(("packet", "version", "hexbytes"), SPANDSP_LAYOUT)
def test_octet_field_layout(packet: IfpPacket, version: int, hexbytes: str) -> None:
    wire = encode_ifp(packet, version, octet_fields=True)
    assert wire.hex() == hexbytes
    assert decode_ifp(wire, version) == packet


def test_layouts_agree_when_dataless_fields_are_last() -> None:
    packet = data("v21", ("hdlc-data", b"\x01\x02"), ("hdlc-data", b"\x03"), ("hdlc-fcs-OK-sig-end", b""))
    for version in (0, 1, 2, 3):
        assert encode_ifp(packet, version) == encode_ifp(packet, version, octet_fields=True)


def test_ambiguous_bytes_prefer_plausible_reading() -> None:
    # c6 02 30 10 is SpanDSP's [t4-non-ecm-data, hdlc-fcs-OK] without data (v2).  Read as X.691 the
    # padding bits are non-zero, so only the octet layout fits.
    assert decode_ifp(H("c6023010"), 2) == data("v29-7200", ("t4-non-ecm-data", b""), ("hdlc-fcs-OK", b""))
    # c6 03 18 10 20 is SpanDSP's [hdlc-fcs-BAD, hdlc-fcs-OK, hdlc-fcs-OK-sig-end] (v2).  It is also
    # valid X.691 for [hdlc-fcs-BAD, hdlc-data without data, jm-message without data]; the
    # plausible reading wins.
    expected = data("v29-7200", ("hdlc-fcs-BAD", b""), ("hdlc-fcs-OK", b""), ("hdlc-fcs-OK-sig-end", b""))
    assert decode_ifp(H("c603181020"), 2) == expected


# ---------------------------------------------------------------------------- version rules
@pytest.mark.parametrize(
    "packet",
    [Indicator(T30Indicator.V8_ANSAM), data("v8"), data("v21", ("jm-message", b"A0"))],
)
def test_extensions_need_version_1(packet: IfpPacket) -> None:
    with pytest.raises(IfpError):
        encode_ifp(packet, 0)
    wire = encode_ifp(packet, 1)
    assert decode_ifp(wire, 1) == packet
    with pytest.raises(IfpError):
        decode_ifp(wire, 0)


def test_version_0_and_2_layouts_differ_only_in_field_type() -> None:
    packet = data("v27-4800", ("hdlc-data", b"\x55"), ("hdlc-fcs-BAD-sig-end", b""))
    v0, v2 = encode_ifp(packet, 0), encode_ifp(packet, 2)
    assert v0[:-1] == v2[:-1] and (v0[-1], v2[-1]) == (0x50, 0x28)
    assert decode_ifp(v0, 0) == decode_ifp(v2, 2) == packet


def test_all_indicators_and_data_types_round_trip() -> None:
    for version in (0, 1, 2, 3):
        for i, kind in enumerate(T30Indicator):
            if version == 0 and i >= 16:
                continue
            wire = encode_ifp(Indicator(kind), version)
            assert len(wire) == (1 if i < 16 else 2)
            assert decode_ifp(wire, version) == Indicator(kind)
        for i, dt in enumerate(T30Data):
            if version == 0 and i >= 9:
                continue
            for ft in list(FieldType)[: 8 if version == 0 else 12]:
                packet = Data(dt, [(ft, b"\xa5")])
                assert decode_ifp(encode_ifp(packet, version), version) == packet


def test_constructors_take_names_and_check_them() -> None:
    assert Indicator("ced") == Indicator(T30Indicator.CED)  # type: ignore[arg-type]
    assert Data("v21", [("hdlc-data", b"x")]).fields[0].type is FieldType.HDLC_DATA
    assert Data("v21", [("hdlc-data", b"x")]) == Data(T30Data.V21, [(FieldType.HDLC_DATA, b"x")])
    with pytest.raises(IfpError):
        Indicator("ring")  # type: ignore[arg-type]
    with pytest.raises(IfpError):
        Data("v99")
    with pytest.raises(IfpError):
        Data("v21", [("hdlc-data-ish", b"")])
    with pytest.raises(IfpError):
        encode_ifp(Data("v21", [("hdlc-data", bytes(65536))]), 2)
    with pytest.raises(IfpError):
        encode_ifp(Indicator(T30Indicator.CED), -1)


# --------------------------------------------------------- independent reference (digest)
def _random_packets(seed: int, count: int) -> list[tuple[int, IfpPacket]]:
    """Random packets of every shape; the same seed gives the same packets on any CPython 3."""
    rng = random.Random(seed)
    out: list[tuple[int, IfpPacket]] = []
    indicators, data_types, field_types = list(T30Indicator), list(T30Data), list(FieldType)
    for _ in range(count):
        version = rng.choice([0, 1])
        if rng.random() < 0.3:
            out.append((version, Indicator(rng.choice(indicators[: 16 if version == 0 else 23]))))
            continue
        fields = []
        for _ in range(rng.choice([0, 1, 2, 3, 5, 130])):
            ftype = rng.choice(field_types[: 8 if version == 0 else 12])
            size = rng.choice([0, 0, 1, 2, 3, 200])
            fields.append((ftype, rng.randbytes(size)))
        out.append((version, Data(rng.choice(data_types[: 9 if version == 0 else 15]), fields)))
    return out


#: SHA-256 over the asn1tools (0.169.0, aligned PER) encodings of _random_packets(2024, 3000),
#: each prefixed by its 2-octet length, with the 1998 module for version 0 and 2002 for version 1
REFERENCE_DIGEST = "ef86aa0a0a270bc7c5a5c6267dc53804c04d0b60cc0b458b9a8376512b905c12"


def test_matches_independent_per_encoder() -> None:
    h = hashlib.sha256()
    for version, packet in _random_packets(2024, 3000):
        wire = encode_ifp(packet, version)
        h.update(len(wire).to_bytes(2, "big") + wire)
    assert h.hexdigest() == REFERENCE_DIGEST


# ------------------------------------------------------------------------------- properties
_plausible_field = st.one_of(
    st.tuples(st.sampled_from([F.HDLC_DATA, F.T4_NON_ECM_DATA]), st.binary(min_size=1, max_size=300)),
    st.tuples(
        st.sampled_from([F.HDLC_SIG_END, F.HDLC_FCS_OK, F.HDLC_FCS_BAD, F.HDLC_FCS_OK_SIG_END]),
        st.just(b""),
    ),
    st.tuples(st.sampled_from([F.HDLC_FCS_BAD_SIG_END, F.T4_NON_ECM_SIG_END]), st.binary(max_size=4)),
)


@settings(max_examples=200, deadline=None)
@given(
    version=st.integers(0, 3),
    dt=st.sampled_from(list(T30Data)[:9]),
    fields=st.lists(_plausible_field, max_size=6),
    octet_fields=st.booleans(),
)
def test_round_trip(version: int, dt: T30Data, fields: list[tuple[F, bytes]], octet_fields: bool) -> None:
    packet = Data(dt, fields)
    wire = encode_ifp(packet, version, octet_fields=octet_fields)
    # a packet rebuilt from parity FEC carries trailing zeros
    for received in (wire, wire + bytes(5)):
        decoded = decode_ifp(received, version)
        if decoded != packet:
            # only where the bytes are also a plausible X.691 packet (followed by zero octets)
            assert octet_fields or received != wire
            again = encode_ifp(decoded, version)
            assert received.startswith(again) and not any(received[len(again) :])


# ------------------------------------------------------------------------------- robustness
@pytest.mark.parametrize(
    ("hexbytes", "version"),
    [
        ("", 2),
        ("84", 2),  # indicator with a data field
        ("05", 2),  # non-zero padding bit
        ("0401", 2),  # trailing non-zero octet
        ("21c0", 2),  # indicator extension 7 does not exist
        ("3000", 2),  # indicator extension with a large index
        ("52", 2),  # data type 9 is not in the root
        ("c0", 2),  # data field count missing
        ("c001", 2),  # field missing
        ("c00180", 2),  # field data length missing
        ("c001800005ff", 2),  # field data shorter than its length
        ("c0c1", 2),  # fragmented field count
        ("c00170", 2),  # field type extension with a large index
        ("c00141c0", 2),  # field type extension 7 does not exist
        ("c0018000", 0),
    ],
)
def test_garbage_raises_ifp_error(hexbytes: str, version: int) -> None:
    with pytest.raises(IfpError):
        decode_ifp(H(hexbytes), version)


def test_fuzz_only_ifp_error() -> None:
    """20 000 mutated and random packets: decode returns a packet or raises IfpError, nothing else."""
    rng = random.Random(7)
    seeds = [encode_ifp(p, v) for v, p in _random_packets(99, 200) if len(encode_ifp(p, v)) < 400]
    decoded = 0
    for i in range(20000):
        if i % 4 == 0:
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))
        else:
            buf = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(4)
                if op == 0 and buf:
                    buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
                elif op == 1 and buf:
                    del buf[rng.randrange(len(buf)) :]
                elif op == 2:
                    buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
                elif buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            blob = bytes(buf)
        version = rng.choice([0, 1, 2, 3])
        try:
            packet = decode_ifp(blob, version)
        except IfpError:
            continue
        decoded += 1
        # whatever decodes re-encodes to something that decodes the same way
        assert decode_ifp(encode_ifp(packet, version), version) == packet
    assert 1000 < decoded < 19000
