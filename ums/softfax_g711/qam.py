"""Shared building blocks of the fast fax modems (V.27ter, V.29, V.17): pulse-shaped QAM/PSK
transmission and a bank receiver with timing recovery, an adaptive equaliser and carrier recovery.

Transmit side: :class:`QamModulator` turns complex symbols into 8 kHz int16 samples:
root-raised-cosine pulse shaping at any symbol rate (polyphase, so 8000/2400 works), then
modulation onto the carrier, ``s(t) = Re{x(t) exp(j 2 pi fc t)}``.  The level is given in dBm0
for symbols whose mean power is ``ref_power`` (the data constellation's).  Use
:meth:`QamModulator.symbols_needed` to know how many symbols to push before pulling ``n``
samples.

Receive side: :class:`QamRxBank` runs ``n`` channels stepping together; every per-channel state
is a row of the arrays in :class:`QamRxState` (shape ``(n, ...)``).  Per block of samples:

* carrier detect: power of a first-difference high-pass over two ticks of :data:`TICK` samples
  (ticks aligned to the start of the stream), on/off hysteresis at ``on_dbm0``/``off_dbm0`` (for a
  tone at the carrier frequency);
* mixing to baseband and root-raised-cosine matched filtering, block-wise;
* then one loop per symbol, vectorised across channels: fractional interpolation (windowed sinc,
  ``interp_phases`` phases) of two T/2 samples at the recovered timing, times the channel's AGC
  gain; Gardner timing error and a PI loop on the sample position; a T/2 fractionally spaced
  complex LMS equaliser (``eq_len`` taps, main tap ``eq_pre``, so its output lags the newest
  sample by ``(eq_len - 1 - eq_pre) / 2`` symbols); carrier derotation and a PI loop on
  ``Im(z conj(ref)) / |ref|^2``; the decision device; training bookkeeping.

Writing a modem: subclass :class:`QamRxBank` and implement :meth:`QamRxBank.on_event`, which is
called for rare events only, with the state ``st`` and the row ``r`` (channel ``st.chan[r]``):

* ``CARRIER_UP`` / ``CARRIER_DOWN`` from the detector; ``AGC`` one tick after carrier-up, with the
  gain that brings the signal to unit baseband power (apply it with :meth:`QamRxBank.set_agc`;
  :meth:`QamRxBank.track_agc` keeps following the signal tick by tick, e.g. during acquisition);
* ``PATTERN_BREAK`` while acquiring on an alternating segment
  (:meth:`QamRxBank.start_acquisition`): the phase reversal at its end.  Then
  :meth:`QamRxBank.acquisition_frequency` gives the carrier offset and
  :meth:`QamRxBank.align_carrier` locks phase, frequency and gain on the last known symbols;
* ``COUNTDOWN``: ``st.countdown[r]`` (decremented every symbol) reached 0.

The handler sets the channel's mode by writing its row: ``mu`` (LMS step; 0 freezes the
equaliser), ``c_kp``/``c_ki`` (carrier loop), ``t_kp``/``t_ki`` (timing loop), ``use_target``
with :meth:`QamRxBank.load_targets` (train on known symbols, one per symbol, instead of
decisions), ``record`` (output the symbols), ``stage`` (the modem's own code, recorded with each
symbol), ``countdown``; ``err_acc``/``err_n`` sum ``|ref - z|^2`` and count symbols (reset them to
measure a stage).  Statuses go out with :meth:`QamRxBank.emit`.  The decision device is the
nearest point of the row's constellation (:meth:`QamRxBank.set_constellation`; codes index it),
or an override of :meth:`QamRxBank.slicer` (vectorised over rows).

:meth:`QamRxBank.process` returns a :class:`BlockResult`: per channel, the recorded symbols
(equalised, carrier-corrected), their decision codes and stages, and the statuses; the modem turns
those into bits block-wise.  Channels may lose blocks (``missing``): timing and carrier keep
turning, nothing adapts or is recorded until the filters are clear of the gap.  The symbol loop
takes a symbol of a channel as soon as the samples its interpolator needs are there, so results
do not depend on how the stream is cut into blocks, nor on the other channels of the bank.

Cost: banks of up to :attr:`QamRxBank.scalar_rows` rows run the loop row by row on Python
scalars (numpy calls on arrays of a few rows cost more than the arithmetic); the decision device
then is :meth:`QamRxBank.row_slicer`.  Idle rows (no loop gains, no adaptation, nothing to record
or count down, see :meth:`QamRxBank._idle`) skip the loop and only keep time until their next
detector event, so a channel without a carrier costs little beyond the front end.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from fractions import Fraction
from operator import mul

import numpy as np
import numpy.typing as npt

from ums.softfax_g711.common import (
    FULL_SCALE,
    FULL_SCALE_DBM0,
    SAMPLE_RATE,
    BitQueue,
    Status,
    amplitude_for_rms_dbm0,
)

__all__ = [
    "TICK",
    "BankEvent",
    "BlockResult",
    "QamModulator",
    "QamRxBank",
    "QamRxConfig",
    "QamRxState",
    "rrc",
]

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

#: Samples per power-detector tick (5 ms); ticks are aligned to the start of the stream.
TICK = 40
#: Largest timing correction per symbol (samples), and largest timing drift (samples/symbol).
_MAX_STEP = 0.5
_MAX_DRIFT = 0.01
#: Symbols the ABAB pattern must hold before a break counts.
ACQ_MIN_RUN = 16
_COS45 = math.cos(math.pi / 4)
_TWO_PI = 2.0 * math.pi


def rrc(t: npt.ArrayLike, beta: float) -> F64:
    """Root-raised-cosine pulse at ``t`` symbol periods, roll-off ``beta``; unit energy
    (``integral h(t)^2 dt = 1`` with ``t`` in symbols) and ``h(0) = 1 - beta + 4 beta / pi``."""
    x = np.asarray(t, dtype=np.float64)
    out = np.empty_like(x)
    b = beta
    at0 = np.abs(x) < 1e-9
    sing = np.abs(np.abs(x) - 1.0 / (4.0 * b)) < 1e-9 if b > 0 else np.zeros_like(at0)
    other = ~(at0 | sing)
    xo = x[other]
    num = np.sin(np.pi * xo * (1 - b)) + 4 * b * xo * np.cos(np.pi * xo * (1 + b))
    den = np.pi * xo * (1 - (4 * b * xo) ** 2)
    out[other] = num / den
    out[at0] = 1 - b + 4 * b / np.pi
    if b > 0:
        out[sing] = (b / np.sqrt(2)) * (
            (1 + 2 / np.pi) * np.sin(np.pi / (4 * b)) + (1 - 2 / np.pi) * np.cos(np.pi / (4 * b))
        )
    return out


def _carrier_table(carrier_hz: float) -> tuple[C128, int]:
    """``exp(j 2 pi fc k / fs)`` for one period of ``k`` (exact for integer ``fc``)."""
    frac = Fraction(carrier_hz).limit_denominator(1000) / SAMPLE_RATE
    period = frac.denominator
    k = np.arange(period)
    ph = 2.0 * np.pi * ((k * frac.numerator) % period) / period
    return np.exp(1j * ph), period


class QamModulator:
    """RRC pulse shaping of complex symbols at ``baud`` and modulation onto ``carrier_hz``,
    streaming, with state (V.27ter §2, V.29 §2, V.17 §2 use this transmitter structure).

    Sample ``k`` lies at symbol time ``u = k * baud / 8000``; symbol ``m`` is centred at
    ``u = m + span``, so the first symbol's pulse starts at sample 0 and producing sample ``k``
    needs symbols ``0 .. floor(u)``.  ``ref_power`` is the mean ``|symbol|^2`` that is sent at
    ``level_dbm0``.
    """

    def __init__(
        self,
        baud: int,
        carrier_hz: float,
        *,
        level_dbm0: float,
        ref_power: float,
        beta: float = 0.5,
        span: int = 6,
    ) -> None:
        self.baud = baud
        self.span = span
        ratio = Fraction(baud, SAMPLE_RATE)
        self._num = ratio.numerator
        self._den = ratio.denominator
        # Phase p: sample at u = m_floor + p/den; taps over symbols m_floor - j, j = 0 .. 2*span - 1.
        p = np.arange(self._den)[:, None] / self._den
        j = np.arange(2 * span)[None, :]
        taps = rrc(p + j - span, beta)
        # Normalise: mean over phases of the summed squared taps = baud/fs * sum over one symbol...
        # i.e. i.i.d. unit-power symbols give a complex baseband of unit mean power.
        taps /= np.sqrt(np.mean(np.sum(taps * taps, axis=1)))
        self._taps = taps
        self._carrier, self._cperiod = _carrier_table(carrier_hz)
        self.gain = amplitude_for_rms_dbm0(level_dbm0) * math.sqrt(2.0) / math.sqrt(ref_power)
        self._sym: C128 = np.zeros(2 * span, dtype=np.complex128)  # history: symbols -2*span .. -1
        self._sym_base = -2 * span  # index of self._sym[0]
        self._sample = 0  # next sample index

    @property
    def samples_out(self) -> int:
        """Samples produced so far."""
        return self._sample

    @property
    def symbols_in(self) -> int:
        """Symbols pushed so far."""
        return self._sym_base + self._sym.size

    def symbols_needed(self, n_samples: int) -> int:
        """How many more symbols must be pushed before :meth:`pull` can give ``n_samples``."""
        last = self._sample + n_samples - 1
        need = (last * self._num) // self._den + 1
        return max(0, need - self.symbols_in)

    def push(self, symbols: npt.ArrayLike) -> None:
        """Queue complex symbols."""
        s = np.asarray(symbols, dtype=np.complex128).ravel()
        if s.size:
            self._sym = np.concatenate([self._sym, s])

    def pull_float(self, n_samples: int) -> F64:
        """``n_samples`` passband samples as float (16-bit scale); the symbols must be there."""
        if n_samples <= 0:
            return np.zeros(0)
        if self.symbols_needed(n_samples) > 0:
            raise ValueError("not enough symbols pushed")
        k = np.arange(self._sample, self._sample + n_samples, dtype=np.int64)
        num = k * self._num
        mfloor = num // self._den
        phase = num - mfloor * self._den
        idx = (mfloor - self._sym_base)[:, None] - np.arange(2 * self.span)[None, :]
        x = np.sum(self._sym[idx] * self._taps[phase], axis=1)
        out: F64 = (x * self._carrier[k % self._cperiod]).real * self.gain
        self._sample += n_samples
        # Keep only the history still needed.
        keep_from = int((self._sample * self._num) // self._den) - 2 * self.span
        cut = keep_from - self._sym_base
        if cut > 0:
            self._sym = self._sym[cut:]
            self._sym_base += cut
        return out

    def pull(self, n_samples: int) -> npt.NDArray[np.int16]:
        """``n_samples`` int16 passband samples (rounded, saturated)."""
        y = np.rint(self.pull_float(n_samples))
        return np.clip(y, -32768, 32767).astype(np.int16)

    def modulate(self, symbols: npt.ArrayLike, n_samples: int) -> npt.NDArray[np.int16]:
        """Push ``symbols`` then pull ``n_samples``."""
        self.push(symbols)
        return self.pull(n_samples)


# --------------------------------------------------------------------------------------------
# Receiver bank


class BurstTx:
    """What the fast transmitters share: queued data bits, ``finish``, ``done`` and ``generate`` over a
    :class:`QamModulator`.  A modem sets ``_mod``, ``_queue``, ``_finished`` and ``_end_sample`` (the
    sample where the burst's trailer has died away, once known) and supplies ``_symbols(count)``."""

    _mod: QamModulator
    _queue: BitQueue
    _finished: bool
    _end_sample: int | None

    def _symbols(self, count: int) -> C128:
        raise NotImplementedError

    def send(self, bits: npt.ArrayLike) -> None:
        """Queue data bits (0/1)."""
        self._queue.push(bits)

    def finish(self) -> None:
        """No more data: after the queued bits (padded with ones to a whole symbol), send the
        trailer and stop."""
        self._finished = True

    @property
    def done(self) -> bool:
        """Everything, trailer included, has been generated."""
        return self._end_sample is not None and self._mod.samples_out >= self._end_sample

    def generate(self, n: int) -> npt.NDArray[np.int16]:
        """The next ``n`` samples (int16); silence once :attr:`done`."""
        if n <= 0:
            return np.zeros(0, dtype=np.int16)
        if self.done:
            return np.zeros(n, dtype=np.int16)
        self._mod.push(self._symbols(self._mod.symbols_needed(n)))
        out = self._mod.pull(n)
        if self._end_sample is not None:
            start = self._mod.samples_out - n
            out[max(0, self._end_sample - start) :] = 0
        return out


class BankEvent(enum.Enum):
    """Why :meth:`QamRxBank.on_event` is called."""

    #: Power rose above the on threshold.
    CARRIER_UP = 1
    #: Power fell below the off threshold.
    CARRIER_DOWN = 2
    #: A channel's ``countdown`` reached zero (after the symbol just processed).
    COUNTDOWN = 3
    #: During acquisition, ``y[k] conj(y[k-2])`` turned by more than the break angle.
    PATTERN_BREAK = 4
    #: The first whole tick after CARRIER_UP ended; ``payload`` is the gain that brings that
    #: tick's baseband to unit mean power.  The modem applies it with :meth:`QamRxBank.set_agc`
    #: and may keep it following the signal with :meth:`QamRxBank.track_agc`.
    AGC = 5


@dataclass
class QamRxConfig:
    """Receiver parameters.  Step sizes and gains are per channel arrays in the state; these are
    the defaults the helpers use."""

    baud: int
    carrier_hz: float
    #: Roll-off of the RRC matched filter.
    beta: float = 0.5
    #: Carrier-detect thresholds (dBm0, power of a tone at the carrier frequency).
    on_dbm0: float = -43.0
    off_dbm0: float = -48.0
    #: Equaliser length in T/2 taps and the index of the centre (main) tap.
    eq_len: int = 33
    eq_pre: int = 16
    #: Matched filter half-length in symbols.
    rrc_span: float = 4.0
    #: Interpolator taps and phases.
    interp_taps: int = 8
    interp_phases: int = 256
    #: Raw equaliser outputs kept for :meth:`QamRxBank.align_carrier`.
    history: int = 8
    #: Longest training target sequence.
    max_targets: int = 4096


@dataclass
class QamRxState:
    """Per-channel state of the bank, one row per channel (see :class:`QamRxBank`)."""

    #: channel number of each row (rows of a sub-bank are a subset of the channels)
    chan: I64
    #: timing: absolute sample position of the next on-time T/2 sample, timing drift
    #: (samples/symbol), PI gains, the previous on-time sample (for the Gardner detector)
    pos: F64
    drift: F64
    t_kp: F64
    t_ki: F64
    x_prev: C128
    #: input gain, and whether it follows the tick power (see :meth:`QamRxBank.track_agc`)
    agc: F64
    agc_track: B1
    #: equaliser: T/2 input samples (oldest first), taps conjugated (the output is
    #: ``vecdot(ctaps, eqbuf)``), saved taps, LMS step
    eqbuf: C128
    ctaps: C128
    ctaps_saved: C128
    mu: F64
    #: carrier: phase (rad, applied as ``z = y exp(-j theta)``), frequency (rad/symbol), PI gains
    theta: F64
    omega: F64
    c_kp: F64
    c_ki: F64
    #: reference: train on targets (else decisions), index into the targets, constellation
    use_target: B1
    tidx: I64
    const: C128
    #: acquisition: the last ``history`` equaliser outputs (kept while acquiring), flag, symbols
    #: since start, pattern-holds counter, symbols to wait, frequency sum, cosine of the break angle
    hist: C128
    acq: B1
    acq_n: I64
    acq_run: I64
    settle: I64
    facc: C128
    brk_cos: F64
    #: control: countdown to a COUNTDOWN event (decremented every symbol)
    countdown: I64
    #: symbols at positions in [freeze_from, freeze_until) see lost samples: no adaptation,
    #: nothing recorded
    freeze_from: F64
    freeze_until: F64
    #: position of the next queued detector event
    ev_pos: F64
    #: output the symbols; the modem's stage code; ``sum |ref - z|^2`` and its count; symbols
    #: recorded in this call
    record: B1
    stage: I64
    err_acc: F64
    err_n: I64
    nrec: I64

    def take(self, idx: I64) -> QamRxState:
        """Rows ``idx`` as a new state (copies)."""
        return QamRxState(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def put(self, idx: I64, sub: QamRxState) -> None:
        """Write ``sub`` back into rows ``idx``."""
        for f in fields(self):
            getattr(self, f.name)[idx] = getattr(sub, f.name)

    @property
    def n(self) -> int:
        return int(self.chan.size)


@dataclass
class BlockResult:
    """What one :meth:`QamRxBank.process` call produced.  Row ``ch`` of ``z`` (equalised,
    carrier-corrected symbols), ``codes`` (decisions) and ``stages`` (the channel's stage at each)
    holds, left-aligned, the ``counts[ch]`` symbols recorded while the channel's ``record`` flag
    was set.  ``events[ch]`` holds ``(symbol_index, status, sample)``: the status falls before
    recorded symbol ``symbol_index`` of this call."""

    z: C128
    codes: I64
    stages: I64
    counts: I64
    events: list[list[tuple[int, Status, int]]]


def _interp_table(taps: int, phases: int) -> F64:
    """Kaiser-windowed sinc fractional-delay interpolator: row ``p`` gives the value at
    ``i0 + p/phases`` from samples ``i0 - taps/2 + 1 .. i0 + taps/2``."""
    half = taps // 2
    p = np.arange(phases)[:, None] / phases
    t = np.arange(-half + 1, half + 1)[None, :] - p
    w = np.kaiser(2 * 4096 + 1, 6.0)
    # window value at t in (-half, half): map to [0, 8192]
    widx = np.clip(np.rint((t / half + 1.0) * 4096), 0, 8192).astype(np.int64)
    h = np.sinc(t) * w[widx]
    h /= np.sum(h, axis=1, keepdims=True)
    return h


@functools.lru_cache(maxsize=64)
def _nearest_point(points: tuple[complex, ...]) -> Callable[[complex], tuple[complex, int]]:
    """``z -> (point, index)`` of the nearest of ``points`` (the first of equals), as
    ``argmin |z - points|``.  A grid over the constellation lists, per cell, the only points
    that can be nearest anywhere in the cell, so most decisions look at one or two points."""
    pts = list(points)
    k = len(pts)
    xs = [p.real for p in pts]
    ys = [p.imag for p in pts]
    gaps = [abs(a - b) for i, a in enumerate(pts) for b in pts[i + 1 :] if a != b]
    h = min(gaps) / 4.0 if gaps else 1.0
    x0, y0 = min(xs) - 4 * h, min(ys) - 4 * h
    nx = math.ceil((max(xs) + 4 * h - x0) / h)
    ny = math.ceil((max(ys) + 4 * h - y0) / h)
    inv = 1.0 / h
    everyone = list(range(k))
    # lower-left corners of the cells, and per point its largest and smallest distance to each
    lx = (x0 + np.arange(nx) * h)[None, None, :]
    ly = (y0 + np.arange(ny) * h)[None, :, None]
    px = np.array(xs)[:, None, None]
    py = np.array(ys)[:, None, None]
    far = np.hypot(
        np.maximum(np.abs(px - lx), np.abs(px - lx - h)), np.maximum(np.abs(py - ly), np.abs(py - ly - h))
    )
    near = np.hypot(
        np.maximum(np.maximum(lx - px, px - lx - h), 0.0), np.maximum(np.maximum(ly - py, py - ly - h), 0.0)
    )
    mask = near <= far.min(axis=0) * (1.0 + 1e-9) + 1e-9  # (point, row, column)
    flat = mask.reshape(k, ny * nx).T.tolist()
    cells = [[j for j in range(k) if row[j]] for row in flat]

    def nearest(z: complex) -> tuple[complex, int]:
        u = (z.real - x0) * inv
        v = (z.imag - y0) * inv
        cand = cells[int(v) * nx + int(u)] if 0.0 <= u < nx and 0.0 <= v < ny else everyone
        j = cand[0]
        if len(cand) > 1:
            best = abs(z - pts[j])
            for i in cand[1:]:
                d = abs(z - pts[i])
                if d < best:
                    best = d
                    j = i
        return pts[j], j

    return nearest


class QamRxBank:
    """A bank of ``n`` QAM receivers (front end, timing, equaliser, carrier, decisions).

    Subclass it: implement :meth:`on_event` (and optionally :meth:`slicer`), set up channels
    with the helpers, and call :meth:`process` with ``(n, m)`` int16 blocks of any size.  Every
    channel's state is a row of :attr:`st`.  The symbol loop processes a symbol of every channel
    as soon as all the samples its interpolator needs are there, so the result does not depend on
    how the stream is cut into blocks.
    """

    #: Banks (or sub-banks) of at most this many rows run the symbol loop row by row on Python
    #: scalars, which is cheaper than numpy on tiny arrays.
    scalar_rows = 6

    def __init__(self, n: int, cfg: QamRxConfig) -> None:
        self.n = n
        self.cfg = cfg
        self.sps = SAMPLE_RATE / cfg.baud
        # matched filter (real, applied to the mixed-down complex signal)
        half = math.ceil(cfg.rrc_span * self.sps)
        t = (np.arange(2 * half + 1) - half) / self.sps
        h = rrc(t, cfg.beta)
        self._mf = h / np.sum(h)
        self._mf_len = h.size
        self._mix, self._mix_period = _carrier_table(cfg.carrier_hz)
        self._mix = np.conj(self._mix)
        self._interp = _interp_table(cfg.interp_taps, cfg.interp_phases)
        self._interp_rows: list[list[float]] = self._interp.tolist()
        self._interp_c = self._interp.astype(np.complex128)  # no casting in the loop
        self._ihalf = cfg.interp_taps // 2
        # detector thresholds on the sum over a tick of the squared first difference
        g = 4.0 * math.sin(math.pi * cfg.carrier_hz / SAMPLE_RATE) ** 2
        self._on_sum = self._level_sum(cfg.on_dbm0, g)
        self._off_sum = self._level_sum(cfg.off_dbm0, g)
        self.sample = 0  # samples received so far (per channel)
        self._last_x = np.zeros(n)
        self._tick_acc = np.zeros(n)  # squared-difference sum of the current tick
        self._tick_sq = np.zeros(n)  # sum of squared samples of the current tick (exact)
        self._prev_tick = np.zeros(n)  # previous tick's squared-difference sum
        self.carrier_on = np.zeros(n, dtype=np.bool_)
        self._agc_due = np.zeros(n, dtype=np.bool_)
        #: baseband power per tick (for AGC tracking), from absolute tick ``_tick_start``
        self._tick_pow = np.ones((n, 0))
        self._tick_start = 0
        self._fir_hist = np.zeros((n, self._mf_len - 1), dtype=np.complex128)
        # baseband buffer and its absolute start index
        self._bb = np.zeros((n, 0), dtype=np.complex128)
        self._bb_start = 0
        self._queues: list[list[tuple[float, BankEvent, float]]] = [[] for _ in range(n)]
        self._res = self._empty_result(0)
        self._offsets: dict[tuple[int, int], I64] = {}
        #: Training targets per channel (kept out of the state rows, which are copied).
        self.targets = np.zeros((n, cfg.max_targets + 1), dtype=np.complex128)
        self.st = self._initial_state(n)

    # ----------------------------------------------------------------------------------------
    # state set-up helpers (for subclasses, normally called from on_event)

    @staticmethod
    def _level_sum(dbm0: float, g: float) -> float:
        ms = (FULL_SCALE * FULL_SCALE / 2.0) * 10.0 ** ((dbm0 - FULL_SCALE_DBM0) / 10.0)
        return float(ms * g * 2 * TICK)  # threshold on the sum over two ticks

    def _initial_state(self, n: int) -> QamRxState:
        c = self.cfg
        z = np.zeros(n)
        zc = np.zeros(n, dtype=np.complex128)
        taps = np.zeros((n, c.eq_len), dtype=np.complex128)
        taps[:, c.eq_pre] = 1.0
        # the first on-time sample: far enough in that the interpolator and filter are primed
        pos0 = float(self._mf_len + self._ihalf)
        return QamRxState(
            chan=np.arange(n, dtype=np.int64),
            pos=np.full(n, pos0),
            drift=z.copy(),
            t_kp=z.copy(),
            t_ki=z.copy(),
            x_prev=zc.copy(),
            agc=np.ones(n),
            agc_track=np.zeros(n, dtype=np.bool_),
            eqbuf=np.zeros((n, c.eq_len), dtype=np.complex128),
            ctaps=taps,
            ctaps_saved=taps.copy(),
            mu=z.copy(),
            theta=z.copy(),
            omega=z.copy(),
            c_kp=z.copy(),
            c_ki=z.copy(),
            use_target=np.zeros(n, dtype=np.bool_),
            tidx=np.zeros(n, dtype=np.int64),
            const=np.zeros((n, 1), dtype=np.complex128),
            hist=np.zeros((n, c.history), dtype=np.complex128),
            acq=np.zeros(n, dtype=np.bool_),
            acq_n=np.zeros(n, dtype=np.int64),
            acq_run=np.zeros(n, dtype=np.int64),
            settle=np.zeros(n, dtype=np.int64),
            facc=zc.copy(),
            brk_cos=np.full(n, -2.0),
            countdown=np.full(n, -1, dtype=np.int64),
            freeze_from=np.full(n, -np.inf),
            freeze_until=np.full(n, -np.inf),
            ev_pos=np.full(n, np.inf),
            record=np.zeros(n, dtype=np.bool_),
            stage=np.zeros(n, dtype=np.int64),
            err_acc=z.copy(),
            err_n=np.zeros(n, dtype=np.int64),
            nrec=np.zeros(n, dtype=np.int64),
        )

    def set_constellation(self, ch: int, points: npt.ArrayLike) -> None:
        """Set channel ``ch``'s decision constellation (codes are indices into ``points``).
        Bank rows are padded by repeating points, so channels may use different sizes."""
        p = np.asarray(points, dtype=np.complex128).ravel()
        width = self.st.const.shape[1]
        if p.size > width:
            grown = np.resize(self.st.const, (self.n, p.size))
            for r in range(self.n):
                grown[r] = np.resize(self.st.const[r], p.size)
            self.st.const = grown
            width = p.size
        self.st.const[ch] = np.resize(p, width)

    def reset_channel(self, st: QamRxState, r: int) -> None:
        """Return row ``r`` to idle: equaliser reset to a unit centre tap, loops and flags
        cleared.  The timing position is kept (time goes on)."""
        c = self.cfg
        st.agc_track[r] = False
        st.drift[r] = 0.0
        st.t_kp[r] = 0.0
        st.t_ki[r] = 0.0
        st.agc[r] = 1.0
        st.eqbuf[r] = 0.0
        st.ctaps[r] = 0.0
        st.ctaps[r, c.eq_pre] = 1.0
        st.mu[r] = 0.0
        st.theta[r] = 0.0
        st.omega[r] = 0.0
        st.c_kp[r] = 0.0
        st.c_ki[r] = 0.0
        st.use_target[r] = False
        st.tidx[r] = 0
        st.hist[r] = 0.0
        st.acq[r] = False
        st.acq_n[r] = 0
        st.acq_run[r] = 0
        st.facc[r] = 0.0
        st.countdown[r] = -1
        st.record[r] = False
        st.stage[r] = 0
        st.err_acc[r] = 0.0
        st.err_n[r] = 0

    def track_agc(self, st: QamRxState, r: int, on: bool) -> None:
        """While ``on``, row ``r``'s input gain follows the power of the last whole tick before
        each symbol (samples already in the equaliser are not rescaled); when off, it is held."""
        st.agc_track[r] = on

    def set_agc(self, st: QamRxState, r: int, gain: float) -> None:
        """Set row ``r``'s input gain, rescaling the samples already in its equaliser."""
        ratio = gain / float(st.agc[r])
        st.agc[r] = gain
        st.x_prev[r] *= ratio
        st.eqbuf[r] *= ratio
        st.hist[r] *= ratio

    def start_acquisition(
        self, st: QamRxState, r: int, *, settle: int, break_deg: float, centre: float
    ) -> None:
        """Start acquiring on an alternating (ABAB) pattern.  After ``settle`` symbols,
        ``d = y[k] conj(y[k-2])`` is checked: within 45 degrees the pattern holds (a run counter
        goes up, and from 8 on ``d`` is summed, as a unit vector, for the frequency estimate),
        otherwise the counter is halved (the sum is dropped when it reaches 0).  Once the counter
        is at least :data:`ACQ_MIN_RUN`, a turn of more
        than ``break_deg`` raises PATTERN_BREAK.  ``centre`` is the equaliser's initial centre
        tap."""
        st.acq[r] = True
        st.acq_n[r] = 0
        st.acq_run[r] = 0
        st.settle[r] = settle
        st.facc[r] = 0.0
        st.brk_cos[r] = math.cos(math.radians(break_deg))
        st.ctaps[r] = 0.0
        st.ctaps[r, self.cfg.eq_pre] = centre

    def acquisition_frequency(self, st: QamRxState, r: int) -> float:
        """Carrier offset (rad/symbol) estimated during acquisition."""
        return float(np.angle(st.facc[r]) / 2.0)

    def align_carrier(self, st: QamRxState, r: int, known: npt.ArrayLike, omega: float) -> float:
        """Stop acquisition and lock carrier phase, frequency and gain on row ``r``: ``known``
        are the symbols that were sent at the last ``len(known)`` equaliser outputs, oldest first
        (the last is the symbol just processed).  Sets the carrier frequency ``omega``
        (rad/symbol), scales the equaliser to unit gain and sets the phase for the next symbol.
        Returns the estimated signal-to-error ratio of the ``known`` symbols (linear)."""
        s = np.asarray(known, dtype=np.complex128)
        j = s.size
        y = st.hist[r, -j:] * np.exp(1j * omega * np.arange(j - 1, -1, -1))  # drift removed
        # least squares gain, referenced to the newest symbol
        gm = complex(np.sum(y * s.conj()) / max(float(np.sum(np.abs(s) ** 2)), 1e-12))
        g = y / np.where(s == 0, 1.0, s)
        st.acq[r] = False
        st.ctaps[r] /= abs(gm)
        st.theta[r] = float(np.angle(gm)) + omega
        st.omega[r] = omega
        err = float(np.mean(np.abs(g - gm) ** 2))
        return abs(gm) ** 2 / max(err, 1e-12)

    def load_targets(self, st: QamRxState, r: int, targets: npt.ArrayLike) -> None:
        """Train row ``r`` on ``targets``, one per coming symbol (then it must be switched to
        decisions, normally by a countdown of at most ``len(targets)``)."""
        t = np.asarray(targets, dtype=np.complex128).ravel()
        if t.size > self.cfg.max_targets:
            raise ValueError("too many training targets")
        ch = int(st.chan[r])
        self.targets[ch, : t.size] = t
        self.targets[ch, t.size :] = 0.0
        st.tidx[r] = 0
        st.use_target[r] = True

    def save_equalizer(self, st: QamRxState, r: int) -> None:
        """Keep row ``r``'s equaliser for a later short retrain."""
        st.ctaps_saved[r] = st.ctaps[r]

    def restore_equalizer(self, st: QamRxState, r: int) -> None:
        """Restore the equaliser saved by :meth:`save_equalizer`."""
        st.ctaps[r] = st.ctaps_saved[r]

    def emit(self, st: QamRxState, r: int, status: Status) -> None:
        """Report ``status`` for row ``r``, placed before its next recorded symbol."""
        ch = int(st.chan[r])
        self._res.events[ch].append((int(st.nrec[r]), status, int(st.pos[r])))

    # ----------------------------------------------------------------------------------------
    # hooks

    def on_event(self, st: QamRxState, r: int, event: BankEvent, payload: float) -> None:
        """Handle a rare event on row ``r`` of ``st`` (channel ``st.chan[r]``)."""

    def slicer(self, st: QamRxState, z: C128) -> tuple[C128, I64]:
        """Decision device: nearest point of each row's constellation and its index."""
        const = st.const
        codes = np.abs(z[:, None] - const).argmin(axis=1)
        return const.ravel()[codes + self._row_offsets(z.size, const.shape[1])], codes

    def row_slicer(self, st: QamRxState, r: int) -> Callable[[complex], tuple[complex, int]]:
        """The decision device of row ``r`` for one symbol at a time (used by the row-wise loop);
        must decide as :meth:`slicer` does.  The default is the nearest point of the row's
        constellation, or :meth:`slicer` on a one-row copy when a subclass overrides it."""
        if type(self).slicer is not QamRxBank.slicer:
            sub = st.take(np.array([r], dtype=np.int64))

            def generic(z: complex) -> tuple[complex, int]:
                dec, codes = self.slicer(sub, np.array([z]))
                return complex(dec[0]), int(codes[0])

            return generic
        pts: tuple[complex, ...] = tuple(st.const[r].tolist())
        return _nearest_point(pts)

    def _row_offsets(self, n: int, width: int) -> I64:
        """``arange(n) * width``, cached."""
        key = (n, width)
        off = self._offsets.get(key)
        if off is None:
            off = np.arange(n, dtype=np.int64) * width
            self._offsets[key] = off
        return off

    # ----------------------------------------------------------------------------------------
    # processing

    def restart_channel(self, ch: int) -> None:
        """Reset channel ``ch`` completely (carrier off, pending events dropped)."""
        self.reset_channel(self.st, ch)
        self.carrier_on[ch] = False
        self._agc_due[ch] = False
        self._prev_tick[ch] = 0.0
        self._queues[ch].clear()
        self.st.ev_pos[ch] = np.inf

    def process(self, samples: npt.ArrayLike, missing: npt.ArrayLike | None = None) -> BlockResult:
        """Run the bank over ``samples`` shaped ``(n, m)``.  Channels flagged in ``missing``
        (shape ``(n,)``) lost this block (packet loss): their samples are ignored, the carrier
        state is held, timing and carrier keep turning at their last rate, nothing adapts and no
        symbols are recorded until the filters are clear of the gap."""
        x = np.asarray(samples)
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"samples must be shaped ({self.n}, m)")
        m = x.shape[1]
        self._res = self._empty_result(int(m / self.sps) + 8)
        if m:
            xf = x.astype(np.float64)
            miss = np.zeros(self.n, dtype=np.bool_)
            if missing is not None:
                miss = np.asarray(missing, dtype=np.bool_).reshape(self.n)
                if miss.any():
                    xf[miss] = 0.0
                    self._freeze(miss, m)
            bb = self._front_end(xf)
            self._detect(xf, miss)
            self._bb = np.concatenate([self._bb, bb], axis=1)
            self.sample += m
            self.st.nrec[:] = 0
            self._advance(self.st)
            self._trim()
        res = self._res
        width = int(np.max(res.counts)) if self.n else 0
        res.z = res.z[:, :width]
        res.codes = res.codes[:, :width]
        res.stages = res.stages[:, :width]
        return res

    def _empty_result(self, cap: int) -> BlockResult:
        n = self.n
        return BlockResult(
            z=np.zeros((n, cap), dtype=np.complex128),
            codes=np.zeros((n, cap), dtype=np.int64),
            stages=np.zeros((n, cap), dtype=np.int64),
            counts=np.zeros(n, dtype=np.int64),
            events=[[] for _ in range(n)],
        )

    def _freeze(self, miss: B1, m: int) -> None:
        st = self.st
        start = float(self.sample - self._ihalf)
        guard = self._mf_len + self._ihalf + self.cfg.eq_len * self.sps / 2.0 + 1.0
        until = float(self.sample + m) + guard
        fresh = miss & (st.freeze_until < start)
        st.freeze_from = np.where(fresh, start, st.freeze_from)
        st.freeze_until = np.where(miss, until, st.freeze_until)

    def _front_end(self, xf: F64) -> C128:
        """Mix to baseband and matched-filter; output sample k aligns with input sample k."""
        m = xf.shape[1]
        k = np.arange(self.sample, self.sample + m) % self._mix_period
        xm = xf * self._mix[k][None, :]
        buf = np.concatenate([self._fir_hist, xm], axis=1)
        L = self._mf_len
        y = np.zeros((self.n, m), dtype=np.complex128)
        for t in range(L):
            y += self._mf[t] * buf[:, L - 1 - t : L - 1 - t + m]
        self._fir_hist = buf[:, buf.shape[1] - (L - 1) :]
        return y

    def _detect(self, xf: F64, miss: B1) -> None:
        """Tick-wise power detection with hysteresis; queues CARRIER_UP/DOWN events.  For
        ``miss`` channels no decision is taken and the last tick's powers are kept."""
        m = xf.shape[1]
        prev = np.concatenate([self._last_x[:, None], xf[:, :-1]], axis=1)
        d2 = (xf - prev) ** 2
        x2 = xf * xf
        self._last_x = xf[:, -1].copy()
        start = 0
        s0 = self.sample
        new_ticks: list[F64] = []
        while start < m:
            to_tick = TICK - ((s0 + start) % TICK)
            stop = min(m, start + to_tick)
            self._tick_acc += d2[:, start:stop].sum(axis=1)
            self._tick_sq += x2[:, start:stop].sum(axis=1)
            if (s0 + stop) % TICK == 0:
                power = self._tick_acc + self._prev_tick
                up = ~self.carrier_on & (power > self._on_sum) & ~miss
                down = self.carrier_on & (power < self._off_sum) & ~miss
                end = float(s0 + stop)
                # baseband power: half the passband power (the matched filter passes the band)
                bbp = self._tick_sq / (2 * TICK)
                if miss.any():
                    last = (
                        new_ticks[-1]
                        if new_ticks
                        else self._tick_pow[:, -1]
                        if self._tick_pow.shape[1]
                        else 1.0
                    )
                    bbp = np.where(miss, last, bbp)
                new_ticks.append(bbp)
                for ch in np.nonzero(self._agc_due & self.carrier_on & ~down)[0]:
                    agc = 1.0 / math.sqrt(max(float(bbp[ch]), 1e-9))
                    self._queue(int(ch), end, BankEvent.AGC, agc)
                for ch in np.nonzero(up)[0]:
                    self._queue(int(ch), end, BankEvent.CARRIER_UP, 0.0)
                for ch in np.nonzero(down)[0]:
                    self._queue(int(ch), end, BankEvent.CARRIER_DOWN, 0.0)
                self._agc_due = up | (self._agc_due & miss)
                self.carrier_on ^= up | down
                self._prev_tick = np.where(miss, self._prev_tick, self._tick_acc)
                self._tick_acc = np.zeros(self.n)
                self._tick_sq = np.zeros(self.n)
            start = stop
        if new_ticks:
            self._tick_pow = np.concatenate([self._tick_pow, np.stack(new_ticks, axis=1)], axis=1)

    def _queue(self, ch: int, pos: float, ev: BankEvent, payload: float) -> None:
        q = self._queues[ch]
        q.append((pos, ev, payload))
        self.st.ev_pos[ch] = q[0][0]

    def _trim(self) -> None:
        """Drop baseband samples no channel needs any more."""
        lo = int(np.floor(np.min(self.st.pos) - self.sps - 2)) - self._ihalf
        cut = lo - self._bb_start
        if cut > 0:
            self._bb = self._bb[:, cut:]
            self._bb_start += cut
        tcut = lo // TICK - 2 - self._tick_start
        if tcut > 0:
            self._tick_pow = self._tick_pow[:, tcut:]
            self._tick_start += tcut

    def _advance(self, st: QamRxState, coast: bool = True) -> None:
        """Process symbols of all rows of ``st`` while samples last; rows that can go further
        than others are finished as a sub-bank.  Idle rows (see :meth:`_idle`) coast first."""
        if coast:
            idle = self._idle(st)
            if idle.any():
                self._coast(st, idle)
                end = self._bb_start + self._bb.shape[1]
                ready = np.floor(st.pos) + self._ihalf < end
                if not ready.all():
                    if ready.any():
                        idx = np.nonzero(ready)[0].astype(np.int64)
                        sub = st.take(idx)
                        self._advance(sub, coast=False)
                        st.put(idx, sub)
                    return
        self._loop(st)
        end = self._bb_start + self._bb.shape[1]
        ready = np.floor(st.pos) + self._ihalf < end
        if ready.any():
            idx = np.nonzero(ready)[0].astype(np.int64)
            sub = st.take(idx)
            self._advance(sub)
            st.put(idx, sub)

    @staticmethod
    def _idle(st: QamRxState) -> B1:
        """Rows with nothing to do but keep time: no loop gains, no drift, no adaptation,
        acquisition, training, recording, AGC tracking or countdown.  They skip the symbol loop
        (:meth:`_coast`) until their next detector event is due; their equaliser input and
        ``x_prev`` are then stale, ``err_acc``/``err_n``/``hist`` are not updated (a modem resets
        a row when its carrier comes up)."""
        idle: B1 = (
            (st.t_kp == 0.0)
            & (st.t_ki == 0.0)
            & (st.drift == 0.0)
            & (st.mu == 0.0)
            & (st.c_kp == 0.0)
            & (st.c_ki == 0.0)
            & (st.omega == 0.0)
            & (st.countdown < 0)
            & ~(st.acq | st.use_target | st.record | st.agc_track)
        )
        return idle

    def _coast(self, st: QamRxState, idle: B1) -> None:
        """Move the timing of ``idle`` rows on by whole symbols (``pos += sps`` each, as the loop
        would), while samples last and up to the symbol before their next event."""
        idx = np.nonzero(idle)[0]
        end = self._bb_start + self._bb.shape[1]
        pos0 = st.pos[idx]
        steps = int((end - float(pos0.min())) / self.sps) + 2
        if steps <= 0:
            return
        seq = np.full((idx.size, steps + 1), self.sps)
        seq[:, 0] = pos0
        np.cumsum(seq, axis=1, out=seq)  # sequential sums: the loop's rounding
        ok = (seq[:, :-1] + self._ihalf < end) & (seq[:, 1:] < st.ev_pos[idx][:, None])
        k = np.where(ok.all(axis=1), steps, ok.argmin(axis=1))
        st.pos[idx] = seq[np.arange(idx.size), k]
        st.countdown[idx] -= k

    def _loop(self, st: QamRxState) -> None:
        """The per-symbol loop over all rows of ``st`` (until one row runs out of samples)."""
        if st.n <= self.scalar_rows:
            for row in range(st.n):
                self._loop_row(st, row)
            return
        c = self.cfg
        n = st.n
        rows = st.chan
        L = self._bb.shape[1]
        ihalf = self._ihalf
        end = self._bb_start + L
        if n == 0 or st.pos.max() + ihalf >= end:
            return
        bbflat = self._bb.ravel()
        tap_idx = (rows * L - self._bb_start - ihalf + 1)[:, None, None] + np.arange(c.interp_taps)
        half = np.array([-self.sps / 2.0, 0.0])[None, :]
        nph = c.interp_phases
        table = self._interp_c
        sps = self.sps
        tgt = self.targets
        tmax = c.max_targets
        vecdot = np.vecdot
        minimum = np.minimum
        maximum = np.maximum
        tick_pow = self._tick_pow.ravel()
        tick_w = self._tick_pow.shape[1]
        tick_off = rows * tick_w - self._tick_start - 1
        # outputs of this loop
        cap = int((end - st.pos.min()) / (sps - _MAX_STEP)) + 2
        zrec = np.zeros((n, cap), dtype=np.complex128)
        crec = np.zeros((n, cap), dtype=np.int64)
        srec = np.zeros((n, cap), dtype=np.int64)
        vrec = np.zeros((n, cap), dtype=np.bool_)
        k = 0
        flags = self._flags(st)
        cd_left, ev_left = self._watch(st)
        while True:
            # symbols every row can take before samples run out (a symbol moves pos by at most
            # sps + _MAX_STEP)
            safe = int((end - ihalf - st.pos.max()) // (sps + _MAX_STEP))
            if safe <= 0:
                if st.pos.max() + ihalf >= end:
                    break
                safe = 1
            any_frz = bool((st.freeze_until > st.pos).any())
            for _ in range(safe):
                any_acq, any_target, any_record, any_mu, any_agc = flags
                if any_frz:
                    frz = (st.pos >= st.freeze_from) & (st.pos < st.freeze_until)
                if any_agc:
                    t = (st.pos // TICK).astype(np.int64)
                    pw = tick_pow[tick_off + np.clip(t, self._tick_start + 1, self._tick_start + tick_w)]
                    st.agc = np.where(st.agc_track, 1.0 / np.sqrt(pw + 1e-9), st.agc)
                # --- interpolate the two T/2 samples of this symbol
                p = st.pos[:, None] + half
                fl = np.floor(p)
                ph = ((p - fl) * nph).astype(np.int64)
                g = bbflat[tap_idx + fl.astype(np.int64)[:, :, None]]
                x = vecdot(table[ph], g)
                x *= st.agc[:, None]
                # --- symbol timing (Gardner), PI loop
                xon = x[:, 1]
                terr = ((st.x_prev - xon) * x[:, 0].conj()).real
                if any_frz:
                    terr[frz] = 0.0
                st.x_prev = xon
                st.drift = minimum(maximum(st.drift + st.t_ki * terr, -_MAX_DRIFT), _MAX_DRIFT)
                st.pos += sps + minimum(maximum(st.drift + st.t_kp * terr, -_MAX_STEP), _MAX_STEP)
                # --- equaliser
                eqbuf = st.eqbuf
                eqbuf[:, :-2] = eqbuf[:, 2:]
                eqbuf[:, -2:] = x
                y = vecdot(st.ctaps, eqbuf)
                rot = np.exp(-1j * st.theta)
                z = y * rot
                dec, codes = self.slicer(st, z)
                if any_target:
                    ref = np.where(st.use_target, tgt[rows, st.tidx], dec)
                    st.tidx = np.minimum(st.tidx + st.use_target, tmax)
                else:
                    ref = dec
                err = ref - z
                if any_frz:
                    err[frz] = 0.0
                st.err_acc += np.abs(err) ** 2
                st.err_n += 1
                if any_mu:
                    upd = st.mu * err.conj() * rot
                    st.ctaps += upd[:, None] * eqbuf
                # --- carrier PI loop
                perr = (z * ref.conj()).imag / (np.abs(ref) ** 2 + 1e-9)
                if any_frz:
                    perr[frz] = 0.0
                st.omega += st.c_ki * perr
                st.theta += st.omega + st.c_kp * perr
                st.theta %= _TWO_PI
                # --- record
                if any_record:
                    zrec[:, k] = z
                    crec[:, k] = codes
                    srec[:, k] = st.stage
                    if any_frz:
                        rec = st.record & ~frz
                        vrec[:, k] = rec
                        st.nrec += rec
                    else:
                        vrec[:, k] = st.record
                        st.nrec += st.record
                k += 1
                # --- rare events
                events: list[tuple[int, BankEvent, float]] = []
                if any_acq:
                    hist = st.hist
                    d = y * hist[:, -2].conj()
                    hist[:, :-1] = hist[:, 1:]
                    hist[:, -1] = y
                    st.acq_n += st.acq
                    counting = st.acq & (st.acq_n > st.settle)
                    ad = np.abs(d)
                    brk = counting & (st.acq_run >= ACQ_MIN_RUN) & (d.real < st.brk_cos * ad)
                    holds = counting & (d.real > _COS45 * ad)
                    # unit vectors, from the 8th symbol of a run on (after the AGC and timing
                    # transients)
                    use = holds & (st.acq_run >= 8)
                    st.acq_run = np.where(holds | brk, st.acq_run + holds, st.acq_run // 2)
                    st.facc = np.where(
                        use, st.facc + d / (ad + 1e-12), np.where(st.acq_run > 0, st.facc, 0.0)
                    )
                    if brk.any():
                        events.extend((int(i), BankEvent.PATTERN_BREAK, 0.0) for i in np.nonzero(brk)[0])
                st.countdown -= 1
                cd_left -= 1
                if cd_left == 0:
                    for r in np.nonzero(st.countdown == 0)[0]:
                        events.append((int(r), BankEvent.COUNTDOWN, 0.0))
                    cd_left = self._watch(st)[0]
                ev_left -= 1
                if ev_left <= 0:
                    due = st.pos >= st.ev_pos
                    if due.any():
                        for r in np.nonzero(due)[0]:
                            q = self._queues[int(st.chan[r])]
                            while q and q[0][0] <= st.pos[r]:
                                _, ev, payload = q.pop(0)
                                events.append((int(r), ev, payload))
                            st.ev_pos[r] = q[0][0] if q else np.inf
                    ev_left = self._watch(st)[1]
                if events:
                    for row, ev, payload in events:
                        self.on_event(st, row, ev, payload)
                    flags = self._flags(st)
                    cd_left, ev_left = self._watch(st)
            if k >= cap:
                break
        self._collect(st, zrec[:, :k], crec[:, :k], srec[:, :k], vrec[:, :k])

    def _loop_row(self, st: QamRxState, r: int) -> None:
        """The per-symbol loop of :meth:`_loop` for row ``r`` alone, on Python scalars (cheaper
        than numpy on arrays of one row).  Same arithmetic, same events, same results."""
        c = self.cfg
        ihalf = self._ihalf
        end = self._bb_start + self._bb.shape[1]
        if st.pos[r] + ihalf >= end:
            return
        ch = int(st.chan[r])
        base = self._bb_start + ihalf - 1  # list index of a symbol's first tap: floor(p) - base
        bb = self._bb[ch].tolist()
        ntap = c.interp_taps
        table = self._interp_rows
        nph = c.interp_phases
        sps = self.sps
        hsps = sps / 2.0
        tmax = c.max_targets
        tick_row = self._tick_pow[ch].tolist()
        tick_lo = self._tick_start + 1
        tick_hi = self._tick_start + len(tick_row)
        floor = math.floor
        vdot = np.vdot
        multiply = np.multiply
        tmp = np.empty(c.eq_len, dtype=np.complex128)
        sqrt = math.sqrt
        cos = math.cos
        sin = math.sin
        queue = self._queues[ch]
        zs: list[complex] = []
        cs: list[int] = []
        ss: list[int] = []
        targets: list[complex] | None = None
        while True:
            # --- load the row into locals
            pos = float(st.pos[r])
            drift = float(st.drift[r])
            t_kp = float(st.t_kp[r])
            t_ki = float(st.t_ki[r])
            x_prev = complex(st.x_prev[r])
            agc = float(st.agc[r])
            agc_track = bool(st.agc_track[r])
            buf = st.eqbuf[r]  # views: updated in place
            taps = st.ctaps[r]
            mu = float(st.mu[r])
            theta = float(st.theta[r])
            omega = float(st.omega[r])
            c_kp = float(st.c_kp[r])
            c_ki = float(st.c_ki[r])
            use_target = bool(st.use_target[r])
            tidx = int(st.tidx[r])
            acq = bool(st.acq[r])
            if acq:
                hist = st.hist[r].tolist()
                acq_n = int(st.acq_n[r])
                acq_run = int(st.acq_run[r])
                settle = int(st.settle[r])
                facc = complex(st.facc[r])
                brk_cos = float(st.brk_cos[r])
            countdown = int(st.countdown[r])
            frz_from = float(st.freeze_from[r])
            frz_until = float(st.freeze_until[r])
            ev_pos = float(st.ev_pos[r])
            record = bool(st.record[r])
            stage = int(st.stage[r])
            err_acc = float(st.err_acc[r])
            err_n = int(st.err_n[r])
            nrec = int(st.nrec[r])
            if use_target and targets is None:
                targets = self.targets[ch].tolist()
            slice_one = self.row_slicer(st, r)
            events: list[tuple[int, BankEvent, float]] = []
            while pos + ihalf < end:
                frz = frz_from <= pos < frz_until
                if agc_track:
                    t = int(pos // TICK)
                    t = tick_lo if t < tick_lo else tick_hi if t > tick_hi else t
                    agc = 1.0 / sqrt(tick_row[t - tick_lo] + 1e-9)
                # --- interpolate the two T/2 samples of this symbol
                p = pos - hsps
                fl = floor(p)
                i = fl - base
                x0 = sum(map(mul, table[int((p - fl) * nph)], bb[i : i + ntap])) * agc
                fl = floor(pos)
                i = fl - base
                x1 = sum(map(mul, table[int((pos - fl) * nph)], bb[i : i + ntap])) * agc
                # --- symbol timing (Gardner), PI loop
                terr = 0.0 if frz else ((x_prev - x1) * x0.conjugate()).real
                x_prev = x1
                v = drift + t_ki * terr
                drift = -_MAX_DRIFT if v < -_MAX_DRIFT else _MAX_DRIFT if v > _MAX_DRIFT else v
                v = drift + t_kp * terr
                pos += sps + (-_MAX_STEP if v < -_MAX_STEP else _MAX_STEP if v > _MAX_STEP else v)
                # --- equaliser
                buf[:-2] = buf[2:]
                buf[-2] = x0
                buf[-1] = x1
                y = complex(vdot(taps, buf))
                rot = complex(cos(theta), -sin(theta))
                z = y * rot
                dec, code = slice_one(z)
                if use_target:
                    assert targets is not None
                    ref = targets[tidx]
                    tidx = min(tidx + 1, tmax)
                else:
                    ref = dec
                err = 0j if frz else ref - z
                ae = abs(err)
                err_acc += ae * ae
                err_n += 1
                if mu:
                    upd = mu * err.conjugate() * rot
                    multiply(buf, upd, out=tmp)
                    taps += tmp
                # --- carrier PI loop
                ar = abs(ref)
                perr = 0.0 if frz else (z * ref.conjugate()).imag / (ar * ar + 1e-9)
                omega += c_ki * perr
                theta += omega + c_kp * perr
                theta %= _TWO_PI
                # --- record
                if record and not frz:
                    zs.append(z)
                    cs.append(code)
                    ss.append(stage)
                    nrec += 1
                # --- rare events
                if acq:
                    d = y * hist[-2].conjugate()
                    del hist[0]
                    hist.append(y)
                    acq_n += 1
                    brk = holds = False
                    if acq_n > settle:
                        ad = abs(d)
                        brk = acq_run >= ACQ_MIN_RUN and d.real < brk_cos * ad
                        holds = d.real > _COS45 * ad
                    if holds and acq_run >= 8:
                        s = 1.0 / (ad + 1e-12)
                        facc += complex(d.real * s, d.imag * s)
                        acq_run += 1
                    else:
                        if holds:
                            acq_run += 1
                        elif not brk:
                            acq_run //= 2
                        if acq_run <= 0:
                            facc = 0j
                    if brk:
                        events.append((r, BankEvent.PATTERN_BREAK, 0.0))
                countdown -= 1
                if countdown == 0:
                    events.append((r, BankEvent.COUNTDOWN, 0.0))
                if pos >= ev_pos:
                    while queue and queue[0][0] <= pos:
                        _, ev, payload = queue.pop(0)
                        events.append((r, ev, payload))
                    ev_pos = queue[0][0] if queue else math.inf
                if events:
                    break
            # --- store the row back
            st.pos[r] = pos
            st.drift[r] = drift
            st.x_prev[r] = x_prev
            st.agc[r] = agc
            st.theta[r] = theta
            st.omega[r] = omega
            st.tidx[r] = tidx
            if acq:
                st.hist[r] = hist
                st.acq_n[r] = acq_n
                st.acq_run[r] = acq_run
                st.facc[r] = facc
            st.countdown[r] = countdown
            st.ev_pos[r] = ev_pos
            st.err_acc[r] = err_acc
            st.err_n[r] = err_n
            st.nrec[r] = nrec
            if not events:
                break
            for row, ev, payload in events:
                self.on_event(st, row, ev, payload)
            if bool(st.use_target[r]):
                targets = self.targets[ch].tolist()
        if zs:
            self._append(ch, zs, cs, ss)

    def _watch(self, st: QamRxState) -> tuple[int, int]:
        """Symbols until the first countdown reaches zero (-1: none runs), and a number of
        symbols that no row's position can reach its next event in (moves are at most
        ``sps + _MAX_STEP``): the loop checks those only then."""
        cd = st.countdown
        running = cd[cd > 0]
        cd_left = int(running.min()) if running.size else -1
        gap = float(st.ev_pos.min()) - float(st.pos.max())
        ev_left = int(gap // (self.sps + _MAX_STEP)) if math.isfinite(gap) else 1 << 62
        return cd_left, ev_left

    @staticmethod
    def _flags(st: QamRxState) -> tuple[bool, bool, bool, bool, bool]:
        return (
            bool(st.acq.any()),
            bool(st.use_target.any()),
            bool(st.record.any()),
            bool(st.mu.any()),
            bool(st.agc_track.any()),
        )

    def _append(self, ch: int, z: list[complex], codes: list[int], stages: list[int]) -> None:
        """Append the recorded symbols of channel ``ch`` (row-wise loop)."""
        res = self._res
        c0 = int(res.counts[ch])
        c1 = c0 + len(z)
        if c1 > res.z.shape[1]:
            grow = c1 - res.z.shape[1]
            res.z = np.pad(res.z, ((0, 0), (0, grow)))
            res.codes = np.pad(res.codes, ((0, 0), (0, grow)))
            res.stages = np.pad(res.stages, ((0, 0), (0, grow)))
        res.z[ch, c0:c1] = z
        res.codes[ch, c0:c1] = codes
        res.stages[ch, c0:c1] = stages
        res.counts[ch] = c1

    def _collect(self, st: QamRxState, z: C128, codes: I64, stages: I64, valid: B1) -> None:
        """Append the recorded symbols of a run, left-aligned per channel."""
        if not valid.any():
            return
        res = self._res
        rank = np.cumsum(valid, axis=1) - 1
        ri, ki = np.nonzero(valid)
        ch = st.chan[ri]
        col = res.counts[ch] + rank[ri, ki]
        if col.size and int(col.max()) >= res.z.shape[1]:
            grow = int(col.max()) + 1 - res.z.shape[1]
            res.z = np.pad(res.z, ((0, 0), (0, grow)))
            res.codes = np.pad(res.codes, ((0, 0), (0, grow)))
            res.stages = np.pad(res.stages, ((0, 0), (0, grow)))
        res.z[ch, col] = z[ri, ki]
        res.codes[ch, col] = codes[ri, ki]
        res.stages[ch, col] = stages[ri, ki]
        res.counts[st.chan] += valid.sum(axis=1)
