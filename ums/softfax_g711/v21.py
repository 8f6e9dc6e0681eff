"""V.21 300 bit/s FSK modem, in the synchronous form T.30 uses for its HDLC control channel.

V.21 §2: channel 1 has a nominal mean frequency of 1080 Hz, channel 2 of 1750 Hz, each with a
deviation of ±100 Hz; the higher characteristic frequency is binary 0 (space, F_Z), the lower one
binary 1 (mark, F_A).  T.30 (§5.3) sends its HDLC control frames on channel 2 at 300 bit/s.

:class:`FskTx` is a continuous-phase transmitter.  :class:`FskRxBank` is a receiver for ``n``
channels stepping together; :class:`FskRx` is a bank of one.  The receiver correlates the input with
both characteristic frequencies over a one-bit window (sliding sums made from cumulative sums),
detects the carrier from the power of the first difference with hysteresis (V.21's received line
signal detector is on at -43 dBm or more and off below -48 dBm; the default cutoff switches on at
-44 dBm0 and off below -47.5 dBm0), and recovers the bit clock from the zero crossings of the
mark/space energy difference.  The only Python loop is one pass per clock event (a crossing or a
carrier change), a few per bit at most; everything per sample is numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .banks import first_rows
from .common import (
    SAMPLE_RATE,
    Bits,
    ModemStatus,
    RxOutput,
    Samples,
    Status,
    amplitude_for_rms_dbm0,
)

__all__ = ["V21_CH1", "V21_CH2", "FskRx", "FskRxBank", "FskSpec", "FskTx", "fsk_spec"]

_F64 = npt.NDArray[np.float64]
_NO_BITS: Bits = np.zeros(0, dtype=np.uint8)
_NO_BITS.flags.writeable = False


@dataclass(frozen=True, slots=True)
class FskSpec:
    """An FSK channel: ``mark_hz`` carries binary 1, ``space_hz`` binary 0."""

    name: str
    mark_hz: float
    space_hz: float
    baud: int


#: V.21 §2, channel 1: 1080 ± 100 Hz.
V21_CH1 = FskSpec("V.21 channel 1", mark_hz=980.0, space_hz=1180.0, baud=300)
#: V.21 §2, channel 2: 1750 ± 100 Hz (the T.30 control channel).
V21_CH2 = FskSpec("V.21 channel 2", mark_hz=1650.0, space_hz=1850.0, baud=300)


def fsk_spec(channel: int | FskSpec) -> FskSpec:
    """The :class:`FskSpec` for V.21 channel 1 or 2 (an :class:`FskSpec` is returned as it is)."""
    if isinstance(channel, FskSpec):
        return channel
    if channel == 1:
        return V21_CH1
    if channel == 2:
        return V21_CH2
    raise ValueError(f"V.21 has channels 1 and 2, not {channel!r}")


class FskTx:
    """Continuous-phase FSK transmitter (V.21 §2, 300 bit/s).

    Bits given to :meth:`send` are sent in order; while the queue is empty the transmitter idles on
    mark (binary 1).  After :meth:`finish` the last queued bit is sent in full and the output then
    falls silent; :attr:`done` becomes true.  Sending again after that starts a new burst.
    Bit boundaries fall on the sample nearest to each multiple of 8000/300 samples.
    """

    def __init__(self, channel: int | FskSpec = 2, *, level_dbm0: float = -10.0) -> None:
        self.spec = fsk_spec(channel)
        self.level_dbm0 = level_dbm0
        self._amp = amplitude_for_rms_dbm0(level_dbm0) * np.sqrt(2.0)
        # Phase step per sample, indexed by the bit value: [space, mark].
        self._step = 2.0 * np.pi * np.array([self.spec.space_hz, self.spec.mark_hz]) / SAMPLE_RATE
        self._queue: Bits = np.zeros(0, dtype=np.uint8)
        self._head = 0
        self._finishing = False
        self._done = False
        self._restart()

    def _restart(self) -> None:
        self._phase = 0.0
        self._cur = 1
        # Position in the current bit, in units of 1/(SAMPLE_RATE*baud) s; SAMPLE_RATE means "the
        # current bit is over", so the next sample starts a new bit.
        self._acc = SAMPLE_RATE

    @property
    def done(self) -> bool:
        """True once :meth:`finish` was called and every queued bit has been sent."""
        return self._done

    @property
    def pending_bits(self) -> int:
        """Bits queued and not yet started."""
        return self._queue.size - self._head

    def send(self, bits: npt.ArrayLike) -> None:
        """Queue bits (0/1) for sending."""
        b: Bits = np.asarray(bits, dtype=np.uint8).ravel() & np.uint8(1)
        if self._done:
            self._done = False
            self._finishing = False
            self._restart()
        rest = self._queue[self._head :]
        self._queue = np.concatenate([rest, b]) if rest.size else b
        self._head = 0

    def finish(self) -> None:
        """Send what is queued, then stop (no idle marks after the last bit)."""
        self._finishing = True
        if self.pending_bits == 0 and self._acc >= SAMPLE_RATE:
            self._done = True

    def generate(self, n: int) -> Samples:
        """The next ``n`` samples (int16)."""
        out = np.zeros(n, dtype=np.int16)
        if n <= 0 or self._done:
            return out
        baud = self.spec.baud
        pos = self._acc + baud * np.arange(n, dtype=np.int64)
        j = pos // SAMPLE_RATE  # 0: the bit in progress, k >= 1: the k-th next bit
        need = int(j[-1])
        avail = min(need, self.pending_bits)
        taken = self._queue[self._head : self._head + avail]
        self._head += avail
        active = n
        if avail < need:
            if self._finishing:
                active = int(np.searchsorted(j, avail, side="right"))
                pad = np.zeros(need - avail, dtype=np.uint8)
            else:
                pad = np.ones(need - avail, dtype=np.uint8)
            values = np.concatenate([np.array([self._cur], dtype=np.uint8), taken, pad])
        else:
            values = np.concatenate([np.array([self._cur], dtype=np.uint8), taken])
        steps = self._step[values[j[:active]]]
        phase = self._phase + np.cumsum(steps)
        out[:active] = np.rint(np.clip(self._amp * np.sin(phase), -32767.0, 32767.0)).astype(np.int16)
        if active < n:
            self._done = True
            self._restart()
            return out
        self._phase = float(phase[-1] % (2.0 * np.pi))
        self._cur = int(values[need])
        self._acc = int(self._acc + baud * n - SAMPLE_RATE * need)
        if self._finishing and self.pending_bits == 0 and self._acc >= SAMPLE_RATE:
            self._done = True
            self._restart()
        return out


class FskRxBank:
    """Synchronous V.21 receivers for ``n`` channels stepping together (samples shaped ``(n, m)``).

    Per channel: carrier detect with hysteresis (on at ``cutoff_dbm0 + 1.5`` dB, off below
    ``cutoff_dbm0 - 2`` dB, measured on the first difference and corrected for its gain at the
    channel's mean frequency), non-coherent demodulation by one-bit-window correlation with the mark
    and space frequencies, and bit-clock recovery from the crossings of the mark/space energy
    difference: the first crossing after carrier-up sets the clock phase, later ones pull it with a
    gain falling to :attr:`CLOCK_GAIN`.  Bits are sampled only while the carrier is on.
    """

    #: Per-channel state for :func:`.banks.first_rows`: every array but the reference oscillators, and
    #: the clock lists.
    _BANK_SHARED: frozenset[str] = frozenset({"_osc"})
    _BANK_ROW_LISTS: frozenset[str] = frozenset({"_psi", "_count", "_crossings"})

    #: Power window of the carrier detector (5 ms).
    POWER_WINDOW = 40
    #: Steady-state gain of the clock loop (fraction of the phase error taken per crossing).
    CLOCK_GAIN = 1.0 / 8.0

    def __init__(self, n: int, channel: int | FskSpec = 2, *, cutoff_dbm0: float = -45.5) -> None:
        if n < 1:
            raise ValueError("a bank has at least one channel")
        self.n = n
        self.spec = fsk_spec(channel)
        self.cutoff_dbm0 = cutoff_dbm0
        spec = self.spec
        self._rate = spec.baud / SAMPLE_RATE  # bits per sample
        tb = SAMPLE_RATE / spec.baud
        # Correlation window: one bit, rounded down to whole samples.
        self._win = int(SAMPLE_RATE // spec.baud)
        # Delay from a crossing of the energy difference to the best sampling instant, in samples.
        self._delay = tb / 2.0 - 0.5
        # Reference oscillators for [mark, space]; the table repeats with the period of both tones.
        period = _common_period(spec.mark_hz, spec.space_hz)
        self._period = period
        reps = max(2, -(-(period + 4096 + self._win) // period))
        k = np.arange(period * reps)
        freqs = np.array([spec.mark_hz, spec.space_hz])[:, None]
        self._osc = np.exp(-2j * np.pi * freqs * k[None, :] / SAMPLE_RATE)
        # Carrier thresholds on the sum of squared first differences over the power window.
        fc = np.sqrt(spec.mark_hz * spec.space_hz)
        diff_gain2 = (2.0 * np.sin(np.pi * fc / SAMPLE_RATE)) ** 2
        self._on_level = self.POWER_WINDOW * diff_gain2 * amplitude_for_rms_dbm0(cutoff_dbm0 + 1.5) ** 2
        self._off_level = self.POWER_WINDOW * diff_gain2 * amplitude_for_rms_dbm0(cutoff_dbm0 - 2.0) ** 2
        self._hist_len = max(self._win, self.POWER_WINDOW + 1)
        self.reset()

    def reset(self) -> None:
        """Forget all state: silence before, carrier off, sample count 0."""
        n = self.n
        self._samples = 0
        self._hist = np.zeros((n, self._hist_len))
        self._on = np.zeros(n, dtype=bool)
        self._d_last = np.zeros(n)
        # Clock per channel: the count B(t) = t*rate - psi passes an integer at each bit's sampling
        # instant; `count` is the last integer passed, `crossings` counts crossings since carrier-up.
        self._psi = [0.0] * n
        self._count = [0] * n
        self._crossings = [0] * n

    def reset_channel(self, ch: int) -> None:
        """Forget the state of channel ``ch``: silence before, carrier off (the sample count of the bank
        goes on)."""
        self._hist[ch] = 0.0
        self._on[ch] = False
        self._d_last[ch] = 0.0
        self._psi[ch] = 0.0
        self._count[ch] = 0
        self._crossings[ch] = 0

    @property
    def samples(self) -> int:
        """Samples received so far (per channel)."""
        return self._samples

    @property
    def carrier(self) -> npt.NDArray[np.bool_]:
        """Carrier state per channel."""
        return self._on.copy()

    def receive(self, samples: npt.ArrayLike, hold: npt.ArrayLike | None = None) -> list[RxOutput]:
        """Demodulate one block per channel, ``samples`` shaped ``(n, m)``; returns one
        :class:`RxOutput` per channel.  Channels flagged in ``hold`` (shape ``(n,)``) are not fed:
        their state is as if this block had not happened (a lost packet skipped, as a single
        receiver that is not called), and their output is empty."""
        x = np.asarray(samples)
        if x.ndim == 1 and self.n == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] != self.n:
            raise ValueError(f"expected samples shaped ({self.n}, m), got {x.shape}")
        n, m = x.shape
        if m == 0:
            return [RxOutput() for _ in range(n)]
        if hold is not None:
            held = np.flatnonzero(np.asarray(hold, dtype=np.bool_).reshape(n)).tolist()
            if held:
                return self._receive_holding(x, held)
        n0 = self._samples
        hl = self._hist_len
        xe = np.empty((n, hl + m))
        xe[:, :hl] = self._hist
        xe[:, hl:] = x
        self._hist = xe[:, m:].copy()

        # Demodulator: energies at mark and space over the last `win` samples, for every sample.
        win = self._win
        start = (n0 - win) % self._period
        osc = self._osc
        if start + win + m <= osc.shape[1]:
            ref = osc[:, start : start + win + m]
        else:
            ref = np.take(osc, np.arange(start, start + win + m), axis=1, mode="wrap")
        c = (xe[:, None, hl - win :] * ref).cumsum(axis=2)
        s = c[:, :, win:] - c[:, :, :m]
        e = s.real * s.real + s.imag * s.imag
        # d_ext[:, 0] is the last difference of the previous block.
        d_ext = np.empty((n, m + 1))
        d_ext[:, 0] = self._d_last
        d = d_ext[:, 1:]
        np.subtract(e[:, 0, :], e[:, 1, :], out=d)
        self._d_last = d_ext[:, m].copy()

        # Carrier detect: power of the first difference over POWER_WINDOW samples, with hysteresis.
        pw_n = self.POWER_WINDOW
        dx = xe[:, hl - pw_n :] - xe[:, hl - pw_n - 1 : -1]
        cq = (dx * dx).cumsum(axis=1)
        changes = self._carrier_changes(cq[:, pw_n:] - cq[:, :m])

        # Crossings of the energy difference, with their instants by linear interpolation.
        pos = d_ext > 0.0
        flat = np.flatnonzero(pos[:, 1:] != pos[:, :-1])
        self._samples = n0 + m
        if n == 1:
            da = d_ext[0, flat]
            db = d_ext[0, flat + 1]
            cr_i = flat
            bounds = [0, flat.size]
        else:
            cr_ch, cr_i = np.divmod(flat, m)
            da = d_ext[cr_ch, cr_i]
            db = d_ext[cr_ch, cr_i + 1]
            bounds = np.searchsorted(cr_ch, np.arange(n + 1)).tolist()
        t_cross = ((n0 - 1 + self._delay) + cr_i + da / (da - db)) * self._rate
        cr_i_l = cr_i.tolist()
        target_l = t_cross.tolist()

        outs: list[RxOutput] = []
        on = self._on.tolist()
        for ch in range(n):
            ch_changes = changes.get(ch) if changes else None
            if not ch_changes and not on[ch]:
                outs.append(RxOutput(_NO_BITS, []))
                continue
            lo, hi = bounds[ch], bounds[ch + 1]
            at, events = self._clock(ch, n0, m, cr_i_l[lo:hi], target_l[lo:hi], ch_changes)
            outs.append(RxOutput(bits=(d[ch, at] > 0.0).view(np.uint8), events=events))
        return outs

    def receive_first(self, samples: npt.ArrayLike, hold: npt.ArrayLike | None = None) -> list[RxOutput]:
        """:meth:`receive` for the first ``k`` channels, ``samples`` shaped ``(k, m)`` (``hold`` shaped
        ``(k,)``); one output per fed channel.  The other channels are held (as with ``hold``), and
        only the fed ones cost time (see :func:`.banks.first_rows`)."""
        x = np.asarray(samples)
        if x.ndim != 2 or not 0 < x.shape[0] <= self.n:
            raise ValueError(f"expected samples shaped (k, m) with 0 < k <= {self.n}, got {x.shape}")
        k = x.shape[0]
        if k == self.n:
            return self.receive(x, hold)
        with first_rows(self, k):
            outs = self.receive(x, hold)
        shift = x.shape[1] * self._rate  # the clock counts samples of the bank
        for ch in range(k, self.n):
            self._psi[ch] += shift
        return outs

    def _receive_holding(self, x: npt.NDArray[Any], held: list[int]) -> list[RxOutput]:
        """:meth:`receive` with the channels in ``held`` put back as they were.  The bit clock
        counts samples of the bank, so a held channel's clock is moved on by the block's length."""
        saved = (self._hist[held].copy(), self._on[held].copy(), self._d_last[held].copy())
        clocks = [(self._psi[ch], self._count[ch], self._crossings[ch]) for ch in held]
        outs = self.receive(x)
        self._hist[held], self._on[held], self._d_last[held] = saved
        shift = x.shape[1] * self._rate
        for ch, (psi, count, k) in zip(held, clocks, strict=True):
            self._psi[ch] = psi + shift
            self._count[ch] = count
            self._crossings[ch] = k
            outs[ch] = RxOutput()
        return outs

    def _carrier_changes(self, power: _F64) -> dict[int, list[tuple[int, bool]]] | None:
        """Carrier changes in this block per channel, as (sample index, on); updates the state."""
        prev = self._on
        on_level = self._on_level
        off_level = self._off_level
        if self.n == 1:
            if prev[0]:
                if not (power < off_level).any():
                    return None
            elif not (power > on_level).any():
                return None
            todo = [0]
        else:
            change = np.where(prev, (power < off_level).any(axis=1), (power > on_level).any(axis=1))
            if not change.any():
                return None
            todo = np.flatnonzero(change).tolist()
        m = power.shape[1]
        idx = np.arange(m)
        result: dict[int, list[tuple[int, bool]]] = {}
        for ch in todo:
            hi = power[ch] > on_level
            last = np.maximum.accumulate(np.where(hi | (power[ch] < off_level), idx, -1))
            state = np.where(last >= 0, hi[np.maximum(last, 0)], prev[ch])
            steps = np.flatnonzero(state[1:] != state[:-1]) + 1
            first = [0] if bool(state[0]) != bool(prev[ch]) else []
            result[ch] = [(i, bool(state[i])) for i in first + steps.tolist()]
            prev[ch] = bool(state[-1])
        return result

    def _clock(
        self,
        ch: int,
        n0: int,
        m: int,
        cross_i: list[int],
        cross_target: list[float],
        changes: list[tuple[int, bool]] | None,
    ) -> tuple[list[int], list[ModemStatus]]:
        """Bit-clock loop of one channel over one block: walks the carrier changes and crossings in
        time order; returns the sampling instants (indices into the block) and the status events.
        ``cross_target`` is, per crossing, the clock count at the sampling instant it implies."""
        rate = self._rate
        inv_rate = 1.0 / rate
        gain = self.CLOCK_GAIN
        psi = self._psi[ch]
        count = self._count[ch]
        k = self._crossings[ch]
        at: list[int] = []
        events: list[ModemStatus] = []
        # Change points in time order: (index, kind, value); kind 0 = carrier change, 1 = crossing.
        points = [(i, 1, t) for i, t in zip(cross_i, cross_target, strict=True)]
        if changes:
            on = not changes[0][1]
            points += [(i, 0, 1.0 if up else 0.0) for i, up in changes]
            points.sort()
        else:
            on = bool(self._on[ch])
        points.append((m, 2, 0.0))
        seg = 0
        base = n0
        for i, kind, value in points:
            if on:
                # Sample every bit whose instant falls in [seg, i) with the clock as it is now.
                t = math.ceil((count + 1 + psi) * inv_rate) - base
                while t < i:
                    at.append(t if t > seg else seg)
                    count += 1
                    t = math.ceil((count + 1 + psi) * inv_rate) - base
            seg = i
            if kind == 1:
                if on:
                    err = value - psi
                    if k == 0:
                        psi += err - math.floor(err + 0.5)
                    else:
                        g = 1.0 / (k + 1)
                        psi += (g if g > gain else gain) * (err - math.floor(err + 0.5))
                    k += 1
            elif kind == 0:
                on = value > 0.5
                status = Status.CARRIER_UP if on else Status.CARRIER_DOWN
                events.append(ModemStatus(status, len(at), n0 + i))
                if on:
                    # Start the clock half a bit before the next count; the first crossing sets it.
                    psi = (n0 + i) * rate - count - 0.5
                    k = 0
        self._psi[ch] = psi
        self._count[ch] = count
        self._crossings[ch] = k
        return at, events


def _common_period(f1: float, f2: float) -> int:
    """Samples after which both reference tones repeat exactly."""
    for p in range(1, 8001):
        if abs((f1 * p / SAMPLE_RATE) % 1.0) < 1e-9 and abs((f2 * p / SAMPLE_RATE) % 1.0) < 1e-9:
            return p
    return SAMPLE_RATE


class FskRx:
    """Synchronous V.21 receiver (a :class:`FskRxBank` of one): ``receive(samples) -> RxOutput``."""

    def __init__(self, channel: int | FskSpec = 2, *, cutoff_dbm0: float = -45.5) -> None:
        self._bank = FskRxBank(1, channel, cutoff_dbm0=cutoff_dbm0)
        self.spec = self._bank.spec

    def reset(self) -> None:
        """Forget all state."""
        self._bank.reset()

    @property
    def carrier(self) -> bool:
        """True while the carrier is detected."""
        return bool(self._bank.carrier[0])

    @property
    def samples(self) -> int:
        """Samples received so far."""
        return self._bank.samples

    def receive(self, samples: npt.ArrayLike) -> RxOutput:
        """Demodulate a block of int16 samples (any length)."""
        x = np.asarray(samples).ravel()
        return self._bank.receive(x[None, :])[0]
