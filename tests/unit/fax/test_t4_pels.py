"""Fast paths of the T.4 decoder: pels from run lengths, lookups of several code words at once."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.fax.pages import itu_page
from ums.fax import t4_decode, t4_tables
from ums.fax.t4 import Compression, Decoder, decode, encode
from ums.fax.t4_decode import _pels, _pels_by_toggles


def _rows(rng: np.random.Generator, n: int, width: int) -> list[list[int]]:
    """Ordered changing elements with repeats (zero-length runs), empty rows and rows starting black."""
    rows = []
    for _ in range(n):
        k = int(rng.integers(0, 40))
        row = sorted(rng.integers(0, width, k).tolist())
        if k and rng.random() < 0.3:
            row.insert(int(rng.integers(0, k)), row[int(rng.integers(0, k))])  # a repeat
            row.sort()
        if rng.random() < 0.1:
            row = [0, *row]
        rows.append(row)
    return rows


def test_run_lengths_give_the_same_pels_as_toggles() -> None:
    rng = np.random.default_rng(4)
    for width in (1, 7, 1728, 2432):
        rows = _rows(rng, 300, width)
        got = _pels(rows, width)
        assert got.dtype == np.uint8 and got.shape == (300, width)
        np.testing.assert_array_equal(got, _pels_by_toggles(rows, width))
    assert _pels([], 1728).shape == (0, 1728)
    np.testing.assert_array_equal(_pels([[], [5]], 8), [[0] * 8, [0] * 5 + [1] * 3])


def test_out_of_order_changing_elements_fall_back_to_toggles() -> None:
    rows = [[5, 3, 7], [2, 2, 9], [1]]
    np.testing.assert_array_equal(_pels(rows, 10), _pels_by_toggles(rows, 10))


def test_itu_charts_decode_pel_for_pel() -> None:
    page = np.ascontiguousarray(itu_page("itu1")[::2])
    modes: tuple[Compression, ...] = ("mh", "mr", "mmr")
    for compression in modes:
        res = decode(encode(page, compression=compression), width=page.shape[1], compression=compression)
        assert res.bad_rows == 0 and res.end_of_page
        np.testing.assert_array_equal(res.page, page)


def _damaged(rng: np.random.Generator, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(int(rng.integers(1, 12))):
        i = int(rng.integers(0, len(raw)))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            raw[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            raw[i : i + 3] = rng.integers(0, 256, 3, dtype=np.uint8).tobytes()
        else:
            del raw[i : i + int(rng.integers(1, 4))]
    return bytes(raw)


def test_lookups_of_several_codes_decode_as_code_by_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables that decode a white and a black run, a horizontal mode with its runs, or several
    vertical modes at once give exactly what the code-by-code loops give, on good and damaged data."""
    rng = np.random.default_rng(21)
    pages = [np.ascontiguousarray(itu_page(name)[::2][:200]) for name in ("itu1", "itu4")]
    modes: tuple[tuple[Compression, int], ...] = (("mh", 1), ("mr", 2), ("mr", 4), ("mmr", 1))
    cases: list[tuple[Compression, int, bytes]] = []
    for page in pages:
        for compression, k in modes:
            data = encode(page, compression=compression, k=k)
            cases += [
                (compression, page.shape[1], d) for d in [data] + [_damaged(rng, data) for _ in range(12)]
            ]
    fast = [decode(d, width=w, compression=c) for c, w, d in cases]
    for (c, w, d), one_shot in zip(cases[::3], fast[::3], strict=True):  # streamed in pieces
        dec = Decoder(w, c)
        cuts = np.cumsum(rng.integers(1, 300, len(d)))
        for start, stop in zip([0, *cuts.tolist()], cuts.tolist(), strict=False):
            dec.feed(d[start:stop])
        streamed = dec.finish()
        assert streamed.bad_rows == one_shot.bad_rows
        np.testing.assert_array_equal(streamed.page, one_shot.page)
    none = [None] * len(t4_tables.PAIR_LOOKUP)
    monkeypatch.setattr(t4_decode, "PAIR_LOOKUP", none)
    monkeypatch.setattr(t4_decode, "V_GROUPS", none)
    monkeypatch.setattr(t4_decode, "H_RUNS", (none, none))
    for (c, w, d), got in zip(cases, fast, strict=True):
        want = decode(d, width=w, compression=c)
        assert (got.rows, got.bad_rows, got.longest_bad_run, got.end_of_page) == (
            want.rows,
            want.bad_rows,
            want.longest_bad_run,
            want.end_of_page,
        )
        np.testing.assert_array_equal(got.page, want.page)
    assert sum(r.bad_rows > 0 for r in fast) > 20
