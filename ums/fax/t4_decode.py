"""T.4 (MH, MR) and T.6 (MMR) decoder that tolerates damaged data the way a fax machine does.

What it does
------------
``Decoder(width, compression)`` takes the coded page in chunks as they arrive (``feed``) and returns
completed rows; ``finish()`` returns a ``DecodeResult`` with the page, the number of rows, the number
of bad rows and the longest run of consecutive bad rows.  ``decode(data, ...)`` is the one-shot form.
Damaged data never raises: a row that does not decode is replaced by the last good row and counted.

* MH: every line sits between two EOLs; a bad line only costs that line.
* MR: a bad line also spoils the two-dimensional lines after it; decoding resumes at the next line
  sent one-dimensionally (EOL + 1), every line in between is counted bad (T.4 §4.2.1.2).
* MMR: there are no EOLs to resynchronise on (T.6), so decoding stops at the first error; with a
  known ``rows`` count the rest of the page is filled with the last good row and counted bad.

The page ends at RTC (three or more consecutive EOLs are accepted, T.4 §4.1.4 sends six), at EOFB
(T.6 §2.4), after ``rows`` rows, or at the end of the data.

How it works
------------
Bytes are mirrored to MSB-first (``bytes.translate``) and turned into a list of 24-bit windows, one
per byte offset, so the next 13 bits at bit position p are ``(win[p >> 3] >> (11 - (p & 7))) & 8191``.
One lookup in a 13-bit table (``t4_tables``) gives a whole code word and its length.

For MH/MR the EOL positions are found first with numpy: an EOL is a 1 bit preceded by at least
11 zeros (no run of 11 zeros occurs inside valid coded data).  The bits between two EOLs form one
line; the Python loop then runs once per code word of that line, or once for several: a white and a
black terminating code, a horizontal mode with both runs, or a series of vertical modes that fit in
one 13-bit window are looked up at once (``PAIR_LOOKUP``, ``H_RUNS``, ``V_GROUPS``; the values are
then applied one by one, as if read code by code).  Fill is whatever zeros precede the EOL.
Two-dimensional lines are decoded against the reference line's changing elements with a pointer to
b1 that only moves forward, except one step back after a vertical mode.  Rows are kept as lists of
changing elements and turned into pels for a batch of rows at once: the runs between a row's start,
its changing elements and its end alternate white and black, so the batch is one ``np.repeat`` of
0/1 by the run lengths.

Streaming: MH/MR lines are decoded when the EOL that closes them has arrived.  MMR rows are decoded
when enough bits for every lookahead are present; otherwise the row is retried with the next chunk.
Because a row is always decoded from its start with the same input, chunked decoding gives exactly
the one-shot result.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from ums.fax.t4_tables import (
    BLACK_LOOKUP,
    H_RUNS,
    LOOKAHEAD_BITS,
    MODE_HORIZONTAL,
    MODE_LOOKUP,
    MODE_PASS,
    PAIR_LOOKUP,
    REVERSE_BITS,
    V_GROUPS,
    WHITE_LOOKUP,
)

Compression = Literal["mh", "mr", "mmr"]
PageArray = npt.NDArray[np.uint8]

EOL_ZEROS: Final = 11
"""T.4 §4.1.2: EOL is 000000000001; with fill (§4.1.3) any number >= 11 of zeros precedes the 1."""
RTC_EMPTY_LINES: Final = 2
"""T.4 §4.1.4 sends RTC as six EOLs; three EOLs in a row (two empty lines) end the page here, so that
an RTC with a damaged EOL is still recognised."""
_WINDOW_PAD: Final = 4  # zero windows after the data: lookahead past the end reads zeros
_NEVER: Final = 1 << 62


@dataclass(frozen=True, eq=False)
class DecodeResult:
    """A decoded page.

    Attributes
    ----------
    page : ndarray of uint8, shape (rows, width)
        Pels, 1 = black.  Bad rows hold a copy of the last good row (white if there was none).
    rows : int
        Number of rows in ``page``.
    bad_rows : int
        Rows that did not decode (or were missing when ``rows`` was given) and were replaced.
    longest_bad_run : int
        Longest run of consecutive bad rows (the figure T.30 checks against its copy-quality limit).
    end_of_page : bool
        Whether RTC (MH/MR) or EOFB (MMR) was seen.
    """

    page: PageArray
    rows: int
    bad_rows: int
    longest_bad_run: int
    end_of_page: bool


class _NeedMore(Exception):
    """Internal: a lookahead would read bits that have not arrived yet."""


def _row_1d(win: list[int], pos: int, width: int) -> tuple[list[int] | None, int]:
    """Decode one MH line starting at bit ``pos``; returns (changing elements < width, end position)."""
    a0 = 0
    changes: list[int] = []
    white = WHITE_LOOKUP
    black = BLACK_LOOKUP
    pairs = PAIR_LOOKUP
    while True:
        w = (win[pos >> 3] >> (11 - (pos & 7))) & 8191
        pair = pairs[w]
        if pair is not None:  # a white and a black terminating code in one lookup
            run, n, black_run, n_both = pair
            a0 += run
            if a0 >= width:
                return (changes if a0 == width else None), pos + n
            changes.append(a0)
            a0 += black_run
            pos += n_both
            if a0 >= width:
                return (changes if a0 == width else None), pos
            changes.append(a0)
            continue
        # a white run: make-up codes (>= 64), then a terminating code
        while True:
            v, n = white[w]
            if not n:
                return None, pos
            pos += n
            a0 += v
            if v < 64:
                break
            w = (win[pos >> 3] >> (11 - (pos & 7))) & 8191
        if a0 >= width:
            return (changes if a0 == width else None), pos
        changes.append(a0)
        # a black run
        while True:
            v, n = black[(win[pos >> 3] >> (11 - (pos & 7))) & 8191]
            if not n:
                return None, pos
            pos += n
            a0 += v
            if v < 64:
                break
        if a0 >= width:
            return (changes if a0 == width else None), pos
        changes.append(a0)


def _runs(win: list[int], pos: int, colour: int, limit: int) -> tuple[int, int, int]:
    """The two runs of a horizontal mode whose code ends at ``pos``, a0a1 of ``colour`` then a1a2:
    (run a0a1, run a1a2, end position); run a0a1 is -1 if a code word is invalid."""
    table = BLACK_LOOKUP if colour else WHITE_LOOKUP
    r1 = 0
    while True:  # run a0a1: make-up codes, then a terminating code (< 64)
        if pos > limit:
            raise _NeedMore
        v, n = table[(win[pos >> 3] >> (11 - (pos & 7))) & 8191]
        if n == 0:
            return -1, 0, pos
        pos += n
        r1 += v
        if v < 64:
            break
    table = WHITE_LOOKUP if colour else BLACK_LOOKUP
    r2 = 0
    while True:  # run a1a2
        if pos > limit:
            raise _NeedMore
        v, n = table[(win[pos >> 3] >> (11 - (pos & 7))) & 8191]
        if n == 0:
            return -1, 0, pos
        pos += n
        r2 += v
        if v < 64:
            break
    return r1, r2, pos


def _row_2d(win: list[int], pos: int, width: int, ref: list[int], limit: int) -> tuple[list[int] | None, int]:
    """Decode one two-dimensional line against ``ref`` (changing elements + 3 sentinels at width)."""
    a0 = -1
    colour = 0
    j = 0
    out: list[int] = []
    modes = MODE_LOOKUP
    # Several code words in one lookup: they lie in the 13 bits at ``pos`` (<= limit), all there.
    groups = V_GROUPS
    hruns = H_RUNS
    while a0 < width:
        if pos > limit:
            raise _NeedMore
        w = (win[pos >> 3] >> (11 - (pos & 7))) & 8191
        group = groups[w]
        if group is not None:
            for m, n in group:  # as the vertical mode below, code by code
                pos += n
                a1 = ref[j] + m
                if a1 <= a0 or a1 > width:
                    return None, pos
                a0 = a1
                colour ^= 1
                if a1 == width:
                    break
                out.append(a1)
                j = j - 1 if j else 1
                while ref[j] <= a1:
                    j += 2
            continue
        m, n = modes[w]
        pos += n
        if m < MODE_PASS:  # vertical: a1 = b1 + m
            a1 = ref[j] + m
            if a1 <= a0 or a1 > width:
                return None, pos
            a0 = a1
            colour ^= 1
            if a1 < width:
                out.append(a1)
                j = j - 1 if j else 1
                while ref[j] <= a1:
                    j += 2
        elif m == MODE_HORIZONTAL:
            both = hruns[colour][w]
            if both is not None:  # the mode code and both runs in one lookup
                r1, r2, n = both
                pos += n - 3
            else:
                r1, r2, pos = _runs(win, pos, colour, limit)
                if r1 < 0:
                    return None, pos
            a1 = (a0 if a0 > 0 else 0) + r1
            a0 = a1 + r2
            if a0 > width:
                return None, pos
            if r2:
                out.append(a1)
                if a0 < width:
                    out.append(a0)
            while a0 < width and ref[j] <= a0:
                j += 2
        elif m == MODE_PASS:
            a0 = ref[j + 1]
            j += 2
            while a0 < width and ref[j] <= a0:
                j += 2
        else:
            return None, pos
    return out, pos


def _pels_by_toggles(rows: list[list[int]], width: int) -> PageArray:
    """:func:`_pels` for changing elements in any order: each toggles the colour from there on."""
    n = len(rows)
    stride = width + 1
    lengths = np.fromiter(map(len, rows), np.int64, count=n)
    x = np.fromiter(itertools.chain.from_iterable(rows), np.int64, count=int(lengths.sum()))
    flat = np.repeat(np.arange(n, dtype=np.int64) * stride, lengths) + x
    # One extra toggle in column `width` of rows with an odd count makes every row's parity even, so a
    # single flat cumulative sum (mod 2) restarts white at each row; repeated positions toggle twice.
    flat = np.concatenate([flat, np.flatnonzero(lengths & 1) * stride + width])
    toggles = np.bincount(flat, minlength=n * stride).astype(np.uint8) & 1
    page = np.cumsum(toggles, dtype=np.uint8).reshape(n, stride)[:, :width]
    return np.bitwise_and(page, 1)


def _pels(rows: list[list[int]], width: int) -> PageArray:
    """Rows of changing elements -> (len(rows), width) array of pels, 1 = black.  The decoders give each
    row's changing elements in order (repeats allowed), so the runs between a row's start, its changing
    elements and its end alternate white and black: the page is one ``np.repeat`` of 0/1 by their
    lengths."""
    n = len(rows)
    lengths = np.fromiter(map(len, rows), np.int64, count=n)
    x = np.fromiter(itertools.chain.from_iterable(rows), np.int64, count=int(lengths.sum()))
    starts = np.arange(n, dtype=np.int64) * width
    first = np.cumsum(lengths) - lengths  # where each row's changing elements begin in x
    # Run boundaries on the flattened page: each row's start, then its changing elements; the page end.
    bounds = np.append(np.insert(np.repeat(starts, lengths) + x, first, starts), n * width)
    runs = np.diff(bounds)
    if runs.size and (int(runs.min()) < 0 or int(x.max(initial=0)) >= width):
        return _pels_by_toggles(rows, width)
    colour = np.arange(runs.size) - np.repeat(first + np.arange(n), lengths + 1)  # index in the row
    return np.repeat((colour & 1).astype(np.uint8), runs).reshape(n, width)


class Decoder:
    """Streaming T.4/T.6 decoder for one page.

    Parameters
    ----------
    width : int
        Pels per row.
    compression : {"mh", "mr", "mmr"}
    msb_first : bool
        Input packs the first bit in the most significant bit (TIFF FillOrder 1); default is line order.
    rows : int, optional
        Expected rows: decoding stops there, and missing rows are filled (and counted bad) by ``finish``.

    Examples
    --------
    >>> dec = Decoder(1728, "mh")
    >>> rows = [r for chunk in chunks for r in dec.feed(chunk)]  # doctest: +SKIP
    >>> result = dec.finish()  # doctest: +SKIP
    """

    def __init__(
        self, width: int, compression: Compression, *, msb_first: bool = False, rows: int | None = None
    ) -> None:
        if width < 1:
            raise ValueError("width must be >= 1")
        if compression not in ("mh", "mr", "mmr"):
            raise ValueError(f"unknown compression {compression!r}")
        if rows is not None and rows < 0:
            raise ValueError("rows must be >= 0")
        self.width = width
        self.compression: Compression = compression
        self._msb_first = msb_first
        self._max_rows = rows
        self._buf = bytearray()
        self._win: list[int] = [0] * _WINDOW_PAD
        self._nbits = 0
        self._rows: list[list[int]] = []
        self._last_good: list[int] = []
        self._bad_rows = 0
        self._bad_run = 0
        self._longest_bad_run = 0
        self._done = self._max_rows == 0
        self._end_of_page = False
        self._blocks: list[PageArray] = []
        self._materialised = 0
        # MH/MR: EOL search state
        self._scan_zeros = 0  # zeros at the end of the scanned data
        self._last_one = -1  # position of the last 1 bit seen
        self._markers: list[tuple[int, int]] = []  # (position of the EOL's 1 bit, zeros before it)
        self._marker_next = 0
        self._seg_start = 0
        self._first_segment = True
        self._empty_lines = 0
        self._need_1d = False
        # MMR
        self._pos = 0

    @property
    def done(self) -> bool:
        """True once the page has ended (RTC, EOFB, ``rows`` reached or, for MMR, an error)."""
        return self._done

    @property
    def rows_decoded(self) -> int:
        return len(self._rows)

    def feed(self, data: bytes) -> list[npt.NDArray[np.uint8]]:
        """Add received bytes; return the rows completed by them (each a (width,) uint8 array)."""
        self._push(data)
        return list(self._materialise())

    def finish(self) -> DecodeResult:
        """Decode what is left as the end of the page and return the result."""
        if not self._done:
            if self.compression == "mmr":
                self._decode_mmr(final=True)
            else:
                self._decode_segments(final=True)
        if self._max_rows is not None:
            while len(self._rows) < self._max_rows:
                self._add_row(None)
        self._done = True
        self._materialise()
        page = np.concatenate(self._blocks) if self._blocks else np.zeros((0, self.width), np.uint8)
        return DecodeResult(page, len(self._rows), self._bad_rows, self._longest_bad_run, self._end_of_page)

    # -- input ------------------------------------------------------------------------------------

    def _push(self, data: bytes) -> None:
        if self._done or not data:
            return
        if not self._msb_first:
            data = bytes(data).translate(REVERSE_BITS)
        old = len(self._buf)
        self._buf += data
        # Windows of the last two old bytes change with the new bytes; recompute from there.
        first = max(old - 2, 0)
        b = np.frombuffer(bytes(self._buf[first:]) + b"\0\0", np.uint8).astype(np.int64)
        win = (b[:-2] << 16) | (b[1:-1] << 8) | b[2:]
        del self._win[first:]
        self._win += win.tolist()
        self._win += [0] * _WINDOW_PAD
        self._nbits = 8 * len(self._buf)
        if self.compression == "mmr":
            self._scan_ones(data, old)
            self._decode_mmr(final=False)
        else:
            self._scan_eols(data, old)
            self._decode_segments(final=False)

    def _scan_ones(self, data: bytes, old_bytes: int) -> None:
        ones = np.flatnonzero(np.unpackbits(np.frombuffer(data, np.uint8)))
        if len(ones):
            self._last_one = 8 * old_bytes + int(ones[-1])

    def _scan_eols(self, data: bytes, old_bytes: int) -> None:
        bits = np.unpackbits(np.frombuffer(data, np.uint8))
        ones = np.flatnonzero(bits).astype(np.int64) + 8 * old_bytes
        if not len(ones):
            self._scan_zeros += len(bits)
            return
        prev = np.empty_like(ones)
        prev[0] = 8 * old_bytes - self._scan_zeros - 1
        prev[1:] = ones[:-1]
        zeros = ones - prev - 1
        sel = zeros >= EOL_ZEROS
        self._markers += zip(ones[sel].tolist(), zeros[sel].tolist(), strict=True)
        self._last_one = int(ones[-1])
        self._scan_zeros = 8 * len(self._buf) - self._last_one - 1

    # -- row bookkeeping --------------------------------------------------------------------------

    def _add_row(self, changes: list[int] | None) -> None:
        if changes is None:
            self._rows.append(self._last_good)
            self._bad_rows += 1
            self._bad_run += 1
            self._longest_bad_run = max(self._longest_bad_run, self._bad_run)
        else:
            self._rows.append(changes)
            self._last_good = changes
            self._bad_run = 0
        if self._max_rows is not None and len(self._rows) >= self._max_rows:
            self._done = True

    def _materialise(self) -> PageArray:
        new = self._rows[self._materialised :]
        if not new:
            return np.zeros((0, self.width), np.uint8)
        block = _pels(new, self.width)
        self._blocks.append(block)
        self._materialised = len(self._rows)
        return block

    # -- MH / MR ----------------------------------------------------------------------------------

    def _decode_segments(self, final: bool) -> None:
        markers = self._markers
        while not self._done:
            if self._marker_next < len(markers):
                marker, zeros = markers[self._marker_next]
                self._marker_next += 1
                self._segment(self._seg_start, marker - EOL_ZEROS, marker - zeros)
                self._seg_start = marker + 1
                self._first_segment = False
            else:
                if final:
                    data_end = self._last_one + 1 if self._last_one >= self._seg_start else self._seg_start
                    self._segment(self._seg_start, self._nbits, data_end)
                    self._seg_start = self._nbits
                break
        if len(markers) > 1024 and self._marker_next == len(markers):
            markers.clear()
            self._marker_next = 0

    def _segment(self, start: int, end: int, data_end: int) -> None:
        """Decode the line in bits [start, end); bits from ``data_end`` on are all zero (fill)."""
        tagged = self.compression == "mr" and not self._first_segment
        if data_end <= start + (1 if tagged else 0):
            if not self._first_segment:
                self._empty_lines += 1
                if self._empty_lines >= RTC_EMPTY_LINES:
                    self._end_of_page = True
                    self._done = True
            return
        self._empty_lines = 0
        pos = start
        one_d = True
        if tagged:
            one_d = bool((self._win[pos >> 3] >> (23 - (pos & 7))) & 1)
            pos += 1
        if one_d:
            changes, pos = _row_1d(self._win, pos, self.width)
        elif self._need_1d:
            changes = None
        else:
            ref = [*(self._rows[-1] if self._rows else []), self.width, self.width, self.width]
            changes, pos = _row_2d(self._win, pos, self.width, ref, _NEVER)
        if changes is not None and not data_end <= pos <= end:
            changes = None
        if changes is None:
            self._need_1d = True
        elif one_d:
            self._need_1d = False
        self._add_row(changes)

    # -- MMR --------------------------------------------------------------------------------------

    def _decode_mmr(self, final: bool) -> None:
        win = self._win
        width = self.width
        limit = _NEVER if final else self._nbits - LOOKAHEAD_BITS
        eofb_limit = self._nbits if final else self._nbits - 2 * 12
        while not self._done:
            pos = self._pos
            if pos > self._last_one:  # only zeros (padding) left
                if final:
                    self._done = True
                return
            if pos > eofb_limit:
                return
            if ((win[pos >> 3] >> (12 - (pos & 7))) & 4095) == 1:  # EOL at a row start: EOFB
                self._end_of_page = True
                self._done = True
                return
            ref = [*(self._rows[-1] if self._rows else []), width, width, width]
            try:
                changes, pos = _row_2d(win, pos, width, ref, limit)
            except _NeedMore:
                return
            if changes is not None and pos > self._nbits:
                changes = None
            self._add_row(changes)
            if changes is None:
                if self._max_rows is not None:
                    while not self._done:
                        self._add_row(None)
                self._done = True
                return
            self._pos = pos


def decode(
    data: bytes,
    *,
    width: int,
    compression: Compression,
    msb_first: bool = False,
    rows: int | None = None,
) -> DecodeResult:
    """Decode a whole coded page (see ``Decoder``); never raises on damaged data."""
    dec = Decoder(width, compression, msb_first=msb_first, rows=rows)
    dec._push(data)
    return dec.finish()
