"""HDLC framing as T.30 uses it (T.30 §5.3, ISO/IEC 13239): flags, zero-bit insertion, FCS, aborts.

Octets are sent least significant bit first.  A frame is ``flag, data, FCS, flag`` with the flag
``01111110``; inside a frame a 0 is inserted after every five consecutive 1s; seven or more
consecutive 1s are an abort.  The FCS is the 16-bit ITU-T CRC (X.25: generator
x^16 + x^12 + x^5 + 1, bit-reversed, preset to all ones, ones' complement sent low octet first), or
the 32-bit one (T.30 Annex A allows it for ECM).

Both directions work on whole numpy arrays of bits: runs of ones, flags, aborts and stuffed zeros
are found with array operations, and the decoder's only Python loop is one pass per flag or abort.
A block of a few bits (V.21 at 300 bit/s gives 6 per 20 ms) is decoded bit by bit instead, with the
same tests on the same eight-bit window, which costs less than the array operations' overhead.
"""

from __future__ import annotations

import binascii
import enum
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .common import Bits

__all__ = [
    "FLAG_BITS",
    "HdlcDecoder",
    "HdlcEncoder",
    "HdlcEvent",
    "HdlcEventKind",
    "crc16_itu",
    "crc32_itu",
    "fcs",
]

#: The flag octet 0x7E in transmission order.
FLAG_BITS: Bits = np.array([0, 1, 1, 1, 1, 1, 1, 0], dtype=np.uint8)

#: Weights that pack eight consecutive bits into an integer, newest bit lowest.
_WEIGHTS = np.array([1, 2, 4, 8, 16, 32, 64, 128], dtype=np.int64)
#: The last seven bits as an integer (newest bit lowest) -> those bits in order, oldest first.
_HIST_BITS = ((np.arange(128)[:, None] >> np.arange(6, -1, -1)) & 1).astype(np.uint8)
#: Blocks up to this many bits are decoded bit by bit.
_SMALL_BLOCK = 64

_REVERSED_OCTETS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc16_itu(data: bytes) -> int:
    """The 16-bit HDLC FCS of ``data`` (ITU-T X.25 §2.2.7.4; T.30 §5.3.7): reflected CRC-CCITT,
    preset 0xFFFF, complemented.  ``crc16_itu(b"123456789") == 0x906E``."""
    crc = binascii.crc_hqx(bytes(data).translate(_REVERSED_OCTETS), 0xFFFF)
    return int(f"{crc:016b}"[::-1], 2) ^ 0xFFFF


def crc32_itu(data: bytes) -> int:
    """The 32-bit HDLC FCS of ``data`` (ITU-T V.42 §8.1.1.6.2), the same CRC as zlib's."""
    return zlib.crc32(bytes(data)) & 0xFFFFFFFF


def fcs(data: bytes, *, crc32: bool = False) -> bytes:
    """The FCS octets to append to ``data``, in transmission order (low octet first)."""
    if crc32:
        return crc32_itu(data).to_bytes(4, "little")
    return crc16_itu(data).to_bytes(2, "little")


def _stuff(bits: Bits) -> Bits:
    """Zero-bit insertion: a 0 after every fifth consecutive 1 (the count restarts after it)."""
    idx = np.arange(bits.size)
    last0 = np.maximum.accumulate(np.where(bits == 0, idx, -1))
    run = idx - last0  # length of the run of 1s ending here (0 at a 0)
    at = np.flatnonzero((run > 0) & (run % 5 == 0))
    if at.size == 0:
        return bits
    return np.insert(bits, at + 1, np.uint8(0))


def _octets_to_bits(data: bytes) -> Bits:
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), bitorder="little")


class HdlcEncoder:
    """Turns frames into bits: ``flags(n)`` for preambles, ``frame(data)`` for a frame with its FCS,
    ``abort()``.  Consecutive frames may share flags: pass ``opening_flag=False`` after a flag."""

    def __init__(self, *, crc32: bool = False) -> None:
        self.crc32 = crc32

    def flags(self, n: int) -> Bits:
        """``n`` flags back to back."""
        return np.tile(FLAG_BITS, max(0, n))

    def frame(self, data: bytes, *, opening_flag: bool = True, closing_flag: bool = True) -> Bits:
        """One frame: optional opening flag, ``data`` and FCS with zero-bit insertion, closing flag."""
        body = _stuff(_octets_to_bits(bytes(data) + fcs(data, crc32=self.crc32)))
        parts = [body]
        if opening_flag:
            parts.insert(0, FLAG_BITS)
        if closing_flag:
            parts.append(FLAG_BITS)
        return np.concatenate(parts)

    def frames(self, frames: list[bytes], *, preamble_flags: int = 0) -> Bits:
        """Several frames separated by single flags, after ``preamble_flags`` flags (at least one)."""
        parts = [self.flags(max(1, preamble_flags))]
        parts += [self.frame(f, opening_flag=False) for f in frames]
        return np.concatenate(parts)

    def abort(self) -> Bits:
        """An abort: eight 1s (ISO/IEC 13239 §4.4.1 asks for at least seven)."""
        return np.ones(8, dtype=np.uint8)


class HdlcEventKind(enum.Enum):
    """What an :class:`HdlcEvent` reports."""

    FRAME = "frame"
    #: ``framing_ok_flags`` flags seen back to back: a preamble, frames are now accepted.
    FRAMING_OK = "framing-ok"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class HdlcEvent:
    """A decoder event.  For ``FRAME``, ``data`` excludes the FCS and ``crc_ok`` says whether the
    frame was octet-aligned, of allowed length and had a good FCS.  ``bit_index`` counts input bits
    from the start (or the last :meth:`HdlcDecoder.reset`) up to the event's last bit."""

    kind: HdlcEventKind
    bit_index: int
    data: bytes = b""
    crc_ok: bool = False


class HdlcDecoder:
    """Turns bits into frames.

    Frames are accepted only once ``framing_ok_flags`` flags have been seen back to back (flags
    sharing a 0 count as back to back), which is announced by a ``FRAMING_OK`` event.  An abort
    drops the frame in progress; one more flag then resumes framing.  Bad frames (wrong FCS, not a
    whole number of octets, shorter than ``min_len`` or longer than ``max_len`` data octets) are
    reported with ``crc_ok=False`` unless ``report_bad`` is false; data beyond ``max_len`` octets is
    not kept.
    """

    def __init__(
        self,
        *,
        crc32: bool = False,
        framing_ok_flags: int = 5,
        max_len: int = 400,
        min_len: int = 1,
        report_bad: bool = True,
    ) -> None:
        self.crc32 = crc32
        self.fcs_len = 4 if crc32 else 2
        self.framing_ok_flags = max(1, framing_ok_flags)
        self.max_len = max_len
        self.min_len = min_len
        self.report_bad = report_bad
        self._max_bits = (max_len + self.fcs_len) * 8 + len(FLAG_BITS)
        self.reset()

    def reset(self) -> None:
        """Forget everything (as on carrier-up): hunt for a preamble again."""
        self._bits_in = 0
        self._hist = 0  # the last seven input bits, newest lowest
        self._flags_seen = 0
        self._framing_announced = False
        self._count = 0
        self._acc: list[Bits] = []
        self._stored = 0

    @property
    def framing_ok(self) -> bool:
        """True while frames are being accepted."""
        return self._flags_seen >= self.framing_ok_flags

    def put_bits(self, bits: npt.ArrayLike) -> list[HdlcEvent]:
        """Decode a block of bits (any length); returns the events it completes, in order."""
        b = np.asarray(bits, dtype=np.uint8).ravel()
        size = b.size
        if size == 0:
            return []
        if size <= _SMALL_BLOCK:
            return self._put_few(b.tolist())
        # w[i] holds bits i-7..i, bit k of w being input bit i-k: the patterns below end at bit i.
        ext = np.concatenate([_HIST_BITS[self._hist], b])
        w = np.convolve(ext, _WEIGHTS, mode="valid")
        self._hist = int(w[-1]) & 0x7F
        stuffed = (w & 0x7F) == 0x3E  # 0 11111 0: a stuffed zero
        at = np.flatnonzero((w == 0x7E) | (w == 0x7F))  # 0 111111 0: flag; 0 1111111: abort
        events: list[HdlcEvent] = []
        base = self._bits_in
        self._bits_in += size
        if at.size == 0:
            self._collect(b[~stuffed] if stuffed.any() else b)
            return events
        keep = ~stuffed
        kept = b[keep]
        kept_upto = np.cumsum(keep)
        seg_start = 0
        is_flag = w[at] == 0x7E
        ends = kept_upto[at]
        # A flag right after a flag (7 or 8 kept bits apart) changes nothing once framing is OK;
        # `skip_to[j]` is the first event after j that is not such a flag.
        b2b = np.zeros(at.size, dtype=bool)
        gap = ends[1:] - ends[:-1]
        b2b[1:] = is_flag[1:] & is_flag[:-1] & ((gap == 7) | (gap == 8))
        other = np.flatnonzero(~b2b)
        skip_to = np.append(other, at.size)[np.searchsorted(other, np.arange(at.size), side="right")]
        at_l = at.tolist()
        ends_l = ends.tolist()
        is_flag_l = is_flag.tolist()
        skip_l = skip_to.tolist()
        j = 0
        while j < len(at_l):
            end = ends_l[j]
            seg = kept[seg_start:end]
            seg_start = end
            if is_flag_l[j]:
                self._flag(seg, base + at_l[j], events)
                if self.framing_ok and skip_l[j] > j + 1:
                    j = skip_l[j]
                    seg_start = ends_l[j - 1]
                    continue
            else:
                self._abort(base + at_l[j], events)
            j += 1
        self._collect(kept[seg_start:])
        return events

    def _put_few(self, bits: list[int]) -> list[HdlcEvent]:
        """:meth:`put_bits` bit by bit: the same window tests, flags and aborts handled as they come
        (every flag, where the array version skips flags that follow a flag once framing is OK, which
        changes nothing)."""
        events: list[HdlcEvent] = []
        base = self._bits_in
        self._bits_in += len(bits)
        w = self._hist
        seg: list[int] = []
        for i, bit in enumerate(bits):
            w = ((w << 1) | bit) & 0xFF
            if (w & 0x7F) == 0x3E:  # 0 11111 0: a stuffed zero, dropped
                continue
            seg.append(bit)
            if w == 0x7E:  # 0 111111 0: flag
                self._flag(np.array(seg, dtype=np.uint8), base + i, events)
                seg = []
            elif w == 0x7F:  # 0 1111111: abort
                self._abort(base + i, events)
                seg = []
        self._hist = w & 0x7F
        if seg:
            self._collect(np.array(seg, dtype=np.uint8))
        return events

    def _collect(self, seg: Bits) -> None:
        self._count += seg.size
        if self.framing_ok and self._stored < self._max_bits and seg.size:
            part = seg[: self._max_bits - self._stored]
            self._acc.append(part)
            self._stored += part.size

    def _flag(self, seg: Bits, pos: int, events: list[HdlcEvent]) -> None:
        collecting = self.framing_ok
        self._collect(seg)
        content = self._count - len(FLAG_BITS)
        if collecting:
            if content > 0:
                self._frame(content, pos, events)
        else:
            if content not in (0, -1) and self._flags_seen != self.framing_ok_flags - 1:
                self._flags_seen = 0
            self._flags_seen += 1
            if self.framing_ok and not self._framing_announced:
                self._framing_announced = True
                events.append(HdlcEvent(HdlcEventKind.FRAMING_OK, pos))
        self._count = 0
        self._acc = []
        self._stored = 0

    def _frame(self, content: int, pos: int, events: list[HdlcEvent]) -> None:
        bits = np.concatenate(self._acc) if self._acc else np.zeros(0, dtype=np.uint8)
        bits = bits[: min(content, bits.size)]
        octets = np.packbits(bits[: bits.size - bits.size % 8], bitorder="little").tobytes()
        n_octets = content // 8
        fl = self.fcs_len
        ok = content % 8 == 0 and self.min_len + fl <= n_octets <= self.max_len + fl
        if ok:
            data = octets[:-fl]
            ok = fcs(data, crc32=self.crc32) == octets[-fl:]
        elif n_octets > self.max_len + fl:
            data = octets[: self.max_len]
        else:
            data = octets[:-fl] if len(octets) > fl else b""
        if ok or self.report_bad:
            events.append(HdlcEvent(HdlcEventKind.FRAME, pos, data, ok))

    def _abort(self, pos: int, events: list[HdlcEvent]) -> None:
        if self._flags_seen > 0:
            events.append(HdlcEvent(HdlcEventKind.ABORT, pos))
        threshold = self.framing_ok_flags
        self._flags_seen = threshold - 1 if self._flags_seen >= threshold - 1 else 0
        self._count = 0
        self._acc = []
        self._stored = 0
