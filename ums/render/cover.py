"""The fax cover page: sender, recipient, date, page count, comment and a company logo.

What it does
------------
``cover_pdf(info)`` lays out an A4 cover sheet with reportlab and returns the PDF;
``render_cover(info, resolution=...)`` returns it as a fax page, ready to go in front of the
document pages.  The logo (a file path from the configuration, or image bytes) is drawn in the top
left corner, scaled into a 70 x 25 mm box with its proportions kept.

How it works
------------
Large type (the page is read on a fax printout, often at standard resolution): a 30 pt "FAX"
heading, 13 pt fields in a ruled table, the comment wrapped in a framed box below with reportlab's
Paragraph.  Text uses the same Unicode font as the mail bodies (``documents.body_font``).  The PDF
goes through the same PDFium rendering and binarisation as any other document.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ums.render.documents import body_font, render_pdf
from ums.render.page import FaxPage, Resolution

__all__ = ["CoverInfo", "cover_pdf", "render_cover"]


@dataclass(frozen=True)
class CoverInfo:
    """What the cover page says.

    Attributes
    ----------
    sender, recipient : str
        Free text ("Alice Example <alice@example.com>", "+49 30 1234567").
    date : str
        As it should be printed (the caller formats it; this module reads no clock).
    pages : int
        Total pages including the cover.
    comment : str
        Free text, line breaks kept.
    subject : str
        Optional subject line.
    sender_fax, recipient_fax : str
        Optional fax numbers printed under the names.
    """

    sender: str
    recipient: str
    date: str
    pages: int
    comment: str = ""
    subject: str = ""
    sender_fax: str = ""
    recipient_fax: str = ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cover_pdf(info: CoverInfo, *, logo: Path | bytes | None = None) -> bytes:
    """The cover page as a one-page A4 PDF."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas
    from reportlab.platypus import Frame, Paragraph

    font = body_font()
    bold = font + "-Bold"
    width, height = A4
    left, right = 20 * mm, width - 20 * mm
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    c.setTitle("Fax cover page")
    top = height - 20 * mm
    if logo is not None:
        reader = ImageReader(io.BytesIO(logo) if isinstance(logo, bytes) else str(logo))
        lw, lh = reader.getSize()
        scale = min(70 * mm / lw, 25 * mm / lh)
        c.drawImage(reader, left, top - lh * scale, width=lw * scale, height=lh * scale, mask="auto")
    c.setFont(bold, 30)
    c.drawRightString(right, top - 22, "FAX")
    y = top - 40 * mm
    c.setLineWidth(1.5)
    c.line(left, y + 8 * mm, right, y + 8 * mm)
    rows = [
        ("To:", info.recipient, info.recipient_fax),
        ("From:", info.sender, info.sender_fax),
        ("Date:", info.date, ""),
        ("Pages:", f"{info.pages} (including this page)", ""),
    ]
    if info.subject:
        rows.append(("Subject:", info.subject, ""))
    for label, value, extra in rows:
        c.setFont(bold, 13)
        c.drawString(left, y, label)
        c.setFont(font, 13)
        c.drawString(left + 30 * mm, y, value[:80])
        if extra:
            y -= 6 * mm
            c.drawString(left + 30 * mm, y, f"Fax: {extra}")
        y -= 10 * mm
    c.setLineWidth(1.5)
    c.line(left, y + 4 * mm, right, y + 4 * mm)
    if info.comment.strip():
        y -= 6 * mm
        c.setFont(bold, 13)
        c.drawString(left, y, "Comment:")
        box_top = y - 4 * mm
        box_bottom = 25 * mm
        c.setLineWidth(0.8)
        c.rect(left, box_bottom, right - left, box_top - box_bottom)
        style = ParagraphStyle("comment", fontName=font, fontSize=12, leading=16)
        markup = "<br/>".join(_escape(line) for line in info.comment.strip().splitlines())
        frame = Frame(
            left,
            box_bottom,
            right - left,
            box_top - box_bottom,
            leftPadding=4 * mm,
            rightPadding=4 * mm,
            topPadding=4 * mm,
            bottomPadding=4 * mm,
            showBoundary=0,
        )
        frame.addFromList([Paragraph(markup, style)], c)
    c.showPage()
    c.save()
    return buf.getvalue()


def render_cover(
    info: CoverInfo, *, resolution: Resolution = "fine", logo: Path | bytes | None = None
) -> FaxPage:
    """The cover page as a fax page."""
    return render_pdf(cover_pdf(info, logo=logo), resolution=resolution)[0]
