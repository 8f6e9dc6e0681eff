"""The shared QAM transmitter and receiver bank, with a minimal QPSK burst modem built on them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line
from ums.softfax_g711.common import SAMPLE_RATE, Status, power_dbm0
from ums.softfax_g711.qam import BankEvent, QamModulator, QamRxBank, QamRxConfig, QamRxState, rrc

QPSK = np.array([1 + 1j, -1 + 1j, -1 - 1j, 1 - 1j])
A, B = QPSK[0], QPSK[3]
SILENCE, ABAB, TRAIN, TRAILER = 40, 128, 300, 20
_ACQ, _TRAIN, _DATA = 1, 2, 3


def _training(rng_seed: int = 7) -> npt.NDArray[np.complex128]:
    t = QPSK[np.random.default_rng(rng_seed).integers(0, 4, TRAIN)]
    t[0] = -A  # the 180 degree turn that ends the ABAB segment
    return t


def burst(
    data: npt.NDArray[np.int64], *, baud: int = 2400, carrier: float = 1800.0, level: float = -13.0
) -> npt.NDArray[np.int16]:
    """Silence, ABAB, a known training sequence, QPSK data, a trailer, silence."""
    syms = np.concatenate(
        [
            np.zeros(SILENCE),
            np.where(np.arange(ABAB) % 2 == 0, A, B),
            _training(),
            QPSK[data],
            QPSK[np.zeros(TRAILER, dtype=np.int64)],
            np.zeros(20),
        ]
    )
    mod = QamModulator(baud, carrier, level_dbm0=level, ref_power=2.0, beta=0.5)
    n = int(syms.size * SAMPLE_RATE / baud) - 20
    mod.push(syms)
    return mod.pull(n)


class BurstRx(QamRxBank):
    """Trains on the burst above and records the data decisions."""

    def __init__(self, n: int, baud: int = 2400, carrier: float = 1800.0) -> None:
        super().__init__(n, QamRxConfig(baud=baud, carrier_hz=carrier, on_dbm0=-45.0, off_dbm0=-50.0))
        for ch in range(n):
            self.set_constellation(ch, QPSK)
        self.train = _training()

    def on_event(self, st: QamRxState, r: int, event: BankEvent, payload: float) -> None:
        if event is BankEvent.CARRIER_UP:
            self.emit(st, r, Status.CARRIER_UP)
            self.reset_channel(st, r)
            self.track_agc(st, r, True)
            st.stage[r] = _ACQ
            st.countdown[r] = ABAB + 40
        elif event is BankEvent.AGC and st.stage[r] == _ACQ:
            self.set_agc(st, r, payload)
            if not st.acq[r]:
                self.start_acquisition(st, r, settle=24, break_deg=90.0, centre=1.0)
                st.t_kp[r], st.t_ki[r] = 0.15, 0.002
        elif event is BankEvent.PATTERN_BREAK:
            j = self.cfg.history
            known = np.concatenate([np.where(np.arange(j - 1, 0, -1) % 2 == 1, B, A), [-A]])
            self.align_carrier(st, r, known, self.acquisition_frequency(st, r))
            self.track_agc(st, r, False)
            self.load_targets(st, r, self.train[1:])
            st.countdown[r] = TRAIN - 1
            st.stage[r] = _TRAIN
            st.mu[r] = 0.21 / self.cfg.eq_len
            st.c_kp[r], st.c_ki[r] = 0.2, 0.005
            st.t_kp[r], st.t_ki[r] = 0.05, 0.0005
            self.emit(st, r, Status.TRAINING_IN_PROGRESS)
        elif event is BankEvent.COUNTDOWN and st.stage[r] == _TRAIN:
            st.use_target[r] = False
            st.record[r] = True
            st.stage[r] = _DATA
            st.mu[r] = 0.02 / self.cfg.eq_len
            st.c_kp[r], st.c_ki[r] = 0.05, 0.0005
            st.t_kp[r], st.t_ki[r] = 0.02, 0.0001
            self.emit(st, r, Status.TRAINING_SUCCEEDED)
        elif event is BankEvent.COUNTDOWN:
            self.emit(st, r, Status.TRAINING_FAILED)
            self.reset_channel(st, r)
        elif event is BankEvent.CARRIER_DOWN:
            self.emit(st, r, Status.CARRIER_DOWN)
            self.reset_channel(st, r)

    def run(self, signals: npt.NDArray[np.int16], block: int | None = None) -> list[list[int]]:
        """Decision codes per channel (data stage only), feeding ``block`` samples at a time."""
        x = np.atleast_2d(signals)
        codes: list[list[int]] = [[] for _ in range(self.n)]
        step = x.shape[1] if block is None else block
        for i in range(0, x.shape[1], step):
            res = self.process(x[:, i : i + step])
            for ch in range(self.n):
                codes[ch].extend(res.codes[ch, : res.counts[ch]].tolist())
        return codes


def _data(n: int, seed: int) -> npt.NDArray[np.int64]:
    return np.random.default_rng(seed).integers(0, 4, n).astype(np.int64)


def _check(got: list[int], sent: npt.NDArray[np.int64]) -> None:
    assert len(got) >= sent.size
    assert np.array_equal(np.array(got[: sent.size]), sent)


def test_rrc_unit_energy_and_nyquist() -> None:
    t = np.arange(-2000, 2001) / 100.0
    h = rrc(t, 0.5)
    assert abs(np.sum(h * h) / 100.0 - 1.0) < 1e-3
    # RRC * RRC is a Nyquist pulse: zero at non-zero whole symbols
    full = np.convolve(h, h) / 100.0
    centre = full.size // 2
    for k in (1, 2, 3):
        assert abs(full[centre + 100 * k]) < 2e-3
    assert abs(full[centre] - 1.0) < 1e-3


@pytest.mark.parametrize("baud", [2400, 1600, 1200])
def test_modulator_level_and_streaming(baud: int) -> None:
    syms = QPSK[_data(3000, 1)]
    one = QamModulator(baud, 1800.0, level_dbm0=-13.0, ref_power=2.0)
    n = int(syms.size * SAMPLE_RATE / baud) - 50
    one.push(syms)
    whole = one.pull(n)
    assert abs(power_dbm0(whole[500:]) - (-13.0)) < 0.3
    parts = QamModulator(baud, 1800.0, level_dbm0=-13.0, ref_power=2.0)
    out = []
    pushed = 0
    for size in [1, 7, 160, 33, 1000] * 20:
        size = min(size, n - sum(o.size for o in out))
        if size <= 0:
            break
        need = parts.symbols_needed(size)
        parts.push(syms[pushed : pushed + need])
        pushed += need
        out.append(parts.pull(size))
    assert np.array_equal(np.concatenate(out), whole[: sum(o.size for o in out)])


@pytest.mark.parametrize(
    ("baud", "carrier"), [(2400, 1800.0), (2400, 1700.0), (1600, 1800.0), (1200, 1800.0)]
)
def test_loopback(baud: int, carrier: float) -> None:
    data = _data(3000, baud)
    sig = burst(data, baud=baud, carrier=carrier)
    _check(BurstRx(1, baud, carrier).run(sig)[0], data)


@pytest.mark.parametrize("ppm", [100.0, -100.0])
def test_timing_recovery_with_clock_offset(ppm: float) -> None:
    data = _data(9600, 3)  # 4 s
    sig = line.to_int16(line.clock_offset(burst(data), ppm))
    _check(BurstRx(1).run(sig)[0], data)


@pytest.mark.parametrize("offset", [7.0, -7.0])
def test_carrier_frequency_offset(offset: float) -> None:
    data = _data(4800, 4)
    sig = burst(data, carrier=1800.0 + offset)
    _check(BurstRx(1).run(sig)[0], data)


def _conditions() -> tuple[npt.NDArray[np.int16], list[npt.NDArray[np.int64]]]:
    """Four different signals of equal length: levels, clock offsets, delays, noise."""
    sigs, datas = [], []
    for i, (ppm, level, delay) in enumerate(
        [(100.0, -13.0, 0), (-100.0, -30.0, 77), (0.0, -40.0, 13), (50.0, -20.0, 1)]
    ):
        data = _data(2400, 10 + i)
        s = line.impair(
            burst(data), law="PCMU", level_dbm0=level, ppm=ppm, snr_db=30.0, seed=i, lead_silence=delay
        )
        sigs.append(s)
        datas.append(data)
    m = max(s.size for s in sigs)
    return np.stack([np.pad(s, (0, m - s.size)) for s in sigs]).astype(np.int16), datas


def test_bank_equals_single_channels() -> None:
    sigs, datas = _conditions()
    bank = BurstRx(4).run(sigs, block=160)
    for ch in range(4):
        alone = BurstRx(1).run(sigs[ch], block=160)[0]
        assert bank[ch] == alone
        _check(alone, datas[ch])


def test_block_size_independence() -> None:
    sigs, datas = _conditions()
    whole = BurstRx(4).run(sigs)
    small = BurstRx(4).run(sigs, block=160)
    odd = BurstRx(4).run(sigs, block=37)
    assert whole == small == odd
    for ch in range(4):
        _check(whole[ch], datas[ch])


def test_events_and_carrier_drop() -> None:
    data = _data(1000, 5)
    gap = np.zeros(4000, dtype=np.int16)
    sig = np.concatenate([burst(data), gap, burst(data), gap])
    rx = BurstRx(1)
    res = rx.process(sig[None, :])
    statuses = [e[1] for e in res.events[0]]
    assert (
        statuses
        == [
            Status.CARRIER_UP,
            Status.TRAINING_IN_PROGRESS,
            Status.TRAINING_SUCCEEDED,
            Status.CARRIER_DOWN,
        ]
        * 2
    )
    codes = res.codes[0, : res.counts[0]]
    # both bursts' data were recorded, each followed by a few symbols of the carrier's tail
    first = codes[: data.size]
    assert np.array_equal(first, data)
