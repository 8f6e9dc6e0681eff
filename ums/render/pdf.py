"""Fax pages as a small, lossless PDF: one CCITT G4 image per page at its physical size.

What it does
------------
``write_pdf(pages)`` returns a PDF 1.4 file in which every fax page is one image XObject holding the
page's T.6 (MMR) data under ``/CCITTFaxDecode`` (PDF 32000-1 §7.4.6), drawn to fill a MediaBox of
exactly pels / dpi on each axis.  A standard-resolution page (204 x 98 dpi) therefore has the same
physical size as a fine one and is shown with its true proportions; nothing is resampled, so the
PDF holds the very pels of the page, at G4 size (typically 20-60 KB for a text page).

How it works
------------
The coded data comes from our T.6 encoder (``ums.fax.t4``) with the first bit in the most
significant bit of each byte, the bit order PDF filters use.  The decode parameters are ``/K -1``
(pure two-dimensional T.6), ``/Columns`` and ``/Rows``; ``/BlackIs1`` keeps its default false, under
which the filter returns 0 for black pels and 1 for white, i.e. black and white in ``/DeviceGray``.
EOFB ends every stream (``/EndOfBlock`` true, the default).  The file is written object by object
with a classic cross-reference table; it is deterministic (no date unless one is given).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from ums.fax.t4 import encode
from ums.render.page import FaxPage

__all__ = ["pdf_string", "write_pdf"]

POINTS_PER_INCH = 72.0


def _num(value: float) -> str:
    """Four decimals, rounded down: a renderer at the page's own resolution sizes its bitmap as
    ceil(points x dpi / 72), so rounding up would add a column or row of pixels."""
    text = f"{math.floor(value * 10000) / 10000:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def pdf_string(text: str) -> bytes:
    """A PDF text string: literal (escaped) for ASCII, UTF-16BE with a byte-order mark otherwise."""
    if text.isascii():
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").replace("\r", "\\r")
        return b"(" + escaped.replace("\n", "\\n").encode("ascii") + b")"
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode("ascii") + b">"


def _pdf_date(when: datetime) -> str:
    stamp = when.strftime("D:%Y%m%d%H%M%S")
    offset = when.utcoffset()
    if offset is None:
        return stamp
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{stamp}{sign}{abs(minutes) // 60:02d}'{abs(minutes) % 60:02d}'"


def write_pdf(
    pages: Sequence[FaxPage],
    *,
    title: str | None = None,
    created: datetime | None = None,
    producer: str = "ums",
) -> bytes:
    """Write fax pages as a PDF, one G4 image per page, page size = pels / dpi.

    Parameters
    ----------
    pages : sequence of FaxPage
        At least one.
    title : str, optional
        Document title (Info dictionary).
    created : datetime, optional
        CreationDate; omitted when not given, so the same pages always give the same bytes.
    producer : str
        Producer entry of the Info dictionary.

    Returns
    -------
    bytes
        The PDF file.
    """
    if not pages:
        raise ValueError("a PDF needs at least one page")
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    tree = add(b"")
    info = [b"/Producer " + pdf_string(producer)]
    if title:
        info.append(b"/Title " + pdf_string(title))
    if created is not None:
        info.append(b"/CreationDate " + pdf_string(_pdf_date(created)))
    info_id = add(b"<< " + b" ".join(info) + b" >>")
    kids = []
    for page in pages:
        data = encode(page.pels, compression="mmr", msb_first=True)
        image = add(
            (
                f"<< /Type /XObject /Subtype /Image /Width {page.width} /Height {page.rows} "
                f"/ColorSpace /DeviceGray /BitsPerComponent 1 /Filter /CCITTFaxDecode "
                f"/DecodeParms << /K -1 /Columns {page.width} /Rows {page.rows} >> "
                f"/Length {len(data)} >>\nstream\n"
            ).encode("ascii")
            + data
            + b"\nendstream"
        )
        w_in, h_in = page.size_inches
        w_pt, h_pt = _num(w_in * POINTS_PER_INCH), _num(h_in * POINTS_PER_INCH)
        content = f"q {w_pt} 0 0 {h_pt} 0 0 cm /Im0 Do Q".encode("ascii")
        content_id = add(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        kids.append(
            add(
                (
                    f"<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 {w_pt} {h_pt}] "
                    f"/Resources << /XObject << /Im0 {image} 0 R >> /ProcSet [/PDF /ImageB] >> "
                    f"/Contents {content_id} 0 R >>"
                ).encode("ascii")
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {tree} 0 R >>".encode("ascii")
    refs = " ".join(f"{k} 0 R" for k in kids)
    objects[tree - 1] = f"<< /Type /Pages /Kids [{refs}] /Count {len(kids)} >>".encode("ascii")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n" % (len(objects) + 1, catalog, info_id)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)
