"""Issue 4 acceptance: documents rendered to fax pages, written as TIFF Class F and G4 PDF, checked
with poppler and libtiff.

What it does
------------
A 10-page mixed PDF (text in three sizes, a photo-like picture, a landscape table, line art, a US
Letter page), made here with reportlab, is rendered at fine resolution and written as TIFF (G4, G3
1-D, G3 2-D) and PDF.  poppler (``pdfinfo``, ``pdftoppm``) and libtiff (``tiffinfo -D``, ``tiffcp``,
Pillow) must read them back: 10 pages of A4 length, the PDF rasterised at the native 204 x 196 dpi
equal to our pages pel for pel (tolerance: none - the G4 image fills the MediaBox exactly, so
poppler maps one image pel to one device pixel), the TIFF pages decoding to the same pels, the PDF
small.  The first-page thumbnail must be a PNG showing lines of text.  Plain-text and HTML bodies
and an image render too; the LibreOffice path runs when ``soffice`` is installed.

Page width: a fax page is 1728 pels = 215 mm (the T.4 scan line for ISO A4, which carries the A4
sheet's 210 mm plus the machine's margins), so the PDF page is 215 x 297 mm: the height is checked
against A4 (297 mm) and the width against the 215 mm scan line, both within 1 mm.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.acceptance.conftest import require
from tests.unit.render.samples import mixed_pdf, photo_image
from tests.unit.render.tools import pdfinfo, pdftoppm_pages
from ums.render.documents import render_document
from ums.render.page import FaxPage, thumbnail_png
from ums.render.pdf import write_pdf
from ums.render.tiff import read_tiff, write_tiff

pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")

MM_PER_PT = 25.4 / 72


@pytest.fixture(scope="module")
def pages() -> list[FaxPage]:
    rendered = render_document(mixed_pdf(10), filename="mixed.pdf", resolution="fine")
    assert len(rendered) == 10
    return rendered


def test_pdf_output_through_poppler(pages: list[FaxPage], tmp_path: Path) -> None:
    require("pdfinfo", "pdftoppm")
    path = tmp_path / "fax.pdf"
    data = write_pdf(pages, title="mixed")
    path.write_bytes(data)
    count, sizes = pdfinfo(path)
    assert count == 10 and len(sizes) == 10
    for w_pt, h_pt in sizes:
        assert h_pt * MM_PER_PT == pytest.approx(297, abs=1)  # A4 length
        assert w_pt * MM_PER_PT == pytest.approx(215, abs=1)  # T.4 A4 scan line
    bitmaps = pdftoppm_pages(path, 204, 196, tmp_path, first=1, last=10)
    assert len(bitmaps) == 10
    for page, bitmap in zip(pages, bitmaps, strict=True):
        assert bitmap.shape == (2286, 1728)
        assert np.array_equal(bitmap, page.pels)
    # small: G4 inside, about what the same pages take as a G4 TIFF, far below the raw 1-bit size
    tiff_g4 = len(write_tiff(pages, compression="g4"))
    assert len(data) < tiff_g4 * 1.05 + 10_000
    assert len(data) < 10 * 1728 * 2286 / 8 / 4  # the dithered photo page alone is ~370 KB
    streams = [int(n) for n in re.findall(rb"/Rows \d+ >> /Length (\d+) >>", data)]
    assert len(streams) == 10
    assert all(n < 100_000 for i, n in enumerate(streams) if i != 2)  # full text pages at fine resolution
    assert b"/CCITTFaxDecode" in data and b"/DCTDecode" not in data and b"/FlateDecode" not in data


@pytest.mark.parametrize("compression", ["g4", "g3", "g3-2d"])
def test_tiff_output_through_libtiff(pages: list[FaxPage], compression: str, tmp_path: Path) -> None:
    require("tiffinfo", "tiffcp")
    path = tmp_path / "fax.tif"
    path.write_bytes(write_tiff(pages, compression=compression))  # type: ignore[arg-type]
    info = subprocess.run(["tiffinfo", "-D", str(path)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and not info.stderr, info.stderr
    assert info.stdout.count("TIFF Directory") == 10
    assert info.stdout.count("Resolution: 204, 196 pixels/inch") == 10
    copy = subprocess.run(["tiffcp", str(path), str(tmp_path / "copy.tif")], capture_output=True, text=True)
    assert copy.returncode == 0 and not copy.stderr, copy.stderr
    back = read_tiff(path.read_bytes())
    assert len(back) == 10
    for ours, theirs in zip(pages, back, strict=True):
        assert np.array_equal(ours.pels, theirs.pels)


def test_thumbnail_is_a_readable_png(pages: list[FaxPage], tmp_path: Path) -> None:
    data = thumbnail_png(pages[0])
    (tmp_path / "thumb.png").write_bytes(data)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.mode == "L"
        assert img.width == 800 and img.height == round(800 * (2286 / 196) / (1728 / 204))
        grey = np.asarray(img)
    dark = grey < 160
    assert 0.01 < dark.mean() < 0.3  # not blank, not black
    # lines of text: alternating inked and blank row bands down the page
    inked = dark.mean(axis=1) > 0.02
    lines = int(np.count_nonzero(inked[1:] & ~inked[:-1]))
    assert lines >= 30
    # and strokes, not grey mush: a good share of the inked pixels are really dark
    assert (grey < 96).sum() > 0.3 * dark.sum()


def test_mail_bodies_and_images_render(tmp_path: Path) -> None:
    require("pdfinfo")
    text = render_document(b"Hello Bob,\n\nplease sign and fax back.\n", content_type="text/plain")
    html = render_document(
        b"<html><body><h1>Order 4711</h1><p>Please <b>sign</b>.</p><ul><li>2 x widget</li></ul>",
        content_type="text/html; charset=utf-8",
    )
    buf = io.BytesIO()
    photo_image().save(buf, format="JPEG", quality=85)
    image = render_document(buf.getvalue(), filename="photo.jpg", resolution="standard")
    for rendered in (text, html):
        assert len(rendered) == 1 and rendered[0].pels.shape == (2286, 1728) and rendered[0].pels.any()
    assert len(image) == 1 and image[0].pels.shape == (1143, 1728)
    assert 0.2 < image[0].pels[:700].mean() < 0.8
    path = tmp_path / "mixed.pdf"
    path.write_bytes(write_pdf(text + html + image))
    count, sizes = pdfinfo(path)
    assert count == 3
    assert all(h * MM_PER_PT == pytest.approx(297, abs=1) for _, h in sizes)  # standard page not squashed


@pytest.mark.skipif(
    shutil.which("soffice") is None and shutil.which("libreoffice") is None,
    reason="LibreOffice (soffice) is not installed; it is optional (libreoffice-writer-nogui, ~200 MB)",
)
def test_office_document_via_libreoffice(tmp_path: Path) -> None:
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    assert soffice
    src = tmp_path / "memo.html"
    src.write_text("<h1>Memo</h1><p>Hello fax world.</p>")
    subprocess.run(
        [soffice, f"-env:UserInstallation={(tmp_path / 'profile').as_uri()}", "--headless",
         "--convert-to", "docx:MS Word 2007 XML", "--outdir", str(tmp_path), str(src)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    pages = render_document((tmp_path / "memo.docx").read_bytes(), filename="memo.docx")
    assert len(pages) >= 1 and pages[0].pels.any()
