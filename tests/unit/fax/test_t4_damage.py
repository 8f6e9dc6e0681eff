"""Damaged T.4/T.6 data: the decoder behaves like a fax machine and never raises.

Deterministic cases check exactly which rows are replaced and counted (MH: one line; MR: up to the
next one-dimensional line; MMR: the rest of the page).  A seeded loop then throws many random
corruptions (bit flips, burst errors, truncation, lost EOLs, inserted garbage) at every mode and checks
the invariants, that chunked decoding still equals one-shot decoding, and that damage is counted.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.unit.fax.bits import eol_ends, from_bits, to_bits
from tests.unit.fax.pages import itu_page, synthetic_pages
from ums.fax.t4 import Decoder, DecodeResult, decode, encode

PAGE = synthetic_pages()["random_sparse"]  # 60 rows, every row different
H, W = PAGE.shape


def _flip(raw: bytes, positions: list[int]) -> bytes:
    bits = to_bits(raw).copy()
    bits[positions] ^= 1
    return from_bits(bits)


def _line_start(raw: bytes, row: int) -> int:
    """Bit position of the first data bit of ``row`` (after its EOL) in MH/MR data."""
    return int(eol_ends(to_bits(raw))[row]) + 1


def _check(res: DecodeResult, expected_bad: list[int], last_good: dict[int, int] | None = None) -> None:
    assert res.rows == H
    assert res.bad_rows == len(expected_bad)
    bad = set(expected_bad)
    for r in range(H):
        src = PAGE[r] if r not in bad else PAGE[(last_good or {}).get(r, min(bad) - 1)]
        np.testing.assert_array_equal(res.page[r], src, err_msg=f"row {r}")


def test_mh_bad_line_is_replaced_by_the_previous_line() -> None:
    raw = encode(PAGE, compression="mh")
    damaged = _flip(raw, [_line_start(raw, 20) + 2])
    res = decode(damaged, width=W, compression="mh")
    _check(res, [20])
    assert res.longest_bad_run == 1 and res.end_of_page


@pytest.mark.parametrize(("row", "bad"), [(8, [8, 9, 10, 11]), (10, [10, 11])])
def test_mr_resynchronises_at_the_next_one_dimensional_line(row: int, bad: list[int]) -> None:
    raw = encode(PAGE, compression="mr", k=4)
    damaged = _flip(raw, [_line_start(raw, row) + 3])
    res = decode(damaged, width=W, compression="mr")
    _check(res, bad)
    assert res.longest_bad_run == len(bad)


def test_mmr_error_fills_the_rest_of_the_page() -> None:
    raw = encode(PAGE, compression="mmr")
    bits = to_bits(raw).copy()
    mid = len(bits) // 2
    bits[mid : mid + 20] = 0  # 13 zeros are no T.6 code word: the error is detected in this row
    damaged = from_bits(bits)
    res = decode(damaged, width=W, compression="mmr", rows=H)
    first_bad = int(np.flatnonzero([not np.array_equal(res.page[r], PAGE[r]) for r in range(H)])[0])
    assert 10 < first_bad < H - 10
    assert res.rows == H and res.bad_rows == res.longest_bad_run == H - first_bad
    np.testing.assert_array_equal(
        res.page[first_bad:], np.repeat(PAGE[first_bad - 1 : first_bad], H - first_bad, 0)
    )
    unknown = decode(damaged, width=W, compression="mmr")
    assert (unknown.rows, unknown.bad_rows, unknown.end_of_page) == (first_bad + 1, 1, False)


def test_truncated_page_counts_the_missing_rows() -> None:
    for compression in ("mh", "mr", "mmr"):
        raw = encode(PAGE, compression=compression)  # type: ignore[arg-type]
        cut = raw[: len(raw) // 3]
        res = decode(cut, width=W, compression=compression, rows=H)  # type: ignore[arg-type]
        assert res.rows == H and res.bad_rows >= H * 2 // 3 - 2 and not res.end_of_page
        free = decode(cut, width=W, compression=compression)  # type: ignore[arg-type]
        assert free.rows < H // 2 + 2 and free.bad_rows <= 1


def test_lost_eol_merges_two_lines_into_one_bad_line() -> None:
    raw = encode(PAGE, compression="mh")
    bits = to_bits(raw)
    end = int(eol_ends(bits)[21])
    damaged = from_bits(np.delete(bits, np.arange(end - 11, end + 1)))
    res = decode(damaged, width=W, compression="mh")
    assert (res.rows, res.bad_rows, res.longest_bad_run) == (H - 1, 1, 1)
    np.testing.assert_array_equal(res.page[:20], PAGE[:20])
    np.testing.assert_array_equal(res.page[20], PAGE[19])
    np.testing.assert_array_equal(res.page[21:], PAGE[22:])
    padded = decode(damaged, width=W, compression="mh", rows=H)
    assert (padded.rows, padded.bad_rows) == (H, 2)


def _corrupt(raw: bytes, rng: random.Random) -> bytes:
    bits = to_bits(raw).copy()
    n = len(bits)
    kind = rng.choice(["flip", "flips", "burst", "truncate", "drop_eol", "garbage", "zeros"])
    if kind == "flip":
        bits[rng.randrange(n)] ^= 1
    elif kind == "flips":
        bits[[rng.randrange(n) for _ in range(rng.randint(2, 40))]] ^= 1
    elif kind == "burst":
        at = rng.randrange(n)
        span = len(bits[at : at + rng.randint(8, 200)])
        bits[at : at + span] = [rng.getrandbits(1) for _ in range(span)]
    elif kind == "truncate":
        bits = bits[: rng.randrange(n)]
    elif kind == "drop_eol":
        ends = eol_ends(bits)
        if len(ends):
            drop = sorted(rng.sample(list(ends), min(len(ends), rng.randint(1, 5))), reverse=True)
            for e in drop:
                bits = np.delete(bits, np.arange(max(e - 11, 0), e + 1))
    elif kind == "garbage":
        at = rng.randrange(n)
        junk = np.array([rng.getrandbits(1) for _ in range(rng.randint(1, 300))], np.uint8)
        bits = np.concatenate([bits[:at], junk, bits[at:]])
    else:
        at = rng.randrange(n)
        bits[at : at + rng.randint(12, 400)] = 0
    return from_bits(bits)


def test_random_corruption_never_raises_and_is_counted() -> None:
    rng = random.Random(1234)
    pages = [PAGE, synthetic_pages()["random_blocks"], itu_page("itu4")[600:680], itu_page("itu8")[:80]]
    modes = [("mh", 1), ("mr", 2), ("mr", 4), ("mmr", 1)]
    encoded = {(i, m): encode(p, compression=m[0], k=m[1]) for i, p in enumerate(pages) for m in modes}  # type: ignore[arg-type]
    damaged_cases = silent = 0
    for trial in range(240):
        i = rng.randrange(len(pages))
        mode = modes[trial % len(modes)]
        page = pages[i]
        h, w = page.shape
        data = _corrupt(encoded[(i, mode)], rng)
        for rows in (None, h):
            res = decode(data, width=w, compression=mode[0], rows=rows)  # type: ignore[arg-type]
            assert res.page.shape == (res.rows, w) and res.page.dtype == np.uint8
            assert set(np.unique(res.page).tolist()) <= {0, 1}
            assert 0 <= res.longest_bad_run <= res.bad_rows <= res.rows
            if rows is not None:
                assert res.rows == h
                differs = not np.array_equal(res.page, page)
                damaged_cases += differs
                silent += differs and res.bad_rows == 0
        if trial % 8 == 0:
            dec = Decoder(w, mode[0], rows=h)  # type: ignore[arg-type]
            got = []
            pos = 0
            while pos < len(data):
                step = rng.randint(1, 64)
                got += dec.feed(data[pos : pos + step])
                pos += step
            chunked = dec.finish()
            one_shot = decode(data, width=w, compression=mode[0], rows=h)  # type: ignore[arg-type]
            assert (chunked.rows, chunked.bad_rows, chunked.longest_bad_run, chunked.end_of_page) == (
                one_shot.rows,
                one_shot.bad_rows,
                one_shot.longest_bad_run,
                one_shot.end_of_page,
            )
            np.testing.assert_array_equal(chunked.page, one_shot.page)
    assert damaged_cases > 100
    assert silent <= damaged_cases // 5, (silent, damaged_cases)
