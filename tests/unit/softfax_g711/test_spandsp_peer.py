"""The SpanDSP test peer and the line model work on their own: SpanDSP to SpanDSP over our line."""

from __future__ import annotations

import numpy as np
import pytest

from tests.peers import line, spandsp
from ums.softfax_g711.common import power_dbm0

pytestmark = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")


@pytest.mark.parametrize(
    ("modem", "rate"),
    [("v17", 14400), ("v17", 7200), ("v29", 9600), ("v27ter", 4800), ("v27ter", 2400), ("v21ch2", 300)],
)
def test_spandsp_to_spandsp_through_g711(modem: str, rate: int) -> None:
    rng = np.random.default_rng(rate)
    bits = rng.integers(0, 2, 3000).astype(np.uint8)
    signal = spandsp.ModemTx(modem, rate, bits, level_dbm0=-13.0).run()
    rx = spandsp.ModemRx(modem, rate)
    rx.receive(line.impair(signal, law="PCMU", level_dbm0=-26.0, ppm=100.0))
    got = rx.bits
    offset = 1 if modem.startswith("v21") else 0  # V.21 puts out one bit as carrier is detected
    assert got.size >= bits.size + offset
    assert np.array_equal(got[offset : offset + bits.size], bits)
    if not modem.startswith("v21"):
        assert rx.events[:3] == ["carrier-up", "training", "trained"]


def test_hdlc_frames_round_trip() -> None:
    frames = [bytes([0xFF, 0x13, 0x80, 0x00, 0xCE, 0xF4]), bytes(range(64)), b"\xff\xc8\x5f"]
    rx = spandsp.HdlcRx()
    rx.put_bits(spandsp.HdlcTx(frames, preamble_flags=37).bits())
    assert rx.frames == [(f, True) for f in frames]


def test_cng_and_ced_are_generated_and_detected() -> None:
    for tone in ("cng", "ced"):
        samples = spandsp.ToneTx(tone).generate(4 * 8000)
        assert -20.0 < power_dbm0(samples[samples != 0]) < -5.0
        assert spandsp.ToneRx(tone).receive(samples)[0][0] == tone


def test_line_clock_offset_is_band_limited() -> None:
    n = np.arange(40000)
    x = 10000.0 * np.sin(2 * np.pi * 1700.0 * n / 8000.0)
    y = line.clock_offset(x, 100.0)
    ref = 10000.0 * np.sin(2 * np.pi * 1700.0 * np.arange(y.size) * 1.0001 / 8000.0)
    err = y[64:-64] - ref[64:-64]
    assert 10 * np.log10(np.mean(err**2) / np.mean(ref**2)) < -60.0
    assert abs(power_dbm0(line.set_level(x, -30.0)) + 30.0) < 0.01
