"""V.29: our transmitter and receiver against each other and against SpanDSP, over G.711."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from ums.softfax_g711.common import RxOutput, Status, power_dbm0
from ums.softfax_g711.v29 import V29Rx, V29RxBank, V29Tx, training_symbols

needs_spandsp = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

#: law x level x clock offset: 12 conditions; 8800 bits each is 105,600 bits per rate and direction.
CONDITIONS = list(itertools.product(["PCMU", "PCMA"], [-9.0, -26.0, -43.0], [100.0, -100.0]))
BITS_PER_CONDITION = 8800
TRAINED = ["carrier-up", "training", "trained", "carrier-down"]


def _bits(n: int, seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.uint8)


def _our_burst(
    rate: int, bits: npt.NDArray[np.uint8], level: float = -13.0, block: int = 160
) -> npt.NDArray[np.int16]:
    tx = V29Tx(rate, level_dbm0=level)
    tx.send(bits)
    tx.finish()
    out = []
    while not tx.done:
        out.append(tx.generate(block))
    return np.concatenate(out)


def _collect(outs: list[RxOutput]) -> tuple[npt.NDArray[np.uint8], list[str]]:
    bits = np.concatenate([o.bits for o in outs]) if outs else np.zeros(0, np.uint8)
    return bits, [e.status.value for o in outs for e in o.events]


def _run_bank(
    bank: V29RxBank, x: npt.NDArray[np.int16], block: int
) -> list[tuple[npt.NDArray[np.uint8], list[str]]]:
    per: list[list[RxOutput]] = [[] for _ in range(bank.n)]
    for i in range(0, x.shape[1], block):
        for ch, o in enumerate(bank.receive(x[:, i : i + block])):
            per[ch].append(o)
    return [_collect(p) for p in per]


def _assert_prefix(got: npt.NDArray[np.uint8], sent: npt.NDArray[np.uint8]) -> None:
    assert got.size >= sent.size, f"only {got.size} of {sent.size} bits"
    errors = int(np.count_nonzero(got[: sent.size] != sent))
    assert errors == 0, f"{errors} bit errors"


def test_training_sequence() -> None:
    """V.29 §5: segment 3 follows 1 + x^-6 + x^-7 from 0101010; A/B and C/D points per rate."""
    t = training_symbols(9600)
    assert np.all(t[:48] == 0)
    assert np.all(t[48:176:2] == -3) and np.all(t[49:176:2] == 3 - 3j)
    seg3 = t[176:]
    bits = (seg3 != 3).astype(int)
    assert bits[:7].tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert all(bits[i] == bits[i - 6] ^ bits[i - 7] for i in range(7, bits.size))
    assert set(training_symbols(7200)[176:].tolist()) == {3, -1 + 1j}
    assert set(training_symbols(4800)[176:].tolist()) == {3, 3j}


@pytest.mark.parametrize("rate", [9600, 7200, 4800])
def test_tx_level_and_streaming(rate: int) -> None:
    bits = _bits(rate, 1)
    one = _our_burst(rate, bits, level=-13.0, block=100000)
    chunks = _our_burst(rate, bits, level=-13.0, block=160)
    assert np.array_equal(one[: chunks.size], chunks[: one.size])
    data = one[2500:9000]  # one second of data after the 608 training symbols
    assert abs(power_dbm0(data) + 13.0) < 0.3


@pytest.mark.parametrize("rate", [9600, 7200, 4800])
def test_loopback(rate: int) -> None:
    bits = _bits(rate, rate)
    sig = np.concatenate([np.zeros(500, np.int16), _our_burst(rate, bits), np.zeros(800, np.int16)])
    rx = V29Rx(rate)
    got, events = _collect([rx.receive(sig)])
    _assert_prefix(got, bits)
    assert events == TRAINED


def test_block_feed_equals_one_shot() -> None:
    bits = _bits(9600, 2)
    sig = line.impair(_our_burst(9600, bits), law="PCMA", level_dbm0=-30.0, ppm=-100.0, lead_silence=123)
    whole = V29Rx(9600).receive(sig)
    rx = V29Rx(9600)
    parts = [rx.receive(sig[i : i + 160]) for i in range(0, sig.size, 160)]
    got, events = _collect(parts)
    assert np.array_equal(got, whole.bits)
    assert events == [e.status.value for e in whole.events]
    _assert_prefix(got, bits)


def test_restart_at_another_rate_and_underrun() -> None:
    """A 9600 burst, then the channel is restarted for 7200; the transmitter idles on ones when
    its queue runs dry."""
    bits = _bits(2000, 3)
    tx = V29Tx(7200, level_dbm0=-20.0)
    tx.send(bits)
    first = np.concatenate([tx.generate(160) for _ in range(40)])  # queue runs dry: ones
    tx.finish()
    rest = []
    while not tx.done:
        rest.append(tx.generate(160))
    second = np.concatenate([first, *rest])
    sig = np.concatenate([_our_burst(9600, bits), np.zeros(800, np.int16)])
    rx = V29Rx(9600)
    got1, ev1 = _collect([rx.receive(sig)])
    _assert_prefix(got1, bits)
    rx.restart(7200)
    got2, ev2 = _collect([rx.receive(np.concatenate([second, np.zeros(800, np.int16)]))])
    _assert_prefix(got2, bits)
    assert np.all(got2[bits.size : bits.size + 500] == 1)
    assert ev1 == ev2 == TRAINED


def test_no_training_on_a_plain_carrier() -> None:
    n = np.arange(8000)
    tone = (3000 * np.sin(2 * np.pi * 1700 * n / 8000)).astype(np.int16)
    out = V29Rx(9600).receive(np.concatenate([tone, np.zeros(800, np.int16)]))
    statuses = [e.status for e in out.events]
    assert Status.TRAINING_SUCCEEDED not in statuses
    assert statuses[0] is Status.CARRIER_UP and Status.TRAINING_FAILED in statuses
    assert out.bits.size == 0


@needs_spandsp
@pytest.mark.parametrize("rate", [9600, 7200])
def test_spandsp_tx_to_our_rx(rate: int) -> None:
    """SpanDSP TX over G.711 (both laws), -9/-26/-43 dBm0, +-100 ppm: all 12 conditions in one
    bank, 0 bit errors and training every time."""
    sigs, sent = [], []
    for i, (law, level, ppm) in enumerate(CONDITIONS):
        bits = _bits(BITS_PER_CONDITION, 1000 * rate + i)
        sig = spandsp.ModemTx("v29", rate, bits, level_dbm0=level).run()
        sigs.append(line.impair(sig, law=law, ppm=ppm, lead_silence=100 + 37 * i))
        sent.append(bits)
    m = max(s.size for s in sigs)
    x = np.stack([np.pad(s, (0, m - s.size)) for s in sigs]).astype(np.int16)
    results = _run_bank(V29RxBank(len(CONDITIONS), rate), x, 160)
    for cond, bits, (got, events) in zip(CONDITIONS, sent, results, strict=True):
        assert events == TRAINED, cond
        _assert_prefix(got, bits)


@needs_spandsp
@pytest.mark.parametrize("rate", [9600, 7200])
def test_our_tx_to_spandsp_rx(rate: int) -> None:
    for i, (law, level, ppm) in enumerate(CONDITIONS):
        bits = _bits(BITS_PER_CONDITION, 2000 * rate + i)
        sig = line.impair(_our_burst(rate, bits, level=level), law=law, ppm=ppm, lead_silence=100 + 37 * i)
        rx = spandsp.ModemRx("v29", rate)
        rx.receive(sig)
        assert rx.events == TRAINED, (law, level, ppm)
        _assert_prefix(rx.bits, bits)


def test_fillin_keeps_timing_and_carrier_through_lost_packets() -> None:
    """Ten lost 20 ms packets in a 4 s burst at +100 ppm: the carrier stays up, nothing comes out
    for the gaps, and the data after the last gap is error-free."""
    bits = _bits(4 * 9600, 6)
    sig = line.impair(_our_burst(9600, bits, level=-20.0), law="PCMA", ppm=100.0, lead_silence=100)
    rx = V29Rx(9600)
    lost = set(range(40, 120, 8))
    outs = []
    for j, i in enumerate(range(0, sig.size, 160)):
        block = sig[i : i + 160]
        outs.append(rx.fillin(block.size) if j in lost else rx.receive(block))
    got, events = _collect(outs)
    assert events == TRAINED
    tail = got[-12000:-2000]  # well after the last gap, before the trailer
    windows = np.lib.stride_tricks.sliding_window_view(bits, 64)
    starts = np.nonzero((windows == tail[:64]).all(axis=1))[0]
    hits = [p for p in starts if np.array_equal(bits[p : p + tail.size], tail)]
    assert len(hits) == 1
    assert bits.size - got.size > len(lost) * 192  # the gaps' bits were not output


def test_bank_missing_flag_equals_fillin() -> None:
    bits = _bits(9600, 7)
    sig = line.impair(_our_burst(9600, bits), law="PCMU", ppm=-100.0, lead_silence=50)
    bank = V29RxBank(2, 9600)
    single = V29Rx(9600)
    per: list[list[RxOutput]] = [[], []]
    ref = []
    for j, i in enumerate(range(0, sig.size, 160)):
        block = sig[i : i + 160]
        lost = j in (30, 31, 50)
        outs = bank.receive(np.stack([block, block]), missing=[lost, False])
        per[0].append(outs[0])
        per[1].append(outs[1])
        ref.append(single.fillin(block.size) if lost else single.receive(block))
    assert np.array_equal(_collect(per[0])[0], _collect(ref)[0])
    _assert_prefix(_collect(per[1])[0], bits)


def _shift(x: npt.NDArray[np.int16], hz: float) -> npt.NDArray[np.int16]:
    """Move every frequency of ``x`` up by ``hz`` (analytic signal, single sideband)."""
    spec = np.fft.fft(x.astype(np.float64))
    f = np.fft.fftfreq(x.size)
    analytic = np.fft.ifft(spec * (2.0 * (f > 0) + (f == 0)))
    return line.to_int16((analytic * np.exp(2j * np.pi * hz * np.arange(x.size) / 8000)).real)


@pytest.mark.parametrize("hz", [10.0, -7.0])
def test_carrier_frequency_offset(hz: float) -> None:
    bits = _bits(9600, 8)
    sig = _shift(
        np.concatenate([np.zeros(300, np.int16), _our_burst(9600, bits), np.zeros(800, np.int16)]), hz
    )
    got, events = _collect([V29Rx(9600).receive(sig)])
    assert events == TRAINED
    _assert_prefix(got, bits)
