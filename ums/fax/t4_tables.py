"""Code tables of ITU-T T.4 / T.6 and the lookup tables built from them.

What it does
------------
Holds the modified Huffman code words of ITU-T T.4 (terminating codes, make-up codes, the extended
make-up codes shared by both colours, EOL) and the two-dimensional mode codes (pass, horizontal,
vertical), and derives from them, once at import:

* encoder arrays indexed by run length (``TERM_CODE[colour, run]``, ``MAKEUP_CODE[colour, run // 64]``);
* decoder lookahead tables indexed by the next 13 bits of the stream (``WHITE_LOOKUP``,
  ``BLACK_LOOKUP``, ``MODE_LOOKUP``), each entry a ``(value, code_length)`` tuple;
* tables that resolve several code words in one lookup when they all lie in the 13 bits: a white and
  a black terminating code (``PAIR_LOOKUP``), a horizontal mode code and its two runs (``H_RUNS``), a
  series of vertical mode codes (``V_GROUPS``).

How it works
------------
Code words are written as bit strings exactly as printed in the Recommendation, first transmitted bit
first. A decoder table has one entry for every 13-bit window; a code word of length ``n`` fills the
``2 ** (13 - n)`` entries that start with it. The longest code word is 13 bits (black make-up codes), so
one lookup always resolves a whole code word. Filling checks that no entry is claimed twice, which proves
the tables prefix-free.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

LOOKAHEAD_BITS: Final = 13
"""Longest code word of T.4 Tables 1 to 3 (black make-up codes, e.g. 512 = 0000001101100)."""

WHITE: Final = 0
BLACK: Final = 1

# T.4 Table 2/T.4: terminating codes, white runs 0..63 (index = run length).
_WHITE_TERM: Final = (
    "00110101 000111 0111 1000 1011 1100 1110 1111 10011 10100 00111 01000 001000 000011 110100 110101 "
    "101010 101011 0100111 0001100 0001000 0010111 0000011 0000100 0101000 0101011 0010011 0100100 "
    "0011000 00000010 00000011 00011010 00011011 00010010 00010011 00010100 00010101 00010110 00010111 "
    "00101000 00101001 00101010 00101011 00101100 00101101 00000100 00000101 00001010 00001011 01010010 "
    "01010011 01010100 01010101 00100100 00100101 01011000 01011001 01011010 01011011 01001010 01001011 "
    "00110010 00110011 00110100"
).split()

# T.4 Table 2/T.4: terminating codes, black runs 0..63.
_BLACK_TERM: Final = (
    "0000110111 010 11 10 011 0011 0010 00011 000101 000100 0000100 0000101 0000111 00000100 00000111 "
    "000011000 0000010111 0000011000 0000001000 00001100111 00001101000 00001101100 00000110111 "
    "00000101000 00000010111 00000011000 000011001010 000011001011 000011001100 000011001101 "
    "000001101000 000001101001 000001101010 000001101011 000011010010 000011010011 000011010100 "
    "000011010101 000011010110 000011010111 000001101100 000001101101 000011011010 000011011011 "
    "000001010100 000001010101 000001010110 000001010111 000001100100 000001100101 000001010010 "
    "000001010011 000000100100 000000110111 000000111000 000000100111 000000101000 000001011000 "
    "000001011001 000000101011 000000101100 000001011010 000001100110 000001100111"
).split()

# T.4 Table 3a/T.4: make-up codes, white runs 64, 128, ..., 1728 (index = run // 64 - 1).
_WHITE_MAKEUP: Final = (
    "11011 10010 010111 0110111 00110110 00110111 01100100 01100101 01101000 01100111 011001100 "
    "011001101 011010010 011010011 011010100 011010101 011010110 011010111 011011000 011011001 "
    "011011010 011011011 010011000 010011001 010011010 011000 010011011"
).split()

# T.4 Table 3a/T.4: make-up codes, black runs 64, 128, ..., 1728.
_BLACK_MAKEUP: Final = (
    "0000001111 000011001000 000011001001 000001011011 000000110011 000000110100 000000110101 "
    "0000001101100 0000001101101 0000001001010 0000001001011 0000001001100 0000001001101 "
    "0000001110010 0000001110011 0000001110100 0000001110101 0000001110110 0000001110111 "
    "0000001010010 0000001010011 0000001010100 0000001010101 0000001011010 0000001011011 "
    "0000001100100 0000001100101"
).split()

# T.4 Table 3b/T.4: extended make-up codes 1792, 1856, ..., 2560, the same for white and black.
_EXT_MAKEUP: Final = (
    "00000001000 00000001100 00000001101 000000010010 000000010011 000000010100 000000010101 "
    "000000010110 000000010111 000000011100 000000011101 000000011110 000000011111"
).split()

EOL: Final = 0b000000000001
"""T.4 §4.1.2: end-of-line code word, 000000000001."""
EOL_BITS: Final = 12

MAX_MAKEUP: Final = 2560
"""T.4 §4.1.1: runs of 2624 pels or more start with make-up code(s) of 2560."""

# T.4 Table 4/T.4 (= T.6 Table 1/T.6): two-dimensional mode codes.
MODE_PASS: Final = 10
MODE_HORIZONTAL: Final = 11
MODE_EOL: Final = 12
MODE_EXTENSION: Final = 13
MODE_INVALID: Final = 14
_MODE_CODES: Final = {
    MODE_PASS: "0001",
    MODE_HORIZONTAL: "001",
    0: "1",  # V(0)
    1: "011",  # VR(1)
    2: "000011",  # VR(2)
    3: "0000011",  # VR(3)
    -1: "010",  # VL(1)
    -2: "000010",  # VL(2)
    -3: "0000010",  # VL(3)
    MODE_EXTENSION: "0000001",  # followed by 3 bits (T.4 §4.2.1.3.4), not supported on receive
    MODE_EOL: "000000000001",
}
PASS_CODE: Final = (0b0001, 4)
HORIZONTAL_CODE: Final = (0b001, 3)

IntArray = npt.NDArray[np.int64]


def _code(bits: str) -> tuple[int, int]:
    return int(bits, 2), len(bits)


def _encoder_arrays() -> tuple[IntArray, IntArray, IntArray, IntArray]:
    term_code = np.zeros((2, 64), np.int64)
    term_len = np.zeros((2, 64), np.int64)
    # index 1..40 = run // 64 (64 .. 2560); 28..40 are the shared extended codes
    mk_code = np.zeros((2, 41), np.int64)
    mk_len = np.zeros((2, 41), np.int64)
    for colour, term, makeup in ((WHITE, _WHITE_TERM, _WHITE_MAKEUP), (BLACK, _BLACK_TERM, _BLACK_MAKEUP)):
        for run, bits in enumerate(term):
            term_code[colour, run], term_len[colour, run] = _code(bits)
        for i, bits in enumerate(makeup + _EXT_MAKEUP):
            mk_code[colour, i + 1], mk_len[colour, i + 1] = _code(bits)
    return term_code, term_len, mk_code, mk_len


TERM_CODE, TERM_LEN, MAKEUP_CODE, MAKEUP_LEN = _encoder_arrays()

# Vertical mode codes indexed by a1 - b1 + 3 (VL3 .. VR3).
V_CODE: Final = np.array([_code(_MODE_CODES[d])[0] for d in range(-3, 4)], np.int64)
V_LEN: Final = np.array([_code(_MODE_CODES[d])[1] for d in range(-3, 4)], np.int64)

LookupTable = list[tuple[int, int]]
"""13-bit window -> (value, code length); value -1 with length 0 marks no valid code word."""


def _fill(table: list[tuple[int, int] | None], bits: str, value: int) -> None:
    free = LOOKAHEAD_BITS - len(bits)
    base = int(bits, 2) << free
    # One tuple shared by all the entries of a code word keeps a table small (it stays in the cache).
    entry = (value, len(bits))
    for i in range(base, base + (1 << free)):
        if table[i] is not None:
            raise AssertionError(f"code {bits} is not prefix-free")
        table[i] = entry


def _finish(table: list[tuple[int, int] | None]) -> LookupTable:
    invalid = (-1, 0)
    return [invalid if entry is None else entry for entry in table]


def _run_lookup(term: list[str], makeup: list[str]) -> LookupTable:
    table: list[tuple[int, int] | None] = [None] * (1 << LOOKAHEAD_BITS)
    for run, bits in enumerate(term):
        _fill(table, bits, run)
    for i, bits in enumerate(makeup + _EXT_MAKEUP):
        _fill(table, bits, (i + 1) * 64)
    return _finish(table)


def _mode_lookup() -> LookupTable:
    table: list[tuple[int, int] | None] = [None] * (1 << LOOKAHEAD_BITS)
    for mode, bits in _MODE_CODES.items():
        _fill(table, bits, mode)
    invalid = (MODE_INVALID, 0)
    return [invalid if entry is None else entry for entry in table]


WHITE_LOOKUP: Final = _run_lookup(_WHITE_TERM, _WHITE_MAKEUP)
"""White run code words: value < 64 is a terminating code, value >= 64 a make-up code."""
BLACK_LOOKUP: Final = _run_lookup(_BLACK_TERM, _BLACK_MAKEUP)
MODE_LOOKUP: Final = _mode_lookup()
"""Mode code words: value -3..3 is V(a1 - b1), else one of the MODE_* constants."""

PairEntry = tuple[int, int, int, int]


def _pair_lookup() -> list[PairEntry | None]:
    entries: dict[PairEntry, PairEntry] = {}
    table: list[PairEntry | None] = [None] * (1 << LOOKAHEAD_BITS)
    for w in range(1 << LOOKAHEAD_BITS):
        white, n_white = WHITE_LOOKUP[w]
        if not n_white or white >= 64:
            continue
        black, n_black = BLACK_LOOKUP[(w << n_white) & ((1 << LOOKAHEAD_BITS) - 1)]
        # Only a black code that lies wholly inside the window counts (the rest of it is zero-filled).
        if n_black and black < 64 and n_white + n_black <= LOOKAHEAD_BITS:
            entry = (white, n_white, black, n_white + n_black)
            table[w] = entries.setdefault(entry, entry)
    return table


VGroup = tuple[tuple[int, int], ...]


def _vertical_groups() -> list[VGroup | None]:
    entries: dict[VGroup, VGroup] = {}
    table: list[VGroup | None] = [None] * (1 << LOOKAHEAD_BITS)
    mask = (1 << LOOKAHEAD_BITS) - 1
    for w in range(1 << LOOKAHEAD_BITS):
        group: list[tuple[int, int]] = []
        used = 0
        while True:
            mode, n = MODE_LOOKUP[(w << used) & mask]
            # a vertical mode code that lies wholly inside the window (the rest of it is zero-filled)
            if not n or not -3 <= mode <= 3 or used + n > LOOKAHEAD_BITS:
                break
            group.append((mode, n))
            used += n
        if len(group) >= 2:
            entry = tuple(group)
            table[w] = entries.setdefault(entry, entry)
    return table


HorizontalEntry = tuple[int, int, int]


def _horizontal_runs(colour: int) -> list[HorizontalEntry | None]:
    first, second = (WHITE_LOOKUP, BLACK_LOOKUP) if colour == WHITE else (BLACK_LOOKUP, WHITE_LOOKUP)
    code, n_code = HORIZONTAL_CODE
    entries: dict[HorizontalEntry, HorizontalEntry] = {}
    table: list[HorizontalEntry | None] = [None] * (1 << LOOKAHEAD_BITS)
    mask = (1 << LOOKAHEAD_BITS) - 1
    for w in range(1 << LOOKAHEAD_BITS):
        if w >> (LOOKAHEAD_BITS - n_code) != code:
            continue
        r1, n1 = first[(w << n_code) & mask]
        if not n1 or r1 >= 64:
            continue
        r2, n2 = second[(w << (n_code + n1)) & mask]
        # Both runs terminating codes wholly inside the window (the rest of it is zero-filled).
        if n2 and r2 < 64 and n_code + n1 + n2 <= LOOKAHEAD_BITS:
            entry = (r1, r2, n_code + n1 + n2)
            table[w] = entries.setdefault(entry, entry)
    return table


PAIR_LOOKUP: Final = _pair_lookup()
"""13-bit windows that start with a white terminating code followed by a whole black terminating code:
(white run, white code length, black run, both code lengths); None for the others."""
H_RUNS: Final = (_horizontal_runs(WHITE), _horizontal_runs(BLACK))
"""Per colour at a0: 13-bit windows that hold a whole horizontal mode code and its two runs as
terminating codes: (run a0a1, run a1a2, length of the three codes); None for the others."""
V_GROUPS: Final = _vertical_groups()
"""13-bit windows that start with two or more whole vertical mode codes: ((m, code length), ...) for each
of them in order; None for the others."""


def all_code_words() -> list[str]:
    """Every code word of Tables 1 to 4 (used to check that EOL cannot occur inside valid data)."""
    return [*_WHITE_TERM, *_BLACK_TERM, *_WHITE_MAKEUP, *_BLACK_MAKEUP, *_EXT_MAKEUP] + [
        bits for mode, bits in _MODE_CODES.items() if mode not in (MODE_EOL, MODE_EXTENSION)
    ]


REVERSE_BITS: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
"""bytes.translate table that mirrors the bit order of each byte (FillOrder 1 <-> 2)."""
