"""T.4 (MH, MR) and T.6 (MMR) encoder for 1-bit page arrays.

What it does
------------
``encode(page, compression=...)`` turns an ``H x W`` array (non-zero = black) into the bit stream a
fax machine sends: T.4 one-dimensional modified Huffman (``"mh"``), T.4 two-dimensional modified READ
with any K (``"mr"``) or T.6 modified modified READ (``"mmr"``), with EOLs, fill bits for a minimum
scan-line length or byte-aligned EOLs, and RTC / EOFB at the end.

How it works
------------
Everything is computed for the whole page at once with numpy; there is no Python loop over rows,
runs or bits.

1. Changing elements: ``np.nonzero`` of ``page[:, x] != page[:, x - 1]`` (with an imaginary white
   pel before each row) gives, per row, the positions ``a`` where the colour changes.
2. One-dimensional rows: run lengths are the differences of ``[0, a..., W]``; the colour alternates
   starting with white (T.4 §4.1.1).
3. Two-dimensional rows (T.4 §4.2.1.3, T.6 §2.2): the reference line's changing elements are split
   into (b1, b2) pairs by parity (b1 must have the colour opposite to a0).  For each candidate a1 of
   the coding line, ``searchsorted`` finds the first pair with b1 > a0 and the pairs with b2 < a1
   (pass modes).  a1 is vertical-codable when ``|a1 - b1| <= 3``.  The mode sequence follows from
   blocks of consecutive not-vertical candidates: each such block is entered at its start and coded
   as horizontal modes at even offsets, each taking the next element as a2.
4. Code words: every run becomes 2560 make-ups, a make-up and a terminating code; with the mode codes,
   EOLs and fill they form one array of (code, length) tokens in transmission order.
5. Bit packing: exclusive cumulative sum of the lengths gives each token's bit offset; each non-zero
   code is shifted into a 24-bit window at its byte and the three bytes are summed with
   ``np.bincount`` (tokens never overlap, so the sum is the bitwise OR).  Bytes are MSB-first and
   mirrored with ``bytes.translate`` for line order (LSB first, TIFF FillOrder 2).
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from ums.fax.t4_tables import (
    EOL,
    EOL_BITS,
    HORIZONTAL_CODE,
    MAKEUP_CODE,
    MAKEUP_LEN,
    MAX_MAKEUP,
    PASS_CODE,
    REVERSE_BITS,
    TERM_CODE,
    TERM_LEN,
    V_CODE,
    V_LEN,
)

Compression = Literal["mh", "mr", "mmr"]
IntArray = npt.NDArray[np.int64]

RTC_EOLS: Final = 6
"""T.4 §4.1.4: return to control is six consecutive EOLs (each EOL+1 in two-dimensional mode)."""
EOFB: Final = ((EOL, EOL_BITS), (EOL, EOL_BITS))
"""T.6 §2.4: end of facsimile block is two EOLs."""


def _ragged_arange(counts: IntArray) -> IntArray:
    """Concatenation of ``arange(c)`` for each c in counts."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def _with_tail(values: IntArray, counts: IntArray, tail: IntArray, n_tail: int) -> tuple[IntArray, IntArray]:
    """Append ``n_tail`` copies of ``tail[i]`` to group i of ``values`` (grouped by ``counts``).

    Returns the merged values and each element's index within its group.
    """
    lengths = counts + n_tail
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), np.int64)
    out[np.repeat(starts, counts) + _ragged_arange(counts)] = values
    for t in range(n_tail):
        out[starts + counts + t] = tail
    return out, _ragged_arange(lengths)


class _Units:
    """Code units of some rows in transmission order: either a fixed code or a run to be coded."""

    def __init__(self, row: IntArray, is_run: npt.NDArray[np.bool_], a: IntArray, b: IntArray) -> None:
        self.row = row  # page row of the unit
        self.is_run = is_run
        self.a = a  # run: colour; code: code word
        self.b = b  # run: run length; code: code length


def _units_1d(rows: IntArray, ch_x: IntArray, counts: IntArray, width: int) -> _Units:
    """Runs of one-dimensionally coded rows (T.4 §4.1.1)."""
    ends, k = _with_tail(ch_x, counts, np.full(len(rows), width, np.int64), 1)
    starts = np.empty_like(ends)
    starts[1:] = ends[:-1]
    starts[k == 0] = 0
    row = np.repeat(rows, counts + 1)
    return _Units(row, np.ones(len(ends), np.bool_), k & 1, ends - starts)


def _units_2d(
    rows: IntArray,
    ch_x: IntArray,
    counts: IntArray,
    ref_x: IntArray,
    ref_counts: IntArray,
    width: int,
) -> _Units:
    """Mode codes and runs of two-dimensionally coded rows (T.4 §4.2.1.3.2, T.6 §2.2.3).

    ``ch_x``/``counts`` are the coding lines' changing elements grouped by row, ``ref_x``/``ref_counts``
    the reference lines' (the previous row, or nothing for an all-white reference).
    """
    stride = width + 8
    base = rows * stride
    # Coding line a[0..n] = changes + [W] are the a1 candidates; a[n+1] = W serves as a2 of the last H.
    a, k = _with_tail(ch_x, counts, np.full(len(rows), width, np.int64), 2)
    a_row = np.repeat(np.arange(len(rows)), counts + 2)
    ag = a + base[a_row]
    cand = k <= np.repeat(counts, counts + 2)
    idx = np.flatnonzero(cand)
    k_c = k[idx]
    cand_row = a_row[idx]
    a1 = ag[idx]
    a_next = ag[idx + 1]
    a_prev = np.where(k_c == 0, base[cand_row] - 1, ag[idx - 1])
    parity = k_c & 1  # colour of a0 (0 white) for this candidate

    # Reference line + 4 sentinels at W: every parity has a (W, W) pair in every row.
    r, rk = _with_tail(ref_x, ref_counts, np.full(len(rows), width, np.int64), 4)
    r_row = np.repeat(np.arange(len(rows)), ref_counts + 4)
    rg = r + base[r_row]
    r_len = np.repeat(ref_counts + 4, ref_counts + 4)

    b1 = np.empty(len(idx), np.int64)
    last_b2 = np.empty(len(idx), np.int64)
    n_pass = np.empty(len(idx), np.int64)
    for p in (0, 1):
        sel_ref = np.flatnonzero(((rk & 1) == p) & (rk + 1 < r_len))
        pb1 = rg[sel_ref]
        pb2 = rg[sel_ref + 1]
        sel = parity == p
        m0 = np.searchsorted(pb1, a_prev[sel], side="right")  # first b1 > a0
        kk = np.searchsorted(pb2, a1[sel], side="left")  # pairs with b2 < a1 -> pass modes
        m = np.maximum(m0, kk)
        b1[sel] = pb1[m]
        n_pass[sel] = np.maximum(kk - m0, 0)
        last_b2[sel] = pb2[np.maximum(m - 1, 0)]

    d = a1 - b1
    vertical = np.abs(d) <= 3
    # Blocks of consecutive not-vertical candidates within a row: H at even offsets from block start.
    n = len(idx)
    pos = np.arange(n, dtype=np.int64)
    prev_nonv = np.zeros(n, np.bool_)
    prev_nonv[1:] = ~vertical[:-1]
    prev_nonv[k_c == 0] = False
    block_start = ~vertical & ~prev_nonv
    start_pos = np.maximum.accumulate(np.where(block_start, pos, 0))
    is_h = ~vertical & (((pos - start_pos) & 1) == 0)
    skipped = np.zeros(n, np.bool_)
    skipped[1:] = is_h[:-1]
    skipped[k_c == 0] = False
    decision = ~skipped
    is_v = decision & vertical
    n_pass = np.where(decision, n_pass, 0)

    a0_h = np.where(n_pass > 0, last_b2, np.where(k_c == 0, base[cand_row], a_prev))
    run1 = a1 - a0_h
    run2 = a_next - a1

    n_units = n_pass + decision.astype(np.int64) + 2 * is_h
    u_start = np.cumsum(n_units) - n_units
    total = int(n_units.sum())
    u_row = np.repeat(rows[cand_row], n_units)
    u_run = np.zeros(total, np.bool_)
    u_a = np.full(total, PASS_CODE[0], np.int64)
    u_b = np.full(total, PASS_CODE[1], np.int64)
    mode_at = (u_start + n_pass)[decision]
    vsel = is_v[decision]
    hsel = is_h[decision]
    dv = d[decision] + 3
    u_a[mode_at[vsel]] = V_CODE[dv[vsel]]
    u_b[mode_at[vsel]] = V_LEN[dv[vsel]]
    h_at = mode_at[hsel]
    u_a[h_at] = HORIZONTAL_CODE[0]
    u_b[h_at] = HORIZONTAL_CODE[1]
    colour = parity[is_h]
    u_run[h_at + 1] = True
    u_a[h_at + 1] = colour
    u_b[h_at + 1] = run1[is_h]
    u_run[h_at + 2] = True
    u_a[h_at + 2] = colour ^ 1
    u_b[h_at + 2] = run2[is_h]
    return _Units(u_row, u_run, u_a, u_b)


def _tokens(units: _Units) -> tuple[IntArray, IntArray, IntArray]:
    """Expand units into (code, length, row) tokens: runs become make-up and terminating codes."""
    run = units.b
    q = np.where(units.is_run, run // MAX_MAKEUP, 0)
    rem = run - q * MAX_MAKEUP
    has_mk = units.is_run & (rem >= 64)
    count = q + has_mk + 1
    u = np.repeat(np.arange(len(run)), count)
    sub = _ragged_arange(count)
    colour = np.where(units.is_run, units.a, 0)[u]
    rem_u = rem[u]
    q_u = q[u]
    is_run = units.is_run[u]
    is_ext = sub < q_u
    is_mk = (sub == q_u) & has_mk[u]
    is_term = is_run & ~is_ext & ~is_mk
    mk_idx = np.where(is_ext, MAX_MAKEUP // 64, rem_u // 64)
    term_idx = rem_u & 63
    code = np.where(is_term, TERM_CODE[colour, term_idx], MAKEUP_CODE[colour, mk_idx])
    length = np.where(is_term, TERM_LEN[colour, term_idx], MAKEUP_LEN[colour, mk_idx])
    code = np.where(is_run, code, units.a[u])
    length = np.where(is_run, length, units.b[u])
    return code, length, units.row[u]


def _pack(code: IntArray, length: IntArray, msb_first: bool) -> bytes:
    """Concatenate code words (each at most 24 - 7 bits, or zero fill of any length) into bytes."""
    start = np.cumsum(length) - length
    total_bits = int(start[-1] + length[-1]) if len(length) else 0
    n_bytes = (total_bits + 7) // 8
    nz = np.flatnonzero(code)
    s = start[nz]
    window = code[nz] << (24 - (s & 7) - length[nz])
    byte = s >> 3
    acc = np.bincount(
        np.concatenate([byte, byte + 1, byte + 2]),
        weights=np.concatenate([window >> 16, (window >> 8) & 255, window & 255]).astype(np.float64),
        minlength=n_bytes + 2,
    )
    out = acc[:n_bytes].astype(np.uint8).tobytes()
    return out if msb_first else out.translate(REVERSE_BITS)


def _changes(page: npt.NDArray[np.bool_]) -> tuple[IntArray, IntArray, IntArray]:
    """Changing elements of every row: (row, x) sorted by row then x, and the count per row."""
    h, w = page.shape
    diff = np.empty((h, w), np.bool_)
    diff[:, 0] = page[:, 0]
    np.not_equal(page[:, 1:], page[:, :-1], out=diff[:, 1:])
    row, x = np.divmod(np.flatnonzero(diff), w)
    return row, x, np.bincount(row, minlength=h).astype(np.int64)


def _merge(parts: list[_Units], n_rows: int) -> tuple[IntArray, IntArray, IntArray]:
    """Tokens of all rows in row order (each row belongs to exactly one part)."""
    toks = [_tokens(p) for p in parts if len(p.row)]
    if not toks:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    if len(toks) == 1:
        return toks[0]
    row = np.concatenate([t[2] for t in toks])
    per_row = np.bincount(row, minlength=n_rows)
    row_start = np.cumsum(per_row) - per_row
    dest = []
    for t in toks:
        local = np.arange(len(t[2])) - np.searchsorted(t[2], t[2], side="left")
        dest.append(row_start[t[2]] + local)
    order = np.concatenate(dest)
    code = np.empty(len(row), np.int64)
    length = np.empty(len(row), np.int64)
    out_row = np.empty(len(row), np.int64)
    code[order] = np.concatenate([t[0] for t in toks])
    length[order] = np.concatenate([t[1] for t in toks])
    out_row[order] = row
    return code, length, out_row


def encode(
    page: npt.ArrayLike,
    *,
    compression: Compression,
    k: int = 2,
    min_row_bits: int = 0,
    eol_align: bool = False,
    rtc: bool = True,
    msb_first: bool = False,
) -> bytes:
    """Encode a bi-level page as T.4 MH / MR or T.6 MMR data.

    Parameters
    ----------
    page : array_like, shape (H, W)
        Pels, non-zero = black.  Any width (1728, 2048, 2432, 3456, 4096, 4864 in practice).
    compression : {"mh", "mr", "mmr"}
        T.4 one-dimensional, T.4 two-dimensional, T.6.
    k : int
        MR only: every k-th row (starting with the first) is coded one-dimensionally (T.4 §4.2.1.2).
    min_row_bits : int
        MH/MR: minimum bits of a coded scan line, counted as data + fill + EOL (+ the tag bit in MR),
        to meet the minimum scan-line transmission time (T.4 §4.1.3).  Fill is zero bits before EOL.
    eol_align : bool
        MH/MR: add fill so that every EOL ends on a byte boundary (TIFF T4Options bit 2).
    rtc : bool
        End with RTC (six EOLs, T.4 §4.1.4) or EOFB (T.6 §2.4).  Without it, MH/MR still end the last
        line with one EOL.  A page of no rows gives only the RTC / EOFB (empty without ``rtc``).
    msb_first : bool
        Pack the first bit into the most significant bit of each byte (TIFF FillOrder 1).  The
        default is line order, first bit in the least significant bit (FillOrder 2).

    Returns
    -------
    bytes
        The coded page, zero-padded to a whole byte.
    """
    arr = np.asarray(page)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"page must be a 2-D array with at least one column, got shape {arr.shape}")
    if compression not in ("mh", "mr", "mmr"):
        raise ValueError(f"unknown compression {compression!r}")
    if k < 1:
        raise ValueError("k must be >= 1")
    if compression == "mmr" and (min_row_bits or eol_align):
        raise ValueError("T.6 has no fill bits: min_row_bits and eol_align apply to mh/mr only")
    pels = arr if arr.dtype == np.bool_ else arr != 0
    n_rows, width = pels.shape
    ch_row, ch_x, counts = _changes(pels)
    all_rows = np.arange(n_rows, dtype=np.int64)
    if compression == "mh":
        one_d = np.ones(n_rows, np.bool_)
    elif compression == "mr":
        one_d = all_rows % k == 0
    else:
        one_d = np.zeros(n_rows, np.bool_)

    parts = []
    rows1 = all_rows[one_d]
    if len(rows1):
        sel = one_d[ch_row]
        parts.append(_units_1d(rows1, ch_x[sel], counts[one_d], width))
    rows2 = all_rows[~one_d]
    if len(rows2):
        sel = ~one_d[ch_row]
        ref_rows = ch_row + 1
        ref_sel = np.zeros(len(ch_row), np.bool_)
        ok = ref_rows < n_rows
        ref_sel[ok] = ~one_d[ref_rows[ok]]
        ref_counts = np.where(rows2 > 0, counts[np.maximum(rows2 - 1, 0)], 0)
        parts.append(_units_2d(rows2, ch_x[sel], counts[~one_d], ch_x[ref_sel], ref_counts, width))
    code, length, row = _merge(parts, n_rows)

    if compression == "mmr":
        if rtc:
            code = np.concatenate([code, [EOL, EOL]])
            length = np.concatenate([length, [EOL_BITS, EOL_BITS]])
        return _pack(code, length, msb_first)

    # T.4: EOL (+ tag: 1 = next line one-dimensional) before every line, fill before each EOL.
    if n_rows == 0 and not rtc:
        return b""  # no line to end: nothing at all
    tag = 1 if compression == "mr" else 0
    eol_code = (EOL << tag) | one_d.astype(np.int64) if tag else np.full(n_rows, EOL, np.int64)
    eol_len = EOL_BITS + tag
    data_bits = np.bincount(row, weights=length, minlength=n_rows).astype(np.int64)
    fill = np.maximum(min_row_bits - data_bits - eol_len, 0)
    if eol_align:
        fill += -(tag + data_bits + fill + EOL_BITS) % 8
    lead_fill = (-EOL_BITS) % 8 if eol_align else 0
    rtc_fill = (-(tag + EOL_BITS)) % 8 if eol_align else 0
    # Row r is preceded by [fill of row r-1, EOL(+tag of row r)].
    per_row = np.bincount(row, minlength=n_rows) + 2
    start = np.cumsum(per_row) - per_row
    n_tail = 2 * (RTC_EOLS if rtc else 1)
    total = int(per_row.sum()) + n_tail
    out_code = np.zeros(total, np.int64)
    out_len = np.zeros(total, np.int64)
    if n_rows:  # an empty page is only the RTC (after the lead fill)
        out_len[start[0]] = lead_fill
        out_len[start[1:]] = fill[:-1]
    out_code[start + 1] = eol_code
    out_len[start + 1] = eol_len
    dest = start[row] + 2 + (np.arange(len(row)) - np.searchsorted(row, row, side="left"))
    out_code[dest] = code
    out_len[dest] = length
    tail = total - n_tail
    out_len[tail] = fill[-1] if n_rows else lead_fill
    out_len[tail + 2 :: 2] = rtc_fill
    out_code[tail + 1 :: 2] = (EOL << tag) | tag
    out_len[tail + 1 :: 2] = eol_len
    return _pack(out_code, out_len, msb_first)
