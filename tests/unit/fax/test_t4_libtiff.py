"""T.4/T.6 codecs against libtiff: bit-exact pels in both directions.

Our encoder's output is decoded by libtiff (Pillow's libtiff plugin, and ``fax2tiff``); strips written
by libtiff (Pillow ``save(compression="group3"/"group4")``, ``tiffcp``) are decoded by ours.  Pages:
all twelve ITU charts at 1728 pels, plus synthetic edge cases at every T.4 page width.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.unit.fax.pages import (
    ITU_NAMES,
    itu_page,
    libtiff_decode,
    libtiff_encode,
    synthetic_pages,
    tiff_bytes,
)
from ums.fax.t4 import decode, encode, tiff_compression, tiff_t4_options

SYNTHETIC = synthetic_pages()

# (compression, k, options) -- options vary the bit order and fill across cases, so that every
# combination is covered somewhere without coding every page many times.
OUR_MODES = [
    ("mh", 1, {}),
    ("mr", 2, {"msb_first": True, "eol_align": True}),
    ("mr", 4, {"min_row_bits": 200}),
    ("mmr", 1, {"msb_first": True}),
]


def _ours_to_libtiff(page: np.ndarray, compression: str, k: int, opts: dict[str, bool | int]) -> None:
    raw = encode(page, compression=compression, k=k, **opts)  # type: ignore[arg-type]
    fill_order = 1 if opts.get("msb_first") else 2
    t4 = tiff_t4_options(compression, eol_align=bool(opts.get("eol_align")))  # type: ignore[arg-type]
    back = libtiff_decode(raw, page.shape[1], page.shape[0], tiff_compression(compression), t4, fill_order)  # type: ignore[arg-type]
    np.testing.assert_array_equal(back, page)


def _libtiff_to_ours(page: np.ndarray, compression: str, t4_options: int, fill_order: int) -> None:
    raw = libtiff_encode(page, compression, t4_options=t4_options, fill_order=fill_order)
    ours = "mmr" if compression == "group4" else ("mr" if t4_options & 1 else "mh")
    res = decode(raw, width=page.shape[1], compression=ours, msb_first=fill_order == 1)  # type: ignore[arg-type]
    assert (res.rows, res.bad_rows, res.longest_bad_run) == (page.shape[0], 0, 0)
    np.testing.assert_array_equal(res.page, page)


@pytest.mark.parametrize("name", ITU_NAMES)
def test_itu_chart_ours_decoded_by_libtiff(name: str) -> None:
    page = itu_page(name)
    for compression, k, opts in OUR_MODES:
        _ours_to_libtiff(page, compression, k, opts)


@pytest.mark.parametrize("name", ITU_NAMES)
def test_itu_chart_libtiff_decoded_by_ours(name: str) -> None:
    page = itu_page(name)
    fill = 1 + ITU_NAMES.index(name) % 2
    for compression, t4 in (("group3", 0), ("group3", 1), ("group3", 5), ("group4", 0)):
        _libtiff_to_ours(page, compression, t4, fill)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_page_both_ways_all_options(name: str) -> None:
    page = SYNTHETIC[name]
    for compression, k in (("mh", 1), ("mr", 1), ("mr", 2), ("mr", 3), ("mr", 4), ("mmr", 1)):
        for msb_first in (False, True):
            for eol_align in (False, True) if compression != "mmr" else (False,):
                opts = {"msb_first": msb_first, "eol_align": eol_align}
                _ours_to_libtiff(page, compression, k, opts)
    for compression, t4 in (("group3", 0), ("group3", 4), ("group3", 1), ("group3", 5), ("group4", 0)):
        for fill in (1, 2):
            _libtiff_to_ours(page, compression, t4, fill)


def test_bool_and_uint8_pages_encode_alike() -> None:
    page = SYNTHETIC["random_half"]
    for compression in ("mh", "mr", "mmr"):
        assert encode(page.astype(bool), compression=compression) == encode(page, compression=compression)
        assert encode(page * 255, compression=compression) == encode(page, compression=compression)


needs_fax2tiff = pytest.mark.skipif(
    shutil.which("fax2tiff") is None or shutil.which("tiffcp") is None,
    reason="libtiff-tools (fax2tiff, tiffcp) not installed",
)


@needs_fax2tiff
@pytest.mark.parametrize(
    ("compression", "flags"), [("mh", ["-3", "-1"]), ("mr", ["-3", "-2"]), ("mmr", ["-4"])]
)
def test_fax2tiff_reads_our_raw_data_without_bad_rows(
    tmp_path: Path, compression: str, flags: list[str]
) -> None:
    from PIL import Image

    page = itu_page("itu5")
    raw_path = tmp_path / "page.raw"
    raw_path.write_bytes(encode(page, compression=compression, k=4))  # type: ignore[arg-type]
    out = tmp_path / "page.tif"
    proc = subprocess.run(
        ["fax2tiff", *flags, "-L", "-X", "1728", "-8", "-v", "-o", str(out), str(raw_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = proc.stdout + proc.stderr
    # fax2tiff knows no RTC/EOFB: it reads their EOLs as extra empty rows (five for RTC, one for EOFB).
    match = re.search(r"(\d+) rows in input", report)
    assert match, report
    assert page.shape[0] < int(match.group(1)) <= page.shape[0] + 5, report
    assert "0 total bad rows" in report, report
    with Image.open(out) as img:
        assert img.tag_v2[262] == 0
        back = (np.asarray(img.convert("L")) < 128).astype(np.uint8)
    np.testing.assert_array_equal(back[: page.shape[0]], page)


@needs_fax2tiff
@pytest.mark.parametrize(("codec", "ours"), [("g3:1d", "mh"), ("g3:2d:fill", "mr"), ("g4", "mmr")])
def test_tiffcp_strips_decoded_by_ours(tmp_path: Path, codec: str, ours: str) -> None:
    from PIL import Image

    page = itu_page("itu2")
    src = tmp_path / "in.tif"
    src.write_bytes(tiff_bytes(encode(page, compression="mmr"), 1728, page.shape[0], 4, 0, 2))
    dst = tmp_path / "out.tif"
    subprocess.run(["tiffcp", "-c", codec, "-r", str(page.shape[0]), str(src), str(dst)], check=True)
    data = dst.read_bytes()
    with Image.open(dst) as img:
        tags = img.tag_v2
        assert tags[262] == 0
    raw = data[tags[273][0] : tags[273][0] + tags[279][0]]
    res = decode(raw, width=1728, compression=ours, msb_first=tags.get(266, 1) == 1)  # type: ignore[arg-type]
    assert (res.rows, res.bad_rows) == (page.shape[0], 0)
    np.testing.assert_array_equal(res.page, page)
