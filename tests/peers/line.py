"""A telephone line for modem tests: level, sample-clock offset, white noise and G.711 companding."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ums.media import g711 as _codec
from ums.softfax_g711.common import FULL_SCALE, FULL_SCALE_DBM0, power_dbm0

__all__ = ["awgn", "clock_offset", "g711", "g711_roundtrip", "impair", "set_level", "to_int16"]

Floats = npt.NDArray[np.float64]

_TAPS = 32
_CHUNK = 1 << 15


def to_int16(x: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Round and clip to 16-bit linear."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64)), -32768, 32767).astype(np.int16)


def g711_roundtrip(samples: npt.ArrayLike, codec: str) -> npt.NDArray[np.int16]:
    """Encode to G.711 (``"PCMU"`` or ``"PCMA"``) and decode back, as an RTP hop does."""
    a = to_int16(samples)
    return _codec.decode(codec, _codec.encode(codec, a))


def set_level(samples: npt.ArrayLike, level_dbm0: float) -> Floats:
    """Scale so that the mean power of the non-silent part is ``level_dbm0``."""
    x = np.asarray(samples, dtype=np.float64)
    active = x[np.abs(x) > 0]
    if active.size == 0:
        return x.copy()
    gain = 10.0 ** ((level_dbm0 - power_dbm0(active)) / 20.0)
    return np.asarray(x * gain, dtype=np.float64)


def _kernel_table(phases: int = 512, beta: float = 8.0) -> Floats:
    """Kaiser-windowed sinc, ``phases + 1`` fractional delays x ``_TAPS`` taps."""
    half = _TAPS // 2
    taps = np.arange(-half + 1, half + 1)
    frac = np.arange(phases + 1)[:, None] / phases
    d = frac - taps[None, :]
    r = np.clip(d / (half + 1), -1.0, 1.0)
    win = np.i0(beta * np.sqrt(1.0 - r * r)) / np.i0(beta)
    return np.asarray(np.sinc(d) * win, dtype=np.float64)


_PHASES = 512
_TABLE = _kernel_table(_PHASES)


def clock_offset(samples: npt.ArrayLike, ppm: float) -> Floats:
    """Resample as if the far end's sample clock ran ``ppm`` parts per million fast (band-limited,
    Kaiser-windowed sinc interpolation from a table of 512 fractional delays, interpolated)."""
    x = np.asarray(samples, dtype=np.float64)
    if ppm == 0 or x.size == 0:
        return x.copy()
    ratio = 1.0 + ppm * 1e-6
    n_out = int(np.floor((x.size - 1) / ratio)) + 1
    half = _TAPS // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    taps = np.arange(-half + 1, half + 1)
    out = np.empty(n_out)
    for start in range(0, n_out, _CHUNK):
        k = np.arange(start, min(start + _CHUNK, n_out))
        t = k * ratio
        base = np.floor(t).astype(np.int64)
        pos = (t - base) * _PHASES
        p0 = np.minimum(pos.astype(np.int64), _PHASES - 1)
        w = (pos - p0)[:, None]
        h = _TABLE[p0] * (1.0 - w) + _TABLE[p0 + 1] * w
        out[k] = np.einsum("ij,ij->i", padded[base[:, None] + taps[None, :] + half], h)
    return out


def awgn(
    samples: npt.ArrayLike, snr_db: float, rng: np.random.Generator, signal_dbm0: float | None = None
) -> Floats:
    """Add white Gaussian noise (full band, 0-4 kHz) ``snr_db`` below the signal's power (measured
    over its non-silent part unless ``signal_dbm0`` is given)."""
    x = np.asarray(samples, dtype=np.float64)
    if signal_dbm0 is None:
        active = x[np.abs(x) > 0]
        signal_dbm0 = power_dbm0(active) if active.size else -100.0
    noise_dbm0 = signal_dbm0 - snr_db
    rms = FULL_SCALE / np.sqrt(2.0) * 10.0 ** ((noise_dbm0 - FULL_SCALE_DBM0) / 20.0)
    return x + rng.normal(0.0, rms, x.size)


def impair(
    samples: npt.ArrayLike,
    *,
    law: str | None = "PCMA",
    level_dbm0: float | None = None,
    ppm: float = 0.0,
    snr_db: float | None = None,
    seed: int = 0,
    lead_silence: int = 0,
    tail_silence: int = 800,
) -> npt.NDArray[np.int16]:
    """The whole line: level, clock offset, noise, then G.711 ``law`` (None for linear)."""
    x = np.asarray(samples, dtype=np.float64)
    if level_dbm0 is not None:
        x = set_level(x, level_dbm0)
    x = np.concatenate([np.zeros(lead_silence), x, np.zeros(tail_silence)])
    if ppm:
        x = clock_offset(x, ppm)
    if snr_db is not None:
        x = awgn(x, snr_db, np.random.default_rng(seed))
    if law is None:
        return to_int16(x)
    return g711_roundtrip(x, law)


def g711(samples: npt.ArrayLike, codec: str) -> npt.NDArray[np.int16]:
    """Same as :func:`g711_roundtrip`."""
    return g711_roundtrip(samples, codec)
