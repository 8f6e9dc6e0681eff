"""V.17 modem: transmitter, receiver bank, and interworking with SpanDSP over G.711 lines."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from ums.softfax_g711.common import Status, amplitude_for_rms_dbm0, power_dbm0
from ums.softfax_g711.trellis import ABCD, RATES
from ums.softfax_g711.v17 import V17Rx, V17RxBank, V17Tx, training_symbols

Bits = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.int16]

needs_spandsp = pytest.mark.skipif(
    not spandsp.available(), reason="libspandsp2 (the SpanDSP peer) is not installed"
)

#: The line conditions of the interworking tests: law, level (dBm0), sample clock offset (ppm).
CONDITIONS = list(itertools.product(["PCMU", "PCMA"], [-9.0, -26.0, -43.0], [100.0, -100.0]))
#: Data bits per rate and direction, spread over the conditions.
TOTAL_BITS = 100_008


def our_burst(rate: int, bits: Bits, *, short_train: bool = False, level: float = -13.0) -> Samples:
    tx = V17Tx(rate, level_dbm0=level, short_train=short_train)
    tx.send(bits)
    tx.finish()
    out = []
    while not tx.done:
        out.append(tx.generate(1600))
    return np.concatenate(out)


def random_bits(rng: np.random.Generator, n: int) -> Bits:
    return rng.integers(0, 2, n).astype(np.uint8)


def stack(signals: list[Samples], tail: int = 1600) -> Samples:
    out = np.zeros((len(signals), max(s.size for s in signals) + tail), dtype=np.int16)
    for i, s in enumerate(signals):
        out[i, : s.size] = s
    return out


def statuses(events: list[object]) -> list[str]:
    return [e.status.value for e in events]  # type: ignore[attr-defined]


# --- transmitter ------------------------------------------------------------------------------


def test_training_sequence_segments() -> None:
    long_train, _ = training_symbols(False)
    short_train, _ = training_symbols(True)
    assert long_train.size == 256 + 2976 + 64
    assert short_train.size == 256 + 38
    assert np.allclose(long_train[:256:2], ABCD[0]) and np.allclose(long_train[1:256:2], ABCD[1])
    # Segment 2 begins with a phase reversal of segment 1 (C, D = -A, -B); both trains share it.
    assert np.allclose(long_train[256:258], -ABCD[:2])
    assert np.allclose(long_train[: 256 + 38], short_train)
    assert set(np.round(long_train, 6).tolist()) <= set(np.round(ABCD, 6).tolist())


@pytest.mark.parametrize("rate", RATES)
def test_transmit_level_and_trailer(rate: int) -> None:
    bits = random_bits(np.random.default_rng(rate), 20 * rate // 10)
    sig = our_burst(rate, bits, level=-20.0)
    data = sig[5000:-2000]
    assert abs(power_dbm0(data) + 20.0) < 0.3
    # training, segment 4, data, 32 trailer symbols at 10/3 samples a symbol, then the pulse tail
    symbols = 256 + 2976 + 64 + 48 + -(-bits.size // (rate // 2400)) + 32
    last = int(np.flatnonzero(sig)[-1])
    assert symbols * 10 / 3 - 10 < last < (symbols + 12) * 10 / 3
    tx = V17Tx(rate)
    tx.send(bits[:100])
    tx.finish()
    with pytest.raises(RuntimeError):
        tx.send(bits[:1])
    while not tx.done:
        tx.generate(800)
    assert not tx.generate(160).any()


# --- our receiver on our transmitter ----------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_loopback(rate: int) -> None:
    bits = random_bits(np.random.default_rng(rate + 1), 6000)
    rx = V17Rx(rate)
    out = rx.receive(
        np.concatenate([np.zeros(250, np.int16), our_burst(rate, bits), np.zeros(800, np.int16)])
    )
    assert statuses(out.events) == ["carrier-up", "training", "trained", "carrier-down"]
    assert out.events[2].bit_index == 0
    assert np.array_equal(out.bits[: bits.size], bits)
    assert out.events[3].bit_index == out.bits.size


def test_block_size_does_not_matter_and_bank_equals_single() -> None:
    """One channel trains while the other is in data mode: neither notices the other, and neither
    notices how the stream is cut into blocks."""
    rng = np.random.default_rng(11)
    sigs = []
    for i, (rate, lead) in enumerate(((9600, 0), (14400, 12000))):
        burst = our_burst(rate, random_bits(rng, 3000))
        # noisy enough for bit errors, so that any difference in processing would show
        sigs.append(
            line.impair(np.concatenate([np.zeros(lead), burst]), law="PCMU", ppm=80.0, snr_db=19.0, seed=i)
        )
    x = stack(sigs)

    def run(sizes: list[int]) -> list[tuple[Bits, list[tuple[Status, int, int]]]]:
        bank = V17RxBank(2, 9600)
        bank.restart(1, 14400)
        got: list[list[Bits]] = [[], []]
        ev: list[list[tuple[Status, int, int]]] = [[], []]
        pos = 0
        for size in sizes:
            for c, out in enumerate(bank.receive(x[:, pos : pos + size])):
                done = sum(b.size for b in got[c])
                ev[c] += [(e.status, e.bit_index + done, e.sample) for e in out.events]
                got[c].append(out.bits)
            pos += size
        return [(np.concatenate(got[c]), ev[c]) for c in range(2)]

    whole = run([x.shape[1]])
    blocks = run([160] * (x.shape[1] // 160 + 1))
    sizes = rng.integers(1, 500, 400).tolist()
    ragged = run([*sizes, x.shape[1]])
    for c, rate in enumerate((9600, 14400)):
        assert np.array_equal(whole[c][0], blocks[c][0]) and whole[c][1] == blocks[c][1]
        assert np.array_equal(whole[c][0], ragged[c][0]) and whole[c][1] == ragged[c][1]
        assert whole[c][0].size > 3000
        alone = V17Rx(rate).receive(x[c])
        assert np.array_equal(alone.bits, whole[c][0])
        assert [(e.status, e.bit_index, e.sample) for e in alone.events] == whole[c][1]


def test_carrier_detect_thresholds() -> None:
    bits = random_bits(np.random.default_rng(3), 2000)
    burst = np.concatenate([np.zeros(400), our_burst(9600, bits), np.zeros(800)])
    quiet = line.set_level(burst, -49.0)
    loud = line.set_level(burst, -43.0)
    assert V17Rx(9600).receive(line.to_int16(quiet)).events == []
    out = V17Rx(9600).receive(line.to_int16(loud))
    assert statuses(out.events) == ["carrier-up", "training", "trained", "carrier-down"]
    assert np.array_equal(out.bits[: bits.size], bits)


def test_noise_then_burst() -> None:
    """Noise above the detect threshold raises the carrier and fails training; the burst that comes
    later, much stronger, is heard as a new carrier and received."""
    rng = np.random.default_rng(4)
    bits = random_bits(rng, 3000)
    burst = line.set_level(our_burst(7200, bits), -26.0)
    x = np.concatenate([np.zeros(8000), burst, np.zeros(2000)])
    x += rng.normal(0.0, amplitude_for_rms_dbm0(-42.0), x.size)
    out = V17Rx(7200).receive(line.to_int16(x))
    names = statuses(out.events)
    assert names[:2] == ["carrier-up", "training-failed"]
    # the burst's end is heard too, though the noise stays above the threshold
    assert names[2:] == ["carrier-down", "carrier-up", "training", "trained", "carrier-down"]
    assert np.array_equal(out.bits[: bits.size], bits)


@needs_spandsp
def test_talker_echo_protection_before_training() -> None:
    """SpanDSP's optional TEP (unmodulated carrier, then 20 ms of silence) is not a training; the
    silence ends it and the real training after it is heard."""
    bits = random_bits(np.random.default_rng(8), 3000)
    sig = spandsp.ModemTx("v17", 9600, bits, level_dbm0=-13.0, tep=True).run()
    out = V17Rx(9600).receive(line.impair(sig, law="PCMU", level_dbm0=-20.0))
    assert statuses(out.events)[-4:] == ["carrier-up", "training", "trained", "carrier-down"]
    assert np.array_equal(out.bits[: bits.size], bits)


def test_restart_changes_rate() -> None:
    rng = np.random.default_rng(5)
    b1, b2 = random_bits(rng, 2000), random_bits(rng, 2000)
    rx = V17Rx(14400)
    o1 = rx.receive(np.concatenate([our_burst(14400, b1), np.zeros(1000, np.int16)]))
    rx.restart(7200)
    o2 = rx.receive(np.concatenate([our_burst(7200, b2), np.zeros(1000, np.int16)]))
    assert np.array_equal(o1.bits[:2000], b1) and np.array_equal(o2.bits[:2000], b2)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        V17RxBank(2, 4800)
    with pytest.raises(ValueError):
        V17RxBank(2, 9600).receive(np.zeros((3, 10), np.int16))


# --- interworking with SpanDSP ----------------------------------------------------------------


def _matrix_bits(rate: int, seed: int) -> list[Bits]:
    rng = np.random.default_rng(seed)
    return [random_bits(rng, TOTAL_BITS // len(CONDITIONS)) for _ in CONDITIONS]


def _line(signal: Samples, i: int) -> Samples:
    law, level, ppm = CONDITIONS[i]
    return line.impair(signal, law=law, level_dbm0=level, ppm=ppm, seed=i, lead_silence=50 + 61 * i)


@needs_spandsp
@pytest.mark.parametrize("rate", RATES)
def test_spandsp_to_ours(rate: int) -> None:
    sent = _matrix_bits(rate, rate)
    sigs = [_line(spandsp.ModemTx("v17", rate, b, level_dbm0=-13.0).run(), i) for i, b in enumerate(sent)]
    outs = V17RxBank(len(sigs), rate).receive(stack(sigs))
    for i, (bits, out) in enumerate(zip(sent, outs, strict=True)):
        assert statuses(out.events) == ["carrier-up", "training", "trained", "carrier-down"], CONDITIONS[i]
        assert out.bits.size >= bits.size, CONDITIONS[i]
        assert np.count_nonzero(out.bits[: bits.size] != bits) == 0, CONDITIONS[i]


@needs_spandsp
@pytest.mark.parametrize("rate", RATES)
def test_ours_to_spandsp(rate: int) -> None:
    for i, bits in enumerate(_matrix_bits(rate, rate + 1)):
        rx = spandsp.ModemRx("v17", rate)
        rx.receive(_line(our_burst(rate, bits), i))
        assert rx.events[:3] == ["carrier-up", "training", "trained"], CONDITIONS[i]
        assert rx.bits.size >= bits.size, CONDITIONS[i]
        assert np.count_nonzero(rx.bits[: bits.size] != bits) == 0, CONDITIONS[i]


@needs_spandsp
def test_short_train_from_spandsp() -> None:
    """A long train, then short retrains on the same receivers (one per rate, as a bank); the last
    receiver is left expecting a short train and gets a long one, which it must notice."""
    rng = np.random.default_rng(6)
    first, second = [], []
    sent1, sent2 = [], []
    for rate in RATES:
        b1, b2 = random_bits(rng, 6000), random_bits(rng, 6000)
        sent1.append(b1)
        sent2.append(b2)
        first.append(spandsp.ModemTx("v17", rate, b1, level_dbm0=-13.0).run())
        second.append(spandsp.ModemTx("v17", rate, b2, level_dbm0=-13.0, short_train=rate != 7200).run())
    part1 = stack([line.impair(s, law="PCMA", level_dbm0=-30.0, ppm=-70.0, seed=3) for s in first], 2400)
    part2 = stack([line.impair(s, law="PCMA", level_dbm0=-30.0, ppm=-70.0, seed=4) for s in second], 2400)
    bank = V17RxBank(len(RATES), RATES[0])
    for ch, rate in enumerate(RATES):
        bank.restart(ch, rate)
    outs1 = bank.receive(part1)
    for ch, rate in enumerate(RATES):
        if rate != 7200:
            bank.restart(ch, rate, short_train=True)
    outs2 = bank.receive(part2)
    for ch in range(len(RATES)):
        for out, bits in ((outs1[ch], sent1[ch]), (outs2[ch], sent2[ch])):
            assert statuses(out.events) == ["carrier-up", "training", "trained", "carrier-down"]
            assert np.array_equal(out.bits[: bits.size], bits)


@needs_spandsp
@pytest.mark.parametrize("rate", [14400, 7200])
def test_short_train_to_spandsp(rate: int) -> None:
    rng = np.random.default_rng(rate + 7)
    b1, b2 = random_bits(rng, 6000), random_bits(rng, 6000)
    rx = spandsp.ModemRx("v17", rate)
    rx.receive(line.impair(our_burst(rate, b1), law="PCMU", level_dbm0=-26.0, ppm=100.0, seed=1))
    got1 = rx.bits.size
    rx.restart(rate, short_train=True)
    rx.receive(line.impair(our_burst(rate, b2, short_train=True), law="PCMU", level_dbm0=-26.0, ppm=100.0))
    assert rx.events.count("trained") == 2
    assert np.array_equal(rx.bits[: b1.size], b1)
    assert np.array_equal(rx.bits[got1 : got1 + b2.size], b2)


@needs_spandsp
def test_short_train_to_spandsp_at_every_level() -> None:
    """Long then short bursts through A-law at -9 .. -30 dBm0: SpanDSP 0.0.6 keeps its equaliser
    for the short train and finds the symbol timing from where its carrier detect fires, so the
    start of our short burst must not depend on the level."""
    rng = np.random.default_rng(17)
    failed = []
    for level in range(-9, -31, -1):
        b1, b2 = random_bits(rng, 1200), random_bits(rng, 1200)
        rx = spandsp.ModemRx("v17", 14400, cutoff_dbm0=None)
        rx.receive(
            line.g711(np.concatenate([our_burst(14400, b1, level=level), np.zeros(800, np.int16)]), "PCMA")
        )
        got1 = rx.bits.size
        rx.restart(14400, short_train=True)
        short = our_burst(14400, b2, short_train=True, level=level)
        rx.receive(line.g711(np.concatenate([short, np.zeros(800, np.int16)]), "PCMA"))
        if rx.events.count("trained") != 2 or not np.array_equal(rx.bits[got1 : got1 + b2.size], b2):
            failed.append(level)
    assert failed == []


def test_short_burst_has_no_rising_tail() -> None:
    """No rising pulse tail before a short train: the burst is at full swing from its first samples."""
    sig = our_burst(14400, random_bits(np.random.default_rng(2), 600), short_train=True, level=-13.0)
    peak = np.max(np.abs(sig[:400].astype(np.float64)))
    assert np.max(np.abs(sig[:4].astype(np.float64))) > 0.3 * peak
    long_start = our_burst(14400, random_bits(np.random.default_rng(2), 600), level=-13.0)
    assert np.max(np.abs(long_start[:4].astype(np.float64))) < 0.1 * peak


@pytest.mark.parametrize("source", ["ours", "spandsp"])
def test_wrong_rate_fails_training(source: str) -> None:
    """Every (sent, expected) pair of rates on one bank: the receiver expecting another rate fails
    segment 4's ones test instead of reporting training and putting out garbage.  Then a short
    train at the sent rate to receivers trained at it but told to expect another rate."""
    if source == "spandsp" and not spandsp.available():
        pytest.skip("libspandsp2 (the SpanDSP peer) is not installed")
    rng = np.random.default_rng(21)

    def burst(rate: int, short_train: bool) -> tuple[Bits, Samples]:
        bits = random_bits(rng, 1200)
        sig = (
            our_burst(rate, bits, short_train=short_train)
            if source == "ours"
            else spandsp.ModemTx("v17", rate, bits, level_dbm0=-13.0, short_train=short_train).run()
        )
        return bits, line.impair(sig, law="PCMU", level_dbm0=-26.0, ppm=60.0, seed=rate)

    pairs = list(itertools.product(RATES, RATES))
    for short_train in (False, True):
        bursts = {rate: burst(rate, short_train) for rate in RATES}
        if short_train:
            bank = V17RxBank(len(pairs), RATES[0])
            for ch, (sent, _) in enumerate(pairs):
                bank.restart(ch, sent)
            first = bank.receive(stack([burst(sent, False)[1] for sent, _ in pairs]))
            assert all(statuses(out.events)[2] == "trained" for out in first)
        else:
            bank = V17RxBank(len(pairs), RATES[0])
        for ch, (_, expect) in enumerate(pairs):
            bank.restart(ch, expect, short_train=short_train)
        outs = bank.receive(stack([bursts[sent][1] for sent, _ in pairs]))
        for (sent, expect), out in zip(pairs, outs, strict=True):
            names = statuses(out.events)
            if sent == expect:
                assert names == ["carrier-up", "training", "trained", "carrier-down"], (sent, expect)
                assert np.array_equal(out.bits[:1200], bursts[sent][0])
            else:
                assert names == ["carrier-up", "training", "training-failed", "carrier-down"], (sent, expect)
                assert out.bits.size == 0


def test_fillin_bridges_lost_packets() -> None:
    """A 10 s burst at 14400 bit/s through A-law, on three channels of a bank: no loss, 0.1 % and
    1 % of its 20 ms packets lost at random (after training, about 1.4 s: a packet lost in
    training costs the burst anyway).  Training holds, the carrier stays up, the bit count stays in
    step with the sender, and the errors are those of the lost symbols (288 bits a packet) and a
    few after them."""
    rng = np.random.default_rng(5)
    bits = random_bits(rng, 10 * 14400)
    sig = line.impair(
        np.concatenate([our_burst(14400, bits, level=-13.0), np.zeros(1600, np.int16)]),
        law="PCMA",
        level_dbm0=-20.0,
        ppm=50.0,
        seed=5,
    )
    packets = -(-sig.size // 160)
    lost = rng.random((3, packets)) < np.array([0.0, 0.001, 0.01])[:, None]
    lost[:, :100] = False
    assert lost[1].sum() >= 1 and lost[2].sum() >= 3
    bank = V17RxBank(3, 14400)
    got: list[list[Bits]] = [[], [], []]
    events: list[list[str]] = [[], [], []]
    gaps: list[list[int]] = [[], [], []]  # bits put out before each lost packet
    for k in range(packets):
        x = np.tile(sig[160 * k : 160 * k + 160], (3, 1))
        for ch in np.flatnonzero(lost[:, k]).tolist():
            gaps[ch].append(sum(b.size for b in got[ch]))
        miss = np.repeat(lost[:, k : k + 1], x.shape[1], axis=1)
        for ch, out in enumerate(bank.receive(x, missing=miss)):
            got[ch].append(out.bits)
            events[ch] += statuses(out.events)
    rx_bits = [np.concatenate(g) for g in got]
    assert np.array_equal(rx_bits[0][: bits.size], bits)
    for ch in (1, 2):
        assert events[ch] == ["carrier-up", "training", "trained", "carrier-down"]
        assert rx_bits[ch].size == rx_bits[0].size
        errors = np.flatnonzero(rx_bits[ch][: bits.size] != bits)
        # The receiver's delay (a step, the Viterbi depth, the filters) is under 600 bits.
        near = np.zeros(errors.size, dtype=np.bool_)
        for b in gaps[ch]:
            near |= (errors >= b) & (errors < b + 600 + 288)
        assert near.all(), errors[~near][:10]
        assert errors.size <= 340 * len(gaps[ch])


def test_missing_mask_equals_fillin() -> None:
    """A bank's ``missing`` mask (gaps not on packet boundaries, different per channel) gives what
    ``fillin`` gives a single receiver, whatever the block size."""
    rng = np.random.default_rng(9)
    sigs = [
        line.impair(our_burst(rate, random_bits(rng, 5000)), law="PCMU", level_dbm0=-20.0, seed=i)
        for i, rate in enumerate((14400, 9600))
    ]
    x = stack(sigs)
    miss = np.zeros(x.shape, dtype=np.bool_)
    gaps = [[(13013, 160), (15900, 37)], [(14001, 400)]]
    for ch, chan_gaps in enumerate(gaps):
        for start, n in chan_gaps:
            miss[ch, start : start + n] = True
    bank = V17RxBank(2, 14400)
    bank.restart(1, 9600)
    pos = 0
    got: list[list[Bits]] = [[], []]
    for size in [*rng.integers(1, 900, 60).tolist(), x.shape[1]]:
        for ch, out in enumerate(bank.receive(x[:, pos : pos + size], missing=miss[:, pos : pos + size])):
            got[ch].append(out.bits)
        pos += size
    for ch, rate in enumerate((14400, 9600)):
        rx = V17Rx(rate)
        parts: list[Bits] = []
        pos = 0
        names: list[str] = []
        for start, n in [*gaps[ch], (x.shape[1], 0)]:
            o = rx.receive(x[ch, pos:start])
            parts.append(o.bits)
            names += statuses(o.events)
            if n:
                o = rx.fillin(n)
                parts.append(o.bits)
                names += statuses(o.events)
            pos = start + n
        assert names == ["carrier-up", "training", "trained", "carrier-down"]
        assert np.array_equal(np.concatenate(got[ch]), np.concatenate(parts))
    with pytest.raises(ValueError):
        bank.receive(np.zeros((2, 10), np.int16), missing=np.zeros((2, 9), np.bool_))
