"""Documents to fax pages: type detection, binarisation, PDF/image/text/HTML rendering, Office."""

from __future__ import annotations

import io
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.render.samples import mixed_pdf, photo_image, png_bytes, text_image
from ums.render import documents
from ums.render.documents import (
    DocumentError,
    MissingToolError,
    binarize,
    detect_kind,
    html_to_pdf,
    render_document,
    render_image,
    render_pdf,
    text_to_pdf,
)
from ums.render.page import A4_LINES, FaxPage
from ums.render.tiff import write_tiff

pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")


@pytest.mark.parametrize(
    ("data", "filename", "ctype", "kind"),
    [
        (b"%PDF-1.7 ...", None, None, "pdf"),
        (b"\x89PNG\r\n\x1a\n", "x.bin", None, "image"),
        (b"\xff\xd8\xff\xe0", None, "application/octet-stream", "image"),
        (b"PK\x03\x04....", "memo.docx", None, "office"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old.doc", None, "office"),
        (b"{\\rtf1 hello}", None, None, "office"),
        (b"hello", "a.odt", None, "office"),
        (b"<p>hi</p>", None, "text/html; charset=utf-8", "html"),
        (b"<!DOCTYPE html><html>", None, None, "html"),
        (b"Hello,\nplease fax.", None, "text/plain", "text"),
        (b"Hello", "notes.txt", None, "text"),
        (b"Hello", None, None, "text"),
    ],
)
def test_detect_kind(data: bytes, filename: str | None, ctype: str | None, kind: str) -> None:
    assert detect_kind(data, filename=filename, content_type=ctype) == kind


def test_detect_kind_rejects_unknown_types() -> None:
    with pytest.raises(DocumentError, match=r"song\.mp3"):
        detect_kind(b"ID3\x03", filename="song.mp3", content_type="audio/mpeg")


def test_binarize_thresholds_text_and_dithers_tones() -> None:
    grey = np.full((256, 512), 255, np.uint8)
    grey[20:30, 20:200] = 0  # a bar of "text"
    grey[21:29, 200:202] = 150  # an anti-aliased edge stays thin
    ramp = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (128, 1))
    grey[128:, 256:] = ramp
    pels = binarize(grey)
    assert pels[20:30, 20:200].all() and not pels[:15].any() and not pels[35:120, :240].any()
    assert pels[21:29, 200:202].all()  # 150 < TEXT_THRESHOLD: black, not dithered
    # the ramp is dithered: local black density follows the grey level
    density = 1 - pels[128 + 16 :, 256 + 8 : 512 - 8].reshape(112, 15, 16).mean(axis=(0, 2))
    expected = np.linspace(0, 255, 256)[8:-8].reshape(15, 16).mean(axis=1) / 255
    assert np.abs(density - expected).max() < 0.08


def test_render_pdf_pages_fill_a4_at_each_resolution() -> None:
    data = mixed_pdf(5)
    for resolution, lines in A4_LINES.items():
        pages = render_pdf(data, resolution=resolution)  # type: ignore[arg-type]
        assert len(pages) == 5
        assert all(p.pels.shape == (lines, 1728) for p in pages)
        assert all(p.size_mm[1] == pytest.approx(297, abs=1) for p in pages)


def test_landscape_page_is_turned_to_fill_the_page() -> None:
    page = render_pdf(mixed_pdf(5), resolution="standard")[3]
    cols = np.flatnonzero(page.pels.any(axis=0))
    rows = np.flatnonzero(page.pels.any(axis=1))
    # the table spans most of the landscape width, which now runs down the page
    assert rows[-1] - rows[0] > 0.75 * page.rows
    assert cols[-1] - cols[0] > 0.5 * page.width


def test_photo_is_dithered_and_text_is_not() -> None:
    page = render_pdf(mixed_pdf(5), resolution="fine")[2]
    photo = page.pels[650:1350, 300:1400]
    assert 0.2 < photo.mean() < 0.8  # tones, not a black or white slab
    # dithered: many isolated pels flip along each row
    assert np.abs(np.diff(photo.astype(np.int8), axis=1)).mean() > 0.2
    text = render_pdf(mixed_pdf(5), resolution="fine")[0].pels
    # thresholded text has long runs: few transitions per black pel
    assert np.abs(np.diff(text.astype(np.int8), axis=1)).sum() < 0.8 * text.sum()


def test_render_pdf_rejects_garbage() -> None:
    with pytest.raises(DocumentError):
        render_pdf(b"%PDF-1.4 not really")


def test_photo_image_is_scaled_to_the_page_width() -> None:
    pages = render_image(png_bytes(photo_image(600, 400)), resolution="fine")
    assert len(pages) == 1
    pels = pages[0].pels
    assert pels.shape == (2286, 1728)
    cols = np.flatnonzero(pels.any(axis=0))
    rows = np.flatnonzero(pels.any(axis=1))
    assert cols[0] < 10 and cols[-1] > 1717
    # 3:2 picture at 204 x 196 dpi: 1728 / 204 * 2 / 3 inches = 1107 lines
    assert rows[-1] - rows[0] == pytest.approx(1728 / 204 * 2 / 3 * 196, abs=8)


def test_text_image_stays_sharp() -> None:
    page = render_image(png_bytes(text_image()), resolution="fine", a4_length=False)[0]
    assert page.rows == round(1728 / 204 * 500 / 800 * 196)
    # the frame (3 px at y = 10..12, scaled by 1728/800 x 196/204 = 2.07) is solid black, not dithered
    assert page.pels[22:26, 200:1500].all()
    assert not page.pels[30:50, 200:1500].any()


def test_tall_image_is_fitted_to_the_page_length() -> None:
    img = Image.new("L", (300, 2000), 0)
    page = render_image(png_bytes(img), resolution="standard")[0]
    rows = np.flatnonzero(page.pels.any(axis=1))
    cols = np.flatnonzero(page.pels.any(axis=0))
    assert len(rows) == 1143
    assert cols[-1] - cols[0] + 1 == pytest.approx(1143 / 98 * 300 / 2000 * 204, abs=2)


def test_fax_tiff_keeps_its_pels() -> None:
    rng = np.random.default_rng(5)
    pels = (rng.random((1143, 1728)) < 0.1).astype(np.uint8)
    data = write_tiff([FaxPage(pels, 204, 98), FaxPage(pels[::-1], 204, 98)])
    pages = render_image(data, resolution="fine")
    assert len(pages) == 2
    assert np.array_equal(pages[0].pels[0::2][:1143], pels)  # every line twice at 196 lpi
    assert np.array_equal(pages[0].pels[1::2][:1143], pels)
    same = render_image(data, resolution="standard")
    assert np.array_equal(same[1].pels, pels[::-1])


def test_transparent_image_is_on_white() -> None:
    img = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (50, 25, 150, 75))
    page = render_image(png_bytes(img), resolution="fine")[0]
    assert 0.2 < page.pels[:800].mean() < 0.3


def test_render_image_rejects_damaged_files() -> None:
    with pytest.raises(DocumentError):
        render_image(b"\x89PNG\r\n\x1a\n broken")


def test_plain_text_body_renders() -> None:
    body = (
        "Hello Bob,\n\n    indented line\nplease send the signed order.\n\n"
        + "long line " * 60
        + "\nÄÖÜ € ok"
    )
    pages = render_document(body.encode("utf-8"), content_type="text/plain; charset=utf-8")
    assert len(pages) == 1
    assert 0.002 < pages[0].pels.mean() < 0.05


def test_long_text_flows_onto_several_pages() -> None:
    pages = render_document(("line of text\n" * 200).encode(), filename="notes.txt", resolution="standard")
    assert len(pages) >= 3


def test_html_body_renders_with_odd_markup() -> None:
    html = (
        "<html><head><style>p{color:red}</style><title>x</title></head><body>"
        "<h1>Order</h1><p>Dear <b>Bob, <i>please</b> sign</i> &amp; return.</p>"
        "<ul><li>one</li><li>two <u>underlined</li></ul>"
        "<table><tr><td>A</td><td>1</td></tr><tr><th>B</th><td>2</td></tr></table>"
        "<hr><pre>  code\n    indented</pre><blockquote>quoted</blockquote>"
        "<img alt='logo' src='cid:1'></b></i><p>unclosed <b>bold"
    )
    pdf = html_to_pdf(html)
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        page = doc[0]
        text = page.get_textpage().get_text_range()
        page.close()
    finally:
        doc.close()
    for word in ("Order", "please", "sign & return", "one", "underlined", "A", "code", "quoted", "[logo]"):
        assert word in text
    assert "color:red" not in text
    pages = render_document(html.encode(), content_type="text/html")
    assert len(pages) == 1 and pages[0].pels.any()


def test_text_to_pdf_handles_empty_input() -> None:
    assert render_pdf(text_to_pdf(""))[0].pels.sum() == 0


def test_office_without_libreoffice_names_the_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "find_soffice", lambda: None)
    with pytest.raises(MissingToolError, match="LibreOffice") as info:
        render_document(b"PK\x03\x04 fake", filename="memo.docx")
    assert info.value.tool == "soffice"


@pytest.mark.skipif(sys.platform == "win32", reason="shell script stand-in")
def test_office_conversion_command_line(tmp_path: Path) -> None:
    """A stand-in soffice checks the arguments and 'converts' by copying a prepared PDF."""
    pdf = tmp_path / "prepared.pdf"
    pdf.write_bytes(mixed_pdf(5))
    log = tmp_path / "args.txt"
    fake = tmp_path / "soffice"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{log}"\n'
        'while [ $# -gt 0 ]; do case "$1" in --outdir) shift; out="$1";; esac; last="$1"; shift; done\n'
        f'mkdir -p "$out" && cp "{pdf}" "$out/$(basename "${{last%.*}}").pdf"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    pages = render_document(
        b"PK\x03\x04 fake", filename="memo.docx", soffice=str(fake), resolution="standard"
    )
    assert len(pages) == 5
    args = log.read_text().splitlines()
    assert args[0].startswith("-env:UserInstallation=file://")
    assert "--headless" in args and args[args.index("--convert-to") + 1] == "pdf"
    assert args[-1].endswith("document.docx")
    assert not Path(args[0].split("file://", 1)[1]).exists()  # the private profile is removed


def test_office_conversion_failure_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "soffice"
    fake.write_text("#!/bin/sh\necho 'Error: source file could not be loaded' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(DocumentError, match="could not be loaded"):
        documents.office_to_pdf(b"junk", "x.doc", soffice=str(fake))


def test_render_document_image_by_content_type() -> None:
    buf = io.BytesIO()
    text_image().save(buf, format="GIF")
    pages = render_document(buf.getvalue(), content_type="image/gif")
    assert len(pages) == 1 and pages[0].pels.any()
