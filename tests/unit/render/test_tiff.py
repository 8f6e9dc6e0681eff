"""TIFF Class F output: tags, multi-page structure, pels through libtiff, raw strips as fax data."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.fax.pages import itu_page, synthetic_pages
from tests.unit.render.tools import needs_libtiff
from ums.fax.t4 import decode
from ums.render.page import FaxPage
from ums.render.tiff import read_tiff, write_tiff


def _pages() -> list[FaxPage]:
    return [
        FaxPage(itu_page("itu1")[:2286], 204, 196),
        FaxPage(itu_page("test4")[:1143], 204, 98, bad_rows=5, longest_bad_run=3),
        FaxPage(synthetic_pages()["w2048"], 204, 196),
    ]


def _tags(data: bytes) -> list[dict[int, object]]:
    with Image.open(io.BytesIO(data)) as img:
        out = []
        for i in range(img.n_frames):
            img.seek(i)
            out.append(dict(img.tag_v2))
        return out


@pytest.mark.parametrize("compression", ["g3", "g3-2d", "g4"])
@pytest.mark.parametrize("fill_order", [1, 2])
def test_pages_read_back_by_libtiff_unchanged(compression: str, fill_order: int) -> None:
    pages = _pages()
    data = write_tiff(pages, compression=compression, fill_order=fill_order)  # type: ignore[arg-type]
    back = read_tiff(data)
    assert len(back) == len(pages)
    for ours, theirs in zip(pages, back, strict=True):
        assert np.array_equal(ours.pels, theirs.pels)
        assert (theirs.xdpi, theirs.ydpi) == (ours.xdpi, ours.ydpi)


@pytest.mark.parametrize(
    ("compression", "code", "t4", "t6"), [("g3", 3, 0, None), ("g3-2d", 3, 1, None), ("g4", 4, None, 0)]
)
def test_class_f_tags(compression: str, code: int, t4: int | None, t6: int | None) -> None:
    tags = _tags(write_tiff(_pages(), compression=compression))  # type: ignore[arg-type]
    for number, t in enumerate(tags):
        assert t[254] == 2  # NewSubfileType: page
        assert t[259] == code
        assert t[262] == 0  # WhiteIsZero
        assert t[266] == 2
        assert t[296] == 2  # inch
        assert t.get(292) == t4 and t.get(293) == t6
        assert t[297] == (number, 3)
        assert t[278] == t[257]  # one strip
    assert (float(tags[0][282]), float(tags[0][283])) == (204.0, 196.0)  # type: ignore[arg-type]
    assert float(tags[1][283]) == 98.0  # type: ignore[arg-type]
    assert (tags[1][326], tags[1][327], tags[1][328]) == (5, 2, 3)  # BadFaxLines, unclean, consecutive
    assert 326 not in tags[0]
    assert tags[2][256] == 2048


@pytest.mark.parametrize(("compression", "codec"), [("g3", "mh"), ("g3-2d", "mr"), ("g4", "mmr")])
def test_strips_are_fax_data_not_a_negative(compression: str, codec: str) -> None:
    """PhotometricInterpretation 0 with the runs as sent: the raw strip decodes to the page itself."""
    page = _pages()[0]
    data = write_tiff([page], compression=compression)  # type: ignore[arg-type]
    t = _tags(data)[0]
    offset, count = t[273], t[279]
    strip = data[offset[0] : offset[0] + count[0]]  # type: ignore[index,operator]
    result = decode(strip, width=1728, compression=codec, rows=page.rows)  # type: ignore[arg-type]
    assert result.bad_rows == 0
    assert np.array_equal(result.page, page.pels)


def test_ifds_are_word_aligned_and_linked() -> None:
    data = write_tiff(_pages(), compression="g3")
    assert data[:4] == b"II*\x00"
    offset = struct.unpack_from("<I", data, 4)[0]
    seen = 0
    while offset:
        assert offset % 2 == 0
        count = struct.unpack_from("<H", data, offset)[0]
        tags = [struct.unpack_from("<H", data, offset + 2 + 12 * i)[0] for i in range(count)]
        assert tags == sorted(tags)
        offset = struct.unpack_from("<I", data, offset + 2 + 12 * count)[0]
        seen += 1
    assert seen == 3


@needs_libtiff
@pytest.mark.parametrize("compression", ["g3", "g3-2d", "g4"])
def test_libtiff_tools_accept_the_file(compression: str, tmp_path: Path) -> None:
    path = tmp_path / "fax.tif"
    path.write_bytes(write_tiff(_pages(), compression=compression))  # type: ignore[arg-type]
    info = subprocess.run(["tiffinfo", "-D", str(path)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert not info.stderr, info.stderr  # libtiff reports decoding errors and warnings on stderr
    assert info.stdout.count("TIFF Directory") == 3
    copy = subprocess.run(
        ["tiffcp", "-c", "none", str(path), str(tmp_path / "copy.tif")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert copy.returncode == 0 and not copy.stderr, copy.stderr
    with Image.open(tmp_path / "copy.tif") as img:
        img.seek(1)
        assert np.array_equal(~np.asarray(img), _pages()[1].pels != 0)


def test_write_tiff_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        write_tiff([])
    with pytest.raises(ValueError):
        write_tiff(_pages(), compression="jpeg")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        write_tiff(_pages(), compression="g4", eol_align=True)
