"""V.21 FSK modem (V.21 §2, synchronous as T.30 uses it): transmitter, receiver, bank, SpanDSP interop."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from ums.softfax_g711.common import ModemStatus, RxOutput, Status, power_dbm0
from ums.softfax_g711.hdlc import HdlcDecoder, HdlcEncoder, HdlcEvent, HdlcEventKind
from ums.softfax_g711.v21 import V21_CH1, V21_CH2, FskRx, FskRxBank, FskTx

needs_spandsp = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

U8 = npt.NDArray[np.uint8]
I16 = npt.NDArray[np.int16]

#: A T.30 DIS frame (address, control, FCF, DIS bits).
DIS = bytes([0xFF, 0x13, 0x80, 0x00, 0xCE, 0xF4, 0x80, 0x80, 0x81, 0x80, 0x80, 0x80, 0x18])

LINES = list(itertools.product(["PCMU", "PCMA"], [-9.0, -26.0, -43.0], [-100.0, 100.0]))
#: 12 line conditions x 8400 bits = 100,800 random bits per direction.
BITS_PER_LINE = 8400


def transmit(bits: npt.ArrayLike, channel: int = 2, level_dbm0: float = -10.0, block: int = 160) -> I16:
    """The burst for ``bits``; checks that the transmitter falls silent right after the last bit."""
    b = np.asarray(bits, dtype=np.uint8)
    tx = FskTx(channel, level_dbm0=level_dbm0)
    tx.send(b)
    tx.finish()
    out = []
    while not tx.done:
        out.append(tx.generate(block))
    sig = np.concatenate(out)
    length = -(-80 * b.size // 3)  # 8000/300 samples per bit, bit edges on the nearest sample
    assert not sig[length:].any()
    assert np.count_nonzero(sig[length - 4 : length]) >= 3
    return sig[:length]


def receive(rx: FskRx, samples: I16, sizes: list[int] | None = None) -> RxOutput:
    """Feed ``samples`` in blocks of ``sizes`` (cycled; one block if None), merge the outputs."""
    bits: list[U8] = []
    events: list[ModemStatus] = []
    n_bits = 0
    pos = 0
    for i in itertools.count():
        if pos >= samples.size:
            break
        n = samples.size if not sizes else sizes[i % len(sizes)]
        out = rx.receive(samples[pos : pos + n])
        pos += n
        events += [ModemStatus(e.status, e.bit_index + n_bits, e.sample) for e in out.events]
        bits.append(out.bits)
        n_bits += out.bits.size
    return RxOutput(np.concatenate(bits) if bits else np.zeros(0, np.uint8), events)


def bit_errors(sent: U8, got: U8, *, max_skew: int = 4) -> int:
    """Bit errors after aligning ``got`` to ``sent``; a few bits may be missing or extra at either end
    (carrier detect), no more than ``max_skew``."""
    best: tuple[int, int] | None = None
    for off in range(-max_skew, max_skew + 1):
        a, b = max(off, 0), max(-off, 0)
        n = min(got.size - a, sent.size - b)
        if n < sent.size - 2 * max_skew:
            continue
        errors = int(np.count_nonzero(got[a : a + n] != sent[b : b + n]))
        if best is None or errors < best[0]:
            best = (errors, n)
    assert best is not None, f"received {got.size} bits for {sent.size} sent"
    return best[0]


def dominant_hz(x: npt.ArrayLike) -> float:
    a = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft(a * np.hanning(a.size), n=8000 * 4))
    return float(np.argmax(spec)) / 4.0


# Transmitter ---------------------------------------------------------------------------------------


def test_characteristic_frequencies() -> None:
    assert (V21_CH2.mark_hz, V21_CH2.space_hz) == (1650.0, 1850.0)
    assert (V21_CH1.mark_hz, V21_CH1.space_hz) == (980.0, 1180.0)
    for channel, spec in ((1, V21_CH1), (2, V21_CH2)):
        assert dominant_hz(transmit(np.ones(600, np.uint8), channel)) == pytest.approx(spec.mark_hz, abs=1)
        assert dominant_hz(transmit(np.zeros(600, np.uint8), channel)) == pytest.approx(spec.space_hz, abs=1)
    with pytest.raises(ValueError):
        FskTx(3)


def test_tx_level_and_length() -> None:
    for level in (-10.0, -13.0, -43.0):
        sig = transmit(np.random.default_rng(1).integers(0, 2, 3000), level_dbm0=level)
        assert sig.size == 80000  # 3000 bits at 300 bit/s, nothing after the last bit
        assert power_dbm0(sig) == pytest.approx(level, abs=0.05)
    for k in range(1, 10):
        sig = transmit(np.ones(k, np.uint8))
        assert sig.size == -(-80 * k // 3)


def test_tx_continuous_phase_and_block_sizes() -> None:
    bits = np.random.default_rng(2).integers(0, 2, 250).astype(np.uint8)
    whole = transmit(bits, block=10**6)
    for block in (1, 7, 160, 333):
        assert np.array_equal(transmit(bits, block=block)[: whole.size], whole)
    # No phase jumps: sample-to-sample steps stay within what a 1850 Hz sine of this amplitude makes.
    peak = float(np.max(np.abs(whole)))
    assert np.max(np.abs(np.diff(whole.astype(np.float64)))) <= peak * 2 * np.sin(np.pi * 1850 / 8000) + 2


def test_tx_idles_on_mark_then_restarts() -> None:
    tx = FskTx()
    idle = tx.generate(4000)
    assert dominant_hz(idle) == pytest.approx(1650, abs=1)
    assert not tx.done
    tx.send([0] * 30)
    tx.finish()
    burst = tx.generate(2000)
    assert tx.done
    active = np.flatnonzero(burst)
    assert active[-1] < 801  # 30 bits = 800 samples
    assert dominant_hz(burst[100:700]) == pytest.approx(1850, abs=2)
    assert not tx.generate(100).any()
    tx.send([1] * 3)
    assert not tx.done
    tx.finish()
    again = tx.generate(200)
    assert np.count_nonzero(again) > 70 and not again[81:].any()
    assert tx.done


def test_finish_with_nothing_queued() -> None:
    tx = FskTx()
    tx.finish()
    assert tx.done
    assert not tx.generate(160).any()


# Receiver ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [1, 2])
def test_loopback_and_events(channel: int) -> None:
    bits = np.random.default_rng(3).integers(0, 2, 3000).astype(np.uint8)
    sig = np.concatenate([np.zeros(1000, np.int16), transmit(bits, channel), np.zeros(1000, np.int16)])
    out = receive(FskRx(channel), sig)
    assert np.array_equal(out.bits[: bits.size], bits)
    assert out.bits.size <= bits.size + 2
    up, down = out.events
    assert up.status is Status.CARRIER_UP and up.bit_index == 0 and 1000 <= up.sample < 1010
    assert down.status is Status.CARRIER_DOWN and down.bit_index == out.bits.size
    assert 81000 < down.sample < 81000 + 60


def test_streaming_equals_one_shot() -> None:
    rng = np.random.default_rng(4)
    parts = []
    for level in (-12.0, -30.0, -43.0):
        parts += [np.zeros(int(rng.integers(100, 2000)), np.int16)]
        parts += [transmit(rng.integers(0, 2, 400), level_dbm0=level)]
    sig = line.impair(np.concatenate(parts), law="PCMA", ppm=100.0)
    whole = receive(FskRx(), sig)
    assert [e.status for e in whole.events] == [Status.CARRIER_UP, Status.CARRIER_DOWN] * 3
    for sizes in ([160], [1, 2, 3, 5, 8, 13], [4999], list(rng.integers(1, 700, 40))):
        if min(sizes) < 10:
            cut = sig[:12000]
            ref = receive(FskRx(), cut)
        else:
            cut, ref = sig, whole
        got = receive(FskRx(), cut, sizes)
        assert np.array_equal(got.bits, ref.bits)
        assert got.events == ref.events


def test_carrier_thresholds_and_hysteresis() -> None:
    bits = np.random.default_rng(5).integers(0, 2, 300)
    for level, detected in ((-42.0, True), (-43.0, True), (-49.0, False), (-55.0, False)):
        out = receive(FskRx(), transmit(bits, level_dbm0=level))
        assert (out.bits.size > 0) is detected, level
    # -40 dBm0, then 6 dB down (between the thresholds: stays on), then 10 dB down (off).
    sig = transmit(np.random.default_rng(6).integers(0, 2, 900), level_dbm0=-40.0).astype(np.float64)
    sig[8000:16000] *= 10 ** (-6 / 20)
    sig[16000:] *= 10 ** (-10 / 20)
    out = receive(FskRx(), line.to_int16(sig), [160])
    assert [e.status for e in out.events] == [Status.CARRIER_UP, Status.CARRIER_DOWN]
    assert 16000 <= out.events[1].sample < 16100
    # A higher cutoff ignores the same signal.
    assert receive(FskRx(cutoff_dbm0=-30.0), line.to_int16(sig)).bits.size == 0


def test_silence_and_noise_give_no_bits() -> None:
    rng = np.random.default_rng(7)
    quiet = line.to_int16(rng.normal(0, 3.0, 40000))  # about -68 dBm0
    out = receive(FskRx(), quiet, [160])
    assert out.bits.size == 0 and out.events == []


def test_bank_equals_single_receivers() -> None:
    rng = np.random.default_rng(8)
    n = 6
    rows = []
    for k in range(n):
        head = np.zeros(int(rng.integers(0, 4000)), np.int16)
        burst = transmit(rng.integers(0, 2, int(rng.integers(50, 600))), level_dbm0=-10.0 - 6 * k)
        row = line.impair(np.concatenate([head, burst]), law="PCMU", ppm=float(rng.choice([-100, 100])))
        rows.append(np.pad(row, (0, 30000))[:30000])
    x = np.stack(rows)
    bank = FskRxBank(n)
    outs: list[list[RxOutput]] = [bank.receive(x[:, i : i + 160]) for i in range(0, x.shape[1], 160)]
    for k in range(n):
        single = receive(FskRx(), x[k], [160])
        got_bits = np.concatenate([o[k].bits for o in outs])
        assert np.array_equal(got_bits, single.bits)
        assert [(e.status, e.sample) for o in outs for e in o[k].events] == [
            (e.status, e.sample) for e in single.events
        ]
    with pytest.raises(ValueError):
        bank.receive(x[:2, :160])


@pytest.mark.parametrize(("law", "level", "ppm"), LINES[::3])
def test_raw_bits_loopback_over_line(law: str, level: float, ppm: float) -> None:
    rng = np.random.default_rng(abs(int(level * ppm)))
    bits = rng.integers(0, 2, 2000).astype(np.uint8)
    sig = line.impair(transmit(bits), law=law, level_dbm0=level, ppm=ppm, lead_silence=500)
    assert bit_errors(bits, receive(FskRx(), sig, [160]).bits) == 0


def test_hdlc_over_v21_loopback() -> None:
    frames = [DIS, b"\xff\x13\x84" + b"ABCDEFGHIJ", b"\xff\x13\xfb"]
    bits = HdlcEncoder().frames(frames, preamble_flags=37)
    sig = line.impair(transmit(bits), law="PCMA", level_dbm0=-35.0, ppm=-100.0, lead_silence=800)
    rx, dec = FskRx(), HdlcDecoder()
    events: list[HdlcEvent] = []
    for i in range(0, sig.size, 160):
        events += dec.put_bits(rx.receive(sig[i : i + 160]).bits)
    assert [(e.data, e.crc_ok) for e in events if e.kind is HdlcEventKind.FRAME] == [
        (f, True) for f in frames
    ]
    assert events[0].kind is HdlcEventKind.FRAMING_OK


# SpanDSP interop -----------------------------------------------------------------------------------


@needs_spandsp
@pytest.mark.parametrize(("law", "level", "ppm"), LINES)
def test_raw_bits_ours_to_spandsp(law: str, level: float, ppm: float) -> None:
    rng = np.random.default_rng(LINES.index((law, level, ppm)))
    bits = rng.integers(0, 2, BITS_PER_LINE).astype(np.uint8)
    sig = line.impair(transmit(bits, level_dbm0=-13.0), law=law, level_dbm0=level, ppm=ppm, lead_silence=400)
    rx = spandsp.ModemRx("v21ch2", 300)
    rx.receive(sig)
    assert bit_errors(bits, rx.bits) == 0
    assert rx.events == ["carrier-up", "carrier-down"]


@needs_spandsp
@pytest.mark.parametrize(("law", "level", "ppm"), LINES)
def test_raw_bits_spandsp_to_ours(law: str, level: float, ppm: float) -> None:
    rng = np.random.default_rng(100 + LINES.index((law, level, ppm)))
    bits = rng.integers(0, 2, BITS_PER_LINE).astype(np.uint8)
    sig = spandsp.ModemTx("v21ch2", 300, bits, level_dbm0=-13.0).run()
    sig = line.impair(sig, law=law, level_dbm0=level, ppm=ppm, lead_silence=400)
    out = receive(FskRx(), sig, [160])
    assert bit_errors(bits, out.bits) == 0
    assert [e.status for e in out.events] == [Status.CARRIER_UP, Status.CARRIER_DOWN]


def hdlc_frames(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    frames = [DIS, b"\xff\x03\x42" + b"+49 30 1234567     "[::-1], b"\xff\x13\x84\x7e\x7e\xff\xff\xff"]
    frames += [
        b"\xff\x03" + rng.integers(0, 256, int(rng.integers(1, 60)), dtype=np.uint8).tobytes()
        for _ in range(6)
    ]
    return frames


@needs_spandsp
@pytest.mark.parametrize(("law", "level", "ppm"), [("PCMU", -13.0, 100.0), ("PCMA", -43.0, -100.0)])
def test_hdlc_ours_to_spandsp(law: str, level: float, ppm: float) -> None:
    frames = hdlc_frames(1)
    bits = HdlcEncoder().frames(frames, preamble_flags=37)
    sig = line.impair(transmit(bits, level_dbm0=-13.0), law=law, level_dbm0=level, ppm=ppm, lead_silence=400)
    modem = spandsp.ModemRx("v21ch2", 300)
    modem.receive(sig)
    hdlc = spandsp.HdlcRx()
    hdlc.put_bits(modem.bits)
    assert hdlc.frames == [(f, True) for f in frames]


@needs_spandsp
@pytest.mark.parametrize(("law", "level", "ppm"), [("PCMA", -13.0, -100.0), ("PCMU", -43.0, 100.0)])
def test_hdlc_spandsp_to_ours(law: str, level: float, ppm: float) -> None:
    frames = hdlc_frames(2)
    bits = spandsp.HdlcTx(frames, preamble_flags=37).bits()
    sig = spandsp.ModemTx("v21ch2", 300, bits, level_dbm0=-13.0).run()
    sig = line.impair(sig, law=law, level_dbm0=level, ppm=ppm, lead_silence=400)
    rx, dec = FskRx(), HdlcDecoder()
    events: list[HdlcEvent] = []
    for i in range(0, sig.size, 160):
        events += dec.put_bits(rx.receive(sig[i : i + 160]).bits)
    assert [(e.data, e.crc_ok) for e in events if e.kind is HdlcEventKind.FRAME] == [
        (f, True) for f in frames
    ]
