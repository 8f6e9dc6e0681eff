"""HDLC framing (T.30 §5.3): FCS, zero-bit insertion, flags, aborts, block boundaries, SpanDSP interop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.peers import spandsp
from ums.softfax_g711.hdlc import (
    FLAG_BITS,
    HdlcDecoder,
    HdlcEncoder,
    HdlcEvent,
    HdlcEventKind,
    crc16_itu,
    crc32_itu,
    fcs,
)

needs_spandsp = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

#: A T.30 DIS frame: address 0xFF, control 0x13 (final frame), FCF 0x80, then the DIS bits.
DIS = bytes([0xFF, 0x13, 0x80, 0x00, 0xCE, 0xF4, 0x80, 0x80, 0x81, 0x80, 0x80, 0x80, 0x18])


# Independent references: one bit at a time, straight from the definitions.
def ref_crc16(data: bytes) -> int:
    """X.25 FCS: shift register preset to ones, LSB-first, generator x^16+x^12+x^5+1, complemented."""
    reg = 0xFFFF
    for octet in data:
        for k in range(8):
            feedback = ((reg >> 15) & 1) ^ ((octet >> k) & 1)
            reg = (reg << 1) & 0xFFFF
            if feedback:
                reg ^= 0x1021
    # The register holds the CRC MSB-first; transmission is x^15 first, i.e. bit-reversed, complemented.
    return int(f"{reg:016b}"[::-1], 2) ^ 0xFFFF


def ref_crc32(data: bytes) -> int:
    reg = 0xFFFFFFFF
    for octet in data:
        reg ^= octet
        for _ in range(8):
            reg = (reg >> 1) ^ (0xEDB88320 if reg & 1 else 0)
    return reg ^ 0xFFFFFFFF


def ref_frame_bits(data: bytes, fcs_octets: bytes) -> list[int]:
    out = [0, 1, 1, 1, 1, 1, 1, 0]
    ones = 0
    for octet in data + fcs_octets:
        for k in range(8):
            bit = (octet >> k) & 1
            out.append(bit)
            ones = ones + 1 if bit else 0
            if ones == 5:
                out.append(0)
                ones = 0
    return [*out, 0, 1, 1, 1, 1, 1, 1, 0]


def frames_of(events: list[HdlcEvent]) -> list[tuple[bytes, bool]]:
    return [(e.data, e.crc_ok) for e in events if e.kind is HdlcEventKind.FRAME]


def decode_in_blocks(bits: np.ndarray, sizes: list[int], **kw: object) -> list[HdlcEvent]:
    dec = HdlcDecoder(**kw)  # type: ignore[arg-type]
    events: list[HdlcEvent] = []
    pos = 0
    i = 0
    while pos < bits.size:
        n = sizes[i % len(sizes)] if sizes else bits.size
        events += dec.put_bits(bits[pos : pos + n])
        pos += n
        i += 1
    return events


def test_crc_check_values() -> None:
    # The catalogue check values of CRC-16/IBM-SDLC (X.25) and CRC-32 over "123456789".
    assert crc16_itu(b"123456789") == 0x906E
    assert crc32_itu(b"123456789") == 0xCBF43926
    assert ref_crc16(b"123456789") == 0x906E
    assert ref_crc32(b"123456789") == 0xCBF43926


def test_crc_matches_bitwise_reference() -> None:
    rng = np.random.default_rng(1)
    for n in [0, 1, 2, 3, 7, 64, 255, 256]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc16_itu(data) == ref_crc16(data)
        assert crc32_itu(data) == ref_crc32(data)
    assert crc16_itu(DIS) == ref_crc16(DIS)
    assert fcs(DIS) == ref_crc16(DIS).to_bytes(2, "little")


def test_dis_frame_bits_exact() -> None:
    bits = HdlcEncoder().frame(DIS)
    assert bits.tolist() == ref_frame_bits(DIS, ref_crc16(DIS).to_bytes(2, "little"))
    # The start by hand: flag, then 0xFF LSB first with a 0 after the fifth 1, then 0x13 = 11001000
    # (LSB first) whose first two 1s make five with the last three of 0xFF: another 0 after them.
    assert (
        "".join(map(str, bits[:30].tolist()))
        == "01111110" + "11111" + "0" + "111" + "11" + "0" + "001000" + "0000"
    )


def test_flags_and_abort() -> None:
    enc = HdlcEncoder()
    assert enc.flags(3).tolist() == FLAG_BITS.tolist() * 3
    assert enc.flags(0).size == 0
    assert enc.abort().tolist() == [1] * 8


def test_shared_flags_between_frames() -> None:
    enc = HdlcEncoder()
    frames = [b"\x01\x02\x03", b"\xff\xff", b"\x7e\x7e\x7e"]
    a = enc.frames(frames, preamble_flags=6)
    b = np.concatenate(
        [enc.flags(6), enc.frame(frames[0], opening_flag=False)] + [enc.frame(f) for f in frames[1:]]
    )
    for bits in (a, b):
        assert frames_of(HdlcDecoder().put_bits(bits)) == [(f, True) for f in frames]


def test_flags_sharing_a_zero() -> None:
    enc = HdlcEncoder()
    # 0111111011111101111110...: each flag's closing 0 opens the next.
    shared = [0] + [1, 1, 1, 1, 1, 1, 0] * 8
    body = enc.frame(DIS, opening_flag=False, closing_flag=False)
    bits = np.array(shared + body.tolist() + [0, 1, 1, 1, 1, 1, 1, 0] + [1, 1, 1, 1, 1, 1, 0], dtype=np.uint8)
    events = HdlcDecoder().put_bits(bits)
    assert [e.kind for e in events] == [HdlcEventKind.FRAMING_OK, HdlcEventKind.FRAME]
    assert frames_of(events) == [(DIS, True)]


def test_framing_ok_needs_back_to_back_flags() -> None:
    enc = HdlcEncoder()
    dec = HdlcDecoder(framing_ok_flags=5)
    # Four flags only: the frame is not accepted, its closing flag completes the preamble count.
    ev = dec.put_bits(np.concatenate([enc.flags(4), enc.frame(b"abc", opening_flag=False)]))
    assert frames_of(ev) == []
    assert [e.kind for e in ev] == [HdlcEventKind.FRAMING_OK]
    assert frames_of(dec.put_bits(enc.frame(b"def", opening_flag=False))) == [(b"def", True)]
    # FRAMING_OK's bit index is the last bit of the fifth flag.
    ev = HdlcDecoder().put_bits(enc.flags(7))
    assert ev == [HdlcEvent(HdlcEventKind.FRAMING_OK, 39)]


def test_abort_drops_the_frame_in_progress() -> None:
    enc = HdlcEncoder()
    partial = enc.frame(DIS, opening_flag=False, closing_flag=False)[:50]
    bits = np.concatenate([enc.flags(10), partial, enc.abort(), enc.abort(), enc.flags(1), enc.frame(b"ok")])
    events = HdlcDecoder().put_bits(bits)
    kinds = [e.kind for e in events]
    assert kinds == [HdlcEventKind.FRAMING_OK, HdlcEventKind.ABORT, HdlcEventKind.FRAME]
    assert frames_of(events) == [(b"ok", True)]
    # The abort is reported at its seventh 1.
    abort = events[1]
    assert bits[abort.bit_index - 6 : abort.bit_index + 1].tolist() == [1] * 7


def test_bad_frames() -> None:
    enc = HdlcEncoder()
    good = enc.frame(b"\x01\x02\x03\x04", opening_flag=False)
    corrupt = good.copy()
    corrupt[12] ^= 1
    misaligned = np.concatenate(
        [enc.frame(b"\x01\x02\x03", opening_flag=False, closing_flag=False)[:-3], FLAG_BITS]
    )
    too_short = np.concatenate([np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0], dtype=np.uint8), FLAG_BITS])
    only_fcs = enc.frame(b"", opening_flag=False)
    bits = np.concatenate([enc.flags(8), corrupt, misaligned, too_short, only_fcs, good])
    got = frames_of(HdlcDecoder().put_bits(bits))
    assert [ok for _, ok in got] == [False, False, False, False, True]
    assert got[-1] == (b"\x01\x02\x03\x04", True)
    # With report_bad=False only the good frame comes out.
    assert frames_of(HdlcDecoder(report_bad=False).put_bits(bits)) == [(b"\x01\x02\x03\x04", True)]
    # min_len=0 accepts a frame of FCS only.
    assert (b"", True) in frames_of(HdlcDecoder(min_len=0).put_bits(bits))


def test_max_length() -> None:
    enc = HdlcEncoder()
    rng = np.random.default_rng(2)
    at_max = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    over = rng.integers(0, 256, 65, dtype=np.uint8).tobytes()
    huge = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    bits = np.concatenate(
        [enc.flags(6)] + [enc.frame(f, opening_flag=False) for f in (at_max, over, huge, b"x")]
    )
    for sizes in ([], [100], [1, 7, 13]):
        got = frames_of(decode_in_blocks(bits, sizes, max_len=64))
        assert got == [(at_max, True), (over[:64], False), (huge[:64], False), (b"x", True)]


def test_garbage_then_frames() -> None:
    rng = np.random.default_rng(3)
    enc = HdlcEncoder()
    garbage = rng.integers(0, 2, 20000).astype(np.uint8)
    bits = np.concatenate(
        [garbage, enc.abort(), enc.flags(6), enc.frame(DIS, opening_flag=False), garbage[:3000]]
    )
    events = decode_in_blocks(bits, [97])
    assert sum(1 for _, ok in frames_of(events) if ok) == 1
    assert (DIS, True) in frames_of(events)
    # Garbage alone gives no good frame.
    assert not any(ok for _, ok in frames_of(HdlcDecoder().put_bits(garbage)))


def test_long_runs_of_ones_are_one_abort() -> None:
    enc = HdlcEncoder()
    bits = np.concatenate([enc.flags(6), np.ones(500, dtype=np.uint8), enc.flags(2), enc.frame(b"z")])
    events = decode_in_blocks(bits, [3, 64])
    assert [e.kind for e in events] == [HdlcEventKind.FRAMING_OK, HdlcEventKind.ABORT, HdlcEventKind.FRAME]


def test_reset_forgets_the_frame_in_progress() -> None:
    enc = HdlcEncoder()
    dec = HdlcDecoder()
    dec.put_bits(np.concatenate([enc.flags(6), enc.frame(DIS, opening_flag=False)[:40]]))
    assert dec.framing_ok
    dec.reset()
    assert not dec.framing_ok
    assert frames_of(dec.put_bits(enc.frame(DIS)[40:])) == []


@pytest.mark.parametrize("crc32", [False, True])
def test_round_trip_random_frames_any_blocks(crc32: bool) -> None:
    rng = np.random.default_rng(4 + crc32)
    enc = HdlcEncoder(crc32=crc32)
    frames = [rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes() for _ in range(60)]
    frames += [b"\xff" * 50, b"\x7e" * 50, b"\x00" * 50, b"\xfe" * 20]
    bits = enc.frames(frames, preamble_flags=37)
    few = enc.frames(frames[-8:], preamble_flags=37)
    for sizes in ([], [1], [7, 8, 9], [288], list(rng.integers(1, 500, 50))):
        sent = frames[-8:] if sizes == [1] else frames
        events = decode_in_blocks(few if sizes == [1] else bits, sizes, crc32=crc32)
        assert frames_of(events) == [(f, True) for f in sent]
        assert events[0].kind is HdlcEventKind.FRAMING_OK
    # The same FCS length is required at both ends.
    other = frames_of(HdlcDecoder(crc32=not crc32).put_bits(bits))
    assert not any(ok for _, ok in other)


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=8),
    shared=st.booleans(),
)
def test_round_trip_hypothesis(frames: list[bytes], cuts: list[int], shared: bool) -> None:
    enc = HdlcEncoder()
    if shared:
        bits = enc.frames(frames, preamble_flags=5)
    else:
        bits = np.concatenate([enc.flags(5)] + [enc.frame(f) for f in frames])
    assert frames_of(decode_in_blocks(bits, cuts)) == [(f, True) for f in frames]


def _messy_stream(rng: np.random.Generator) -> np.ndarray:
    """Preambles, good and corrupted frames, aborts, long runs of ones, flags sharing a zero, noise."""
    enc = HdlcEncoder()
    parts = [rng.integers(0, 2, 50).astype(np.uint8), enc.flags(int(rng.integers(1, 9)))]
    for _ in range(40):
        kind = int(rng.integers(0, 6))
        frame = enc.frame(rng.integers(0, 256, int(rng.integers(1, 30)), dtype=np.uint8).tobytes())
        if kind == 1:
            frame = frame.copy()
            frame[int(rng.integers(8, frame.size - 8))] ^= 1  # bad FCS or broken stuffing
        elif kind == 2:
            frame = np.concatenate([frame[: frame.size // 2], enc.abort()])
        elif kind == 3:
            frame = np.ones(int(rng.integers(6, 20)), dtype=np.uint8)
        elif kind == 4:
            frame = np.array([0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0], dtype=np.uint8)
        elif kind == 5:
            frame = rng.integers(0, 2, int(rng.integers(1, 40))).astype(np.uint8)
        parts += [frame, enc.flags(int(rng.integers(0, 7)))]
    return np.concatenate(parts)


def test_small_blocks_bit_by_bit_equal_the_array_decoder() -> None:
    """Blocks of up to 64 bits are decoded bit by bit: every event (kind, bit index, data, FCS check)
    is the one the array decoder gives for the whole stream, whatever the cuts."""
    rng = np.random.default_rng(17)
    for framing_ok_flags in (1, 5):
        for _ in range(8):
            bits = _messy_stream(rng)
            whole = HdlcDecoder(framing_ok_flags=framing_ok_flags, max_len=20).put_bits(bits)
            assert any(e.kind is HdlcEventKind.FRAME for e in whole)
            for sizes in ([6], [1, 2, 3], [64], [65], list(rng.integers(1, 130, 40))):
                assert decode_in_blocks(bits, sizes, framing_ok_flags=framing_ok_flags, max_len=20) == whole


def test_bit_index_counts_across_blocks() -> None:
    enc = HdlcEncoder()
    bits = enc.frames([b"a", b"bc"], preamble_flags=5)
    events = decode_in_blocks(bits, [11])
    frame_ends = [e.bit_index for e in events if e.kind is HdlcEventKind.FRAME]
    assert frame_ends[-1] == bits.size - 1
    for end in frame_ends:
        assert bits[end - 7 : end + 1].tolist() == FLAG_BITS.tolist()


@needs_spandsp
def test_spandsp_encodes_the_same_bits() -> None:
    sp = spandsp.HdlcTx([DIS], preamble_flags=4).bits(trailing_flags=3)
    ours = HdlcEncoder().frame(DIS, opening_flag=False)
    text = "".join(map(str, sp.tolist()))
    assert "".join(map(str, ours.tolist())) in text


@needs_spandsp
@pytest.mark.parametrize("crc32", [False, True])
def test_interop_with_spandsp_hdlc(crc32: bool) -> None:
    rng = np.random.default_rng(10 + crc32)
    frames = [rng.integers(0, 256, int(rng.integers(3, 260)), dtype=np.uint8).tobytes() for _ in range(40)]
    frames += [b"\xff" * 30, b"\x7e" * 30, DIS]
    # Ours -> SpanDSP.
    rx = spandsp.HdlcRx(crc32=crc32)
    rx.put_bits(HdlcEncoder(crc32=crc32).frames(frames, preamble_flags=37))
    assert rx.frames == [(f, True) for f in frames]
    # SpanDSP -> ours.
    sp_bits = spandsp.HdlcTx(frames, crc32=crc32, preamble_flags=37).bits()
    assert frames_of(decode_in_blocks(sp_bits, [160], crc32=crc32)) == [(f, True) for f in frames]
