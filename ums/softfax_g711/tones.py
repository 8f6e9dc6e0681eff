"""Fax and modem connect tones: CNG, CED / ANS, ANSam, their phase-reversal forms, and silence.

What it does
------------
* Generation: :class:`ToneGenerator` plays a list of :class:`Segment` (tone or silence) once or
  repeated, ``generate(n) -> int16``, block by block with the phase carried over.
  :func:`cng` gives T.30 §4's calling tone (1100 Hz, 0.5 s on, 3 s off, repeated);
  :func:`answer_tone` the answering sequence of :class:`AnswerSequence` (silence, 2100 Hz, silence)
  with the tone plain (CED, V.25 ANS), with phase reversals every 450 ms (ANS/), amplitude
  modulated at 15 Hz by ±20 % (V.8 ANSam) or both (ANSam/); :func:`ced` is the T.30 case.
* Detection: :class:`ToneDetector` ``receive(int16) -> list[ToneEvent]`` reports CNG and the 2100 Hz
  family (telling ANS, ANS/, ANSam and ANSam/ apart), each with the sample index at which it was
  decided, the estimated onset and the level; :class:`SilenceDetector` reports power below a
  threshold lasting a minimum time (e.g. the 75 ms gaps of T.30).

How it works
------------
The detector cuts the signal into 10 ms windows (80 samples) every 5 ms and takes an 80-point DFT
of each, so bins fall every 100 Hz and 1100 Hz and 2100 Hz lie on bins.  Per window and tone it
measures the power in the tone's bin and its two neighbours (which catches a tone anywhere within
±50 Hz), the power in the seven bins around it, and the window's total power.  A window is
*good* when that tone power is above the level floor, the tone's own bin is the largest of the
three (so the tone is within ±50 Hz of it), the three bins hold half of the seven-bin band and at
least 5 % of the whole window (so a tone still counts under louder speech at other frequencies).

The bin's phase is referred to absolute time, so a steady tone ``df`` Hz away from the bin centre
turns it by ``2 pi df * 5 ms`` per hop.  Over the last ``min_on`` seconds of windows, split in
four quarters, the detector sums the hop-to-hop rotations of consecutive good windows; a tone is
declared when enough of the windows are good in every quarter, the rotations are coherent, the
mean frequency is within the tolerance of the nominal one and the four quarters agree on it
(a sweep, a vibrato or a voiced vowel wanders; a tone does not).  For the 2100 Hz family the
phase is doubled first, which removes the 180° reversals from the frequency measurement; the
reversals themselves show as a half-turn between good windows (looked for until 1 s after the
declaration), and the 15 Hz AM of ANSam as a 15 Hz component of the windows' amplitudes.
Onset, level, class and the tone's continuation use only the *strong* good windows (at least
half the median amplitude), so noise or speech windows that happen to pass next to the tone do
not blur them.  A tone ends after ``end_gap_s`` without a good window of its amplitude; the next
one needs a whole new span.  All of this is numpy over the windows of a block (sliding sums by
cumulative sums); Python only steps through the few windows where a tone starts, ends or changes
class.

Levels follow ``common``: a full-scale sine is +3.14 dBm0.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ums.softfax_g711.common import FULL_SCALE, FULL_SCALE_DBM0, SAMPLE_RATE, Samples, amplitude_for_rms_dbm0

__all__ = [
    "ANSAM_DEPTH",
    "ANSAM_HZ",
    "ANS_HZ",
    "CNG_HZ",
    "REVERSAL_S",
    "T30_ANSWER",
    "V25_ANSWER",
    "AnswerSequence",
    "Segment",
    "SilenceDetector",
    "Tone",
    "ToneDetector",
    "ToneEvent",
    "ToneGenerator",
    "ToneSpec",
    "answer_tone",
    "ced",
    "cng",
]

Floats = npt.NDArray[np.float64]
Complexes = npt.NDArray[np.complex128]
Bools = npt.NDArray[np.bool_]

#: T.30 §4: CNG is 1100 Hz ±38 Hz.
CNG_HZ = 1100.0
#: T.30 §4 / V.25: CED and ANS are 2100 Hz ±15 Hz.
ANS_HZ = 2100.0
#: V.8 / V.25: phase reversals every 450 ±25 ms (ANS/, ANSam/).
REVERSAL_S = 0.45
#: V.8: ANSam's envelope is a 15 Hz sine between 0.8 and 1.2 times the mean amplitude.
ANSAM_HZ = 15.0
ANSAM_DEPTH = 0.2


class Tone(enum.Enum):
    """What a :class:`ToneEvent` reports."""

    #: T.30 calling tone, 1100 Hz.
    CNG = "cng"
    #: 2100 Hz, steady: T.30 CED, V.25 ANS.
    ANS = "ans"
    #: 2100 Hz with 180° phase reversals (V.25 ANS with echo-canceller disabling).
    ANS_PR = "ans/"
    #: V.8 ANSam: 2100 Hz, 15 Hz AM.
    ANSAM = "ansam"
    #: V.8 ANSam/: ANSam with phase reversals.
    ANSAM_PR = "ansam/"
    #: No signal (power below the threshold of a :class:`SilenceDetector`).
    SILENCE = "silence"
    #: The T.30 name of the plain 2100 Hz tone.
    CED = "ans"


_FAMILY_2100 = (Tone.ANS, Tone.ANS_PR, Tone.ANSAM, Tone.ANSAM_PR)


@dataclass(frozen=True, slots=True)
class ToneEvent:
    """A tone (or silence) appeared (``on``) or ended (not ``on``).

    ``sample``: for ``on``, the index (from the start of the stream) of the sample after the last one
    needed to decide, i.e. the detector knew once it had been fed ``sample`` samples; for an end,
    the estimated end of the tone (decided ``end_gap_s`` later; for silence, at ``sample``).
    ``start``: estimated first sample of the tone.  A 2100 Hz tone may be reported again, with ``on``
    and the same ``start``, when a later phase reversal shows it to be ANS/ or ANSam/.
    """

    tone: Tone
    sample: int
    start: int
    level_dbm0: float
    on: bool = True


# ---------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True, slots=True)
class Segment:
    """``duration_s`` of a sine at ``freq_hz`` (0: silence), optionally amplitude modulated by a
    sine of ``am_hz`` with relative ``am_depth``, and with its phase reversed every
    ``reversal_s`` seconds counted from the start of the segment."""

    duration_s: float
    freq_hz: float = 0.0
    am_depth: float = 0.0
    am_hz: float = ANSAM_HZ
    reversal_s: float | None = None


class ToneGenerator:
    """Plays ``segments`` (once, or forever with ``repeat``) at ``level_dbm0`` (the power of the
    unmodulated sine).  ``generate(n)`` returns the next ``n`` samples; after a single play it
    returns silence and :attr:`done` is true."""

    def __init__(
        self, segments: Sequence[Segment], level_dbm0: float = -10.0, *, repeat: bool = False
    ) -> None:
        if not segments:
            raise ValueError("need at least one segment")
        self.segments = tuple(segments)
        self.level_dbm0 = level_dbm0
        self.repeat = repeat
        self._lengths = [round(s.duration_s * SAMPLE_RATE) for s in self.segments]
        if repeat and sum(self._lengths) == 0:
            raise ValueError("a repeated sequence needs a non-zero length")
        self._peak = amplitude_for_rms_dbm0(level_dbm0) * math.sqrt(2.0)
        self._index = 0
        self._pos = 0
        self._phase = 0.0
        self._am_phase = 0.0
        self._sample = 0

    @property
    def done(self) -> bool:
        return not self.repeat and self._index >= len(self.segments)

    @property
    def sample(self) -> int:
        """Samples generated so far."""
        return self._sample

    def generate(self, n: int) -> Samples:
        out = np.zeros(n, dtype=np.float64)
        filled = 0
        while filled < n and not self.done:
            seg, length = self.segments[self._index], self._lengths[self._index]
            take = min(n - filled, length - self._pos)
            if take > 0 and seg.freq_hz > 0.0:
                out[filled : filled + take] = self._render(seg, self._pos, take)
            filled += take
            self._pos += take
            if self._pos >= length:
                self._index += 1
                self._pos = 0
                if self.repeat and self._index >= len(self.segments):
                    self._index = 0
        self._sample += n
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def _render(self, seg: Segment, pos: int, m: int) -> Floats:
        k = np.arange(m, dtype=np.float64)
        omega = 2.0 * math.pi * seg.freq_hz / SAMPLE_RATE
        phase = self._phase + omega * k
        self._phase = (self._phase + omega * m) % (2.0 * math.pi)
        if seg.reversal_s:
            period = round(seg.reversal_s * SAMPLE_RATE)
            phase = phase + math.pi * ((pos + np.arange(m)) // period % 2)
        x = np.sin(phase)
        if seg.am_depth:
            am_omega = 2.0 * math.pi * seg.am_hz / SAMPLE_RATE
            x *= 1.0 + seg.am_depth * np.sin(self._am_phase + am_omega * k)
            self._am_phase = (self._am_phase + am_omega * m) % (2.0 * math.pi)
        result: Floats = self._peak * x
        return result


def cng(
    level_dbm0: float = -10.0, *, on_s: float = 0.5, off_s: float = 3.0, repeat: bool = True
) -> ToneGenerator:
    """T.30 §4 calling tone: 1100 Hz for ``on_s`` (0.5 s ±15 %), silence for ``off_s`` (3 s ±15 %),
    repeated."""
    return ToneGenerator([Segment(on_s, CNG_HZ), Segment(off_s)], level_dbm0, repeat=repeat)


@dataclass(frozen=True, slots=True)
class AnswerSequence:
    """Timing of an answering tone: silence after connection, the 2100 Hz tone, silence after it.

    T.30 (CED): at least 0.2 s of silence, 2.6-4.0 s of tone, then 75 ±20 ms before the first
    V.21 signal.  V.25 (ANS): 1.8-2.5 s of silence after connection (billing delay), 3.3 ±0.7 s of
    tone.  V.8 lets ANSam last up to 5 s.
    """

    silence_before_s: float = 0.2
    tone_s: float = 3.3
    silence_after_s: float = 0.075


#: CED as a fax answering a call sends it (T.30).
T30_ANSWER = AnswerSequence()
#: ANS after the V.25 billing delay.
V25_ANSWER = AnswerSequence(silence_before_s=2.0)


def answer_tone(
    tone: Tone = Tone.ANS, level_dbm0: float = -10.0, sequence: AnswerSequence = T30_ANSWER
) -> ToneGenerator:
    """The answering sequence with a 2100 Hz tone of kind ``tone`` (ANS/CED, ANS_PR, ANSAM, ANSAM_PR)."""
    if tone not in _FAMILY_2100:
        raise ValueError(f"not an answer tone: {tone}")
    am = ANSAM_DEPTH if tone in (Tone.ANSAM, Tone.ANSAM_PR) else 0.0
    rev = REVERSAL_S if tone in (Tone.ANS_PR, Tone.ANSAM_PR) else None
    return ToneGenerator(
        [
            Segment(sequence.silence_before_s),
            Segment(sequence.tone_s, ANS_HZ, am_depth=am, reversal_s=rev),
            Segment(sequence.silence_after_s),
        ],
        level_dbm0,
    )


def ced(level_dbm0: float = -10.0, sequence: AnswerSequence = T30_ANSWER) -> ToneGenerator:
    """T.30 CED: the answering sequence with a plain 2100 Hz tone."""
    return answer_tone(Tone.ANS, level_dbm0, sequence)


# ---------------------------------------------------------------------------------------------
# Detection

#: Analysis window (10 ms) and hop (5 ms), in samples.
WINDOW = 80
HOP = 40
_BIN_HZ = SAMPLE_RATE / WINDOW
_QUARTERS = 4
#: A window counts as the tone's (onset, level, reversals) from half the median amplitude; a
#: declared tone goes on while good windows keep 0.4 of it.
_STRONG_AMPLITUDE = 0.5
_KEEP_AMPLITUDE = 0.4
#: How long after a 2100 Hz tone is declared a phase reversal can still re-classify it.
_RECLASSIFY_WINDOWS = round(1.0 * SAMPLE_RATE / HOP)


def _dbm0_to_power(level_dbm0: float) -> float:
    """Mean-square value (16-bit linear) of a signal at ``level_dbm0``."""
    return float(FULL_SCALE * FULL_SCALE / 2.0 * 10.0 ** ((level_dbm0 - FULL_SCALE_DBM0) / 10.0))


def _power_to_dbm0(power: float) -> float:
    if power <= 0.0:
        return float("-inf")
    return 10.0 * math.log10(power / (FULL_SCALE * FULL_SCALE / 2.0)) + FULL_SCALE_DBM0


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """How one tone is recognised.

    ``min_on_s``: the span analysed before a tone is reported, so the detection comes 0.9-1.0 times
    ``min_on_s`` after the onset (windows before the onset count as bad, and a quarter may hold
    ``1 - good_fraction`` of bad ones); ``tolerance_hz``: accepted
    distance from ``freq_hz``; ``good_fraction``: share of windows that must be good in each quarter
    of ``min_on_s``; ``band_share``: tone power / power within ±300 Hz; ``total_share``: tone power /
    window power; ``coherence``: minimum |mean| of the unit hop-to-hop rotations; ``spread_hz``: how
    much the four quarters' frequencies may differ; ``end_gap_s``: a tone ends after this long without
    a good window.
    """

    tone: Tone
    freq_hz: float
    tolerance_hz: float
    min_on_s: float
    good_fraction: float = 0.6
    band_share: float = 0.5
    total_share: float = 0.05
    coherence: float = 0.95
    spread_hz: float = 6.0
    end_gap_s: float = 0.05

    @staticmethod
    def cng(min_on_s: float = 0.4) -> ToneSpec:
        """T.30 CNG: 1100 Hz ±38 Hz.  0.4 s catches the shortest legal burst (0.425 s)."""
        return ToneSpec(Tone.CNG, CNG_HZ, 40.0, min_on_s)

    @staticmethod
    def ans(min_on_s: float = 0.5) -> ToneSpec:
        """CED / ANS / ANSam: 2100 Hz ±15 Hz (accepted to ±25 Hz)."""
        return ToneSpec(Tone.ANS, ANS_HZ, 25.0, min_on_s)


@dataclass(slots=True)
class _State:
    """Per-tone detection state carried across blocks."""

    on: bool = False
    tone: Tone = Tone.CNG
    start: int = 0
    last_good: int = -(10**9)  # window index
    level_power: float = 0.0
    amp_ref: float = 0.0  # median tone-bin amplitude when declared
    rearm: int = -(10**9)  # first window a new tone's span may start at
    rot: float = 0.0  # 2100 Hz: the tone's phase rotation per hop
    declared: int = 0  # window at which the tone was declared


@dataclass(slots=True)
class _History:
    """Per-window values of the last windows, so sliding sums span block boundaries: good flags,
    the tone bin (phase referred to absolute time) and the tone power."""

    good: Bools = field(default_factory=lambda: np.zeros(0, dtype=bool))
    bin: Complexes = field(default_factory=lambda: np.zeros(0, dtype=np.complex128))
    power: Floats = field(default_factory=lambda: np.zeros(0))
    #: no good window among them (the arrays are then all zero)
    quiet: bool = True


class _Framer:
    """Cuts a stream into windows of ``window`` samples every ``hop`` samples (``window`` a multiple
    of ``hop``), across calls."""

    def __init__(self, window: int, hop: int) -> None:
        if window % hop:
            raise ValueError("window must be a multiple of hop")
        self.window = window
        self.hop = hop
        self._pending: Floats = np.zeros(0)
        self.next_window = 0  # index of the next window to complete
        self.samples = 0

    def push(self, samples: npt.ArrayLike) -> tuple[int, Floats]:
        """Returns the index of the first window completed and the windows (rows)."""
        new = np.asarray(samples, dtype=np.float64).reshape(-1)
        self.samples += new.size
        x = np.concatenate([self._pending, new]) if self._pending.size else new
        count = (x.size - self.window) // self.hop + 1 if x.size >= self.window else 0
        first = self.next_window
        if count == 0:
            self._pending = x.copy()
            return first, np.zeros((0, self.window))
        per = self.window // self.hop
        chunks = x[: (count + per - 1) * self.hop].reshape(-1, self.hop)
        windows = np.concatenate([chunks[j : j + count] for j in range(per)], axis=1) if per > 1 else chunks
        self._pending = x[count * self.hop :].copy()
        self.next_window += count
        return first, windows


class ToneDetector:
    """Streaming detector of CNG and of the 2100 Hz answer tones (CED / ANS / ANSam).

    ``receive(samples)`` takes int16 samples in blocks of any size and returns the events decided in
    them; feeding a signal in pieces gives the same events as feeding it at once.  ``specs`` chooses
    the tones (default: CNG and ANS); ``min_level_dbm0`` is the weakest tone reported.
    """

    def __init__(self, specs: Iterable[ToneSpec] | None = None, *, min_level_dbm0: float = -48.0) -> None:
        self.specs = tuple(specs) if specs is not None else (ToneSpec.cng(), ToneSpec.ans())
        for spec in self.specs:
            if spec.tone not in (Tone.CNG, Tone.ANS):
                raise ValueError(f"cannot detect {spec.tone} (use Tone.CNG or Tone.ANS)")
            if not _BIN_HZ * 3 < spec.freq_hz < SAMPLE_RATE / 2 - _BIN_HZ * 3:
                raise ValueError(f"frequency out of range: {spec.freq_hz}")
        self.min_power = _dbm0_to_power(min_level_dbm0)
        self._framer = _Framer(WINDOW, HOP)
        self._states = [_State() for _ in self.specs]
        self._span = [
            max(_QUARTERS, round(s.min_on_s * SAMPLE_RATE / HOP / _QUARTERS) * _QUARTERS) for s in self.specs
        ]
        # The stream is taken as preceded by quiet windows.
        self._histories = [
            _History(np.zeros(n + 1, dtype=bool), np.zeros(n + 1, dtype=np.complex128), np.zeros(n + 1))
            for n in self._span
        ]
        # The DFT bins within ±3 of each tone's bin, as (tone, offset) indices into an rfft row.
        centres = [round(s.freq_hz / _BIN_HZ) for s in self.specs]
        self._centre = np.array(centres)
        self._neighbours = self._centre[:, None] + np.arange(-3, 4)[None, :]
        self._band_share = np.array([s.band_share for s in self.specs])
        self._total_share = np.array([s.total_share for s in self.specs])
        # A window's tone bin is referred to absolute time by exp(-2j pi b s / WINDOW), s = index * HOP.
        per = WINDOW // HOP
        self._ref = [np.exp(-2j * np.pi * b * (np.arange(per) * HOP) / WINDOW) for b in centres]

    @property
    def samples(self) -> int:
        """Samples received so far."""
        return self._framer.samples

    def receive(self, samples: npt.ArrayLike) -> list[ToneEvent]:
        first, windows = self._framer.push(samples)
        if windows.shape[0] == 0:
            return []
        total = np.einsum("ij,ij->i", windows, windows) / WINDOW
        if self._idle and float(total.max()) < self.min_power:
            return []  # too quiet for any tone, and nothing pending
        spectrum = np.fft.rfft(windows, axis=1)
        near = spectrum[:, self._neighbours]  # (window, tone, -3..3)
        bins = (near.real**2 + near.imag**2) * (2.0 / WINDOW**2)
        tone_power = bins[:, :, 2:5].sum(axis=2)
        band_power = bins.sum(axis=2)
        peak = bins[:, :, 3]
        good = (
            (tone_power >= self.min_power)
            & (peak >= bins[:, :, 2])
            & (peak >= bins[:, :, 4])
            & (tone_power >= self._band_share * band_power)
            & (tone_power >= self._total_share * total[:, None])
        )
        any_good = good.any(axis=0)
        events: list[ToneEvent] = []
        for i, spec in enumerate(self.specs):
            hist = self._histories[i]
            if not any_good[i] and hist.quiet and not self._states[i].on:
                continue  # nothing here and nothing pending: the history stays quiet windows
            x = near[:, i, 3] * self._ref[i][(first + np.arange(good.shape[0])) % self._ref[i].size]
            events += self._detect(i, spec, first, good[:, i], x, tone_power[:, i])
        if len(events) > 1:
            events.sort(key=lambda e: e.sample)
        return events

    @property
    def _idle(self) -> bool:
        """No tone on and no good window in any history: a quiet block changes nothing."""
        return all(h.quiet and not st.on for h, st in zip(self._histories, self._states, strict=True))

    def _detect(
        self, i: int, spec: ToneSpec, first: int, good: Bools, x: Complexes, tone_power: Floats
    ) -> list[ToneEvent]:
        """One tone over one block: ``good`` flags, tone bin ``x`` and tone power per window."""
        count = good.size
        hist = self._histories[i]
        st = self._states[i]
        span = self._span[i]
        keep = span + 1
        any_good = bool(good.any())
        g = np.concatenate([hist.good, good])
        xs = np.concatenate([hist.bin, x])
        p = np.concatenate([hist.power, tone_power])
        self._histories[i] = _History(g[-keep:], xs[-keep:], p[-keep:], not g[-keep:].any())
        offset = hist.good.size  # position of this block's first window in g
        q = span // _QUARTERS
        need_q = math.ceil(spec.good_fraction * q - 1e-9)
        cg = np.concatenate([[0], np.cumsum(g)])
        if not st.on:
            ends = np.arange(offset, g.size)
            recent = cg[ends + 1] - cg[np.maximum(ends + 1 - span, 0)]
            if not any_good or int(recent.max()) < _QUARTERS * need_q:
                return []  # nothing can be declared in this block
        amp = np.abs(xs)
        u = np.where(amp > 0.0, xs / np.where(amp > 0.0, amp, 1.0), 0.0)
        if st.on and count <= span:
            # a tone is on: a new one needs a whole span after it ends, which this block cannot hold
            ok = np.zeros(count, dtype=bool)
        else:
            ok = self._declarable(spec, good, g, u, cg, offset, span, need_q)
        return self._run_states(i, spec, first, good, ok, g, u, amp, p, offset, span)

    @staticmethod
    def _declarable(
        spec: ToneSpec,
        good: Bools,
        g: Bools,
        u: Complexes,
        cg: npt.NDArray[np.int64],
        offset: int,
        span: int,
        need_q: int,
    ) -> Bools:
        """Windows of this block at which the last ``span`` windows show the tone: enough good
        windows in each quarter, coherent hop-to-hop rotations, the right mean frequency, and the
        quarters agreeing on it."""
        q = span // _QUARTERS
        b = round(spec.freq_hz / _BIN_HZ)
        doubled = spec.tone is not Tone.CNG
        y = u * u if doubled else u
        # Hop-to-hop rotation between consecutive good windows.
        valid = np.zeros(g.size, dtype=bool)
        valid[1:] = g[1:] & g[:-1]
        z = np.zeros(g.size, dtype=np.complex128)
        z[1:] = np.where(valid[1:], y[1:] * np.conj(y[:-1]), 0.0)
        cz = np.concatenate([[0.0], np.cumsum(z)])
        cv = np.concatenate([[0], np.cumsum(valid)])
        ends = np.arange(offset, g.size)  # windows of this block, as positions in g
        ok = good & (ends + 1 >= span)
        freqs = np.zeros((_QUARTERS, ends.size))
        sum_z = np.zeros(ends.size, dtype=np.complex128)
        n_valid = np.zeros(ends.size)
        scale = SAMPLE_RATE / (2.0 * np.pi * HOP) / (2.0 if doubled else 1.0)
        for k in range(_QUARTERS):
            hi = np.maximum(ends + 1 - (_QUARTERS - 1 - k) * q, 0)
            lo = np.maximum(hi - q, 0)
            # the rotation into a quarter's first window belongs to the previous quarter
            zq = cz[hi] - cz[np.minimum(lo + 1, hi)]
            ok &= cg[hi] - cg[lo] >= need_q
            freqs[k] = np.angle(zq) * scale
            sum_z += zq
            n_valid += cv[hi] - cv[np.minimum(lo + 1, hi)]
        offset_hz = b * _BIN_HZ - spec.freq_hz
        ok &= np.abs(sum_z) >= spec.coherence * np.maximum(n_valid, 1.0)
        ok &= np.abs(np.angle(sum_z) * scale + offset_hz) <= spec.tolerance_hz
        ok &= freqs.max(axis=0) - freqs.min(axis=0) <= spec.spread_hz
        return ok

    def _run_states(
        self,
        i: int,
        spec: ToneSpec,
        first: int,
        good: Bools,
        ok: Bools,
        g: Bools,
        u: Complexes,
        a: Floats,
        p: Floats,
        offset: int,
        span: int,
    ) -> list[ToneEvent]:
        """Steps through the windows where something happens: a tone is declared on the first ``ok``
        window, ends after ``end_gap_s`` without a good window, and (2100 Hz) is re-classified when a
        phase reversal shows."""
        st = self._states[i]
        end_gap = max(1, round(spec.end_gap_s * SAMPLE_RATE / HOP))
        events: list[ToneEvent] = []
        pos = 0  # position in this block
        count = good.size
        while pos < count:
            if not st.on:
                # a new tone needs a span of windows after the end of the previous one
                fresh = first + np.arange(pos, count) + 1 - span >= st.rearm
                cand = np.flatnonzero(ok[pos:] & fresh)
                if cand.size == 0:
                    break
                k = pos + int(cand[0])
                w = first + k
                lo, hi = offset + k + 1 - span, offset + k + 1
                strong = self._strong(g[lo:hi], a[lo:hi])
                st.on = True
                st.declared = w
                st.start = (w + 1 - span + int(np.argmax(strong))) * HOP + HOP // 2
                st.last_good = w
                st.level_power = float(np.mean(p[lo:hi][strong]))
                st.amp_ref = float(np.median(a[lo:hi][strong]))
                if spec.tone is Tone.CNG:
                    st.tone = Tone.CNG
                else:
                    st.tone = self._classify(strong, u[lo:hi], a[lo:hi])
                    st.rot = self._rotation(np.flatnonzero(strong) + lo, u)
                events.append(ToneEvent(st.tone, w * HOP + WINDOW, st.start, _power_to_dbm0(st.level_power)))
                pos = k + 1
                continue
            # Tone on: it goes on while good windows of about its amplitude keep coming; find the
            # first gap longer than end_gap among them from pos on.
            going = good[pos:] & (a[offset + pos :] >= _KEEP_AMPLITUDE * st.amp_ref)
            later = np.flatnonzero(going) + pos + first
            marks = np.concatenate([[st.last_good], later])
            gaps = np.flatnonzero(np.diff(marks) > end_gap)
            upgrade_limit = count if gaps.size == 0 else int(marks[gaps[0]]) - first + 1
            # V.25 reversals come every 450 ms: a tone without one for a second after it was
            # declared is a plain one
            upgrade_limit = min(upgrade_limit, st.declared + _RECLASSIFY_WINDOWS - first)
            if (
                spec.tone is not Tone.CNG
                and st.tone in (Tone.ANS, Tone.ANSAM)
                and upgrade_limit > pos
                and self._half_turn(g, u, st.rot, offset + pos - 5, offset + upgrade_limit)
            ):
                rev = self._reversal(g, u, a, offset + pos, offset + upgrade_limit, max(offset + pos - 24, 0))
                if rev >= 0:
                    st.tone = Tone.ANS_PR if st.tone is Tone.ANS else Tone.ANSAM_PR
                    w = first + rev - offset
                    events.append(
                        ToneEvent(st.tone, w * HOP + WINDOW, st.start, _power_to_dbm0(st.level_power))
                    )
            if gaps.size == 0:
                if later.size:
                    st.last_good = int(later[-1])
                if first + count - 1 - st.last_good < end_gap:
                    break  # still on at the end of the block
                st.on = False
                events.append(self._end_event(st))
                pos = max(st.last_good - first + 1, pos)
                continue
            end_w = int(marks[gaps[0]])
            st.on = False
            st.last_good = end_w
            events.append(self._end_event(st))
            pos = max(end_w - first + 1, pos)
        return events

    @staticmethod
    def _end_event(st: _State) -> ToneEvent:
        st.rearm = st.last_good + 1
        end = st.last_good * HOP + WINDOW // 2
        return ToneEvent(st.tone, end, st.start, _power_to_dbm0(st.level_power), on=False)

    @staticmethod
    def _strong(g: Bools, a: Floats) -> Bools:
        """Good windows whose tone amplitude is at least half the median: the tone itself, not the
        noise or speech windows next to it that happen to pass."""
        if not g.any():
            return g
        result: Bools = g & (a >= _STRONG_AMPLITUDE * float(np.median(a[g])))
        return result

    @staticmethod
    def _classify(strong: Bools, u: Complexes, a: Floats) -> Tone:
        """ANS, ANS/, ANSam or ANSam/ from the windows that confirmed a 2100 Hz tone."""
        t = np.flatnonzero(strong).astype(np.float64)
        amps = a[strong]
        am = False
        if amps.size >= 8 and amps.sum() > 0.0:
            # V.8: ANSam's envelope has a 15 Hz component of 0.2 relative depth.
            rot = np.exp(-2j * np.pi * ANSAM_HZ * t * HOP / SAMPLE_RATE)
            depth = 2.0 * abs(np.sum((amps - amps.mean()) * rot)) / amps.sum()
            am = depth > ANSAM_DEPTH / 2.0
        rev = ToneDetector._reversal(strong, u, a, 0, strong.size, 0) >= 0
        if am:
            return Tone.ANSAM_PR if rev else Tone.ANSAM
        return Tone.ANS_PR if rev else Tone.ANS

    @staticmethod
    def _rotation(idx: npt.NDArray[np.intp], u: Complexes) -> float:
        """The tone's own phase rotation per hop over windows ``idx``, from the doubled phase of
        adjacent ones (free of reversals)."""
        adjacent = np.flatnonzero(np.diff(idx) == 1)
        w1 = u[idx[adjacent + 1]] * np.conj(u[idx[adjacent]])
        steady = complex(np.sum(w1 * w1))
        return math.atan2(steady.imag, steady.real) / 2.0

    @staticmethod
    def _half_turn(g: Bools, u: Complexes, rot: float, lo: int, hi: int) -> bool:
        """Cheap test before :meth:`_reversal`: do any two good windows in ``[lo, hi)``, two to four
        hops apart, differ by more than a quarter turn once the tone's rotation is removed?"""
        for d in (2, 3, 4):
            k = np.arange(max(lo, d), hi)
            if k.size and np.any(
                g[k]
                & g[k - d]
                & (np.real(u[k] * np.conj(u[k - d]) * complex(math.cos(-rot * d), math.sin(-rot * d))) < 0.0)
            ):
                return True
        return False

    @staticmethod
    def _reversal(g: Bools, u: Complexes, a: Floats, lo: int, hi: int, floor: int) -> int:
        """Position in ``g`` of the window that confirms the first phase reversal decided in
        ``[lo, hi)``; -1 if none.  Among the strong windows from ``floor`` on, a reversal is a
        half-turn between two that do not overlap (two to four hops apart: one straddling the
        reversal has an intermediate phase), with the window before the first and the window after
        the second (the confirming one) each agreeing with its neighbour."""
        idx = np.flatnonzero(ToneDetector._strong(g[floor:hi], a[floor:hi])) + floor
        if idx.size < 4:
            return -1
        rot = ToneDetector._rotation(idx, u)

        def turn(cur: npt.NDArray[np.intp], prev: npt.NDArray[np.intp]) -> Floats:
            """cos of the phase change from list position prev to cur, the tone's rotation removed."""
            hops = idx[cur] - idx[prev]
            result: Floats = np.real(u[idx[cur]] * np.conj(u[idx[prev]]) * np.exp(-1j * rot * hops))
            return result

        n = idx.size
        pos = np.arange(n)
        # neighbours in the list agree: agree[j] is about list positions j and j + 1
        agree = (np.diff(idx) <= 2) & (turn(pos[1:], pos[:-1]) > 0.5)
        prev = np.searchsorted(idx, idx - 2, side="right") - 1  # at least two hops back
        cand = pos[(prev >= 1) & (pos < n - 1)]
        if cand.size == 0:
            return -1
        p = prev[cand]
        flip = (idx[cand] - idx[p] <= 4) & (turn(cand, p) < -0.5) & agree[p - 1] & agree[cand]
        decided = idx[cand + 1]
        hit = np.flatnonzero(flip & (decided >= lo) & (decided < hi))
        return int(decided[hit[0]]) if hit.size else -1


class SilenceDetector:
    """Reports silence: power below ``threshold_dbm0`` for at least ``min_duration_s``.

    Power is measured over 5 ms windows, so the reported ``start`` (first silent window) and end
    (first loud window) are within 5 ms of the true edges; a gap is seen when it holds enough whole
    windows, so ask for 10 ms less than the shortest gap to catch (T.30's 75 ±20 ms: 0.045 s).
    ``receive(samples) -> list[ToneEvent]`` with ``Tone.SILENCE`` events, ``on`` when the silence
    has lasted ``min_duration_s`` and not ``on`` when the signal returns.
    """

    def __init__(self, threshold_dbm0: float = -45.0, min_duration_s: float = 0.075) -> None:
        self.threshold = _dbm0_to_power(threshold_dbm0)
        self.min_windows = max(1, math.ceil(min_duration_s * SAMPLE_RATE / HOP))
        self._framer = _Framer(HOP, HOP)
        self._run_start = 0  # window index where the current silent run began
        self._run_len = 0
        self._on = False
        self._sum = 0.0

    def receive(self, samples: npt.ArrayLike) -> list[ToneEvent]:
        first, windows = self._framer.push(samples)
        if windows.shape[0] == 0:
            return []
        power = np.einsum("ij,ij->i", windows, windows) / HOP
        quiet = power < self.threshold
        events: list[ToneEvent] = []
        if self._run_len > 0 and not quiet[0]:
            if self._on:
                events.append(self._end(first))
            self._run_len, self._on, self._sum = 0, False, 0.0
        # Runs of quiet windows: boundaries where quiet changes.
        edges = np.flatnonzero(np.diff(np.concatenate([[False], quiet, [False]]).astype(np.int8)))
        starts, stops = edges[::2], edges[1::2]
        csum = np.concatenate([[0.0], np.cumsum(power)])
        for s, e in zip(starts.tolist(), stops.tolist(), strict=True):
            if s == 0 and self._run_len > 0:
                run_start, run_len, run_sum = self._run_start, self._run_len + e, self._sum + float(csum[e])
            else:
                run_start, run_len, run_sum = first + s, e - s, float(csum[e] - csum[s])
            was_on = self._on if s == 0 and self._run_len > 0 else False
            if not was_on and run_len >= self.min_windows:
                at = run_start + self.min_windows  # window after the one that completed min_duration
                level = _power_to_dbm0(run_sum / run_len) if run_sum > 0 else float("-inf")
                events.append(ToneEvent(Tone.SILENCE, at * HOP, run_start * HOP, level))
                was_on = True
            if e < quiet.size:  # the run ended inside this block
                if was_on:
                    level = _power_to_dbm0(run_sum / run_len) if run_sum > 0 else float("-inf")
                    events.append(
                        ToneEvent(Tone.SILENCE, (first + e) * HOP, run_start * HOP, level, on=False)
                    )
                self._run_len, self._on, self._sum = 0, False, 0.0
            else:
                self._run_start, self._run_len, self._on, self._sum = run_start, run_len, was_on, run_sum
        return events

    def _end(self, window: int) -> ToneEvent:
        level = _power_to_dbm0(self._sum / self._run_len) if self._sum > 0 else float("-inf")
        return ToneEvent(Tone.SILENCE, window * HOP, self._run_start * HOP, level, on=False)
