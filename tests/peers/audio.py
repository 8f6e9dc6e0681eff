"""WAV files, test signals and alignment by cross-correlation.

What it does
------------
:func:`read_wav` / :func:`write_wav` move 16-bit mono PCM between files and
numpy; :func:`best_correlation` finds how well a recording matches a reference
and at which delay; :func:`probe_signal` makes a deterministic 8 kHz signal with
a sharp autocorrelation peak (a chirp plus band-limited noise), and
:func:`speech_signal` speech from ``espeak-ng`` when it is installed.

How it works
------------
Correlation over all lags at once with the FFT; each lag is normalised by the
energies of the overlapping parts of both signals, so leading or trailing
silence in the recording does not lower the score.  Resampling is done in the
frequency domain (truncate or zero-pad the spectrum).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

__all__ = [
    "best_correlation",
    "probe_signal",
    "read_wav",
    "resample",
    "speech_signal",
    "write_wav",
]


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """``(samples, rate)``: int16 mono (the first channel of a multi-channel file)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data[::channels].astype(np.int16), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int = 8000) -> Path:
    """Write int16 mono PCM."""
    p = Path(path)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return p


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling in the frequency domain (float64 out)."""
    x = np.asarray(x, dtype=np.float64)
    if rate_in == rate_out or len(x) == 0:
        return x.copy()
    n_out = round(len(x) * rate_out / rate_in)
    spec = np.fft.rfft(x)
    keep = n_out // 2 + 1
    spec = spec[:keep] if len(spec) >= keep else np.pad(spec, (0, keep - len(spec)))
    return np.fft.irfft(spec, n_out) * (n_out / len(x))


def best_correlation(
    ref: np.ndarray, rec: np.ndarray, max_lag: int, min_overlap: float = 0.5
) -> tuple[float, int]:
    """Highest normalised cross-correlation of ``rec`` against ``ref`` and its lag.

    The lag ``L`` (samples, ``|L| <= max_lag``) is such that ``rec[n + L]`` matches
    ``ref[n]``: positive when the recording is late.  Each lag is normalised by the
    energy of the overlapping parts of both signals; lags where the overlap is
    shorter than ``min_overlap * len(ref)`` are ignored.  Returns ``(0.0, 0)`` when
    no lag qualifies or a signal is silent.
    """
    x = np.asarray(ref, dtype=np.float64)
    y = np.asarray(rec, dtype=np.float64)
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return 0.0, 0
    size = 1 << int(np.ceil(np.log2(n + m)))
    cc = np.fft.irfft(np.conj(np.fft.rfft(x, size)) * np.fft.rfft(y, size), size)
    lags = np.arange(-min(max_lag, n - 1), min(max_lag, m - 1) + 1)
    num = cc[lags % size]
    cx = np.concatenate(([0.0], np.cumsum(x * x)))
    cy = np.concatenate(([0.0], np.cumsum(y * y)))
    lo = np.maximum(0, -lags)  # overlap in ref indices: [lo, hi)
    hi = np.minimum(n, m - lags)
    overlap = hi - lo
    ex = cx[np.clip(hi, 0, n)] - cx[np.clip(lo, 0, n)]
    ey = cy[np.clip(hi + lags, 0, m)] - cy[np.clip(lo + lags, 0, m)]
    den = np.sqrt(np.maximum(ex, 0.0) * np.maximum(ey, 0.0))
    ok = (overlap >= min_overlap * n) & (den > 1e-9 * max(cx[-1], 1.0))
    if not ok.any():
        return 0.0, 0
    corr = np.where(ok, num / np.where(ok, den, 1.0), -np.inf)
    i = int(np.argmax(corr))
    return float(corr[i]), int(lags[i])


def probe_signal(seconds: float = 3.0, rate: int = 8000, seed: int = 1234, level: float = 0.3) -> np.ndarray:
    """Deterministic int16 signal: a 300-3000 Hz chirp plus noise limited to 300-3400 Hz,
    with 20 ms fades.  Its autocorrelation has one sharp peak, so the lag is unambiguous."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0, f1 = 300.0, 3000.0
    chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds)))
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spec, n)
    noise /= np.max(np.abs(noise)) or 1.0
    x = 0.6 * chirp + 0.4 * noise
    fade = min(n // 2, int(0.02 * rate))
    ramp = np.linspace(0.0, 1.0, fade)
    x[:fade] *= ramp
    x[n - fade :] *= ramp[::-1]
    signal: np.ndarray = np.round(x / np.max(np.abs(x)) * level * 32767).astype(np.int16)
    return signal


def speech_signal(text: str, rate: int = 8000, level: float = 0.5) -> np.ndarray | None:
    """Speech from ``espeak-ng`` resampled to ``rate``; None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-w", str(out), text], check=True, capture_output=True, timeout=30)
        pcm, src_rate = read_wav(out)
    y = resample(pcm, src_rate, rate)
    peak = float(np.max(np.abs(y))) or 1.0
    speech: np.ndarray = np.round(y / peak * level * 32767).astype(np.int16)
    return speech
