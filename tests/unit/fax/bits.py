"""Bit-level views of coded fax data (line order, first bit in the LSB) for the codec tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Bits = npt.NDArray[np.uint8]


def to_bits(data: bytes) -> Bits:
    """Bits in transmission order."""
    return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")


def from_bits(bits: Bits) -> bytes:
    return np.packbits(bits, bitorder="little").tobytes()


def bit_string(data: bytes) -> str:
    return "".join(map(str, to_bits(data).tolist()))


def eol_ends(bits: Bits) -> npt.NDArray[np.int64]:
    """Positions of the 1 bit of every EOL (a 1 after at least 11 zeros)."""
    ones = np.flatnonzero(bits)
    prev = np.concatenate([[-1], ones[:-1]])
    return ones[ones - prev - 1 >= 11].astype(np.int64)
