"""ITU-T V.29 modem (9600, 7200 and 4800 bit/s; 2400 baud on a 1700 Hz carrier), for fax.

Transmitter :class:`V29Tx`: the synchronising signal of V.29 §5 (segment 1: 48 symbols of
silence; segment 2: 128 symbols alternating A/B; segment 3: 384 symbols of C/D chosen by the
training sequence 1 + x^-6 + x^-7; segment 4: 48 symbols of scrambled binary ones), then the data,
scrambled with 1 + x^-18 + x^-23 (V.29 §4) and coded as in V.29 §2 (differential phase, Table 1;
amplitude, Table 2), then a trailer of 32 symbols of scrambled ones.

Receiver :class:`V29RxBank` (``n`` channels) and :class:`V29Rx` (one): carrier detect, training
on segments 2 and 3, a check on segment 4, then data bits.  The bits of segment 4 are not
output.  Built on :mod:`ums.softfax_g711.qam`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ums.softfax_g711.common import (
    SAMPLE_RATE,
    BitQueue,
    Bits,
    ModemStatus,
    RxOutput,
    Status,
    descramble,
    scramble,
)
from ums.softfax_g711.qam import (
    BankEvent,
    BlockResult,
    BurstTx,
    QamModulator,
    QamRxBank,
    QamRxConfig,
    QamRxState,
)

__all__ = ["V29Rx", "V29RxBank", "V29Tx", "training_symbols"]

BAUD = 2400
CARRIER_HZ = 1700.0
SCRAMBLER_TAPS = (18, 23)
RATES = (9600, 7200, 4800)
_BITS_PER_SYMBOL = {9600: 4, 7200: 3, 4800: 2}

SEG1 = 48
SEG2 = 128
SEG3 = 384
SEG4 = 48
TRAILER = 32

# V.29 §2: 16 signal points; index = 8 * amplitude_bit + phase (in 45 degree steps).
_POINTS = np.array(
    [3, 1 + 1j, 3j, -1 + 1j, -3, -1 - 1j, -3j, 1 - 1j, 5, 3 + 3j, 5j, -3 + 3j, -5, -3 - 3j, -5j, 3 - 3j],
    dtype=np.complex128,
)
# Table 1: phase change (45 degree steps) for Q2 Q3 Q4 read as a binary number.
_PHASE_STEP_3 = np.array([1, 0, 2, 3, 6, 7, 5, 4], dtype=np.int64)
# 4800 bit/s (§2.3): phase change for Q2 Q3.
_PHASE_STEP_2 = np.array([0, 2, 6, 4], dtype=np.int64)
_INV_STEP_3 = np.argsort(_PHASE_STEP_3)
_INV_STEP_2 = np.full(8, 0, dtype=np.int64)
_INV_STEP_2[_PHASE_STEP_2] = np.arange(4)

# §5 Table 3: the points A, B (segment 2) and C, D (segment 3) per rate.
_ABCD = {
    9600: (-3 + 0j, 3 - 3j, 3 + 0j, -3 + 3j),
    7200: (-3 + 0j, 1 - 1j, 3 + 0j, -1 + 1j),
    4800: (-3 + 0j, -3j, 3 + 0j, 3j),
}


def _constellation(bit_rate: int) -> npt.NDArray[np.complex128]:
    if bit_rate == 9600:
        return _POINTS.copy()
    if bit_rate == 7200:
        return _POINTS[:8].copy()
    return _POINTS[0:8:2].copy()


def _mean_power(bit_rate: int) -> float:
    p = _constellation(bit_rate)
    return float(np.mean(np.abs(p) ** 2))


def _training_bits(count: int) -> Bits:
    """§5 segment 3: the sequence of 1 + x^-6 + x^-7 starting from 0101010."""
    b = np.zeros(count + 7, dtype=np.uint8)
    b[:7] = [0, 1, 0, 1, 0, 1, 0]
    for i in range(7, count + 7):
        b[i] = b[i - 6] ^ b[i - 7]
    return b[:count]


def training_symbols(bit_rate: int) -> npt.NDArray[np.complex128]:
    """Segments 1 to 3 of the synchronising signal (V.29 §5), in constellation units."""
    a, b, c, d = _ABCD[bit_rate]
    seg2 = np.where(np.arange(SEG2) % 2 == 0, a, b)
    seg3 = np.where(_training_bits(SEG3) == 1, d, c)
    return np.concatenate([np.zeros(SEG1, dtype=np.complex128), seg2, seg3])


def _encode(bits: Bits, bit_rate: int, state: int) -> tuple[npt.NDArray[np.complex128], int]:
    """Scrambled bits (a whole number of symbols) to points, §2; ``state`` is the absolute
    phase (45 degree steps) of the previous symbol."""
    bps = _BITS_PER_SYMBOL[bit_rate]
    g = bits.reshape(-1, bps).astype(np.int64)
    if bit_rate == 4800:
        step = _PHASE_STEP_2[g[:, 0] * 2 + g[:, 1]]
        amp = np.zeros(g.shape[0], dtype=np.int64)
    elif bit_rate == 7200:
        step = _PHASE_STEP_3[g[:, 0] * 4 + g[:, 1] * 2 + g[:, 2]]
        amp = np.zeros(g.shape[0], dtype=np.int64)
    else:
        step = _PHASE_STEP_3[g[:, 1] * 4 + g[:, 2] * 2 + g[:, 3]]
        amp = g[:, 0]
    phase = (state + np.cumsum(step)) % 8
    new_state = int(phase[-1]) if phase.size else state
    return _POINTS[amp * 8 + phase], new_state


class V29Tx(BurstTx):
    """V.29 transmitter: ``send`` bits, ``finish``, and pull samples with ``generate``.

    If the queue runs dry before :meth:`finish`, scrambled ones are sent.  After the trailer the
    transmitter is :attr:`done` and :meth:`generate` pads with silence."""

    def __init__(self, bit_rate: int, *, level_dbm0: float = -10.0) -> None:
        if bit_rate not in RATES:
            raise ValueError(f"V.29 has no {bit_rate} bit/s")
        self.bit_rate = bit_rate
        self._bps = _BITS_PER_SYMBOL[bit_rate]
        self._mod = QamModulator(
            BAUD, CARRIER_HZ, level_dbm0=level_dbm0, ref_power=_mean_power(bit_rate), beta=0.5, span=6
        )
        self._train = training_symbols(bit_rate)
        self._train_pos = 0
        self._ones_left = SEG4
        self._trailer_left = TRAILER
        self._queue = BitQueue()
        self._finished = False
        self._scr = np.zeros(SCRAMBLER_TAPS[1], dtype=np.uint8)
        self._state = 0
        self._end_sample: int | None = None

    def _data_symbols(self, bits: Bits) -> npt.NDArray[np.complex128]:
        scr, self._scr = scramble(bits, self._scr, SCRAMBLER_TAPS)
        pts, self._state = _encode(scr, self.bit_rate, self._state)
        return pts

    def _symbols(self, count: int) -> npt.NDArray[np.complex128]:
        out: list[npt.NDArray[np.complex128]] = []
        while count > 0:
            if self._train_pos < self._train.size:
                take = min(count, self._train.size - self._train_pos)
                out.append(self._train[self._train_pos : self._train_pos + take])
                self._train_pos += take
            elif self._ones_left:
                take = min(count, self._ones_left)
                out.append(self._data_symbols(np.ones(take * self._bps, dtype=np.uint8)))
                self._ones_left -= take
            elif self._queue.size or not self._finished:
                if self._queue.size:
                    take = min(count, -(-self._queue.size // self._bps))
                else:
                    take = count  # underrun: idle on scrambled ones
                out.append(self._data_symbols(self._queue.take(take * self._bps)))
            elif self._trailer_left:
                take = min(count, self._trailer_left)
                out.append(self._data_symbols(np.ones(take * self._bps, dtype=np.uint8)))
                self._trailer_left -= take
                if not self._trailer_left:
                    last = self._mod.symbols_in + sum(o.size for o in out) - 1
                    tail = (last + 2 * self._mod.span) * SAMPLE_RATE / BAUD
                    self._end_sample = math.ceil(tail) + 1
            else:
                take = count
                out.append(np.zeros(take, dtype=np.complex128))
            count -= take
        return np.concatenate(out) if out else np.zeros(0, dtype=np.complex128)


# --------------------------------------------------------------------------------------------
# Receiver

_IDLE, _ACQ, _TRAIN, _TRAIN_TEST, _ONES, _DATA, _PARKED = range(7)

#: Symbols of segment 2 left for timing to settle before the phase is logged.
_SETTLE = 24
#: Loop settings per stage: equaliser step (times the equaliser length), carrier PI gains
#: (rad per radian of phase error), timing PI gains (samples per unit of Gardner error).
_GAINS: dict[int, dict[str, float]] = {
    _ACQ: {"delta": 0.0, "c_kp": 0.0, "c_ki": 0.0, "t_kp": 0.15, "t_ki": 0.0},
    _TRAIN: {"delta": 0.21, "c_kp": 0.2, "c_ki": 0.005, "t_kp": 0.05, "t_ki": 0.0005},
    _TRAIN_TEST: {"delta": 0.05, "c_kp": 0.05, "c_ki": 0.0005, "t_kp": 0.03, "t_ki": 0.0002},
    _ONES: {"delta": 0.02, "c_kp": 0.05, "c_ki": 0.0005, "t_kp": 0.02, "t_ki": 0.0001},
    _DATA: {"delta": 0.02, "c_kp": 0.05, "c_ki": 0.0005, "t_kp": 0.02, "t_ki": 0.0001},
}

#: Largest carrier offset accepted in training (Hz).
_MAX_OFFSET_HZ = 20.0
#: Mean squared error (constellation units) allowed at the end of segment 3 and in segment 4.
_MAX_ERR_TRAIN = 2.0
_MAX_ERR_ONES = 1.0


class V29RxBank(QamRxBank):
    """A bank of ``n`` V.29 receivers stepping together.

    The carrier is declared on when the power exceeds ``cutoff_dbm0 - 1.5`` dB and off below
    ``cutoff_dbm0 - 4`` dB (segment 2 is about 2.3 dB weaker than data, so a burst whose data is
    at ``cutoff_dbm0 + 2.5`` dB is heard from its start)."""

    def __init__(self, n: int, bit_rate: int, *, cutoff_dbm0: float = -45.5) -> None:
        if bit_rate not in RATES:
            raise ValueError(f"V.29 has no {bit_rate} bit/s")
        cfg = QamRxConfig(
            baud=BAUD,
            carrier_hz=CARRIER_HZ,
            beta=0.5,
            on_dbm0=cutoff_dbm0 - 1.5,
            off_dbm0=cutoff_dbm0 - 4.0,
        )
        super().__init__(n, cfg)
        self.bit_rates = [bit_rate] * n
        self._dstate = np.zeros(n, dtype=np.int64)
        self._scr = np.zeros((n, SCRAMBLER_TAPS[1]), dtype=np.uint8)
        self._train_targets = {r: training_symbols(r)[SEG1 + SEG2 :] for r in RATES}
        for ch in range(n):
            self.set_constellation(ch, _constellation(bit_rate))

    def restart(self, channel: int, bit_rate: int) -> None:
        """Reset ``channel`` to wait for a new burst at ``bit_rate``."""
        if bit_rate not in RATES:
            raise ValueError(f"V.29 has no {bit_rate} bit/s")
        self.bit_rates[channel] = bit_rate
        self.set_constellation(channel, _constellation(bit_rate))
        self.restart_channel(channel)

    # --- control, on rare events ------------------------------------------------------------

    def _stage(self, st: QamRxState, r: int, stage: int) -> None:
        """Enter ``stage`` with its loop settings."""
        g = _GAINS[stage]
        st.stage[r] = stage
        st.mu[r] = g["delta"] / self.cfg.eq_len
        st.c_kp[r] = g["c_kp"]
        st.c_ki[r] = g["c_ki"]
        st.t_kp[r] = g["t_kp"]
        st.t_ki[r] = g["t_ki"]

    def _park(self, st: QamRxState, r: int) -> None:
        self.reset_channel(st, r)
        st.stage[r] = _PARKED

    def on_event(self, st: QamRxState, r: int, event: BankEvent, payload: float) -> None:
        stage = int(st.stage[r])
        if event is BankEvent.CARRIER_UP:
            self.emit(st, r, Status.CARRIER_UP)
            self.reset_channel(st, r)
            self.track_agc(st, r, True)
            st.stage[r] = _ACQ
            st.countdown[r] = SEG1 + SEG2 + 40
        elif event is BankEvent.AGC and stage == _ACQ:
            self.set_agc(st, r, payload)
            if not st.acq[r]:
                self.start_acquisition(st, r, settle=_SETTLE, break_deg=90.0, centre=1.0)
                self._stage(st, r, _ACQ)
        elif event is BankEvent.CARRIER_DOWN:
            self.emit(st, r, Status.CARRIER_DOWN)
            self.reset_channel(st, r)
            st.stage[r] = _IDLE
        elif event is BankEvent.PATTERN_BREAK and stage == _ACQ:
            self._start_training(st, r)
        elif event is BankEvent.COUNTDOWN:
            if stage == _ACQ:
                self.emit(st, r, Status.TRAINING_FAILED)
                self._park(st, r)
            elif stage == _TRAIN:
                self._stage(st, r, _TRAIN_TEST)
                st.err_acc[r] = 0.0
                st.err_n[r] = 0
                st.countdown[r] = 48
            elif stage == _TRAIN_TEST:
                if st.err_acc[r] / max(int(st.err_n[r]), 1) < _MAX_ERR_TRAIN:
                    self._stage(st, r, _ONES)
                    st.use_target[r] = False
                    st.record[r] = True
                    st.err_acc[r] = 0.0
                    st.err_n[r] = 0
                    st.countdown[r] = SEG4
                else:
                    self.emit(st, r, Status.TRAINING_FAILED)
                    self._park(st, r)
            elif stage == _ONES:
                if st.err_acc[r] / max(int(st.err_n[r]), 1) < _MAX_ERR_ONES:
                    self._stage(st, r, _DATA)
                    self.emit(st, r, Status.TRAINING_SUCCEEDED)
                    self.save_equalizer(st, r)
                else:
                    self.emit(st, r, Status.TRAINING_FAILED)
                    self._park(st, r)

    def _start_training(self, st: QamRxState, r: int) -> None:
        ch = int(st.chan[r])
        rate = self.bit_rates[ch]
        omega = self.acquisition_frequency(st, r)
        if abs(omega) * BAUD / (2 * math.pi) > _MAX_OFFSET_HZ:
            self.emit(st, r, Status.TRAINING_FAILED)
            self._park(st, r)
            return
        a, b, c, _ = _ABCD[rate]
        j = self.cfg.history
        # oldest first: ..., A, B, C (segment 2 ends on B; C is the symbol just processed)
        offsets = np.arange(j - 1, 0, -1)
        known = np.concatenate([np.where(offsets % 2 == 1, b, a), [c]])
        self.align_carrier(st, r, known, omega)
        self.track_agc(st, r, False)
        self.emit(st, r, Status.TRAINING_IN_PROGRESS)
        targets = self._train_targets[rate][1:]
        self.load_targets(st, r, targets)
        self._stage(st, r, _TRAIN)
        st.countdown[r] = targets.size - 48

    # --- bits, block-wise --------------------------------------------------------------------

    def receive(self, samples: npt.ArrayLike, missing: npt.ArrayLike | None = None) -> list[RxOutput]:
        """Feed ``(n, m)`` int16 samples; one :class:`RxOutput` per channel.  Channels flagged in
        ``missing`` lost this block (see :meth:`QamRxBank.process`)."""
        res = self.process(samples, missing)
        return self._bits(res)

    def _bits(self, res: BlockResult) -> list[RxOutput]:
        """Decisions to data bits for all channels at once: differential phase decoding (§2),
        descrambling (§4), and dropping all but the data stage.  Neither the phase reference nor
        the descrambler is reset between bursts: segment 4 (48 symbols of ones, not output)
        brings both into step."""
        n, width = res.codes.shape
        rates = np.array(self.bit_rates)
        outs: list[RxOutput] = []
        bits4 = np.zeros((n, width, 4), dtype=np.uint8)
        if width:
            codes = res.codes
            four = (rates == 4800)[:, None]
            phase = np.where(four, (codes * 2) % 8, codes % 8)
            prev = np.concatenate([self._dstate[:, None], phase[:, :-1]], axis=1)
            step = (phase - prev) % 8
            last = np.take_along_axis(phase, np.maximum(res.counts - 1, 0)[:, None], axis=1)[:, 0]
            self._dstate = np.where(res.counts > 0, last, self._dstate)
            v3 = _INV_STEP_3[step]
            v2 = _INV_STEP_2[step]
            # 9600: Q1 Q2 Q3 Q4; 7200: Q2 Q3 Q4; 4800: Q2 Q3 (left-aligned in the last axis)
            amp = (codes >> 3) & 1
            nine = (rates == 9600)[:, None]
            bits4[:, :, 0] = np.where(nine, amp, np.where(four, (v2 >> 1) & 1, (v3 >> 2) & 1))
            bits4[:, :, 1] = np.where(nine, (v3 >> 2) & 1, np.where(four, v2 & 1, (v3 >> 1) & 1))
            bits4[:, :, 2] = np.where(nine, (v3 >> 1) & 1, v3 & 1)
            bits4[:, :, 3] = v3 & 1
        for ch in range(n):
            rate = self.bit_rates[ch]
            bps = _BITS_PER_SYMBOL[rate]
            cnt = int(res.counts[ch])
            out = RxOutput()
            is_data = res.stages[ch, :cnt] == _DATA
            if cnt:
                raw = bits4[ch, :cnt, :bps].reshape(-1)
                plain, self._scr[ch] = descramble(raw, self._scr[ch], SCRAMBLER_TAPS)
                if is_data.all():
                    out.bits = plain
                else:
                    out.bits = plain[np.repeat(is_data, bps)]
            if res.events[ch]:
                before = np.concatenate([[0], np.cumsum(is_data)]) * bps
                for sym, status, sample in res.events[ch]:
                    out.events.append(ModemStatus(status, int(before[sym]), sample))
            outs.append(out)
        return outs


class V29Rx:
    """One V.29 receiver (a bank of one)."""

    def __init__(self, bit_rate: int, *, cutoff_dbm0: float = -45.5) -> None:
        self.bank = V29RxBank(1, bit_rate, cutoff_dbm0=cutoff_dbm0)

    def receive(self, samples: npt.ArrayLike) -> RxOutput:
        """Feed int16 samples; returns the data bits and statuses."""
        x = np.asarray(samples).reshape(1, -1)
        return self.bank.receive(x)[0]

    def fillin(self, n_samples: int) -> RxOutput:
        """``n_samples`` were lost (packet loss): keep timing and carrier turning, hold the
        carrier state, output nothing for the gap."""
        return self.bank.receive(np.zeros((1, n_samples), dtype=np.int16), missing=[True])[0]

    def restart(self, bit_rate: int) -> None:
        """Wait for a new burst at ``bit_rate``."""
        self.bank.restart(0, bit_rate)
