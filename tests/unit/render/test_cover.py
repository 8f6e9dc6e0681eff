"""The cover page: fields, comment, logo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.render.samples import png_bytes
from ums.render.cover import CoverInfo, cover_pdf, render_cover

pdfium = pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")

INFO = CoverInfo(
    sender="Alice Example <alice@example.com>",
    recipient="Bob Builder",
    date="2026-03-01 10:00",
    pages=4,
    comment="Please sign page 2.\nThanks — Grüße",
    subject="Order 4711",
    recipient_fax="+49 30 1234567",
)


def _text(pdf: bytes) -> str:
    doc = pdfium.PdfDocument(pdf)
    try:
        page = doc[0]
        text: str = page.get_textpage().get_text_range()
        page.close()
        return text
    finally:
        doc.close()


def test_cover_says_who_when_and_how_many_pages() -> None:
    text = _text(cover_pdf(INFO))
    for item in ("FAX", "Bob Builder", "+49 30 1234567", "alice@example.com", "2026-03-01 10:00",
                 "4 (including this page)", "Order 4711", "Please sign page 2.", "Grüße"):  # fmt: skip
        assert item in text


def test_logo_from_a_file_is_drawn_top_left(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    Image.new("L", (300, 100), 0).save(logo)
    with_logo = render_cover(INFO, resolution="standard", logo=logo).pels
    without = render_cover(INFO, resolution="standard").pels
    assert with_logo.shape == (1143, 1728)
    # 70 x 25 mm box at 20 mm from the left and top: 300x100 scales to 70 x 23.3 mm
    box = with_logo[80:160, 180:700]
    assert box.mean() > 0.9 and without[80:160, 180:700].mean() < 0.05
    assert np.array_equal(with_logo[400:], without[400:])


def test_logo_bytes_and_empty_comment() -> None:
    info = CoverInfo(sender="a", recipient="b", date="today", pages=1)
    page = render_cover(info, logo=png_bytes(Image.new("RGB", (50, 50), "black")))
    assert page.pels.shape == (2286, 1728) and page.pels.any()
    assert "Comment" not in _text(cover_pdf(info))
