"""What every fax modem in this package shares: levels, status events, bit buffers, scramblers.

Sans-I/O: modems take and return numpy arrays; time is counted in samples (8000 per second).
Transmitters turn queued bits into int16 samples; receivers turn int16 samples into bits and
status events.  The fast-modem receivers are banks: ``n`` channels stepping together, so that
many calls cost one vectorised pass.  See docs/modems.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "FULL_SCALE",
    "FULL_SCALE_DBM0",
    "SAMPLE_RATE",
    "BitQueue",
    "Bits",
    "ModemStatus",
    "RxOutput",
    "Samples",
    "Status",
    "amplitude_for_rms_dbm0",
    "descramble",
    "power_dbm0",
    "scramble",
]

SAMPLE_RATE = 8000
#: G.711 §3: a full-scale sine is +3.14 dBm0 (the convention SpanDSP uses too).
FULL_SCALE_DBM0 = 3.14
FULL_SCALE = 32768.0

Bits = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.int16]


class Status(enum.Enum):
    """Receiver and transmitter status changes, as T.30 needs them."""

    CARRIER_UP = "carrier-up"
    CARRIER_DOWN = "carrier-down"
    TRAINING_IN_PROGRESS = "training"
    TRAINING_SUCCEEDED = "trained"
    TRAINING_FAILED = "training-failed"
    #: HDLC: flags seen, framing is established (the V.21 preamble).
    FRAMING_OK = "framing-ok"
    #: Transmitter: every queued bit and the trailer have been sent.
    SHUTDOWN_COMPLETE = "shutdown"


@dataclass(frozen=True, slots=True)
class ModemStatus:
    """A status change.  ``bit_index`` is where it falls in the bits of the same ``RxOutput``;
    ``sample`` counts samples from the start of the stream given to the receiver."""

    status: Status
    bit_index: int
    sample: int


@dataclass(slots=True)
class RxOutput:
    """What one call to a receiver produced: data bits (0/1) and the status changes among them."""

    bits: Bits = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    events: list[ModemStatus] = field(default_factory=list)


def power_dbm0(samples: npt.ArrayLike) -> float:
    """Mean power of ``samples`` (16-bit linear) in dBm0; -inf for silence."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return float("-inf")
    ms = float(np.mean(x * x))
    if ms <= 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(ms / (FULL_SCALE * FULL_SCALE / 2.0))) + FULL_SCALE_DBM0


def amplitude_for_rms_dbm0(level_dbm0: float) -> float:
    """RMS amplitude (16-bit linear) of a signal whose power is ``level_dbm0``."""
    return float(FULL_SCALE / np.sqrt(2.0) * 10.0 ** ((level_dbm0 - FULL_SCALE_DBM0) / 20.0))


def scramble(
    bits: npt.ArrayLike, history: npt.NDArray[np.uint8], taps: tuple[int, int]
) -> tuple[Bits, npt.NDArray[np.uint8]]:
    """Self-synchronising scrambler ``out[n] = in[n] ^ out[n-a] ^ out[n-b]`` (V.17/V.29: (18, 23),
    V.27ter: (6, 7)).  ``history`` holds the last ``b`` output bits, oldest first; the new history is
    returned with the scrambled bits.  Works ``a`` bits at a time, so it is vectorised."""
    a, b = taps
    x = np.asarray(bits, dtype=np.uint8)
    buf = np.concatenate([history.astype(np.uint8), np.zeros(x.size, dtype=np.uint8)])
    for start in range(0, x.size, a):
        stop = min(start + a, x.size)
        i = np.arange(start, stop) + b
        buf[i] = x[start:stop] ^ buf[i - a] ^ buf[i - b]
    return buf[b:], buf[buf.size - b :].copy()


def descramble(
    bits: npt.ArrayLike, history: npt.NDArray[np.uint8], taps: tuple[int, int]
) -> tuple[Bits, npt.NDArray[np.uint8]]:
    """Inverse of :func:`scramble`: ``out[n] = in[n] ^ in[n-a] ^ in[n-b]``; ``history`` holds the last
    ``b`` *input* bits."""
    a, b = taps
    x = np.asarray(bits, dtype=np.uint8)
    buf = np.concatenate([history.astype(np.uint8), x])
    out = x ^ buf[b - a : buf.size - a] ^ buf[: buf.size - b]
    return out.astype(np.uint8), buf[buf.size - b :].copy()


class BitQueue:
    """Bits waiting to be sent by a transmitter: ``push`` any amount, ``take`` whole symbols' worth."""

    def __init__(self) -> None:
        self._parts: list[Bits] = []
        self.size = 0

    def push(self, bits: npt.ArrayLike) -> None:
        """Queue data bits (0/1; anything else is taken modulo 2)."""
        b = (np.asarray(bits, dtype=np.uint8).ravel() & 1).astype(np.uint8)
        if b.size:
            self._parts.append(b)
            self.size += b.size

    def take(self, n: int, *, fill: int | None = 1) -> Bits:
        """The next ``n`` bits; when fewer are queued, padded with ``fill`` (or cut short if None)."""
        parts: list[Bits] = []
        need = n
        while need and self._parts:
            head = self._parts[0]
            if head.size <= need:
                parts.append(head)
                self._parts.pop(0)
                need -= head.size
            else:
                parts.append(head[:need])
                self._parts[0] = head[need:]
                need = 0
        self.size -= n - need
        if need and fill is not None:
            parts.append(np.full(need, fill, dtype=np.uint8))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
