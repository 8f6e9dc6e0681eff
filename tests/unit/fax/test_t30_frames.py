"""T.30 frame codecs against byte strings worked out by hand from T.30 Table 2 and §5.3.6.

T.30 numbers FIF bits from 1 in transmission order and HDLC sends every octet least significant
bit first, so bit n is bit (n - 1) % 8 of octet (n - 1) // 8.  Each expected octet below lists the
bits that make it up.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ums.fax.t30_frames import (
    FALLBACK,
    Dcs,
    Dis,
    Fcf,
    Frame,
    FrameError,
    ctc_fif,
    decode_ident,
    describe,
    encode_ident,
    fallback_index,
    fcf_octet,
    parse_ctc,
    parse_fcf,
    parse_pps,
    ppr_frames,
    ppr_map,
    pps_fif,
)

# -- DIS / DTC -----------------------------------------------------------------------------------------


def test_dis_v17_fine_mr_ecm() -> None:
    dis = Dis(
        modems=frozenset({"v27ter", "v29", "v17"}),
        ready_to_receive=True,
        fine=True,
        mr=True,
        ecm=True,
        max_width=0,
        max_length=0,
        min_scan_ms=0,
        metric_preferred=False,
    )
    # octet 1, bits 1-8: nothing.
    # octet 2, bits 9-16: 10 receive (0x02), 11-14 = 1101 V.27 ter + V.29 + V.17 (0x04 + 0x08 + 0x20),
    #   15 fine (0x40), 16 two-dimensional coding (0x80) -> 0xEE.
    # octet 3, bits 17-24: 17-18 = 00 215 mm, 19-20 = 00 A4, 21-23 = 111 0 ms (0x70), 24 extend (0x80).
    # octet 4, bits 25-32: 27 ECM (0x04), 32 = 0: last octet.
    assert dis.to_fif() == bytes.fromhex("00eef004")
    frame = Frame(Fcf.DIS, dis.to_fif())
    assert frame.to_bytes() == bytes.fromhex("ff138000eef004")
    parsed = Dis.parse(Frame.parse(frame.to_bytes()).fif)
    assert parsed == dis
    assert parsed.supports("v17", 14400) and parsed.supports("v27ter", 2400)
    assert parsed.supports_resolution("fine") and not parsed.supports_resolution("superfine")


def test_dis_parse_v29_only_standard() -> None:
    # octet 2 = 0x46: bits 10 (receive), 11 (V.29 "1000"), 15 (fine); octet 3 = 0x70: 0 ms, no extension.
    dis = Dis.parse(bytes.fromhex("004670"))
    assert dis.modems == {"v29"} and dis.ready_to_receive and dis.fine
    assert not dis.mr and not dis.ecm and not dis.mmr and dis.min_scan_ms == 0
    assert dis.supports("v29", 7200) and not dis.supports("v17", 14400) and not dis.supports("v27ter", 4800)


def test_dis_full_capabilities() -> None:
    dis = Dis(
        modems=frozenset({"v27ter", "v29", "v17"}),
        ready_to_receive=False,
        ready_to_transmit=True,
        superfine=True,
        r300=True,
        mmr=True,
        ecm=True,
        max_width=2,
        max_length=2,
        min_scan_ms=10,
        scan_halved_fine=True,
        subaddressing=True,
    )
    # octet 2: 9 ready to transmit (0x01), 11, 12, 14 (0x2C), 15 fine, 16 MR -> 0xED.
    # octet 3: 18 303 mm (0x02), 20 unlimited (0x08), 21-23 = 011 "10 ms, T7.7 = T3.85/2" (0x20 + 0x40),
    #   24 extend -> 0xEA.
    # octet 4: 27 ECM (0x04), 31 T.6 (0x40), 32 extend -> 0xC4.
    # octet 5: 40 extend -> 0x80.
    # octet 6: 41 superfine (0x01), 42 300 x 300 (0x02), 45 metric preferred (0x10), 48 extend -> 0x93.
    # octet 7: 49 subaddressing (0x01).
    assert dis.to_fif() == bytes.fromhex("00edeac4809301")
    assert Dis.parse(dis.to_fif()) == dis


@pytest.mark.parametrize(
    ("code", "ms", "halved"),
    [(0b000, 20, False), (0b001, 5, False), (0b010, 10, False), (0b100, 40, False),
     (0b011, 20, True), (0b110, 10, True), (0b101, 40, True), (0b111, 0, False)],
)  # fmt: skip
def test_dis_minimum_scan_time_codes(code: int, ms: int, halved: bool) -> None:
    # code: bit 21 is the least significant; T.30 Table 2 lists bits 21, 22, 23.
    fif = bytes((0, 0x02, code << 4))
    dis = Dis.parse(fif)
    assert (dis.min_scan_ms, dis.scan_halved_fine) == (ms, halved)
    assert dis.min_scan_for("standard") == ms
    assert dis.min_scan_for("fine") == (max(ms // 2, 5) if halved and ms else ms)


def test_min_scan_for_superfine_halves_again_with_bit_46() -> None:
    dis = Dis(min_scan_ms=20, scan_halved_fine=True, scan_halves_higher=True)
    assert [dis.min_scan_for(r) for r in ("standard", "fine", "superfine")] == [20, 10, 5]
    assert Dis(min_scan_ms=40, scan_halved_fine=True).min_scan_for("superfine") == 20


def test_dis_fallback_mode_is_2400_only() -> None:
    dis = Dis.parse(bytes.fromhex("000270"))  # bits 11-14 = 0000: V.27 ter fall-back mode
    assert dis.modems == frozenset()
    assert [m for m in FALLBACK if dis.supports(*m)] == [("v27ter", 2400)]


def test_dis_too_short() -> None:
    with pytest.raises(FrameError):
        Dis.parse(b"\x00")


# -- DCS -----------------------------------------------------------------------------------------------


def test_dcs_v17_14400_fine_mr_ecm() -> None:
    dcs = Dcs(modem="v17", rate=14400, resolution="fine", compression="mr", ecm=True, min_scan_ms=0)
    # octet 2: 10 receive (0x02), 11-14 = 0001 V.17 14400 (bit 14, 0x20), 15 fine, 16 MR -> 0xE2.
    # octet 3: 21-23 = 111 0 ms (0x70), 24 extend -> 0xF0.  octet 4: 27 ECM (0x04), 28 = 0: 256 octets.
    assert dcs.to_fif() == bytes.fromhex("00e2f004")
    assert Frame(Fcf.DCS, dcs.to_fif(), x=True).to_bytes() == bytes.fromhex("ff138300e2f004")
    assert Dcs.parse(dcs.to_fif()) == dcs


def test_dcs_v29_7200_standard_mh_20ms() -> None:
    dcs = Dcs(modem="v29", rate=7200, resolution="standard", compression="mh", min_scan_ms=20)
    # octet 2: 10, 11-14 = 1100 V.29 7200 (0x04 + 0x08) -> 0x0E.  octet 3: 000 = 20 ms, no extension.
    assert dcs.to_fif() == bytes.fromhex("000e00")
    assert Dcs.parse(dcs.to_fif()) == dcs


def test_dcs_v27ter_superfine_mmr_64_octet_frames() -> None:
    dcs = Dcs(
        modem="v27ter",
        rate=4800,
        resolution="superfine",
        compression="mmr",
        width_code=1,
        length=2,
        min_scan_ms=10,
        ecm=True,
        frame_size=64,
    )
    # octet 2: 10, 11-14 = 0100 V.27 ter 4800 (bit 12, 0x08) -> 0x0A.
    # octet 3: 17 255 mm (0x01), 20 unlimited (0x08), 21-23 = 010 10 ms (bit 22, 0x20), 24 extend -> 0xA9.
    # octet 4: 27 ECM (0x04), 28 64 octets (0x08), 31 T.6 (0x40), 32 extend -> 0xCC.
    # octet 5: 40 extend -> 0x80.  octet 6: 41 R8 x 15.4 lines/mm (0x01).
    assert dcs.to_fif() == bytes.fromhex("000aa9cc8001")
    parsed = Dcs.parse(dcs.to_fif())
    assert parsed == dcs and parsed.width == 2048


def test_dcs_300_dpi_uses_inch_bit() -> None:
    dcs = Dcs(resolution="300", min_scan_ms=0, width_code=0)
    fif = dcs.to_fif()
    assert fif[5] & 0x02 and fif[5] & 0x08  # bits 42 (300 x 300) and 44 (inch based)
    assert Dcs.parse(fif).resolution == "300" and Dcs.parse(fif).width == 2592


@pytest.mark.parametrize(("modem", "rate"), FALLBACK)
def test_dcs_rate_codes(modem: str, rate: int) -> None:
    expected = {  # T.30 Table 2, bits 11, 12, 13, 14
        ("v27ter", 2400): "0000",
        ("v27ter", 4800): "0100",
        ("v29", 9600): "1000",
        ("v29", 7200): "1100",
        ("v17", 14400): "0001",
        ("v17", 12000): "0101",
        ("v17", 9600): "1001",
        ("v17", 7200): "1101",
    }[(modem, rate)]
    fif = Dcs(modem=modem, rate=rate).to_fif()  # type: ignore[arg-type]
    assert "".join(str(fif[1] >> k & 1) for k in range(2, 6)) == expected
    assert parse_ctc(ctc_fif(modem, rate)) == (modem, rate)  # type: ignore[arg-type]
    assert FALLBACK[fallback_index(modem, rate)] == (modem, rate)


def test_dcs_round_trips() -> None:
    for (modem, rate), res, comp, width, scan, ecm in itertools.product(
        FALLBACK,
        ("standard", "fine", "superfine", "300"),
        ("mh", "mr", "mmr"),
        (0, 1, 2),
        (0, 5, 10, 20, 40),
        (0, 1),
    ):
        if comp == "mmr" and not ecm:
            with pytest.raises(ValueError):
                Dcs(modem=modem, rate=rate, compression="mmr", ecm=False).to_fif()
            continue
        dcs = Dcs(
            modem=modem,
            rate=rate,
            resolution=res,  # type: ignore[arg-type]
            compression=comp,  # type: ignore[arg-type]
            width_code=width,
            min_scan_ms=scan,
            ecm=bool(ecm),
        )
        assert Dcs.parse(dcs.to_fif()) == dcs


def test_dcs_invalid() -> None:
    with pytest.raises(FrameError):
        Dcs.parse(bytes.fromhex("0022"))  # too short
    with pytest.raises(FrameError):
        Dcs.parse(bytes.fromhex("003200"))  # bits 11-14 = 1011: not a DCS rate
    with pytest.raises(FrameError):
        Dcs.parse(bytes.fromhex("000203"))  # bits 17-18 = 11: invalid width
    with pytest.raises(FrameError):
        Dcs.parse(bytes.fromhex("000260"))  # bits 21-23 = 011: not a DCS scan time
    with pytest.raises(ValueError):
        Dcs(modem="v29", rate=14400).to_fif()


# -- identities -----------------------------------------------------------------------------------------


def test_ident_is_sent_last_character_first() -> None:
    fif = encode_ident("+49 30 1234")
    assert fif == b"4321 03 94+" + b" " * 9
    assert decode_ident(fif) == "+49 30 1234"
    assert Frame(Fcf.CSI, fif, final=False).to_bytes()[:4] == bytes.fromhex("ff034034")
    assert decode_ident(encode_ident("1" * 25)) == "1" * 20
    assert decode_ident(b"  21") == "12"  # short FIFs are read as they are


# -- FCF, frames --------------------------------------------------------------------------------------


def test_fcf_values_and_x_bit() -> None:
    # T.30 §5.3.6.1 writes FCFs first bit first: DIS 0000 0001, MCF X011 0001, DCN X101 1111.
    assert parse_fcf(0x80) == (Fcf.DIS, False)
    assert parse_fcf(0x81) == (Fcf.DTC, False)  # first bit is part of the code
    assert parse_fcf(0x82) == (Fcf.DCS, False) and parse_fcf(0x83) == (Fcf.DCS, True)
    assert parse_fcf(0x8D) == (Fcf.MCF, True)
    assert parse_fcf(0xFB) == (Fcf.DCN, True)
    assert fcf_octet(Fcf.CFR, True) == 0x85 and fcf_octet(Fcf.CSI, True) == 0x40
    for fcf in Fcf:
        for x in (False, True):
            got, gx = parse_fcf(fcf_octet(fcf, x))
            assert got is fcf and (x or not gx)
    with pytest.raises(FrameError):
        parse_fcf(0xFE)


def test_frame_parse_errors() -> None:
    with pytest.raises(FrameError):
        Frame.parse(b"\xff\x13")
    with pytest.raises(FrameError):
        Frame.parse(b"\xfe\x13\x80")
    with pytest.raises(FrameError):
        Frame.parse(b"\xff\x11\x80")
    f = Frame.parse(bytes.fromhex("ff0320aabbcc"))  # NSF: opaque
    assert (f.fcf, f.fif, f.final) == (Fcf.NSF, bytes.fromhex("aabbcc"), False)


def test_simple_responses() -> None:
    assert Frame(Fcf.CFR, x=False).to_bytes() == bytes.fromhex("ff1384")
    assert Frame(Fcf.MCF, x=True).to_bytes() == bytes.fromhex("ff138d")
    assert Frame(Fcf.RTN).to_bytes() == bytes.fromhex("ff134c")
    assert Frame(Fcf.RTP).to_bytes() == bytes.fromhex("ff13cc")
    assert Frame(Fcf.FTT).to_bytes() == bytes.fromhex("ff1344")
    assert Frame(Fcf.CRP).to_bytes() == bytes.fromhex("ff131a")
    assert Frame(Fcf.EOP, x=True).to_bytes() == bytes.fromhex("ff132f")
    assert Frame(Fcf.MPS, x=True).to_bytes() == bytes.fromhex("ff134f")
    assert Frame(Fcf.EOM, x=True).to_bytes() == bytes.fromhex("ff138f")


# -- ECM frames ---------------------------------------------------------------------------------------


def test_pps() -> None:
    fif = pps_fif(Fcf.EOP, True, page=1, block=0, frames=256)
    assert fif == bytes((0x2F, 1, 0, 255))
    assert parse_pps(fif) == (Fcf.EOP, 1, 0, 256)
    assert pps_fif(Fcf.NULL, True, 0, 3, 10) == bytes((0, 0, 3, 9))
    frame = Frame.parse(Frame(Fcf.PPS, fif, x=True).to_bytes())
    assert frame.fcf is Fcf.PPS and frame.fcf2 is Fcf.EOP
    assert Frame.parse(Frame(Fcf.EOR, bytes((0x4F,))).to_bytes()).fcf2 is Fcf.MPS
    with pytest.raises(FrameError):
        parse_pps(b"\x00\x00")


def test_ppr_map() -> None:
    fif = ppr_map([0, 9, 255])
    assert len(fif) == 32
    assert fif[0] == 0x01 and fif[1] == 0x02 and fif[31] == 0x80 and sum(fif) == 0x83
    assert ppr_frames(fif) == [0, 9, 255]
    assert ppr_frames(ppr_map(range(256))) == list(range(256))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ppr_map([256])


def test_ctc_fif() -> None:
    # CTC carries DCS octets 1-2; V.17 9600 = 1001 in bits 11-14 -> octet 2 = 0x04 + 0x20.
    assert ctc_fif("v17", 9600) == bytes((0x00, 0x24))
    with pytest.raises(FrameError):
        parse_ctc(b"\x00")


# -- frames SpanDSP sends --------------------------------------------------------------------------------


def _spandsp_call(tmp_path: Path, *, ecm: bool, lose: float) -> tuple[list[bytes], list[bytes]]:
    """Run a SpanDSP T.38 terminal pair (fine ITU page, packet loss on image data); the V.21 and ECM
    frames each end sent."""
    sf = pytest.importorskip("tests.peers.spandsp_fax")
    if not sf.available():
        pytest.skip("libspandsp2 is not installed")
    from tests.unit.fax.pages import itu_page

    src = sf.write_fax_tiff(tmp_path / "tx.tif", [itu_page("itu2")[:600]], resolution="fine")
    rng = np.random.default_rng(2)

    def lossy(packets: list[Any]) -> list[Any]:
        return [p for p in packets if not (len(p.data) > 20 and rng.random() < lose)]

    caller = sf.SpanT38(True, transmit_tiff=src, ident="CALLER 123", ecm=ecm)
    answerer = sf.SpanT38(False, receive_tiff=tmp_path / "rx.tif", ident="+49 30 1234", ecm=ecm)
    run = sf.run_t38_pair(caller, answerer, link=(lossy, lambda p: p), max_seconds=300)
    assert run.completed and caller.result.ok and answerer.result.ok
    return [f.data for f in caller.frames if f.sent], [f.data for f in answerer.frames if f.sent]


@pytest.mark.parametrize("ecm", [True, False])
def test_frames_from_spandsp_parse(tmp_path: Path, ecm: bool) -> None:
    tx, rx = _spandsp_call(tmp_path, ecm=ecm, lose=0.03 if ecm else 0.0)
    tx_frames = [Frame.parse(f) for f in tx]  # raises on anything we cannot read
    rx_frames = [Frame.parse(f) for f in rx]
    by_fcf = {f.fcf: f for f in tx_frames + rx_frames}
    assert decode_ident(by_fcf[Fcf.TSI].fif) == "CALLER 123"
    assert decode_ident(by_fcf[Fcf.CSI].fif) == "+49 30 1234"
    dis = Dis.parse(by_fcf[Fcf.DIS].fif)
    assert dis.ready_to_receive and dis.ecm is ecm and dis.fine and dis.mr
    assert dis.modems == {"v27ter", "v29", "v17"} and dis.supports("v17", 14400)
    dcs = Dcs.parse(by_fcf[Fcf.DCS].fif)
    assert (dcs.modem, dcs.rate, dcs.resolution, dcs.ecm, dcs.width) == ("v17", 14400, "fine", ecm, 1728)
    # X bit: the caller received DIS, the answerer did not; our encoding gives the same octets.
    assert all(f.x for f in tx_frames if f.fcf not in (Fcf.FCD, Fcf.RCP))
    assert not any(f.x for f in rx_frames)
    assert all(Frame.parse(data).to_bytes() == data for data in tx + rx)
    assert Frame(Fcf.CFR).to_bytes() in rx
    assert Frame(Fcf.DCN, x=True).to_bytes() == tx[-1]
    if ecm:
        pps = [parse_pps(f.fif) for f in tx_frames if f.fcf is Fcf.PPS]
        assert pps[0][:3] == (Fcf.EOP, 0, 0) and len(pps) > 1  # some frames were lost
        first_burst = pps[0][3]
        fcd = [f.fif[0] for f in tx_frames if f.fcf is Fcf.FCD]
        assert fcd[:first_burst] == list(range(first_burst))
        for ppr in (f for f in rx_frames if f.fcf is Fcf.PPR):
            asked = ppr_frames(ppr.fif)
            # SpanDSP also flags every number past the end of the block.
            assert set(range(first_burst, 256)) <= set(asked)
    else:
        assert [f.fcf for f in tx_frames] == [Fcf.TSI, Fcf.DCS, Fcf.EOP, Fcf.DCN]
        assert [f.fcf for f in rx_frames] == [Fcf.CSI, Fcf.DIS, Fcf.CFR, Fcf.MCF]


def test_describe() -> None:
    dcs = Frame(Fcf.DCS, Dcs(modem="v17", rate=14400, resolution="fine", compression="mr", ecm=True).to_fif())
    assert describe(dcs.to_bytes()) == "DCS v17 14400 fine mr ecm/256 width 1728 scan 0 ms"
    dis = Frame(Fcf.DIS, Dis(ecm=True, superfine=True).to_fif())
    assert describe(dis.to_bytes()) == "DIS v17+v27ter+v29 res[fine,superfine] codes[mr] ecm rx scan 0 ms"
    assert describe(Frame(Fcf.TSI, encode_ident("+1 555")).to_bytes()) == "TSI '+1 555'"
    assert (
        describe(Frame(Fcf.PPS, pps_fif(Fcf.MPS, True, 2, 1, 40)).to_bytes())
        == "PPS-MPS page 2 block 1 frames 40"
    )
    assert describe(Frame(Fcf.PPR, ppr_map([1, 4])).to_bytes()) == "PPR frames [1, 4]"
    assert describe(Frame(Fcf.CTC, ctc_fif("v29", 7200)).to_bytes()) == "CTC v29 7200"
    assert describe(Frame(Fcf.MCF).to_bytes()) == "MCF"
    assert describe(Frame(Fcf.DCS, b"\x00").to_bytes()).startswith("DCS (bad FIF")
    assert describe(b"\x00").startswith("invalid frame")
