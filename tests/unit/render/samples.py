"""Test documents made on the fly: a mixed multi-page PDF, a photo-like image, mail bodies.

What it does
------------
:func:`mixed_pdf` lays out a PDF with reportlab: text pages in several sizes, a page with a
photo-like image (smooth gradients and soft discs, as a photo has), a landscape page with a table
and grey fills, a US Letter page and line art.  :func:`photo_image` is the photo-like picture on its
own, :func:`text_image` a black-on-white image of text (a screenshot or a scanned letter).

How it works
------------
Everything is generated from fixed seeds, so the files are the same on every run; nothing is read
from disk except reportlab's built-in fonts.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

LOREM = (
    "Fax is still how many offices send signed orders, prescriptions and delivery notes. "
    "The quick brown fox jumps over the lazy dog 0123456789. "
)


def photo_image(width: int = 900, height: int = 600) -> Image.Image:
    """An RGB picture with smooth tones everywhere (no flat white), like a photograph."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    grey = 40 + 170 * (xx / width) * 0.7 + 60 * np.sin(yy / height * np.pi)
    for cx, cy, r, v in ((0.3, 0.4, 0.18, -70), (0.7, 0.6, 0.22, 50), (0.5, 0.2, 0.1, -40)):
        d2 = ((xx / width - cx) ** 2 + (yy / height - cy) ** 2) / r**2
        grey += v * np.exp(-d2)
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    rgb = np.stack([grey, np.clip(grey.astype(int) + 20, 0, 255).astype(np.uint8), grey], axis=-1)
    return Image.fromarray(rgb, "RGB")


def text_image(width: int = 800, height: int = 500) -> Image.Image:
    """A white image with black text lines and a frame (like a screenshot of a letter)."""
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 10, width - 11, height - 11), outline=0, width=3)
    for i in range(18):
        draw.text((30, 30 + 24 * i), f"Line {i + 1}: delivery note 4711, qty {i * 7} pcs", fill=0)
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def mixed_pdf(pages: int = 10) -> bytes:
    """A PDF of ``pages`` pages: text, text, photo, landscape table, line art, text, Letter page, text..."""
    from reportlab.lib.pagesizes import A4, landscape, letter
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    w, h = A4
    kinds = (["text", "text", "photo", "landscape", "lineart", "text", "letter"] + ["text"] * pages)[:pages]
    for n, kind in enumerate(kinds, start=1):
        if kind == "photo":  # photo-like image with a caption
            c.setPageSize(A4)
            c.setFont("Helvetica-Bold", 16)
            c.drawString(60, h - 70, f"Page {n}: photograph")
            c.drawImage(ImageReader(photo_image()), 60, h - 520, width=w - 120, height=(w - 120) * 2 / 3)
            c.setFont("Helvetica", 11)
            c.drawString(60, h - 545, "Caption: the picture above is dithered, this text is not.")
        elif kind == "landscape":  # a table and grey fills
            c.setPageSize(landscape(A4))
            lw, lh = landscape(A4)
            c.setFont("Helvetica-Bold", 16)
            c.drawString(50, lh - 60, f"Page {n}: landscape table")
            c.setFont("Helvetica", 10)
            for row in range(12):
                y = lh - 100 - row * 28
                if row % 2:
                    c.setFillGray(0.8)
                    c.rect(50, y - 8, lw - 100, 28, stroke=0, fill=1)
                    c.setFillGray(0)
                for col in range(6):
                    c.drawString(60 + col * 120, y, f"R{row + 1} C{col + 1} {row * col * 3.5:.1f}")
            c.rect(50, lh - 100 - 11 * 28 - 8, lw - 100, 12 * 28, stroke=1, fill=0)
        elif kind == "letter":  # US Letter page
            c.setPageSize(letter)
            c.setFont("Times-Roman", 12)
            c.drawString(72, letter[1] - 72, f"Page {n}: US Letter page")
            for i in range(40):
                c.drawString(72, letter[1] - 100 - 15 * i, f"{i + 1:2d}. {LOREM[: 60 + i % 30]}")
        elif kind == "lineart":
            c.setPageSize(A4)
            c.setFont("Helvetica-Bold", 14)
            c.drawString(60, h - 60, f"Page {n}: line art")
            for i in range(20):
                c.setLineWidth(0.25 + i * 0.25)
                c.line(60, h - 100 - i * 25, w - 60, h - 100 - i * 25 - i * 5)
            c.circle(w / 2, 220, 120)
            c.grid([60, 160, 260, 360, 460], [60, 110, 160])
        else:  # text
            c.setPageSize(A4)
            size = (8, 10, 12)[n % 3]
            c.setFont("Helvetica-Bold", 18)
            c.drawString(60, h - 60, f"Page {n}: text at {size} pt")
            c.setFont("Helvetica", size)
            y = h - 90
            i = 0
            while y > 50:
                c.drawString(60, y, (LOREM * 3)[i % 50 : i % 50 + int(900 / size)])
                y -= size * 1.3
                i += 7
        c.showPage()
    c.save()
    return buf.getvalue()
