"""G.711 µ-law (PCMU) and A-law (PCMA) companding with numpy lookup tables.

What it does
------------
``encode(codec, pcm) -> bytes`` turns 16-bit linear samples into G.711 code
words, ``decode(codec, payload) -> np.ndarray[int16]`` turns code words back
into 16-bit linear samples. Codec names are the RTP encoding names "PCMU" and
"PCMA" (RFC 3551 §4.5.14), with static payload types 0 and 8 (RFC 3551 Table 4).

How it works
------------
Both directions are single table look-ups built once at import time with
vectorised numpy:

* decode: a 256-entry int16 table indexed by the code word;
* encode: a 65536-entry uint8 table indexed by the int16 sample viewed as
  uint16.

The tables follow the ITU-T G.191 reference implementation of G.711 bit for
bit: a 16-bit sample is reduced to the 14-bit (µ-law) or 13-bit (A-law)
domain of G.711 Tables 1a/2a by a right shift, negative samples by their
one's complement, so the quantiser is symmetric about -0.5. The segment
(exponent) is the bit length of the biased magnitude; the mantissa is the
next four bits. Code words are inverted (µ-law) or XORed with 0x55 (A-law,
even-bit inversion) as G.711 §§2, 3 require.

µ-law has two code words for zero (0xFF "+0" and 0x7F "-0"); both decode to 0
and 0 encodes to 0xFF, so ``encode(decode(0x7F)) == b"\\xff"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "CODECS",
    "codec_for_payload_type",
    "decode",
    "decoder",
    "encode",
    "encoder",
    "payload_type_for",
    "silence",
]

#: RFC 3551 Table 4: static payload types of the G.711 encodings (clock rate 8000 Hz).
CODECS: dict[str, int] = {"PCMU": 0, "PCMA": 8}

#: µ-law bias added to the 14-bit magnitude (G.711 Table 2a: the segment ends are 2**k - 33).
_ULAW_BIAS = 33
#: Largest biased 14-bit magnitude: 8158 + 33 (G.711 Table 2a, the last decision value is 8159).
_ULAW_CLIP = 0x1FFF
#: A-law even-bit inversion mask (G.711 §3, Table 1a note: "inverted even bits").
_ALAW_XOR = 0x55


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    inv = ~code & 0xFF
    exponent = (inv >> 4) & 0x07
    mantissa = inv & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * _ULAW_BIAS
    return np.where(code < 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    ix = (code ^ _ALAW_XOR) & 0x7F
    exponent = ix >> 4
    mantissa = (ix & 0x0F) + np.where(exponent > 0, 16, 0)
    magnitude = (mantissa << 4) + 8
    magnitude = np.where(exponent > 1, magnitude << np.maximum(exponent - 1, 0), magnitude)
    return np.where(code > 0x7F, magnitude, -magnitude).astype(np.int16)


def _bit_length(x: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Number of significant bits of each non-negative element (0 for 0)."""
    out = np.zeros_like(x)
    for shift in range(16):  # 16 passes over the table, not a per-sample loop
        out += (x >> shift) > 0
    return out


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32)
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + _ULAW_BIAS
    absno = np.minimum(absno, _ULAW_CLIP)
    segno = 1 + _bit_length(absno >> 6)
    high = 8 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    table = np.empty(65536, dtype=np.uint8)
    table[x.astype(np.int16).view(np.uint16)] = code.astype(np.uint8)
    return table


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32)
    ix = np.where(x < 0, (~x) >> 4, x >> 4)  # 12-bit magnitude
    # Segment 0 and 1 share the step; segment e >= 1 holds 16 << (e - 1) ... 32 << (e - 1) - 1.
    exponent = np.maximum(_bit_length(ix) - 4, 0)
    mantissa = np.where(exponent > 0, (ix >> np.maximum(exponent - 1, 0)) - 16, ix)
    code = (exponent << 4) | mantissa
    code = np.where(x >= 0, code | 0x80, code) ^ _ALAW_XOR
    table = np.empty(65536, dtype=np.uint8)
    table[x.astype(np.int16).view(np.uint16)] = code.astype(np.uint8)
    return table


_DECODE: dict[str, npt.NDArray[np.int16]] = {"PCMU": _ulaw_decode_table(), "PCMA": _alaw_decode_table()}
_ENCODE: dict[str, npt.NDArray[np.uint8]] = {"PCMU": _ulaw_encode_table(), "PCMA": _alaw_encode_table()}
#: Code word a zero sample encodes to: µ-law 0xFF (decodes to 0), A-law 0xD5 (decodes to +8).
_SILENCE: dict[str, int] = {"PCMU": 0xFF, "PCMA": 0xD5}


def _name(codec: str) -> str:
    name = codec.upper()
    if name not in CODECS:
        raise ValueError(f"unknown G.711 codec {codec!r} (expected PCMU or PCMA)")
    return name


def payload_type_for(codec: str) -> int:
    """Static RTP payload type of ``codec`` (RFC 3551 Table 4): PCMU -> 0, PCMA -> 8."""
    return CODECS[_name(codec)]


def codec_for_payload_type(payload_type: int) -> str | None:
    """ "PCMU" for 0, "PCMA" for 8, None for any other payload type."""
    for name, pt in CODECS.items():
        if pt == payload_type:
            return name
    return None


def encode(codec: str, pcm: npt.ArrayLike) -> bytes:
    """Encode 16-bit linear samples to G.711 code words.

    Parameters
    ----------
    codec : "PCMU" or "PCMA" (case-insensitive).
    pcm : int16 samples (any integer array is clipped to the int16 range).

    Returns
    -------
    bytes, one code word per sample.
    """
    table = _ENCODE[_name(codec)]
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        if not np.issubdtype(samples.dtype, np.integer):
            raise TypeError(f"G.711 encode wants integer samples, got {samples.dtype}")
        samples = np.clip(samples, -32768, 32767).astype(np.int16)
    return table[samples.reshape(-1).view(np.uint16)].tobytes()


def decode(codec: str, payload: bytes) -> npt.NDArray[np.int16]:
    """Decode G.711 code words to 16-bit linear samples (one sample per byte)."""
    table = _DECODE[_name(codec)]
    return table[np.frombuffer(payload, dtype=np.uint8)]


def encoder(codec: str) -> Callable[[npt.NDArray[np.int16]], bytes]:
    """``encode`` bound to one codec, for int16 input (the per-packet path: no name check per call)."""
    table = _ENCODE[_name(codec)]

    def encode_int16(pcm: npt.NDArray[np.int16]) -> bytes:
        return table[pcm.view(np.uint16)].tobytes()

    return encode_int16


def decoder(codec: str) -> Callable[[bytes], npt.NDArray[np.int16]]:
    """``decode`` bound to one codec (the per-packet path: no name check per call)."""
    table = _DECODE[_name(codec)]

    def decode_bytes(payload: bytes) -> npt.NDArray[np.int16]:
        return table[np.frombuffer(payload, dtype=np.uint8)]

    return decode_bytes


@functools.lru_cache(maxsize=64)
def silence(codec: str, n_samples: int) -> bytes:
    """``n_samples`` code words of a zero sample (µ-law 0xFF -> 0, A-law 0xD5 -> +8)."""
    return bytes([_SILENCE[_name(codec)]]) * n_samples
