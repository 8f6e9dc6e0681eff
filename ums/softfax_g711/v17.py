"""V.17 fax modem: 7200, 9600, 12000 and 14400 bit/s, trellis-coded QAM at 2400 baud on a 1800 Hz carrier.

What it does
    :class:`V17Tx` sends a burst: the training sequence of V.17 §7 (long or short), data bits, and a
    trailer.  :class:`V17RxBank` receives ``n`` independent channels stepping together;
    :class:`V17Rx` is a bank of one.

How it works
    Transmitter: data are scrambled (V.17 scrambler, 1 + x^-18 + x^-23), grouped into symbols, trellis coded
    and mapped (:mod:`.trellis`, V.17 §2), pulse shaped with a root raised cosine and modulated.
    Receiver: see :class:`V17RxBank`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .banks import first_rows
from .common import (
    FULL_SCALE,
    FULL_SCALE_DBM0,
    SAMPLE_RATE,
    BitQueue,
    Bits,
    ModemStatus,
    RxOutput,
    Status,
    scramble,
)
from .qam import BurstTx, QamModulator
from .trellis import (
    ABCD,
    GRID_HALF,
    GRID_N,
    GRID_STEP,
    RATES,
    TrellisEncoder,
    ViterbiBank,
    bits_per_symbol,
    constellation,
    decision_grid,
    rate_index,
)

__all__ = ["CARRIER_HZ", "V17Rx", "V17RxBank", "V17Tx", "training_symbols"]

Complex = npt.NDArray[np.complex128]

#: V.17: carrier frequency and modulation rate.
CARRIER_HZ = 1800.0
BAUD = 2400
#: V.17 scrambler taps (1 + x^-18 + x^-23).
SCRAMBLER_TAPS = (18, 23)

# V.17 §7 training segments, in symbols.
SEG1_LEN = 256
SEG2_LEN = 2976
SEG2_SHORT_LEN = 38
SEG3_LEN = 64
SEG4_LEN = 48
#: Trailer: scrambled binary ones, then silence while the pulse-shaping filter empties.
TRAILER_ONES = 32
TRAILER_SILENCE = 48
#: The scrambler's state at the start of segment 2 (newest output bit in bit 0).
TRAINING_SCRAMBLER_STATE = 0x2ECDD5
#: Segment 3: the bridge word, sent two bits a symbol from its least significant end.
BRIDGE_WORD = 0x8880
# Segment 2: scrambled dibit (first bit high) -> training point C, D, B, A; segment 3: dibit -> step.
_SEG2_POINTS = np.array([2, 3, 1, 0])
_BRIDGE_STEP = np.array([1, 0, 2, 3])

#: Transmit pulse: root raised cosine, roll-off 0.25 (300-3300 Hz), six symbols each side.
TX_BETA = 0.25
_TX_SPAN = 6
#: Mean power of the training points, the reference for the transmit level.
_REF_POWER = 40.0
#: Samples of the pulse's rising tail left out at the start of a short-train burst: the first symbol
#: is centred 20 samples into the modulator's output, so the burst starts 0.6 symbol before it.
#: (Against SpanDSP 0.0.6, starts at 17 or 18 samples pass the short train from -9 to -33 dBm0; 16
#: and 19..21 do not; SpanDSP's own transmitter fails it from -28 to -36 dBm0.)
_SHORT_START = 18


def scrambler_history(state: int) -> Bits:
    """A register value (newest output bit in bit 0) as the history array of :func:`common.scramble`."""
    return np.array([(state >> (22 - i)) & 1 for i in range(23)], dtype=np.uint8)


def training_symbols(short_train: bool = False) -> tuple[Complex, Bits]:
    """Segments 1 to 3 of the V.17 §7 training sequence, in the units of :func:`trellis.constellation`,
    and the scrambler history after them.  Segment 1: ABAB...; segment 2: scrambled ones as C, D, B, A;
    segment 3 (long train only): the bridge word, scrambled and sent as quarter-turn steps."""
    seg1 = ABCD[np.arange(SEG1_LEN) & 1]
    n2 = SEG2_SHORT_LEN if short_train else SEG2_LEN
    bits, hist = scramble(
        np.ones(2 * n2, dtype=np.uint8), scrambler_history(TRAINING_SCRAMBLER_STATE), SCRAMBLER_TAPS
    )
    seg2_idx = _SEG2_POINTS[bits[0::2].astype(np.int64) << 1 | bits[1::2]]
    parts = [seg1, ABCD[seg2_idx]]
    if not short_train:
        shifts = 2 * (np.arange(SEG3_LEN) & 7)
        word = np.stack([(BRIDGE_WORD >> shifts) & 1, (BRIDGE_WORD >> (shifts + 1)) & 1], axis=1).ravel()
        bits, hist = scramble(word.astype(np.uint8), hist, SCRAMBLER_TAPS)
        steps = _BRIDGE_STEP[bits[0::2].astype(np.int64) << 1 | bits[1::2]]
        parts.append(ABCD[(seg2_idx[-1] + np.cumsum(steps)) & 3])
    return np.concatenate(parts), hist


class V17Tx(BurstTx):
    """V.17 transmitter for one burst: training, the bits given to :meth:`send`, trailer.

    ``short_train`` sends the short training sequence (V.17 §7: segment 2 of 38 symbols, no
    segment 3), for a receiver that has trained on a long one.  Until :meth:`finish` is called, a
    transmitter short of data sends scrambled binary ones.  A short-train burst starts at the
    centre of its first symbol, without the pulse's rising tail.  :attr:`done` turns true when the trailer
    has been sent; :meth:`generate` gives silence after that.
    """

    def __init__(self, bit_rate: int, *, level_dbm0: float = -10.0, short_train: bool = False) -> None:
        self.bit_rate = bit_rate
        self.short_train = short_train
        self._k = bits_per_symbol(bit_rate)
        self._points = constellation(bit_rate)
        self._training, self._scrambler = training_symbols(short_train)
        self._training_pos = 0
        # Segment 4 starts the trellis coder: the convolutional encoder from the zero state, the
        # differential encoder from Y1 Y2 = 1 for a long train and 0 for a short one (as SpanDSP does;
        # a receiver ignores the first symbols of segment 4, so nothing depends on it).
        self._encoder = TrellisEncoder(1, diff=0 if short_train else 1)
        self._ones_left = SEG4_LEN
        self._queue = BitQueue()
        self._finished = False
        self._trailer_left = TRAILER_ONES
        self._silence_left = TRAILER_SILENCE
        self._mod = QamModulator(
            BAUD, CARRIER_HZ, level_dbm0=level_dbm0, ref_power=_REF_POWER, beta=TX_BETA, span=_TX_SPAN
        )
        self._end_sample: int | None = None
        if short_train:
            # A short burst starts at the centre of its first symbol rather than on the rising pulse
            # tail: a receiver that keeps its equaliser from the long train (SpanDSP) finds the
            # symbol timing from where its carrier detect fires, and a ramp puts that point at a
            # level-dependent place (SpanDSP 0.0.6 then failed the short train at -18..-20 dBm0).
            self._mod.push(self._symbols(self._mod.symbols_needed(_SHORT_START)))
            self._mod.pull(_SHORT_START)

    # -- data in --------------------------------------------------------------------------------

    def send(self, bits: npt.ArrayLike) -> None:
        """Queue data bits (0/1) for sending."""
        if self._finished:
            raise RuntimeError("send() after finish()")
        self._queue.push(bits)

    # -- symbols --------------------------------------------------------------------------------

    def _coded(self, bits: Bits) -> Complex:
        """Scramble ``bits`` (a multiple of the symbol size) and map them through the trellis code."""
        scrambled, self._scrambler = scramble(bits, self._scrambler, SCRAMBLER_TAPS)
        groups = scrambled.reshape(-1, self._k).astype(np.int64)
        words = np.sum(groups << np.arange(self._k), axis=1)
        return np.asarray(self._points[self._encoder.encode(words[None, :])[0]], dtype=np.complex128)

    def _symbols(self, count: int) -> Complex:
        parts: list[Complex] = []
        k = self._k
        while count > 0:
            if self._training_pos < self._training.size:
                take = min(count, self._training.size - self._training_pos)
                parts.append(self._training[self._training_pos : self._training_pos + take])
                self._training_pos += take
            elif self._ones_left:
                take = min(count, self._ones_left)
                parts.append(self._coded(np.ones(take * k, dtype=np.uint8)))
                self._ones_left -= take
            elif self._queue.size >= k or (self._finished and self._queue.size):
                take = min(count, -(-self._queue.size // k))
                bits = self._queue.take(take * k, fill=None)
                pad = np.ones(take * k - bits.size, dtype=np.uint8)  # a last partial symbol
                parts.append(self._coded(np.concatenate([bits, pad])))
            elif not self._finished:
                take = count  # starved: idle on scrambled ones
                parts.append(self._coded(np.ones(take * k, dtype=np.uint8)))
            elif self._trailer_left:
                take = min(count, self._trailer_left)
                parts.append(self._coded(np.ones(take * k, dtype=np.uint8)))
                self._trailer_left -= take
            else:
                take = count
                if self._silence_left:
                    used = min(take, self._silence_left)
                    self._silence_left -= used
                    if not self._silence_left:
                        end_symbol = self._mod.symbols_in + sum(p.size for p in parts) + used
                        self._end_sample = -(-end_symbol * SAMPLE_RATE // BAUD)
                parts.append(np.zeros(take, dtype=np.complex128))
            count -= take
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.complex128)

    # -- samples out ----------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Receiver

#: Samples per processing step (20 ms = 48 symbols), aligned to the start of the stream.
CHUNK = 160
_SPS = SAMPLE_RATE / BAUD  # 10/3 samples per symbol
#: Matched filter: root raised cosine (roll-off of the transmit pulse), 49 taps (causal), by FFT
#: over a window of the chunk and the 80 samples before it.
RX_BETA = 0.25
_RX_TAPS = 49
_RX_DELAY = (_RX_TAPS - 1) // 2
_HIST = 80
_WIN = CHUNK + _HIST
#: T/2 in samples; T/2 points in a window, and the first one belonging to the chunk.
_T2 = _SPS / 2.0
_GRID = _WIN * 3 // 5
_M0 = _HIST * 3 // 5
#: T/2 fractionally spaced equaliser: length and the centre (main) tap.
EQ_LEN = 33
EQ_CENTRE = 16
#: Carrier detect: power of the first difference over this many samples (carrier on), and over this
#: many (carrier off).
_POWER_WINDOW = 40
_OFF_WINDOW = 160
#: A power rise (ratio) that restarts a receiver that has not trained, and a drop that ends a carrier.
_RISE = 4.0
_DROP = 0.05

# Receiver stages.
_IDLE, _ACQ, _ABAB, _TRAIN, _DATA, _PARKED = range(6)

#: Segment 1: equaliser outputs ignored after acquisition, then outputs summed for the frequency
#: estimate before a phase reversal is believed; the longest wait for it.
_SETTLE = 10
_MIN_ABAB = 16
_MAX_ABAB = 320
_MAX_OFFSET_HZ = 20.0
#: Symbols used to fix the carrier phase and gain at the reversal.
_PHASE_FIT = 8
# Long train schedule, counted from the first symbol of segment 2 (q = 0).
_COARSE_END = SEG2_LEN - 2000
_TEST_START = SEG2_LEN - 48
_TEST_END = SEG2_LEN - 20
_BRIDGE_END = SEG2_LEN + SEG3_LEN
_SHORT_TEST_START = 9
#: Squared distance from the segment 2 point under which a symbol after a short segment 2 counts as
#: the long train's segment 2 going on.
_MATCH_ERR = 10.0
#: Equaliser steps (times 1/(EQ_LEN * input power)), carrier loop gains (radians per radian of
#: phase error), timing loop gains (per chunk).
_MU_FAST = 0.2
_MU_SLOW = 0.02
_MU_DATA = 0.002
_KP_TRAIN = 0.1
_KI_COARSE = 3e-4
_KI_FINE = 6e-5
_KP_DATA = 0.05
_KI_DATA = 6e-6
_KP_SHORT = 0.1
#: Data mode, updated once a step: phase gain per symbol of the step.
_KP_BLOCK = 0.005
_T_KP_ACQ = 0.3
_T_KI_ACQ = 0.02
_T_KP_TRAIN = 0.2
_T_KI_TRAIN = 0.01
_T_KP = 0.1
_T_KI = 0.003
#: The ones test: segment 4's descrambled bits from this symbol on (past the descrambler's 23 bits
#: of settling even at 7200 bit/s) may hold at most this fraction of zeros.
_ONES_FROM = 8
_ONES_ZEROS = 0.125
#: SpanDSP's pass marks: constellation spacing per rate (14400, 12000, 9600, 7200).
_SPACING = np.array([1.414, 2.0, 2.828, 4.0])

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_B = npt.NDArray[np.bool_]
_BITS = [bits_per_symbol(r) for r in RATES]


def _rx_filter() -> Complex:
    """The receive low-pass (applied after mixing to baseband) as a ``_WIN``-point spectrum."""
    t = (np.arange(_RX_TAPS) - _RX_DELAY) / _SPS
    b = RX_BETA
    h = np.empty(_RX_TAPS)
    for i, x in enumerate(t):
        if abs(x) < 1e-12:
            h[i] = 1.0 - b + 4.0 * b / np.pi
        elif abs(abs(4.0 * b * x) - 1.0) < 1e-12:
            h[i] = (b / np.sqrt(2.0)) * (
                (1.0 + 2.0 / np.pi) * np.sin(np.pi / (4.0 * b))
                + (1.0 - 2.0 / np.pi) * np.cos(np.pi / (4.0 * b))
            )
        else:
            h[i] = (np.sin(np.pi * x * (1.0 - b)) + 4.0 * b * x * np.cos(np.pi * x * (1.0 + b))) / (
                np.pi * x * (1.0 - (4.0 * b * x) ** 2)
            )
    h *= np.kaiser(_RX_TAPS, 4.0)
    h /= np.sum(h)
    return np.asarray(np.fft.fft(h, _WIN), dtype=np.complex128)


def _timing_bins() -> tuple[_I64, _I64, _F64]:
    """Window bins of the lower band edge (300 .. 900 Hz, i.e. 1500 .. 900 Hz below the carrier after
    mixing), the bins 2400 Hz above them, and weights for the products ``X(f) conj(X(f + 2400))``."""
    hz = SAMPLE_RATE / _WIN  # bin spacing
    k = np.arange(-int(1500.0 / hz), -int(np.ceil(900.0 / hz)) + 1)
    up = k + round(BAUD / hz)
    nu = np.abs(k * hz) / BAUD  # distance from the carrier, in baud
    edge = (1.0 - TX_BETA) / 2.0
    rc = np.where(nu <= edge, 1.0, 0.5 * (1.0 + np.cos(np.pi * (nu - edge) / TX_BETA)))
    rc = np.where(nu >= (1.0 + TX_BETA) / 2.0, 0.0, rc)
    weights = np.sqrt(rc * rc[::-1]) + 0.05
    return k % _WIN, up % _WIN, np.asarray(weights, dtype=np.float64)


def _decision_tables() -> tuple[Complex, _F64]:
    """Nearest-point grids for each rate (index 0..3) and for the training points (index 4), flat,
    with ``1 / |point|^2``."""
    grids = [decision_grid(constellation(r)) for r in RATES] + [decision_grid(ABCD)]
    flat = np.concatenate([g.ravel() for g in grids])
    return flat, 1.0 / (flat.real**2 + flat.imag**2)


_MIX = np.exp(-2j * np.pi * CARRIER_HZ / SAMPLE_RATE * np.arange(CHUNK))  # chunks start at 40 k
# The window spectrum folded to the T/2 grid: bins -72 .. 71 in inverse-FFT order, their filter
# response, and the phase slope of a delay (per sample).
_FOLD_K = np.concatenate([np.arange(_GRID // 2), np.arange(-_GRID // 2, 0)])
_FOLD_SRC = _FOLD_K % _WIN
_FOLD_H = _rx_filter()[_FOLD_SRC]
_FOLD_SLOPE = 2.0 * np.pi * _FOLD_K / _WIN
_EDGE_LO, _EDGE_HI, _TIMING_W = _timing_bins()
_LUT, _LUT_INV = _decision_tables()
_ABCD_SEL = len(RATES)
_TRAIN_LONG = training_symbols(False)[0][SEG1_LEN:]  # segments 2 and 3
_TRAIN_INV = 1.0 / (np.abs(_TRAIN_LONG) ** 2)
# ABAB...C: the symbols before and at the first symbol of segment 2, newest first.
_PHASE_REF = np.array([_TRAIN_LONG[0]] + [ABCD[1] if j % 2 else ABCD[0] for j in range(1, _PHASE_FIT)])


_NO_BITS: Bits = np.zeros(0, dtype=np.uint8)
_NO_BITS.flags.writeable = False
_Arr = TypeVar("_Arr", bound=npt.NDArray[Any])


def _clip(x: _Arr, lo: float, hi: float, out: _Arr | None = None) -> _Arr:
    """``np.clip(x, lo, hi)`` for numbers (the same values) without its Python overhead."""
    return np.minimum(np.maximum(x, lo, out=out), hi, out=out)  # type: ignore[no-any-return]


def _cis(x: _F64) -> Complex:
    """``exp(1j * x)`` for real ``x`` (the same values, from one cosine and one sine)."""
    out = np.empty(x.shape, dtype=np.complex128)
    np.cos(x, out=out.real)
    np.sin(x, out=out.imag)
    return out


def _dbm0_mean_square(dbm0: float) -> float:
    return float((FULL_SCALE * FULL_SCALE / 2.0) * 10.0 ** ((dbm0 - FULL_SCALE_DBM0) / 10.0))


class V17RxBank:
    """A bank of ``n`` V.17 receivers stepping together (every state is an array with a row per
    channel).  Input is processed in 20 ms steps aligned to the start of the stream, so the result
    does not depend on how the samples are cut into blocks.

    How it works, per step, for every channel at once:

    * carrier detect on the power of the first difference, on above ``cutoff_dbm0 - 0.5`` dB over
      40 samples, off below ``cutoff_dbm0 - 2.5`` dB over 40 and 160 samples (V.17 signal detector:
      on above -43 dBm0, off below -48 dBm0 for the default cutoff); a receiver that has not trained
      restarts when the power rises 6 dB above what raised the carrier (noise before a burst);
    * mixing to baseband and one FFT of the step and the 80 samples before it: the root-raised-cosine
      matched filter, a fractional delay and the resampling onto the T/2 grid are a product in the
      frequency domain and a 144-point inverse FFT;
    * symbol timing from the band edges of the same spectrum: ``sum X(f) conj(X(f + 2400 Hz))`` points
      at the symbol phase (the cyclic spectrum at the symbol rate); a PI loop per step moves the T/2
      grid, skipping or repeating a T/2 sample when it crosses one;
    * a 33-tap T/2 fractionally spaced equaliser, computed for the whole step when it is not adapting.

    While the known training symbols are being received, one loop per symbol (vectorised across
    channels) runs the carrier PI loop and the LMS update of the equaliser.  In data mode the carrier
    loop runs on the nearest signal point (a lookup grid, so the loop delay stays low) for the whole
    step at once and is updated at its end, as is a slow decision-directed update of the equaliser.
    The trellis-coded symbols then go through the Viterbi decoder (:class:`.trellis.ViterbiBank`),
    the differential decoder and the descrambler, block-wise.

    Training (V.17 §7): segment 1 (ABAB) sets the gain and gives the carrier frequency from
    ``y[k] conj(y[k-2])``; the phase reversal into segment 2 fixes the carrier phase; segment 2 trains
    the equaliser (fast, then slow) and the carrier loop on the known scrambled CDBA; the bridge
    (segment 3) is tracked on decisions; the 48 trellis-coded symbols of scrambled ones of segment 4
    are checked against the constellation (the pass marks are SpanDSP's) and, decoded and
    descrambled, must be ones (a receiver set to another bit rate fails here).  A short train restores the
    equaliser, gain and carrier frequency kept from the last successful long train and tracks the
    carrier on its 38 symbols of segment 2; if segment 2 goes on, the receiver takes it as a long
    train.  After a burst the channel expects a short train if it has trained before.

    Lost samples (a G.711 packet that never came: :meth:`fillin`, or ``missing`` in :meth:`receive`)
    are bridged: the carrier and the symbol clock run on, the loops hold still.

    :meth:`receive_first` steps only the first rows (see :func:`.banks.first_rows`).
    """

    #: Every array attribute is per channel (see :mod:`.banks`).
    _BANK_SHARED: frozenset[str] = frozenset()

    def __init__(self, n: int, bit_rate: int, *, cutoff_dbm0: float = -45.5) -> None:
        self.n = n
        self._rate = np.full(n, rate_index(bit_rate), dtype=np.int64)
        self._short = np.zeros(n, dtype=np.bool_)
        self._trained = np.zeros(n, dtype=np.bool_)
        self._on_ms = _dbm0_mean_square(cutoff_dbm0 - 0.5)
        self._off_ms = _dbm0_mean_square(cutoff_dbm0 - 2.5)
        self._sample = 0
        self._pending = np.zeros((n, 0), dtype=np.float64)
        self._pending_miss = np.zeros((n, 0), dtype=np.bool_)
        # lost samples: in this step or the last (so in the filter window), and at the end of the last
        self._live = np.ones(n, dtype=np.bool_)
        self._miss_last = np.zeros(n, dtype=np.bool_)
        self._miss_tail = np.zeros(n, dtype=np.bool_)
        # carrier detect
        self._last_x = np.zeros(n)
        self._d2_hist = np.zeros((n, _OFF_WINDOW - 1))
        self._d2_gain = 4.0 * np.sin(np.pi * CARRIER_HZ / SAMPLE_RATE) ** 2
        self.carrier_on = np.zeros(n, dtype=np.bool_)
        self._ref_ms = np.zeros(n)
        self._ref_age = np.zeros(n, dtype=np.int64)
        self._floor_ms = np.zeros(n)
        self._level = np.zeros(n)
        self._steady = np.zeros(n, dtype=np.bool_)
        # front end
        self._mix_hist = np.zeros((n, _HIST), dtype=np.complex128)
        # timing: the T/2 grid of the window is at m * T/2 + phi (samples from its start); on-time
        # samples have m of parity ``_par``; this chunk's samples start at ``_mlo``; a T/2 sample may
        # be left over from the last chunk.
        self._phi = np.zeros(n)
        self._par = np.zeros(n, dtype=np.int64)
        self._mlo = np.full(n, _M0, dtype=np.int64)
        self._left = np.zeros(n, dtype=np.complex128)
        self._has_left = np.zeros(n, dtype=np.int64)
        self._nu = np.zeros(n)
        self._tmag = np.ones(n)
        self._t_kp = np.zeros(n)
        self._t_ki = np.zeros(n)
        self._gain = np.ones(n)
        self._gain_saved = np.ones(n)
        # equaliser
        self._w = np.zeros((n, EQ_LEN), dtype=np.complex128)
        self._w_saved = np.zeros((n, EQ_LEN), dtype=np.complex128)
        self._eqhist = np.zeros((n, EQ_LEN - 1), dtype=np.complex128)
        self._mu_scale = np.ones(n)
        # carrier
        self._theta = np.zeros(n)
        self._omega = np.zeros(n)
        self._omega_saved = np.zeros(n)
        # stages
        self._stage = np.full(n, _IDLE, dtype=np.int64)
        self._q = np.zeros(n, dtype=np.int64)
        self._abab_n = np.zeros(n, dtype=np.int64)
        self._facc = np.zeros(n, dtype=np.complex128)
        self._yhist = np.zeros((n, _PHASE_FIT), dtype=np.complex128)
        self._err = np.zeros(n)
        self._match = np.zeros(n, dtype=np.int64)
        # decoding
        self._viterbi = ViterbiBank(n, bit_rate)
        self._descramble_hist = np.zeros((n, SCRAMBLER_TAPS[1]), dtype=np.uint8)
        self._ones_seen = np.zeros(n, dtype=np.int64)
        self._ones_zero = np.zeros(n, dtype=np.int64)
        # per call
        self._out_bits: list[tuple[npt.NDArray[np.uint8], _I64]] = []
        self._out_events: list[tuple[int, Status, int, int]] = []
        self._bit_count = np.zeros(n, dtype=np.int64)

    # ---------------------------------------------------------------------------------------

    def restart(self, channel: int, bit_rate: int, short_train: bool = False) -> None:
        """Listen on ``channel`` for a new burst at ``bit_rate``.  ``short_train`` expects the short
        training sequence: the equaliser, gain and carrier frequency of the last successful long
        train are reused (a channel that never trained expects a long one)."""
        self._rate[channel] = rate_index(bit_rate)
        self._short[channel] = bool(short_train) and bool(self._trained[channel])
        self._stage[channel] = _IDLE
        self.carrier_on[channel] = False
        self._floor_ms[channel] = 0.0  # a signal already there counts as a new carrier

    @property
    def bit_rates(self) -> list[int]:
        """Each channel's bit rate."""
        return [RATES[int(r)] for r in self._rate]

    def receive(self, samples: npt.ArrayLike, missing: npt.ArrayLike | None = None) -> list[RxOutput]:
        """Feed samples shaped ``(n, m)`` (any ``m``); one :class:`RxOutput` per channel.

        ``missing`` (booleans shaped like ``samples``) marks samples that were lost (a G.711 packet
        that never came): their values are ignored, and the channel fills them in as
        :meth:`fillin` does."""
        x = np.asarray(samples)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"samples must be shaped ({self.n}, m)")
        if missing is None:
            miss = np.zeros(x.shape, dtype=np.bool_)
        else:
            miss = np.asarray(missing, dtype=np.bool_)
            if miss.shape != x.shape:
                raise ValueError("missing must be shaped like samples")
        buf = np.concatenate([self._pending, np.where(miss, 0.0, x.astype(np.float64))], axis=1)
        mbuf = np.concatenate([self._pending_miss, miss], axis=1)
        whole = (buf.shape[1] // CHUNK) * CHUNK
        self._out_bits = []
        self._out_events = []
        self._bit_count[:] = 0
        for start in range(0, whole, CHUNK):
            m = mbuf[:, start : start + CHUNK]
            self._chunk(buf[:, start : start + CHUNK], m if m.any() else None)
        self._pending = buf[:, whole:]
        self._pending_miss = mbuf[:, whole:]
        return self._collect()

    def receive_first(self, samples: npt.ArrayLike, missing: npt.ArrayLike | None = None) -> list[RxOutput]:
        """:meth:`receive` for the first ``k`` channels, ``samples`` (and ``missing``) shaped ``(k, m)``
        with ``m`` a multiple of 160; one output per fed channel.  The other channels are not stepped:
        they stay as they are, as receivers that are not fed, and cost no time (see
        :func:`.banks.first_rows`)."""
        x = np.asarray(samples)
        if x.ndim != 2 or not 0 < x.shape[0] <= self.n or x.shape[1] % CHUNK:
            raise ValueError(
                f"samples must be shaped (k, m) with 0 < k <= {self.n} and m a multiple of {CHUNK}"
            )
        if self._pending.shape[1]:
            raise ValueError("receive_first after a block that was not a multiple of 160 samples")
        with first_rows(self, x.shape[0]):
            return self.receive(x, missing)

    def fillin(self, n_samples: int) -> list[RxOutput]:
        """``n_samples`` lost samples on every channel (for some channels only: ``missing`` of
        :meth:`receive`).

        A gap is bridged rather than heard as the end of the carrier (as SpanDSP's ``v17_rx_fillin``
        does): the carrier detector holds its state, the carrier phase and the symbol clock run on at
        their tracked frequencies, and the carrier, timing and equaliser loops stop adapting until
        the gap has left the filters.  The symbols in the gap are decided all the same, so the bit
        count stays in step with the sender; their bits are wrong."""
        miss = np.ones((self.n, max(0, int(n_samples))), dtype=np.bool_)
        return self.receive(np.zeros(miss.shape, dtype=np.int16), miss)

    def _collect(self) -> list[RxOutput]:
        outs = [RxOutput(_NO_BITS, []) for _ in range(self.n)]
        if len(self._out_bits) == 1:  # one step: each channel's bits are the start of its row
            bits, count = self._out_bits[0]
            for ch, c in enumerate(count.tolist()):
                if c:
                    outs[ch].bits = bits[ch, :c].copy()
        elif self._out_bits:
            bits = np.concatenate([b for b, _ in self._out_bits], axis=1)
            valid = np.concatenate(
                [np.arange(b.shape[1])[None, :] < c[:, None] for b, c in self._out_bits], axis=1
            )
            for ch in np.nonzero(valid.any(axis=1))[0].tolist():
                outs[ch].bits = bits[ch][valid[ch]]
        for ch, status, bit_index, sample in self._out_events:
            outs[ch].events.append(ModemStatus(status, bit_index, sample))
        return outs

    def _event(self, ch: int, status: Status, sample: int) -> None:
        self._out_events.append((ch, status, int(self._bit_count[ch]), int(sample)))

    # ---------------------------------------------------------------------------------------

    def _chunk(self, x: _F64, miss: _B | None) -> None:
        s0 = self._sample
        self._sample += CHUNK
        ups, downs, rises = self._detect(x, miss)
        gap: _B = np.zeros(self.n, dtype=np.bool_) if miss is None else np.asarray(miss.any(axis=1))
        self._live = ~(gap | self._miss_last)
        self._miss_last = gap
        xm = x * _MIX
        window = np.concatenate([self._mix_hist, xm], axis=1)
        self._mix_hist = window[:, CHUNK:]
        spectrum = np.fft.fft(window, axis=1)
        phasor = np.add.reduce(_TIMING_W * spectrum[:, _EDGE_LO] * np.conj(spectrum[:, _EDGE_HI]), axis=1)

        # Acquire on the first step after carrier detect whose power is within 3 dB of the step before.
        acquire = np.nonzero((self._stage == _ACQ) & self._steady & self._live)[0]
        for ch in np.nonzero(ups >= 0)[0].tolist():
            if self._stage[ch] == _IDLE:
                self._stage[ch] = _ACQ
                self._event(ch, Status.CARRIER_UP, s0 + int(ups[ch]))
        untrained = (self._stage == _ABAB) | (self._stage == _TRAIN) | (self._stage == _PARKED)
        for ch in np.nonzero((rises >= 0) & untrained)[0].tolist():
            # Much stronger than what raised the carrier: a new signal (the first was noise).
            self._event(ch, Status.CARRIER_DOWN, s0 + int(rises[ch]))
            self._event(ch, Status.CARRIER_UP, s0 + int(rises[ch]))
            self._stage[ch] = _ACQ
            self._q[ch] = -1
            self._ref_age[ch] = 0
            self._ref_ms[ch] = 0.0
        active = (self._stage == _ABAB) | (self._stage == _TRAIN) | (self._stage == _DATA)
        if acquire.size:
            self._acquire(acquire, phasor, s0)
        if active.any():
            self._track_timing(active, phasor)
        run = (self._stage == _ABAB) | (self._stage == _TRAIN) | (self._stage == _DATA)
        if run.any():
            self._symbols(run, spectrum, s0)
        for ch in np.nonzero(downs >= 0)[0].tolist():
            self._carrier_down(ch, s0 + int(downs[ch]))

    def _detect(self, x: _F64, miss: _B | None) -> tuple[_I64, _I64, _I64]:
        """Carrier on/off transitions in this chunk: sample offset per channel, or -1.

        On: the power over the last ``_POWER_WINDOW`` samples, and 6 dB over the weakest power (over
        ``_OFF_WINDOW``) since the carrier went off, so a decaying tail or a steady noise floor is not
        a new carrier.  Off: below the threshold over both windows (a data signal near the on
        threshold must not drop out, nor is a burst's start an end), or 13 dB under the strongest
        power since the carrier came up (a burst's end above the threshold, or the silence after
        talker echo protection).  Lost samples (``miss``) count as the power before them."""
        prev = np.concatenate([self._last_x[:, None], x[:, :-1]], axis=1)
        d2 = (x - prev) ** 2
        self._last_x = x[:, -1].copy()
        if miss is not None:
            bad = miss | np.concatenate([self._miss_tail[:, None], miss[:, :-1]], axis=1)
            d2 = np.where(bad, (self._level * self._d2_gain)[:, None], d2)
            self._miss_tail = miss[:, -1].copy()
        elif self._miss_tail.any():
            d2[:, 0] = np.where(self._miss_tail, self._level * self._d2_gain, d2[:, 0])
            self._miss_tail[:] = False
        full = np.concatenate([self._d2_hist, d2], axis=1)
        self._d2_hist = full[:, CHUNK:]
        csum = np.concatenate([np.zeros((self.n, 1)), np.cumsum(full, axis=1)], axis=1)
        h = self._d2_hist.shape[1]  # = _OFF_WINDOW - 1
        end = csum[:, h + 1 :]
        on_ms = (end - csum[:, h + 1 - _POWER_WINDOW : h + 1 - _POWER_WINDOW + CHUNK]) / (
            self._d2_gain * _POWER_WINDOW
        )
        off_ms = (end - csum[:, :CHUNK]) / (self._d2_gain * _OFF_WINDOW)
        floor = np.minimum.accumulate(np.concatenate([self._floor_ms[:, None], off_ms], axis=1), axis=1)
        above = (on_ms > self._on_ms) & (on_ms > _RISE * floor[:, :-1])
        gap = (on_ms < self._ref_ms[:, None] * _DROP) & (self._ref_age >= 1)[:, None]
        below = ((off_ms < self._off_ms) & (on_ms < self._off_ms)) | gap
        up_any = above.any(axis=1) & ~self.carrier_on
        down_any = below.any(axis=1) & self.carrier_on
        ups = np.where(up_any, above.argmax(axis=1), -1)
        downs = np.where(down_any, below.argmax(axis=1), -1)
        # A rise of 6 dB over the strongest power seen since the carrier came up (not counting the
        # step in which it did).
        jump = (on_ms > _RISE * self._ref_ms[:, None]) & (self._ref_age >= 1)[:, None]
        rises = np.where(
            np.logical_or.reduce(jump, axis=1) & self.carrier_on & ~down_any, jump.argmax(axis=1), -1
        )
        self.carrier_on = (self.carrier_on | up_any) & ~down_any
        after_down = np.where(np.arange(CHUNK)[None, :] >= downs[:, None], off_ms, np.inf)
        self._floor_ms = np.where(
            down_any, after_down.min(axis=1), np.where(self.carrier_on, np.inf, floor[:, -1])
        )
        level = np.add.reduce(on_ms, axis=1) / CHUNK  # the mean
        self._steady = (level < 2.0 * self._level) & (self._level < 2.0 * level)
        self._level = level
        self._ref_age = np.where(up_any, 0, self._ref_age + 1)
        self._ref_ms = np.where(self._ref_age >= 1, np.maximum(self._ref_ms, on_ms.max(axis=1)), 0.0)
        return ups, downs, rises

    # ---------------------------------------------------------------------------------------

    def _acquire(self, chans: _I64, phasor: Complex, s0: int) -> None:
        """First whole step of signal: symbol phase from the band edges, then segment 1."""
        for ch in chans.tolist():
            # Symbol centres (input time from any window start), then where they fall on the T/2 grid.
            tau = float(np.angle(phasor[ch])) / (2.0 * np.pi) * _SPS
            r = (tau + _RX_DELAY) % _SPS
            par = int(r >= _T2)
            self._par[ch] = par
            self._phi[ch] = r - par * _T2
            self._mlo[ch] = _M0 + int(_M0 % 2 == par)  # start on a half-symbol sample
            self._has_left[ch] = 0
            self._nu[ch] = 0.0
            self._tmag[ch] = max(abs(complex(phasor[ch])), 1e-9)
            self._t_kp[ch] = _T_KP_ACQ
            self._t_ki[ch] = _T_KI_ACQ
            self._stage[ch] = _ABAB
            self._abab_n[ch] = -1  # gain is set from the first symbols
            self._facc[ch] = 0.0
            self._eqhist[ch] = 0.0
            self._yhist[ch] = 0.0
            self._theta[ch] = 0.0
            self._q[ch] = -1
            if self._short[ch]:
                self._w[ch] = self._w_saved[ch]
                self._gain[ch] = self._gain_saved[ch]
                self._omega[ch] = self._omega_saved[ch]
            else:
                self._w[ch] = 0.0
                self._w[ch, EQ_CENTRE] = 1.0
                self._omega[ch] = 0.0

    def _track_timing(self, active: _B, phasor: Complex) -> None:
        """One step of the timing PI loop on the band-edge phasor; the T/2 grid moves by less than a
        sample a step, and when it crosses a whole T/2 a sample is skipped or taken twice."""
        expect = np.exp(-2j * np.pi * (self._par * _T2 + self._phi - _RX_DELAY) / _SPS)
        u = phasor * expect
        mag = np.abs(u)
        self._tmag = np.where(active, 0.9 * self._tmag + 0.1 * mag, self._tmag)
        err = u.imag / np.maximum(np.maximum(self._tmag, mag), 1e-9) * (_SPS / (2.0 * np.pi))
        err = np.where(active & self._live, err, 0.0)
        self._phi += np.where(active, self._t_kp * err + self._nu, 0.0)
        self._nu += self._t_ki * err
        later = self._phi >= _T2
        earlier = self._phi < 0.0
        self._phi = np.where(later, self._phi - _T2, np.where(earlier, self._phi + _T2, self._phi))
        self._par ^= (later | earlier).astype(np.int64)
        self._mlo = np.where(later, _M0 + 1, np.where(earlier, _M0 - 1, self._mlo))

    # ---------------------------------------------------------------------------------------

    def _symbols(self, run: _B, spectrum: Complex, s0: int) -> None:
        """This chunk's T/2 samples (band-limited resampling of the filtered window onto the T/2
        grid), paired into symbols, through the equaliser, the training and the decoder."""
        n = self.n
        ramp = _cis(self._phi[:, None] * _FOLD_SLOPE)
        grid = np.fft.ifft(spectrum[:, _FOLD_SRC] * _FOLD_H * ramp, axis=1)  # (n, _GRID)
        # The stream: a leftover sample, then grid points _mlo .. _GRID - 1; pairs (half, on-time).
        total = np.where(run, _GRID - self._mlo + self._has_left, 0)
        counts = total // 2
        smax = int(counts.max())
        if smax == 0:
            return
        j = np.arange(2 * smax + 1)[None, :]
        src = _clip(self._mlo[:, None] + j - self._has_left[:, None], 0, _GRID - 1)
        stream = grid[np.arange(n)[:, None], src] * self._gain[:, None]
        stream[:, 0] = np.where(self._has_left > 0, self._left, stream[:, 0])
        odd = (total % 2).astype(np.int64)
        self._left = np.where(odd > 0, stream[np.arange(n), np.minimum(2 * counts, 2 * smax)], 0.0)
        self._has_left = np.where(run, odd, 0)
        self._mlo[:] = _M0
        t2 = stream[:, : 2 * smax].reshape(n, smax, 2)
        valid = np.arange(smax)[None, :] < counts[:, None]

        # Segment 1 starts: set the gain from the first on-time samples.
        new = np.nonzero(run & (self._abab_n < 0))[0]
        for ch in new.tolist():
            c = int(counts[ch])
            p = float(np.mean(np.abs(t2[ch, :c, 1]) ** 2)) if c else 0.0
            g = np.sqrt(40.0 / p) if p > 0 else 1.0
            if not self._short[ch]:
                self._gain[ch] *= g
                t2[ch] *= g
                self._left[ch] *= g
            self._abab_n[ch] = 0
        # Equaliser input windows: the last EQ_LEN T/2 samples ending at each on-time sample.
        stream = np.concatenate([self._eqhist, t2.reshape(n, 2 * smax)], axis=1)
        # windows[:, s, k] = stream[:, 2 s + 1 + k] (a view; as sliding_window_view(...)[:, 1::2])
        tail = stream[:, 1:]
        step = tail.strides[1]
        windows = np.lib.stride_tricks.as_strided(
            tail, shape=(n, smax, EQ_LEN), strides=(tail.strides[0], 2 * step, step), writeable=False
        )
        keep = counts[:, None] * 2 + np.arange(EQ_LEN - 1)[None, :]
        self._eqhist = stream[np.arange(n)[:, None], keep]
        y0 = (windows @ self._w[:, :, None])[:, :, 0]

        q = self._schedule_q(run, valid, y0, counts, s0)
        self._loop(q, windows, y0, s0)

    # ---------------------------------------------------------------------------------------

    def _schedule_q(self, run: _B, valid: _B, y: Complex, counts: _I64, s0: int) -> _I64:
        """Training symbol index of every symbol of this step (-1: not training yet); finds the
        phase reversal into segment 2 for channels in segment 1."""
        smax = y.shape[1]
        s_idx = np.arange(smax)[None, :]
        q = np.where(valid & (self._q >= 0)[:, None], self._q[:, None] + s_idx, -1)
        abab = np.nonzero(run & (self._stage == _ABAB))[0]
        if abab.size:
            ya = y[abab]
            va = valid[abab]
            yy = np.concatenate([self._yhist[abab], ya], axis=1)  # newest history last
            r = ya * np.conj(yy[:, _PHASE_FIT - 2 : _PHASE_FIT - 2 + smax])
            count = self._abab_n[abab][:, None] + s_idx + 1
            use = va & (count > _SETTLE)
            cum = self._facc[abab][:, None] + np.cumsum(np.where(use, r, 0.0), axis=1)
            before = cum - np.where(use, r, 0.0)
            rev = use & (count > _SETTLE + _MIN_ABAB) & ((r * np.conj(before)).real < 0.0)
            has = rev.any(axis=1)
            first = np.argmax(rev, axis=1)
            for j, ch in enumerate(abab.tolist()):
                c = int(counts[ch])
                if has[j]:
                    b = int(first[j])
                    at = int(self._sample_of(b, s0))
                    if self._start_training(
                        ch, complex(before[j, b]), yy[j, b + 1 : b + _PHASE_FIT + 1][::-1], at
                    ):
                        q[ch] = np.where(valid[ch] & (s_idx[0] >= b), s_idx[0] - b, -1)
                else:
                    self._facc[ch] = cum[j, c - 1] if c else self._facc[ch]
                    self._abab_n[ch] += c
                    if self._abab_n[ch] > _MAX_ABAB:
                        self._fail(ch, s0)
            # keep the newest outputs for the phase fit
            last = counts[abab][:, None] + np.arange(_PHASE_FIT)[None, :]
            self._yhist[abab] = yy[np.arange(abab.size)[:, None], last]
        return np.asarray(q, dtype=np.int64)

    @staticmethod
    def _sample_of(s: int, s0: int) -> float:
        """Approximate input sample of symbol ``s`` of the step starting at ``s0`` (for events)."""
        return max(0.0, s0 - _HIST + _M0 * _T2 + s * _SPS - _RX_DELAY - EQ_CENTRE * _T2)

    def _start_training(self, ch: int, facc: complex, recent: Complex, sample: int) -> bool:
        """Phase reversal seen: ``recent`` are the equaliser outputs at the reversal and before it
        (newest first); fix the carrier frequency, phase and gain, and start segment 2 (False: the
        carrier frequency is implausible, training failed)."""
        omega = float(self._omega[ch]) if self._short[ch] else float(np.angle(facc)) / 2.0
        if abs(omega) * BAUD / (2.0 * np.pi) > _MAX_OFFSET_HZ:
            self._fail(ch, sample)
            return False
        self._event(ch, Status.TRAINING_IN_PROGRESS, sample)
        j = np.arange(_PHASE_FIT)
        g = complex(np.mean(recent / _PHASE_REF * np.exp(1j * omega * j)))
        self._omega[ch] = omega
        self._theta[ch] = float(np.angle(g)) + omega  # for the next symbol
        if not self._short[ch]:
            self._w[ch] /= max(abs(g), 1e-9)
        self._stage[ch] = _TRAIN
        self._err[ch] = 0.0
        self._match[ch] = 0
        self._t_kp[ch] = _T_KP_TRAIN
        self._t_ki[ch] = _T_KI_TRAIN
        power = float(np.mean(np.abs(self._eqhist[ch]) ** 2))
        self._mu_scale[ch] = 1.0 / (EQ_LEN * max(power, 1e-6))
        return True

    def _fail(self, ch: int, sample: int) -> None:
        self._event(ch, Status.TRAINING_FAILED, sample)
        self._stage[ch] = _PARKED
        self._q[ch] = -1

    def _carrier_down(self, ch: int, sample: int) -> None:
        if self._stage[ch] != _IDLE:
            self._event(ch, Status.CARRIER_DOWN, sample)
        self._stage[ch] = _IDLE
        self._q[ch] = -1
        self._short[ch] = bool(self._trained[ch])

    # ---------------------------------------------------------------------------------------

    def _loop(self, q: _I64, windows: Complex, y0: Complex, s0: int) -> None:
        n, smax = q.shape
        short = self._short[:, None]
        training = q >= 0
        tcm_start = np.where(short, SEG2_SHORT_LEN, _BRIDGE_END)
        if not (training & (q < tcm_start + SEG4_LEN)).any():
            # Data only (every symbol past segment 4): no known symbols, no bridge, no test windows;
            # every channel tracks on decisions a whole step at once.
            adv = training.astype(np.float64)
            lutsel = self._rate[:, None] * (GRID_N * GRID_N)
            z_out, d_out = self._track_block(slice(None), y0, adv, lutsel, windows, training)
            self._after_loop(q, z_out, d_out, training, training, tcm_start[:, 0], s0, tests=False)
            return
        seg2_end = np.where(short, SEG2_SHORT_LEN, SEG2_LEN)
        known = training & (q >= 1) & (q < seg2_end)
        bridge = training & ~short & (q >= SEG2_LEN) & (q < _BRIDGE_END)
        tcm = training & (q >= tcm_start)
        track = known | bridge | tcm
        qc = _clip(q, 0, _TRAIN_LONG.size - 1)
        tgt = np.where(known, _TRAIN_LONG[qc], 0.0)
        tinv = np.where(known, _TRAIN_INV[qc], 0.0)
        lutsel = np.where(bridge, _ABCD_SEL, self._rate[:, None]) * (GRID_N * GRID_N)
        kp = np.where(known, np.where(short, _KP_SHORT, _KP_TRAIN), np.where(track, _KP_DATA, 0.0))
        ki = np.where(
            known & ~short, np.where(q < _COARSE_END, _KI_COARSE, _KI_FINE), np.where(tcm, _KI_DATA, 0.0)
        )
        mu = np.where(known & ~short, np.where(q < _COARSE_END, _MU_FAST, _MU_SLOW), 0.0)
        live = self._live[:, None]
        mu = np.where(live, mu * self._mu_scale[:, None], 0.0)
        kp = np.where(live, kp, 0.0)
        ki = np.where(live, ki, 0.0)
        adv = track.astype(np.float64)

        # Channels receiving known symbols (or adapting on them) run symbol by symbol; the others
        # (decisions only) a whole step at once.  Each channel's path depends on its own state only.
        by_symbol = (known | (mu > 0.0)).any(axis=1)
        if not by_symbol.any():  # every channel a step at once (data mode): no copies of the rows
            z_out, d_out = self._track_block(slice(None), y0, adv, lutsel, windows, tcm)
            self._after_loop(q, z_out, d_out, training, tcm, tcm_start[:, 0], s0)
            return
        z_out = np.zeros((n, smax), dtype=np.complex128)
        d_out = np.zeros((n, smax), dtype=np.complex128)
        if not by_symbol.all():
            rows = np.nonzero(~by_symbol)[0]
            z_out[rows], d_out[rows] = self._track_block(
                rows, y0[rows], adv[rows], lutsel[rows], windows[rows], tcm[rows]
            )
        if by_symbol.any():
            rows = np.nonzero(by_symbol)[0]
            z_out[rows], d_out[rows] = self._track_symbols(
                rows,
                y0[rows],
                windows[rows],
                known[rows],
                tgt[rows],
                tinv[rows],
                lutsel[rows],
                kp[rows],
                ki[rows],
                mu[rows],
                adv[rows],
                need_lut=bool((bridge | tcm)[rows].any()),
            )
        self._after_loop(q, z_out, d_out, training, tcm, tcm_start[:, 0], s0)

    def _track_symbols(
        self,
        rows: _I64,
        y0: Complex,
        windows: Complex,
        known: _B,
        tgt: Complex,
        tinv: _F64,
        lutsel: _I64,
        kp: _F64,
        ki: _F64,
        mu: _F64,
        adv: _F64,
        *,
        need_lut: bool,
    ) -> tuple[Complex, Complex]:
        """The carrier PI loop and the LMS update of the equaliser, symbol by symbol, for ``rows``
        (the reference: the known training symbol, else the nearest point)."""
        n, smax = y0.shape
        lms = bool((mu > 0.0).any())
        z_out = np.zeros((n, smax), dtype=np.complex128)
        d_out = np.zeros((n, smax), dtype=np.complex128)
        theta = self._theta[rows]
        omega = self._omega[rows]
        w = self._w[rows]
        half = GRID_HALF
        inv_step = 1.0 / GRID_STEP
        top = GRID_N - 1
        for s in range(smax):
            if lms:
                win = windows[:, s]
                y = np.einsum("nk,nk->n", win, w)
            else:
                y = y0[:, s]
            rot = np.exp(-1j * theta)
            z = y * rot
            d = tgt[:, s]
            inv = tinv[:, s]
            if need_lut:
                g = ((z.view(np.float64).reshape(n, 2) + half) * inv_step).astype(np.int64)
                _clip(g, 0, top, out=g)
                cell = lutsel[:, s] + g[:, 0] * GRID_N + g[:, 1]
                d = np.where(known[:, s], d, _LUT[cell])
                inv = np.where(known[:, s], inv, _LUT_INV[cell])
            pe = _clip((z * np.conj(d)).imag * inv, -1.0, 1.0)  # bounded even for a wild z
            theta = theta + omega * adv[:, s] + kp[:, s] * pe
            omega = omega + ki[:, s] * pe
            if lms:
                e = (d - z) * np.conj(rot) * mu[:, s]
                w = w + e[:, None] * np.conj(win)
            z_out[:, s] = z
            d_out[:, s] = d
        self._theta[rows] = np.mod(theta, 2.0 * np.pi)
        self._omega[rows] = omega
        self._w[rows] = w
        return z_out, d_out

    def _track_block(
        self, rows: _I64 | slice, y: Complex, adv: _F64, lutsel: _I64, windows: Complex, adapt: _B
    ) -> tuple[Complex, Complex]:
        """Carrier tracking on decisions for a whole step at once, for ``rows``: the phase runs on at
        the carrier frequency through the step, and the loop is updated with the summed phase errors
        at its end (in data mode the loop is slow, so one step of delay costs nothing).  The
        equaliser follows slowly too, by one LMS step per step on the trellis-coded symbols
        (``adapt``)."""
        theta = self._theta[rows]
        omega = self._omega[rows]
        ramp = np.cumsum(adv, axis=1) - adv
        rot = _cis(-(theta[:, None] + ramp * omega[:, None]))
        z = y * rot
        n, smax = z.shape
        g = ((z.view(np.float64).reshape(n, smax, 2) + GRID_HALF) * (1.0 / GRID_STEP)).astype(np.int64)
        _clip(g, 0, GRID_N - 1, out=g)
        cell = lutsel + g[..., 0] * GRID_N + g[..., 1]
        d = _LUT[cell]
        pe = _clip((z * np.conj(d)).imag * _LUT_INV[cell], -1.0, 1.0) * adv
        total = np.where(self._live[rows], pe.sum(axis=1), 0.0)
        adapt = adapt & self._live[rows][:, None]
        self._theta[rows] = np.mod(theta + adv.sum(axis=1) * omega + _KP_BLOCK * total, 2.0 * np.pi)
        self._omega[rows] = omega + _KI_DATA * total
        if adapt.any():
            e = (
                np.where(adapt, (np.conj(d) - np.conj(z)) * rot, 0.0)
                * (_MU_DATA * self._mu_scale[rows])[:, None]
            )
            self._w[rows] = self._w[rows] + np.conj((e[:, None, :] @ windows)[:, 0])
        return z, d

    # ---------------------------------------------------------------------------------------

    def _after_loop(
        self,
        q: _I64,
        z: Complex,
        d: Complex,
        training: _B,
        tcm: _B,
        tcm_start: _I64,
        s0: int,
        *,
        tests: bool = True,
    ) -> None:
        """Training tests, the Viterbi decoder and the bits out (``tests`` False: no symbol of this step
        is in a test window)."""
        short = self._short
        # training tests, summed over their windows
        ones_win = tcm & (q < tcm_start[:, None] + SEG4_LEN)
        if tests:
            err2 = np.abs(z - d) ** 2
            long_win = training & ~short[:, None] & (q >= _TEST_START) & (q < _TEST_END)
            short_win = training & short[:, None] & (q >= _SHORT_TEST_START) & (q < SEG2_SHORT_LEN)
            self._err += np.sum(np.where(long_win | short_win | ones_win, err2, 0.0), axis=1)
        has = training.any(axis=1)
        q_next = np.where(has, np.maximum.reduce(np.where(training, q, -1), axis=1) + 1, self._q)
        q_start = np.where(has, np.minimum.reduce(np.where(training, q, 1 << 40), axis=1), 0)
        in_train = has & (self._stage == _TRAIN)
        if not in_train.any():
            self._q = np.where(self._stage == _DATA, q_next, self._q)
            self._emit(self._decode(tcm & (self._stage == _DATA)[:, None], q, z, tcm_start))
            return
        # Expecting a short train: does segment 2 go on past its 38 symbols (a long train)?
        qc = _clip(q, 0, _TRAIN_LONG.size - 1)
        long_on = ones_win & short[:, None] & (np.abs(z - _TRAIN_LONG[qc]) ** 2 < _MATCH_ERR)
        self._match += long_on.sum(axis=1)
        end2 = np.where(short, SEG2_SHORT_LEN, SEG2_LEN)
        ones_end = tcm_start + SEG4_LEN
        check2 = in_train & (q_start < end2) & (end2 <= q_next)
        check4 = in_train & (q_start < ones_end) & (ones_end <= q_next)
        spacing = _SPACING[self._rate]
        for ch in np.nonzero(check2)[0].tolist():
            limit = (SEG2_SHORT_LEN - _SHORT_TEST_START) * 4.0 if short[ch] else 20.0 * 1.414
            if self._err[ch] > limit * spacing[ch]:
                self._fail(ch, s0)
                check4[ch] = False
            else:
                self._err[ch] = 0.0
        # Segment 4's descrambled ones (the Viterbi decisions for its first symbols are out by now).
        decoded = self._decode(
            tcm & (self._stage[:, None] >= _TRAIN) & (self._stage[:, None] <= _DATA), q, z, tcm_start
        )
        for ch in np.nonzero(check4)[0].tolist():
            ones_ok = self._ones_seen[ch] > 0 and self._ones_zero[ch] <= _ONES_ZEROS * self._ones_seen[ch]
            if short[ch] and self._match[ch] > 0.75 * SEG4_LEN:
                # A long train after all: carry on training on its segment 2.
                self._short[ch] = False
                self._err[ch] = 0.0
            elif self._err[ch] < SEG4_LEN * spacing[ch] and ones_ok:
                self._stage[ch] = _DATA
                self._t_kp[ch] = _T_KP
                self._t_ki[ch] = _T_KI
                self._event(ch, Status.TRAINING_SUCCEEDED, s0)
                if not short[ch]:
                    self._w_saved[ch] = self._w[ch]
                    self._gain_saved[ch] = self._gain[ch]
                    self._omega_saved[ch] = self._omega[ch]
                    self._trained[ch] = True
            else:
                self._fail(ch, s0)
        self._q = np.where(self._stage >= _TRAIN, q_next, self._q)
        self._q = np.where((self._stage == _TRAIN) | (self._stage == _DATA), self._q, -1)
        self._emit(decoded)

    def _emit(self, decoded: tuple[npt.NDArray[np.uint8], _I64] | None) -> None:
        """Hand out the decoded data bits of the channels in data mode."""
        if decoded is None:
            return
        out, data_n = decoded
        data_n = np.where(self._stage == _DATA, data_n, 0)
        if data_n.any():
            self._out_bits.append((out, data_n))
            self._bit_count += data_n

    def _decode(
        self, tcm: _B, q: _I64, z: Complex, tcm_start: _I64
    ) -> tuple[npt.NDArray[np.uint8], _I64] | None:
        """Viterbi, differential decoding, descrambling: the data bits after segment 4 and their
        count per channel.  The descrambled bits of segment 4's symbols ``_ONES_FROM`` .. ``SEG4_LEN -
        depth + 1`` (decided before segment 4 ends) are counted for the ones test: at the wrong bit
        rate they are not ones."""
        counts = tcm.sum(axis=1)
        if not counts.any():
            return None
        n, smax = q.shape
        first = tcm.argmax(axis=1)
        u0 = np.where(counts > 0, q[np.arange(n), first] - tcm_start, 0)  # TCM index of the first
        restart = np.nonzero((counts > 0) & (u0 == 0))[0]
        for ch in restart.tolist():
            self._viterbi.reset([ch], RATES[int(self._rate[ch])], diff=0 if self._short[ch] else 1)
            self._descramble_hist[ch] = 0
            self._ones_seen[ch] = 0
            self._ones_zero[ch] = 0
        idx = _clip(first[:, None] + np.arange(smax)[None, :], 0, smax - 1)
        za = z[np.arange(n)[:, None], idx]
        words, _ = self._viterbi.decode(za, counts)
        h = self._viterbi.depth - 1
        # The decisions that belong to a symbol (TCM index >= 0) are a run [j0, counts) of each row;
        # those of segment 4 (TCM index < SEG4_LEN) only feed the descrambler.
        j0 = np.minimum(np.maximum(h - u0, 0), counts)
        first_u = np.maximum(u0 - h, 0)  # TCM index of decision j0
        nsym = counts - j0
        k_all = np.array(_BITS)[self._rate]
        out = np.zeros((n, smax * 6), dtype=np.uint8)
        data_n = np.zeros(n, dtype=np.int64)
        taps = SCRAMBLER_TAPS
        for k in sorted(set(k_all[nsym > 0].tolist())):
            g = np.nonzero((nsym > 0) & (k_all == k))[0]
            rows = g[:, None]
            sym = words[rows, np.minimum(j0[g][:, None] + np.arange(smax)[None, :], smax - 1)]
            stream = ((sym[:, :, None] >> np.arange(k)) & 1).astype(np.uint8).reshape(g.size, smax * k)
            nb = nsym[g] * k
            buf = np.concatenate([self._descramble_hist[g], stream], axis=1)
            plain = (
                stream
                ^ buf[:, taps[1] - taps[0] : taps[1] - taps[0] + stream.shape[1]]
                ^ buf[:, : stream.shape[1]]
            )
            local = np.arange(g.size)[:, None]
            self._descramble_hist[g] = buf[local, nb[:, None] + np.arange(taps[1])[None, :]]
            skip = np.minimum(np.maximum(SEG4_LEN - first_u[g], 0) * k, nb)
            width = stream.shape[1]
            lo = (_ONES_FROM - first_u[g]) * k
            hi = np.minimum((SEG4_LEN - h - first_u[g]) * k, nb)
            if (np.minimum(hi, width) > np.maximum(lo, 0)).any():  # some bits in the ones test
                pos = np.arange(width)[None, :]
                test = (pos >= lo[:, None]) & (pos < hi[:, None])
                self._ones_seen[g] += test.sum(axis=1)
                self._ones_zero[g] += (test & (plain == 0)).sum(axis=1)
            if skip.any():
                take = np.minimum(skip[:, None] + np.arange(width)[None, :], width - 1)
                out[g, :width] = plain[local, take]
            else:
                out[g, :width] = plain
            data_n[g] = nb - skip
        return out, data_n


class V17Rx:
    """One V.17 receiver (a bank of one)."""

    def __init__(self, bit_rate: int, *, cutoff_dbm0: float = -45.5) -> None:
        self.bank = V17RxBank(1, bit_rate, cutoff_dbm0=cutoff_dbm0)

    def receive(self, samples: npt.ArrayLike) -> RxOutput:
        """Feed int16 samples; returns the data bits and statuses."""
        return self.bank.receive(np.asarray(samples).reshape(1, -1))[0]

    def fillin(self, n_samples: int) -> RxOutput:
        """Bridge ``n_samples`` lost samples (see :meth:`V17RxBank.fillin`)."""
        return self.bank.fillin(n_samples)[0]

    def restart(self, bit_rate: int, short_train: bool = False) -> None:
        """Listen for a new burst at ``bit_rate`` (``short_train``: see :meth:`V17RxBank.restart`)."""
        self.bank.restart(0, bit_rate, short_train)
