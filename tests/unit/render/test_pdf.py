"""PDF output: G4 images at the physical page size, pel-exact through poppler, well-formed file."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from tests.unit.fax.pages import itu_page
from tests.unit.render.tools import needs_poppler, pdfinfo, pdftoppm_pages
from ums.fax.t4 import decode
from ums.render.page import FaxPage
from ums.render.pdf import pdf_string, write_pdf


def _pages() -> list[FaxPage]:
    return [
        FaxPage(itu_page("itu1")[:2286], 204, 196),
        FaxPage(itu_page("itu4")[:1143], 204, 98),
        FaxPage(itu_page("test1")[:2000, :], 204, 392),
    ]


def test_file_structure_and_xref_offsets() -> None:
    data = write_pdf(_pages(), title="Fax von Müller")
    assert data.startswith(b"%PDF-1.4\n") and data.endswith(b"%%EOF\n")
    start = int(re.search(rb"startxref\n(\d+)\n", data).group(1))  # type: ignore[union-attr]
    assert data[start:].startswith(b"xref\n0 ")
    entries = re.findall(rb"(\d{10}) 00000 n ", data[start:])
    for number, offset in enumerate(entries, start=1):
        assert data[int(offset) :].startswith(b"%d 0 obj\n" % number)
    assert data.count(b"/CCITTFaxDecode") == 3
    assert b"/Title <FEFF" in data
    assert data == write_pdf(_pages(), title="Fax von Müller")  # deterministic


def test_image_streams_are_g4_of_the_pels() -> None:
    pages = _pages()
    data = write_pdf(pages)
    streams = re.findall(rb"/Columns (\d+) /Rows (\d+) >> /Length (\d+) >>\nstream\n", data)
    assert len(streams) == 3
    pos = 0
    for page, (cols, rows, length) in zip(pages, streams, strict=True):
        assert (int(cols), int(rows)) == (page.width, page.rows)
        pos = data.index(b"stream\n", data.index(b"/Columns %s" % cols, pos)) + len(b"stream\n")
        raw = data[pos : pos + int(length)]
        result = decode(raw, width=page.width, compression="mmr", msb_first=True)
        assert result.bad_rows == 0 and result.end_of_page
        assert np.array_equal(result.page, page.pels)


def test_pdf_string_and_date() -> None:
    assert pdf_string("a(b)\\c") == b"(a\\(b\\)\\\\c)"
    assert pdf_string("é") == b"<FEFF00E9>"
    tz = timezone(timedelta(hours=2))
    data = write_pdf(_pages()[:1], created=datetime(2026, 3, 1, 10, 0, 5, tzinfo=tz))
    assert b"/CreationDate (D:20260301100005+02'00')" in data


def test_rejects_no_pages() -> None:
    with pytest.raises(ValueError):
        write_pdf([])


@needs_poppler
def test_poppler_sees_physical_size_and_the_same_pels(tmp_path: Path) -> None:
    pages = _pages()
    path = tmp_path / "fax.pdf"
    path.write_bytes(write_pdf(pages))
    count, sizes = pdfinfo(path)
    assert count == 3
    for page, (w_pt, h_pt) in zip(pages, sizes, strict=True):
        w_in, h_in = page.size_inches
        assert w_pt == pytest.approx(w_in * 72, abs=0.01)
        assert h_pt == pytest.approx(h_in * 72, abs=0.01)
    # standard resolution: same width, half the lines, and still 297 mm long (not squashed)
    assert sizes[1][0] == pytest.approx(sizes[0][0], abs=0.01)
    assert sizes[1][1] / 72 * 25.4 == pytest.approx(297, abs=1)
    for number, page in enumerate(pages, start=1):
        (bitmap,) = pdftoppm_pages(path, page.xdpi, page.ydpi, tmp_path, first=number)
        assert bitmap.shape == page.pels.shape
        assert np.array_equal(bitmap, page.pels)
