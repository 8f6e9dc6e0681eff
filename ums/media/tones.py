"""Tone analysis and synthesis: a block Goertzel bank, an in-band DTMF detector, a tone generator.

What it does
------------
* ``Goertzel(freqs, window, hop)``: per-window power at a few frequencies, fed with blocks of any
  size; feeding a signal in chunks gives the same windows as feeding it at once.
* ``DtmfDetector.process(pcm) -> list[str]``: in-band DTMF keys (ITU-T Q.23 frequencies), each key
  press reported once, for calls whose peer sends DTMF as audio instead of RFC 4733 events.
* ``tone(freqs, duration, level_dbm0, rate, phase) -> (pcm, phase)``: sums of sines at a level in
  dBm0 with the phase carried from one call to the next; ``dbm0_to_amplitude(level)``.

How it works
------------
The Goertzel filter's output after N samples is the N-point DFT at one frequency,
``S = sum_n x[n] exp(-j 2 pi f n / rate)``. Rather than running the second-order recurrence sample
by sample, ``Goertzel`` cuts the input into windows of ``window`` samples every ``hop`` samples
(``numpy.lib.stride_tricks.sliding_window_view``) and computes all windows and frequencies with one
matrix product against a precomputed basis. Samples of a window not yet complete wait in the
object for the next block, so chunked processing equals one-shot processing.

Powers are normalised as mean-square values, ``p = 2 |S|**2 / N**2``: a sine of amplitude A at an
analysed frequency gives ``p = A**2 / 2``, the same number as the window's mean-square energy
``sum x**2 / N``. The DTMF detector compares these directly.

Levels follow G.711: a full-scale sine (peak 32768) is +3.14 dBm0, the A-law load capacity
(G.711 §3; µ-law's +3.17 dBm0 differs by 0.03 dB).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "DTMF_COLS",
    "DTMF_KEYS",
    "DTMF_ROWS",
    "DtmfDetector",
    "Goertzel",
    "dbm0_to_amplitude",
    "dtmf_freqs",
    "tone",
]

#: G.711 §3: "the theoretical load capacity ... +3.14 dBm0" for A-law (full-scale sine).
FULL_SCALE_DBM0 = 3.14
FULL_SCALE = 32768.0
#: ITU-T Q.23 Table 1: low (row) and high (column) group frequencies in Hz.
DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
#: ITU-T Q.23 Figure 1: keypad layout, rows x columns.
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")

Floats = npt.NDArray[np.float64]


def dbm0_to_amplitude(level_dbm0: float) -> float:
    """Peak amplitude (16-bit linear scale) of a sine at ``level_dbm0``."""
    return float(FULL_SCALE * 10.0 ** ((level_dbm0 - FULL_SCALE_DBM0) / 20.0))


def dtmf_freqs(key: str) -> tuple[float, float]:
    """(row, column) frequencies of a DTMF key."""
    for r, row in enumerate(DTMF_KEYS):
        c = row.find(key.upper()) if len(key) == 1 else -1
        if c >= 0:
            return DTMF_ROWS[r], DTMF_COLS[c]
    raise ValueError(f"not a DTMF key: {key!r}")


def tone(
    freqs: Sequence[float],
    duration: float,
    level_dbm0: float = -10.0,
    rate: int = 8000,
    phase: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.int16], Floats]:
    """Sum of sines, each at ``level_dbm0``, lasting ``duration`` seconds.

    Returns the int16 samples and the phases (radians) to pass as ``phase`` to the next call, so
    consecutive calls produce one continuous signal.
    """
    f = np.asarray(freqs, dtype=np.float64).reshape(-1)
    phase0 = np.zeros(len(f)) if phase is None else np.asarray(phase, dtype=np.float64).reshape(-1)
    if len(phase0) != len(f):
        raise ValueError("one phase per frequency")
    n = round(duration * rate)
    omega = 2.0 * np.pi * f / rate
    angles = phase0[:, None] + omega[:, None] * np.arange(n)[None, :]
    x = dbm0_to_amplitude(level_dbm0) * np.sin(angles).sum(axis=0)
    pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return pcm, np.mod(phase0 + omega * n, 2.0 * np.pi)


class Goertzel:
    """Powers at ``freqs`` over windows of ``window`` samples taken every ``hop`` samples.

    ``process(block)`` returns ``(powers, energy)``: ``powers`` has one row per window completed
    by this block and one column per frequency, ``energy`` the mean-square value of each window.
    """

    def __init__(self, freqs: Sequence[float], window: int, hop: int | None = None, rate: int = 8000) -> None:
        hop = window if hop is None else hop
        if window <= 0 or not 0 < hop <= window:
            raise ValueError("need window > 0 and 0 < hop <= window")
        self.freqs = tuple(float(f) for f in freqs)
        self.window = window
        self.hop = hop
        self.rate = rate
        n = np.arange(window)[:, None]
        self._basis = np.exp(-2j * np.pi * np.asarray(self.freqs)[None, :] * n / rate)
        self._pending: Floats = np.zeros(0)

    def reset(self) -> None:
        self._pending = np.zeros(0)

    def process(self, block: npt.ArrayLike) -> tuple[Floats, Floats]:
        x = np.concatenate([self._pending, np.asarray(block, dtype=np.float64).reshape(-1)])
        count = (len(x) - self.window) // self.hop + 1 if len(x) >= self.window else 0
        if count == 0:
            self._pending = x
            return np.zeros((0, len(self.freqs))), np.zeros(0)
        windows = sliding_window_view(x, self.window)[:: self.hop][:count]
        spectrum = windows @ self._basis
        powers: Floats = 2.0 * (spectrum.real**2 + spectrum.imag**2) / self.window**2
        energy: Floats = np.einsum("ij,ij->i", windows, windows) / self.window
        self._pending = x[count * self.hop :].copy()
        return powers, energy


class DtmfDetector:
    """In-band DTMF key detector (ITU-T Q.24 style acceptance checks).

    Each 20 ms window (10 ms hop) is tested for one row and one column tone:

    * each tone at least ``min_level_dbm0``;
    * twist: the column tone at most ``reverse_twist_db`` above the row tone, the row tone at most
      ``normal_twist_db`` above the column tone;
    * each tone at least ``peak_ratio_db`` above the other tones of its group;
    * the two tones hold at least ``min_tone_share`` of the window's energy (rejects noise, speech).

    A key is reported when two consecutive windows agree, i.e. after at least 30 ms of tone, so a
    40 ms tone is caught whatever its alignment to the windows; it is reported once, and the
    detector re-arms after two windows without a valid key (at least a 30 ms pause; Q.24 asks for
    40 ms pauses to be accepted).
    """

    def __init__(
        self,
        rate: int = 8000,
        *,
        min_level_dbm0: float = -36.0,
        reverse_twist_db: float = 4.0,
        normal_twist_db: float = 8.0,
        peak_ratio_db: float = 6.0,
        min_tone_share: float = 0.5,
    ) -> None:
        self._bank = Goertzel(DTMF_ROWS + DTMF_COLS, window=rate // 50, hop=rate // 100, rate=rate)
        self._min_power = dbm0_to_amplitude(min_level_dbm0) ** 2 / 2.0
        self._reverse = 10.0 ** (reverse_twist_db / 10.0)
        self._normal = 10.0 ** (normal_twist_db / 10.0)
        self._peak = 10.0 ** (peak_ratio_db / 10.0)
        self._share = min_tone_share
        self._candidate: str | None = None
        self._count = 0
        self._absent = 0
        self._active: str | None = None

    def _classify(self, powers: Floats, energy: Floats) -> list[str | None]:
        """The key each window shows, or None (vectorised over the windows)."""
        rows, cols = powers[:, :4], powers[:, 4:]
        ri, ci = rows.argmax(axis=1), cols.argmax(axis=1)
        idx = np.arange(len(powers))
        r, c = rows[idx, ri], cols[idx, ci]
        rows_other = np.sort(rows, axis=1)[:, -2]
        cols_other = np.sort(cols, axis=1)[:, -2]
        ok = (
            (r >= self._min_power)
            & (c >= self._min_power)
            & (c <= r * self._reverse)
            & (r <= c * self._normal)
            & (r >= rows_other * self._peak)
            & (c >= cols_other * self._peak)
            & (r + c >= self._share * energy)
        )
        return [DTMF_KEYS[i][j] if good else None for i, j, good in zip(ri, ci, ok, strict=True)]

    def process(self, pcm: npt.ArrayLike) -> list[str]:
        """Feed samples; returns the keys whose press was recognised within them."""
        powers, energy = self._bank.process(pcm)
        found: list[str] = []
        for key in self._classify(powers, energy):  # one step per 10 ms window, not per sample
            if key is None:
                self._absent += 1
                self._candidate, self._count = None, 0
                if self._absent >= 2:
                    self._active = None
                continue
            self._absent = 0
            if key == self._candidate:
                self._count += 1
            else:
                self._candidate, self._count = key, 1
            if self._count >= 2 and key != self._active:
                self._active = key
                found.append(key)
        return found
