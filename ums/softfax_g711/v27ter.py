"""ITU-T V.27ter modem for fax: 4800 bit/s (8-phase, 1600 baud) and 2400 bit/s (4-phase, 1200 baud)
differential PSK on an 1800 Hz carrier (V.27ter §2-§4).

Transmitter :class:`V27terTx`: the long training sequence of V.27ter Table 3 without the talker
echo protection (segment 1, unmodulated carrier, and segment 2, silence, are not sent; T.30 does not
use them): 50 symbols of continuous 180 degree phase reversals, 1074 symbols of the equaliser
conditioning pattern (0 or 180 degree phase changes, one per three bits of the scrambler fed with
ones, from its initial state 0011110), 8 symbols of scrambled binary ones at the data rate, then the
data, then a trailer of 32 symbols of scrambled ones.  Data are scrambled with 1 + x^-6 + x^-7 and
its guard against repetitive patterns, and coded as phase changes (Table 1: tribits at 4800 bit/s;
Table 2: dibits at 2400 bit/s).

Receiver :class:`V27terRxBank` (``n`` channels) and :class:`V27terRx` (one), built on
:class:`ums.softfax_g711.qam.QamRxBank`: carrier detect; on the reversals a feed-forward symbol timing
estimate (the Gardner loop alone is slow to leave its unstable point, and there are only 50 of
them), then the carrier frequency and phase at the first symbol that does not turn; equaliser
training on the conditioning pattern; a check on its last 64 symbols and on the 8 symbols of ones
(whose bits are not output); then data bits, decoded and descrambled block-wise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ums.softfax_g711.common import (
    SAMPLE_RATE,
    BitQueue,
    Bits,
    ModemStatus,
    RxOutput,
    Status,
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

__all__ = [
    "BAUD",
    "CARRIER_HZ",
    "RATES",
    "V27terRx",
    "V27terRxBank",
    "V27terTx",
    "guard_descramble",
    "guard_scramble",
    "training_phases",
]

CARRIER_HZ = 1800.0
RATES = (4800, 2400)
BAUD = {4800: 1600, 2400: 1200}
BITS_PER_SYMBOL = {4800: 3, 2400: 2}
SCRAMBLER_TAPS = (6, 7)

#: Table 3 segment lengths (symbols), without the echo protection segments 1 and 2.
SEG_REVERSALS = 50
SEG_CONDITIONING = 1074
SEG_ONES = 8
#: Scrambled ones sent after the data (V.27ter defines no turn-off sequence for this use).
TRAILER = 32

#: Output bits kept as scrambler history: delays 6 and 7 (the polynomial), 8, 9 and 12 (the guard).
HISTORY = 12
#: The guard inverts the next output bit after this many bits that each repeat the bit 8, 9 or 12
#: places before.
GUARD_COUNT = 33
#: Scrambler state at the start of segment 4 (Table 3): the seven stages hold 0011110.  History is
#: oldest first, so the bit sent 7 bits ago comes first.
_INITIAL_HISTORY = np.array([0] * (HISTORY - 7) + [0, 1, 1, 1, 1, 0, 0], dtype=np.uint8)

# Table 1 (4800 bit/s): phase change in 45 degree steps for the tribit read as a binary number,
# first bit most significant: 000 -> 45, 001 -> 0, 010 -> 90, 011 -> 135, 100 -> 270, 101 -> 315,
# 110 -> 225, 111 -> 180 degrees.
_STEP_4800 = np.array([1, 0, 2, 3, 6, 7, 5, 4], dtype=np.int64)
# Table 2 (2400 bit/s): 00 -> 0, 01 -> 90, 10 -> 270, 11 -> 180 degrees (in 45 degree steps).
_STEP_2400 = np.array([0, 2, 6, 4], dtype=np.int64)
_INV_4800 = np.argsort(_STEP_4800)
_INV_2400 = np.zeros(8, dtype=np.int64)
_INV_2400[_STEP_2400] = np.arange(4)

#: Unit-circle points, index = absolute phase in 45 degree steps.
POINTS: npt.NDArray[np.complex128] = np.exp(1j * np.pi / 4.0 * np.arange(8))


# --------------------------------------------------------------------------------------------
# Scrambler with the repetitive-pattern guard


def _guard_condition(ext: npt.NDArray[np.uint8], start: int) -> npt.NDArray[np.bool_]:
    """For bits ``ext[start:]`` (``start >= HISTORY``): True where the bit differs from each of the
    bits 8, 9 and 12 places before, which resets the guard counter."""
    b = ext[start:]
    m = b.size
    d8 = ext[start - 8 : start - 8 + m]
    d9 = ext[start - 9 : start - 9 + m]
    d12 = ext[start - 12 : start - 12 + m]
    cond: npt.NDArray[np.bool_] = ((b ^ d8) & (b ^ d9) & (b ^ d12)).astype(np.bool_)
    return cond


def guard_scramble(
    bits: npt.ArrayLike, history: npt.NDArray[np.uint8], count: int
) -> tuple[Bits, npt.NDArray[np.uint8], int]:
    """V.27ter scrambler: ``1 + x^-6 + x^-7`` (:func:`common.scramble`) with the guard that inverts
    an output bit when each of the :data:`GUARD_COUNT` bits before it repeated the bit 8, 9 or 12
    places earlier.  ``history`` is the last :data:`HISTORY` output bits (oldest first), ``count``
    the guard counter; returns the output, the new history and the new counter.  Vectorised between
    guard actions (about one in several hundred bits of random data)."""
    x = np.asarray(bits, dtype=np.uint8).ravel()
    hist = np.asarray(history, dtype=np.uint8)[-HISTORY:]
    parts: list[Bits] = []
    pos = 0
    while pos < x.size:
        out, _ = scramble(x[pos:], hist[-SCRAMBLER_TAPS[1] :], SCRAMBLER_TAPS)
        ext = np.concatenate([hist, out])
        cond = _guard_condition(ext, HISTORY)
        i = np.arange(out.size)
        last_reset = np.maximum.accumulate(np.where(cond, i, -1 - count))
        run = i - last_reset  # counter after each bit, as long as the guard has not acted
        before = np.concatenate([[count], run[:-1]])
        fire = np.flatnonzero(before >= GUARD_COUNT)
        if fire.size == 0:
            parts.append(out)
            hist = ext[-HISTORY:].copy()
            count = int(run[-1])
            break
        f = int(fire[0])
        out = out[: f + 1].copy()
        out[f] ^= 1
        parts.append(out)
        hist = np.concatenate([hist, out])[-HISTORY:]
        count = 0
        pos += f + 1
    res = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    return res, hist, count


def guard_descramble(
    bits: npt.ArrayLike,
    history: npt.NDArray[np.uint8],
    count: npt.ArrayLike,
    lengths: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Inverse of :func:`guard_scramble` for a bank: ``bits`` shaped ``(n, m)`` (received line bits),
    ``history`` ``(n, HISTORY)`` (the last received bits, oldest first), ``count`` ``(n,)``.  The
    guard's counter depends on received bits only, so this has no loop: between two resets the
    counter runs modulo ``GUARD_COUNT + 1`` and the guard acts where it would reach it.  Returns the
    descrambled bits and the state after the first ``lengths[i]`` bits of each row (default: all)."""
    x = np.asarray(bits, dtype=np.uint8)
    n, m = x.shape
    hist = np.asarray(history, dtype=np.uint8)
    cnt0 = np.asarray(count, dtype=np.int64)
    ext = np.concatenate([hist, x], axis=1)
    a, b = SCRAMBLER_TAPS
    plain = x ^ ext[:, HISTORY - a : HISTORY - a + m] ^ ext[:, HISTORY - b : HISTORY - b + m]
    d8 = ext[:, HISTORY - 8 : HISTORY - 8 + m]
    d9 = ext[:, HISTORY - 9 : HISTORY - 9 + m]
    d12 = ext[:, HISTORY - 12 : HISTORY - 12 + m]
    cond = ((x ^ d8) & (x ^ d9) & (x ^ d12)).astype(np.bool_)
    i = np.arange(m)[None, :]
    last_reset = np.maximum.accumulate(np.where(cond, i, (-1 - cnt0)[:, None]), axis=1)
    run = (i - last_reset) % (GUARD_COUNT + 1)
    before = np.concatenate([cnt0[:, None], run[:, :-1]], axis=1)
    out = (plain ^ (before == GUARD_COUNT)).astype(np.uint8)
    ln = np.full(n, m, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    # counter after each row's last bit: column ln of [count, run]
    runs = np.concatenate([cnt0[:, None], run], axis=1)
    new_count = np.take_along_axis(runs, ln[:, None], axis=1)[:, 0].astype(np.int64)
    new_hist = np.take_along_axis(ext, ln[:, None] + np.arange(HISTORY)[None, :], axis=1)
    return out, new_hist.astype(np.uint8), new_count


def _conditioning() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], int]:
    """Segment 4 of Table 3: the phase change (0 or 4, in 45 degree steps) of each symbol, and the
    scrambler history and guard counter after it."""
    bits, hist, count = guard_scramble(np.ones(3 * SEG_CONDITIONING, dtype=np.uint8), _INITIAL_HISTORY, 0)
    steps = 4 * bits[0::3].astype(np.int64)
    return steps, hist, count


_COND_STEPS, _COND_HISTORY, _COND_COUNT = _conditioning()


def _encode(scrambled: Bits, bit_rate: int, state: int) -> tuple[npt.NDArray[np.int64], int]:
    """Scrambled bits (a whole number of symbols) to absolute phases (45 degree steps), Tables 1, 2;
    ``state`` is the phase of the previous symbol."""
    bps = BITS_PER_SYMBOL[bit_rate]
    g = scrambled.reshape(-1, bps).astype(np.int64)
    if bit_rate == 4800:
        step = _STEP_4800[g[:, 0] * 4 + g[:, 1] * 2 + g[:, 2]]
    else:
        step = _STEP_2400[g[:, 0] * 2 + g[:, 1]]
    phase = (state + np.cumsum(step)) % 8
    return phase, int(phase[-1]) if phase.size else state


def training_phases() -> npt.NDArray[np.int64]:
    """Absolute phases (45 degree steps) of segments 3 and 4 of Table 3, starting from phase 0."""
    rev = 4 * np.ones(SEG_REVERSALS, dtype=np.int64)
    return np.cumsum(np.concatenate([rev, _COND_STEPS])) % 8


# --------------------------------------------------------------------------------------------
# Transmitter


class V27terTx(BurstTx):
    """V.27ter transmitter: ``send`` bits, ``finish``, and pull samples with ``generate``.

    ``level_dbm0`` is the power of the whole signal (every symbol has the same energy).  If the
    queue runs dry before :meth:`finish`, scrambled ones are sent.  After the trailer the transmitter
    is :attr:`done` and :meth:`generate` pads with silence."""

    def __init__(self, bit_rate: int, *, level_dbm0: float = -10.0) -> None:
        if bit_rate not in RATES:
            raise ValueError(f"V.27ter has no {bit_rate} bit/s")
        self.bit_rate = bit_rate
        self._bps = BITS_PER_SYMBOL[bit_rate]
        self._baud = BAUD[bit_rate]
        self._mod = QamModulator(
            self._baud, CARRIER_HZ, level_dbm0=level_dbm0, ref_power=1.0, beta=0.5, span=6
        )
        self._train = training_phases()
        self._train_pos = 0
        self._ones_left = SEG_ONES
        self._trailer_left = TRAILER
        self._queue = BitQueue()
        self._finished = False
        self._hist = _COND_HISTORY.copy()
        self._count = _COND_COUNT
        self._state = int(self._train[-1])
        self._end_sample: int | None = None

    def _data_phases(self, bits: Bits) -> npt.NDArray[np.int64]:
        scr, self._hist, self._count = guard_scramble(bits, self._hist, self._count)
        phases, self._state = _encode(scr, self.bit_rate, self._state)
        return phases

    def _symbols(self, count: int) -> npt.NDArray[np.complex128]:
        out: list[npt.NDArray[np.complex128]] = []
        while count > 0:
            if self._train_pos < self._train.size:
                take = min(count, self._train.size - self._train_pos)
                out.append(POINTS[self._train[self._train_pos : self._train_pos + take]])
                self._train_pos += take
            elif self._ones_left:
                take = min(count, self._ones_left)
                out.append(POINTS[self._data_phases(np.ones(take * self._bps, dtype=np.uint8))])
                self._ones_left -= take
            elif self._queue.size or not self._finished:
                take = min(count, -(-self._queue.size // self._bps)) if self._queue.size else count
                out.append(POINTS[self._data_phases(self._queue.take(take * self._bps))])
            elif self._trailer_left:
                take = min(count, self._trailer_left)
                out.append(POINTS[self._data_phases(np.ones(take * self._bps, dtype=np.uint8))])
                self._trailer_left -= take
                if not self._trailer_left:
                    last = self._mod.symbols_in + sum(o.size for o in out) - 1
                    tail = (last + 2 * self._mod.span) * SAMPLE_RATE / self._baud
                    self._end_sample = math.ceil(tail) + 1
            else:
                take = count
                out.append(np.zeros(take, dtype=np.complex128))
            count -= take
        return np.concatenate(out) if out else np.zeros(0, dtype=np.complex128)


# --------------------------------------------------------------------------------------------
# Receiver

_IDLE, _ACQ, _TRAIN, _TRAIN_TEST, _ONES, _DATA = range(6)

#: Reversals checked (for coherence) before the first symbol of segment 4.
_MIN_REVERSALS = 8
#: Symbols of reversals left for timing to settle before the carrier is measured.
_SETTLE = 2
#: Feed-forward timing: symbols measured, smallest line (fraction of the power) taken as the
#: reversals, and the interval between checks while acquiring (symbols).
_OM_SYMBOLS = 8
_OM_MIN_LINE = 0.25
_RECHECK = 8
#: A run of this many symbols of the pattern means the timing is good enough: no re-check.
_RUN_OK = 4
#: Symbols at the end of segment 4 whose error decides whether training succeeded.
_TEST_LEN = 64
#: Equaliser step (times the equaliser length) while training, and in data mode.
_DELTA_TRAIN = 0.15
_DELTA_DATA = 0.01
#: Largest carrier offset accepted in training (Hz).
_MAX_OFFSET_HZ = 20.0
#: Mean squared error (unit circle) allowed at the end of segment 4 and in the ones, per rate.
_MAX_ERR = {4800: 0.125, 2400: 0.25}
_TRAIN_LAST_PHASE = int(training_phases()[-1])


def _constellation(bit_rate: int) -> npt.NDArray[np.complex128]:
    """Decision points; the code of a point times the step gives its phase in 45 degree steps."""
    return POINTS.copy() if bit_rate == 4800 else POINTS[0::2].copy()


class _Core(QamRxBank):
    """The receiver bank of one symbol rate (V.27ter uses 1600 baud at 4800 bit/s and 1200 baud at
    2400 bit/s); channels not at its rate are kept idle."""

    def __init__(self, n: int, bit_rate: int, cutoff_dbm0: float) -> None:
        cfg = QamRxConfig(
            baud=BAUD[bit_rate],
            carrier_hz=CARRIER_HZ,
            beta=0.5,
            on_dbm0=cutoff_dbm0 + 2.5,
            off_dbm0=cutoff_dbm0 - 2.5,
            eq_len=17,
            eq_pre=8,
            history=_MIN_REVERSALS + 1,
            max_targets=SEG_CONDITIONING,
        )
        super().__init__(n, cfg)
        self.bit_rate = bit_rate
        self.enabled = np.ones(n, dtype=np.bool_)
        #: Whether CARRIER_UP was reported (so that CARRIER_DOWN is reported only after it).
        self.up = np.zeros(n, dtype=np.bool_)
        #: Stream samples that went by while this core was not fed (for event sample numbers).
        self.offset = 0
        #: Per channel, the recorded symbols (of the current call) where a burst's ones begin.
        self.ones_start: list[list[int]] = [[] for _ in range(n)]
        phases = training_phases()
        self._known = POINTS[phases[SEG_REVERSALS - _MIN_REVERSALS + 1 : SEG_REVERSALS + 1]]
        self._targets = POINTS[phases[SEG_REVERSALS + 1 :]]
        points = _constellation(bit_rate)
        self._order = points.size
        # slicer tables, indexed by floor(phase * order / (2 pi) + order / 2 + 1/2) in [0, order]
        self._slice_codes = (np.arange(self._order + 1) - self._order // 2) % self._order
        self._slice_points = points[self._slice_codes]
        for ch in range(n):
            self.set_constellation(ch, points)

    def _trim(self) -> None:
        """Drop old baseband, but keep the :data:`_OM_SYMBOLS` symbols :meth:`_retime` reads behind
        the timing position, whatever the size of the blocks fed."""
        pos = self.st.pos
        self.st.pos = pos - (_OM_SYMBOLS + 1) * self.sps
        try:
            super()._trim()
        finally:
            self.st.pos = pos

    def slicer(
        self, st: QamRxState, z: npt.NDArray[np.complex128]
    ) -> tuple[npt.NDArray[np.complex128], npt.NDArray[np.int64]]:
        """Nearest PSK point, by phase: 8 points at 4800 bit/s, 4 (on the axes) at 2400 bit/s."""
        u = np.angle(z)
        u *= self._order / (2.0 * np.pi)
        u += self._order / 2 + 0.5
        i = u.astype(np.int64)
        return self._slice_points[i], self._slice_codes[i]

    def row_slicer(self, st: QamRxState, r: int) -> Callable[[complex], tuple[complex, int]]:
        """:meth:`slicer` for one symbol at a time."""
        points: list[complex] = self._slice_points.tolist()
        codes: list[int] = self._slice_codes.tolist()
        scale = self._order / (2.0 * np.pi)
        shift = self._order / 2 + 0.5
        atan2 = math.atan2

        def nearest(z: complex) -> tuple[complex, int]:
            i = int(atan2(z.imag, z.real) * scale + shift)
            return points[i], codes[i]

        return nearest

    # --- control, on rare events ------------------------------------------------------------

    def _listen(self, st: QamRxState, r: int) -> None:
        """(Re)start looking for the reversals (after a false start or a failed training while the
        carrier stays on)."""
        self.reset_channel(st, r)
        self.track_agc(st, r, True)
        st.stage[r] = _ACQ
        self._acquire(st, r, settle=0)

    def _acquire(self, st: QamRxState, r: int, settle: int) -> None:
        self._retime(st, r)
        self.start_acquisition(st, r, settle=settle, break_deg=90.0, centre=1.0)
        st.t_kp[r] = 0.15
        st.t_ki[r] = 0.002
        st.countdown[r] = _RECHECK

    def _retime(self, st: QamRxState, r: int) -> bool:
        """Feed-forward symbol timing while acquiring, from the matched filter output of the last
        few symbols just behind the timing position (which every way of cutting the input has
        delivered).  Its square has a line at the symbol rate whose phase gives the symbol instants
        (Oerder and Meyr); on the reversals the line is strong, and the timing moves to it if that
        is worth it.  Returns whether the timing moved."""
        ch = int(st.chan[r])
        sps = self.sps
        hi = math.floor(st.pos[r]) - self._ihalf - self._bb_start
        lo = hi - round(_OM_SYMBOLS * sps)
        if lo < 0:
            return False
        y = self._bb[ch, lo:hi]
        p2 = y.real**2 + y.imag**2
        t = np.arange(lo, hi) + self._bb_start
        line = complex(np.sum(p2 * np.exp(-2j * np.pi * t / sps)))
        if abs(line) <= _OM_MIN_LINE * float(np.sum(p2)):
            return False
        # symbol instants at t = phi * sps (mod sps); move pos to the nearest one
        phi = -np.angle(line) / (2.0 * np.pi)
        shift = (phi * sps - st.pos[r]) % sps
        if shift > sps / 2.0:
            shift -= sps
        if abs(shift) < 0.1 * sps:
            return False
        st.pos[r] += shift
        st.x_prev[r] = 0.0
        return True

    def on_event(self, st: QamRxState, r: int, event: BankEvent, payload: float) -> None:
        ch = int(st.chan[r])
        stage = int(st.stage[r])
        if not self.enabled[ch]:
            if stage != _IDLE:
                self.reset_channel(st, r)
            return
        if event is BankEvent.CARRIER_UP:
            self.emit(st, r, Status.CARRIER_UP)
            self.up[ch] = True
            self.reset_channel(st, r)
            self.track_agc(st, r, True)
            st.stage[r] = _ACQ
        elif event is BankEvent.AGC and stage == _ACQ:
            self.set_agc(st, r, payload)
            if not st.acq[r]:
                self._acquire(st, r, settle=_SETTLE)
        elif event is BankEvent.CARRIER_DOWN:
            if self.up[ch]:
                self.emit(st, r, Status.CARRIER_DOWN)
            self.up[ch] = False
            self.reset_channel(st, r)
            st.stage[r] = _IDLE
        elif event is BankEvent.PATTERN_BREAK and stage == _ACQ:
            if not self._start_training(st, r):
                self._listen(st, r)
        elif event is BankEvent.COUNTDOWN and st.countdown[r] != 0:
            pass  # re-armed by an earlier event of the same symbol
        elif event is BankEvent.COUNTDOWN and stage == _ACQ:
            # while the reversals are not (yet) seen, check the timing now and then
            if st.acq_run[r] < _RUN_OK and self._retime(st, r):
                self.start_acquisition(st, r, settle=2, break_deg=90.0, centre=1.0)
            st.countdown[r] = _RECHECK
        elif event is BankEvent.COUNTDOWN:
            self._countdown(st, r, stage)

    def _countdown(self, st: QamRxState, r: int, stage: int) -> None:
        limit = _MAX_ERR[self.bit_rate]
        if stage == _TRAIN:
            st.stage[r] = _TRAIN_TEST
            st.err_acc[r] = 0.0
            st.err_n[r] = 0
            st.countdown[r] = _TEST_LEN
            st.c_kp[r] = 0.05
            st.c_ki[r] = 0.0005
        elif stage == _TRAIN_TEST:
            if st.err_acc[r] / max(int(st.err_n[r]), 1) < limit:
                st.stage[r] = _ONES
                st.use_target[r] = False
                st.record[r] = True
                self.ones_start[int(st.chan[r])].append(int(st.nrec[r]))
                st.err_acc[r] = 0.0
                st.err_n[r] = 0
                st.countdown[r] = SEG_ONES
                st.mu[r] = _DELTA_DATA / self.cfg.eq_len
            else:
                self.emit(st, r, Status.TRAINING_FAILED)
                self._listen(st, r)
        elif stage == _ONES:
            if st.err_acc[r] / max(int(st.err_n[r]), 1) < limit:
                st.stage[r] = _DATA
                self.emit(st, r, Status.TRAINING_SUCCEEDED)
                self.save_equalizer(st, r)
                st.t_kp[r] = 0.02
                st.t_ki[r] = 0.0001
            else:
                st.record[r] = False
                self.emit(st, r, Status.TRAINING_FAILED)
                self._listen(st, r)

    def _start_training(self, st: QamRxState, r: int) -> bool:
        """At the first symbol of segment 4 (no phase change after the reversals): check that
        reversals came before it, measure the carrier and start training.  False for a false
        start."""
        counted = int(st.acq_n[r] - st.settle[r])
        if counted < _MIN_REVERSALS:
            return False
        h = st.hist[r]
        rev = h[-_MIN_REVERSALS:-1] * np.conj(h[-_MIN_REVERSALS - 1 : -2])
        if float(np.abs(np.sum(rev))) < 0.8 * float(np.sum(np.abs(rev))) or np.sum(rev).real >= 0.0:
            return False
        omega = self.acquisition_frequency(st, r)
        if abs(omega) * self.cfg.baud / (2 * math.pi) > _MAX_OFFSET_HZ:
            return False
        # hold the gain from here on, scaled so that the symbols have unit amplitude
        self.track_agc(st, r, False)
        amp = float(np.mean(np.abs(h[-_MIN_REVERSALS:])))
        self.set_agc(st, r, float(st.agc[r]) / max(amp, 1e-9))
        snr = self.align_carrier(st, r, self._known, omega)
        if snr < 2.0:
            return False
        self.emit(st, r, Status.TRAINING_IN_PROGRESS)
        self.load_targets(st, r, self._targets)
        st.stage[r] = _TRAIN
        st.countdown[r] = self._targets.size - _TEST_LEN
        st.mu[r] = _DELTA_TRAIN / self.cfg.eq_len
        st.c_kp[r] = 0.2
        st.c_ki[r] = 0.005
        st.t_kp[r] = 0.05
        st.t_ki[r] = 0.0005
        return True


class V27terRxBank:
    """A bank of ``n`` V.27ter receivers stepping together.

    The carrier is declared on above ``cutoff_dbm0 + 2.5`` dB and off below ``cutoff_dbm0 - 2.5``
    dB.  After CARRIER_UP the receiver looks for the reversals of segment 3; a false start (noise)
    is dropped silently.  Training succeeds when the error at the end of segment 4 and over the 8
    symbols of scrambled ones is small; a failed training is reported and the receiver listens
    again while the carrier lasts.  Signals that are not V.27ter at this rate (V.21, V.29, V.17,
    tones, V.27ter at the other rate) bring only CARRIER_UP and CARRIER_DOWN.

    Channels may be switched between 4800 and 2400 bit/s with :meth:`restart`: the bank keeps one
    receiver core per symbol rate (1600 and 1200 baud), made when first needed and fed only while
    some channel uses it."""

    def __init__(self, n: int, bit_rate: int, *, cutoff_dbm0: float = -48.0) -> None:
        if bit_rate not in RATES:
            raise ValueError(f"V.27ter has no {bit_rate} bit/s")
        self.n = n
        self.cutoff_dbm0 = cutoff_dbm0
        self.bit_rates = [bit_rate] * n
        self._cores: dict[int, _Core] = {bit_rate: _Core(n, bit_rate, cutoff_dbm0)}
        self._samples = 0
        self._phase = np.full(n, _TRAIN_LAST_PHASE, dtype=np.int64)
        self._hist = np.tile(_COND_HISTORY, (n, 1))
        self._count = np.full(n, _COND_COUNT, dtype=np.int64)

    def restart(self, channel: int, bit_rate: int) -> None:
        """Reset ``channel`` to wait for a new burst at ``bit_rate``."""
        if bit_rate not in RATES:
            raise ValueError(f"V.27ter has no {bit_rate} bit/s")
        self.bit_rates[channel] = bit_rate
        if bit_rate not in self._cores:
            core = _Core(self.n, bit_rate, self.cutoff_dbm0)
            core.enabled[:] = False
            core.offset = self._samples
            self._cores[bit_rate] = core
        for rate, core in self._cores.items():
            core.enabled[channel] = rate == bit_rate
            core.up[channel] = False
            core.restart_channel(channel)

    def receive(self, samples: npt.ArrayLike, missing: npt.ArrayLike | None = None) -> list[RxOutput]:
        """Feed ``(n, m)`` int16 samples (any ``m``); one :class:`RxOutput` per channel.  Channels
        flagged in ``missing`` (shape ``(n,)``) lost this block (see :meth:`QamRxBank.process`)."""
        x = np.asarray(samples)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"samples must be shaped ({self.n}, m)")
        outs = [RxOutput() for _ in range(self.n)]
        for rate, core in self._cores.items():
            if not core.enabled.any():
                core.offset += x.shape[1]
                continue
            res = core.process(x, missing)
            self._bits(core, res, outs, rate)
        self._samples += x.shape[1]
        return outs

    def _bits(self, core: _Core, res: BlockResult, outs: list[RxOutput], rate: int) -> None:
        """Decisions to data bits: differential phase decoding (Tables 1, 2) and descrambling,
        vectorised across the channels; only the data stage is output.  The phase reference and the
        descrambler start from the state segment 4 leaves at the first of the 8 symbols of ones."""
        n, width = res.codes.shape
        if not width:
            self._events(core, res, outs, [0] * n, 0)
            return
        bps = BITS_PER_SYMBOL[rate]
        counts = res.counts
        marked = [ch for ch, marks in enumerate(core.ones_start) if marks]
        start = np.zeros((n, width), dtype=np.bool_)
        for ch in marked:
            for mark in core.ones_start[ch]:
                if mark < counts[ch]:
                    start[ch, mark] = True
        phase = res.codes * (1 if rate == 4800 else 2)
        prev = np.concatenate([self._phase[:, None], phase[:, :-1]], axis=1)
        if marked:
            prev = np.where(start, _TRAIN_LAST_PHASE, prev)
        step = (phase - prev) % 8
        last = np.take_along_axis(phase, np.maximum(counts - 1, 0)[:, None], axis=1)[:, 0]
        self._phase = np.where(counts > 0, last, self._phase)
        if rate == 4800:
            v = _INV_4800[step]
            raw = np.stack([(v >> 2) & 1, (v >> 1) & 1, v & 1], axis=2)
        else:
            v = _INV_2400[step]
            raw = np.stack([(v >> 1) & 1, v & 1], axis=2)
        plain = self._descramble(raw.reshape(n, width * bps).astype(np.uint8), start, counts, bps)
        # a burst whose ones begin after this call's last symbol: keep the mark for the next call
        for ch in marked:
            done = int(counts[ch])
            core.ones_start[ch] = [m - done for m in core.ones_start[ch] if m >= done]
        # only the data stage is output; symbols past a row's count are not data either
        is_data = res.stages == _DATA
        is_data &= np.arange(width)[None, :] < counts[:, None]
        ndata = is_data.sum(axis=1).tolist()
        cnts = counts.tolist()
        for ch in np.flatnonzero(core.enabled & (counts > 0)).tolist():
            cnt = cnts[ch]
            if ndata[ch] == cnt:
                outs[ch].bits = plain[ch, : cnt * bps]
            elif ndata[ch]:
                outs[ch].bits = plain[ch, : cnt * bps][np.repeat(is_data[ch, :cnt], bps)]
        self._events(core, res, outs, ndata, bps, is_data)

    @staticmethod
    def _events(
        core: _Core,
        res: BlockResult,
        outs: list[RxOutput],
        ndata: list[int],
        bps: int,
        is_data: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """Statuses, placed among the data bits output."""
        for ch, evs in enumerate(res.events):
            if not evs or not core.enabled[ch]:
                continue
            if is_data is None or ndata[ch] == 0:
                before = np.zeros(1 + max(sym for sym, _, _ in evs), dtype=np.int64)
            else:
                before = np.concatenate([[0], np.cumsum(is_data[ch])]) * bps
            for sym, status, sample in evs:
                outs[ch].events.append(ModemStatus(status, int(before[sym]), sample + core.offset))

    def _descramble(
        self,
        raw: npt.NDArray[np.uint8],
        start: npt.NDArray[np.bool_],
        counts: npt.NDArray[np.int64],
        bps: int,
    ) -> npt.NDArray[np.uint8]:
        """Descramble each row's first ``counts * bps`` bits; where a burst's ones begin
        (``start``) the descrambler takes the state that segment 4 leaves."""
        lengths = counts * bps
        resets = start.any(axis=1)
        if not resets.any():
            plain, self._hist, self._count = guard_descramble(raw, self._hist, self._count, lengths)
            return plain
        plain = np.zeros_like(raw)
        keep = np.flatnonzero(~resets)
        if keep.size:
            plain[keep], self._hist[keep], self._count[keep] = guard_descramble(
                raw[keep], self._hist[keep], self._count[keep], lengths[keep]
            )
        for ch in np.flatnonzero(resets):
            cuts = [0, *(np.flatnonzero(start[ch]) * bps).tolist(), int(lengths[ch])]
            h = self._hist[ch : ch + 1]
            c = self._count[ch : ch + 1]
            for j in range(len(cuts) - 1):
                if j:
                    h = _COND_HISTORY[None, :].copy()
                    c = np.array([_COND_COUNT], dtype=np.int64)
                lo, hi = cuts[j], cuts[j + 1]
                if hi > lo:
                    plain[ch, lo:hi], h, c = guard_descramble(raw[ch : ch + 1, lo:hi], h, c)
            self._hist[ch], self._count[ch] = h[0], c[0]
        return plain


class V27terRx:
    """One V.27ter receiver (a bank of one)."""

    def __init__(self, bit_rate: int, *, cutoff_dbm0: float = -48.0) -> None:
        self.bank = V27terRxBank(1, bit_rate, cutoff_dbm0=cutoff_dbm0)

    def receive(self, samples: npt.ArrayLike) -> RxOutput:
        """Feed int16 samples; returns the data bits and statuses."""
        x = np.asarray(samples).reshape(1, -1)
        return self.bank.receive(x)[0]

    def restart(self, bit_rate: int) -> None:
        """Wait for a new burst at ``bit_rate``."""
        self.bank.restart(0, bit_rate)
