"""T.4/T.6 codec format details, options, argument checks and the streaming decoder."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.unit.fax.bits import bit_string, eol_ends, to_bits
from tests.unit.fax.pages import itu_page, synthetic_pages
from ums.fax import t4_tables
from ums.fax.t4 import Decoder, DecodeResult, decode, encode

EOL = "000000000001"


def same_result(a: DecodeResult, b: DecodeResult) -> bool:
    fields = ("rows", "bad_rows", "longest_bad_run", "end_of_page")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and np.array_equal(a.page, b.page)


WHITE_1728 = "010011011" + "00110101"  # make-up 1728 + terminating 0 (T.4 Tables 2 and 3a)


def _pad(bits: str) -> str:
    return bits + "0" * (-len(bits) % 8)


def test_mh_stream_is_eol_line_eol_line_rtc() -> None:
    page = np.zeros((3, 1728), np.uint8)
    expected = (EOL + WHITE_1728) * 3 + EOL * 6
    assert bit_string(encode(page, compression="mh")) == _pad(expected)


def test_mh_runs_longer_than_2560_use_extended_makeup() -> None:
    page = np.zeros((1, 4864), np.uint8)
    page[0, 2:] = 1  # white 2, black 4862 = 2560 + 2240 + 62
    black = "000000011111" + "000000010110" + "000001100110"
    assert bit_string(encode(page, compression="mh")) == _pad(EOL + "0111" + black + EOL * 6)


def test_mr_tags_one_dimensional_every_kth_line() -> None:
    page = np.zeros((5, 1728), np.uint8)
    v0 = "1"
    expected = EOL + "1" + WHITE_1728 + (EOL + "0" + v0) * 2 + EOL + "1" + WHITE_1728 + EOL + "0" + v0
    expected += (EOL + "1") * 6
    assert bit_string(encode(page, compression="mr", k=3)) == _pad(expected)


def test_mmr_has_no_eols_and_ends_with_eofb() -> None:
    page = np.zeros((3, 1728), np.uint8)
    assert bit_string(encode(page, compression="mmr")) == _pad("111" + EOL + EOL)
    assert bit_string(encode(page, compression="mmr", rtc=False)) == _pad("111")


def test_msb_first_is_the_bit_mirror_of_line_order() -> None:
    page = itu_page("itu1")[:300]
    for compression in ("mh", "mr", "mmr"):
        lsb = encode(page, compression=compression)
        msb = encode(page, compression=compression, msb_first=True)
        assert msb == lsb.translate(t4_tables.REVERSE_BITS)


@pytest.mark.parametrize("compression", ["mh", "mr"])
def test_eol_align_ends_every_eol_on_a_byte_boundary(compression: str) -> None:
    page = synthetic_pages()["random_sparse"]
    raw = encode(page, compression=compression, eol_align=True)  # type: ignore[arg-type]
    ends = eol_ends(to_bits(raw))
    assert len(ends) == page.shape[0] + 6
    assert set(((ends + 1) % 8).tolist()) == {0}
    assert np.array_equal(decode(raw, width=1728, compression=compression).page, page)  # type: ignore[arg-type]


@pytest.mark.parametrize(("compression", "tag"), [("mh", 0), ("mr", 1)])
def test_min_row_bits_pads_every_coded_line(compression: str, tag: int) -> None:
    page = synthetic_pages()["margins"]  # short lines: the minimum always binds
    for min_bits, align in ((0, False), (300, False), (777, True)):
        raw = encode(page, compression=compression, min_row_bits=min_bits, eol_align=align)  # type: ignore[arg-type]
        ends = eol_ends(to_bits(raw))
        # coded line = data + fill + EOL (+ tag): from the bit after one EOL's tag to the next EOL's tag
        line_bits = np.diff(ends[: page.shape[0] + 1])
        assert line_bits.min() >= max(min_bits, 1)
        if min_bits:
            assert line_bits.max() < min_bits + (8 if align else 1)
        assert np.array_equal(decode(raw, width=1728, compression=compression).page, page)  # type: ignore[arg-type]


def test_without_rtc_the_last_line_still_ends_with_eol() -> None:
    page = np.zeros((2, 1728), np.uint8)
    assert bit_string(encode(page, compression="mh", rtc=False)) == _pad((EOL + WHITE_1728) * 2 + EOL)
    res = decode(encode(page, compression="mh", rtc=False), width=1728, compression="mh")
    assert (res.rows, res.bad_rows, res.end_of_page) == (2, 0, False)
    res = decode(encode(page, compression="mmr", rtc=False), width=1728, compression="mmr")
    assert (res.rows, res.bad_rows, res.end_of_page) == (2, 0, False)


def test_eol_cannot_occur_inside_valid_code_words() -> None:
    words = t4_tables.all_code_words()
    lead = max(len(w) - len(w.lstrip("0")) for w in words)
    trail = max(len(w) - len(w.rstrip("0")) for w in words)
    assert lead + trail < 11


def test_lookup_tables_resolve_every_code_word() -> None:
    for colour, table in ((0, t4_tables.WHITE_LOOKUP), (1, t4_tables.BLACK_LOOKUP)):
        for run in range(64):
            code, n = int(t4_tables.TERM_CODE[colour, run]), int(t4_tables.TERM_LEN[colour, run])
            assert table[code << (13 - n)] == (run, n)
        for i in range(1, 41):
            code, n = int(t4_tables.MAKEUP_CODE[colour, i]), int(t4_tables.MAKEUP_LEN[colour, i])
            assert table[code << (13 - n)] == (64 * i, n)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compression": "g3"},
        {"compression": "mr", "k": 0},
        {"compression": "mmr", "eol_align": True},
        {"compression": "mmr", "min_row_bits": 100},
    ],
)
def test_encode_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode(np.zeros((2, 1728), np.uint8), **kwargs)  # type: ignore[arg-type]


def test_encode_rejects_non_2d_pages_and_decoder_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode(np.zeros(1728, np.uint8), compression="mh")
    with pytest.raises(ValueError):
        Decoder(0, "mh")
    with pytest.raises(ValueError):
        Decoder(1728, "t6")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Decoder(1728, "mh", rows=-1)


@pytest.mark.parametrize(("compression", "k"), [("mh", 1), ("mr", 2), ("mr", 4), ("mmr", 1)])
def test_chunked_decoding_equals_one_shot(compression: str, k: int) -> None:
    page = itu_page("itu2")[:700]
    for msb_first in (False, True):
        raw = encode(page, compression=compression, k=k, msb_first=msb_first)  # type: ignore[arg-type]
        one_shot = decode(raw, width=1728, compression=compression, msb_first=msb_first)  # type: ignore[arg-type]
        assert (one_shot.rows, one_shot.bad_rows, one_shot.end_of_page) == (700, 0, True)
        np.testing.assert_array_equal(one_shot.page, page)
        rng = random.Random(7)
        for sizes in ([1], [3, 1, 2], [rng.randint(1, 400) for _ in range(50)], [len(raw)]):
            dec = Decoder(1728, compression, msb_first=msb_first)  # type: ignore[arg-type]
            got, i, n = [], 0, 0
            while i < len(raw):
                step = sizes[n % len(sizes)]
                got += dec.feed(raw[i : i + step])
                i, n = i + step, n + 1
            res = dec.finish()
            assert dec.done
            assert same_result(res, one_shot), sizes
            assert len(got) == res.rows
            np.testing.assert_array_equal(np.array(got), res.page)


def test_rows_argument_stops_early_or_pads_with_bad_rows() -> None:
    page = synthetic_pages()["random_half"]
    for compression in ("mh", "mr", "mmr"):
        raw = encode(page, compression=compression)  # type: ignore[arg-type]
        short = decode(raw, width=1728, compression=compression, rows=10)  # type: ignore[arg-type]
        assert (short.rows, short.bad_rows) == (10, 0)
        np.testing.assert_array_equal(short.page, page[:10])
        long = decode(raw, width=1728, compression=compression, rows=70)  # type: ignore[arg-type]
        assert (long.rows, long.bad_rows, long.longest_bad_run) == (70, 10, 10)
        np.testing.assert_array_equal(long.page[60:], np.repeat(page[59:60], 10, axis=0))


def test_data_after_rtc_is_ignored() -> None:
    page = synthetic_pages()["margins"]
    for compression in ("mh", "mr", "mmr"):
        raw = encode(page, compression=compression)  # type: ignore[arg-type]
        dec = Decoder(1728, compression)  # type: ignore[arg-type]
        rows = dec.feed(raw)
        assert dec.done and len(rows) == page.shape[0]
        assert dec.feed(b"\xff\x00" * 100) == []
        res = dec.finish()
        assert (res.rows, res.bad_rows, res.end_of_page) == (page.shape[0], 0, True)


def test_empty_input_gives_an_empty_page() -> None:
    res = decode(b"", width=1728, compression="mh")
    assert res.page.shape == (0, 1728) and (res.rows, res.bad_rows, res.end_of_page) == (0, 0, False)
    res = decode(b"", width=1728, compression="mmr", rows=3)
    assert res.page.shape == (3, 1728) and (res.bad_rows, res.longest_bad_run) == (3, 3)
    assert not res.page.any()


def test_zero_length_run_inside_a_line_is_accepted() -> None:
    # white 10, black 0, white 1718 (make-up 1664 + 54): an all-white line with a redundant run
    line = "00111" + "0000110111" + "011000" + "00100101"
    bits = EOL + line + EOL + WHITE_1728 + EOL * 6
    data = np.packbits(np.array(list(_pad(bits)), np.uint8), bitorder="little").tobytes()
    res = decode(data, width=1728, compression="mh")
    assert (res.rows, res.bad_rows) == (2, 0)
    assert not res.page.any()
