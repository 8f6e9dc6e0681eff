"""Documents to fax pages: PDF, images, plain text, HTML and Office files.

What it does
------------
``render_document(data, filename=..., content_type=...)`` turns what someone mailed us into pages a
fax machine accepts: ``FaxPage`` objects 1728 pels wide (A4 at R8) at standard, fine or superfine
resolution.

* PDF: every page rendered with PDFium (pypdfium2).  Landscape pages are turned a quarter turn
  anticlockwise so they fill the portrait fax page instead of shrinking to 72 %.  Pages are shown at
  their true size, shrunk only when larger than the fax page (215 x 297 mm).
* Images (TIFF, PNG, JPEG, GIF, BMP, WebP, anything Pillow reads): scaled to the page width, or to
  the page length if they are too long, keeping their proportions; every page of a multi-page TIFF.
  A TIFF that already is a fax page (bi-level, 1728 pels at 204 dpi) keeps its pels and only has its
  lines repeated or dropped to match the vertical resolution.
* Plain text and HTML mail bodies: laid out on A4 with reportlab, then rendered like a PDF.
* Office documents (.doc, .docx, .odt, .rtf, .xls, .xlsx, .ods, .ppt, .pptx, .odp): converted to PDF
  by LibreOffice in headless mode with a private profile directory per call; without LibreOffice a
  :class:`MissingToolError` names the missing program.

Page length: with ``a4_length=True`` (the default) every page is exactly A4 long (1143 / 2286 / 4572
lines): shorter pages are padded with white at the bottom, longer ones are shrunk to fit.  That is
what a fax machine prints on, and it gives every page of a document the same size in the TIFF and
PDF outputs.  With ``a4_length=False`` pages keep their own length (only the width is fitted).

How it works
------------
Each page is first rendered in grey at the target size (PDFium renders at the larger of the two
resolutions and Pillow resamples the other axis; images are resampled with a Lanczos filter), then
made bi-level by :func:`binarize`: the page is cut into 32 x 32 pel blocks and the share of mid-grey
pels (32..191) in each block decides between a fixed threshold (text, line art: anti-aliased edges
are only a thin fringe of grey, at most some 20 % of a block even for 8 pt text) and Floyd-Steinberg
error diffusion (photos and grey fills, where most pels are mid-grey: blocks above 40 %; the region
then grows over the neighbouring blocks that hold no blank paper, so the light parts of a photo are
dithered too, and by one more block for its edges), so text stays crisp and photos keep their tones.
The grey image is centred across the 1728 pels and put at the top of the page.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from ums.render.page import A4_LINES, A4_WIDTH, RESOLUTIONS, FaxPage, Resolution

__all__ = [
    "DocumentError",
    "DocumentKind",
    "MissingToolError",
    "binarize",
    "detect_kind",
    "find_soffice",
    "html_to_pdf",
    "office_to_pdf",
    "render_document",
    "render_image",
    "render_pdf",
    "text_to_pdf",
]

log = logging.getLogger(__name__)

DocumentKind = Literal["pdf", "image", "text", "html", "office"]
GreyArray = npt.NDArray[np.uint8]

POINTS_PER_INCH: Final = 72.0
BLOCK: Final = 32
"""Side of the blocks in which binarize() chooses between threshold and dithering (pels)."""
MID_GREY: Final = (32, 192)
"""Grey levels counted as mid-grey (half-open range).  Light tints above 191 (table shading, 20 %
grey backgrounds) count as white: thresholded away they keep text on them crisp, and a dithered
flat tint would cost several times a text page in G4."""
PHOTO_SHARE: Final = 0.4
PAPER_WHITE: Final = 248
"""Grey levels counted as blank paper when growing a photo region."""
"""Share of mid-grey pels above which a block is dithered rather than thresholded."""
TEXT_THRESHOLD: Final = 160
"""Grey levels below this are black in thresholded blocks; a little above mid-grey, so anti-aliased
strokes keep their weight on the coarse fax grid."""
FAX_DPI_TOLERANCE: Final = 4.0

OFFICE_EXTENSIONS: Final = frozenset(
    {".doc", ".docx", ".odt", ".rtf", ".xls", ".xlsx", ".ods", ".ppt", ".pptx", ".odp", ".wpd", ".pages"}
)
OFFICE_TYPES: Final = (
    "application/msword",
    "application/vnd.openxmlformats-officedocument",
    "application/vnd.oasis.opendocument",
    "application/vnd.ms-",
    "application/rtf",
    "text/rtf",
)
IMAGE_EXTENSIONS: Final = frozenset(
    {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".pbm", ".pgm", ".ppm"}
)
HTML_EXTENSIONS: Final = frozenset({".html", ".htm", ".xhtml"})
TEXT_EXTENSIONS: Final = frozenset({".txt", ".text", ".asc", ".log", ".csv", ".eml"})
_IMAGE_MAGIC: Final = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*", b"BM", b"RIFF")
_ZIP_MAGIC: Final = b"PK\x03\x04"
_OLE_MAGIC: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


class DocumentError(ValueError):
    """The document cannot be turned into fax pages (unknown type, damaged file, converter failed)."""


class MissingToolError(DocumentError):
    """A program needed for this document type is not installed."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(message)
        self.tool = tool


# -- type detection -----------------------------------------------------------------------------------


def detect_kind(data: bytes, *, filename: str | None = None, content_type: str | None = None) -> DocumentKind:
    """Decide how to render a document: by its first bytes, then its MIME type, then its file name."""
    head = data[:1024].lstrip()
    ext = Path(filename).suffix.lower() if filename else ""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if head.startswith(b"%PDF"):
        return "pdf"
    if data.startswith(_IMAGE_MAGIC) and not (data.startswith(b"RIFF") and data[8:12] != b"WEBP"):
        return "image"
    if data.startswith((_ZIP_MAGIC, _OLE_MAGIC)) or data.startswith(b"{\\rtf"):
        return "office"
    if ctype == "application/pdf" or ext == ".pdf":
        return "pdf"
    if ctype.startswith("image/") or ext in IMAGE_EXTENSIONS:
        return "image"
    if ctype.startswith(OFFICE_TYPES) or ext in OFFICE_EXTENSIONS:
        return "office"
    if ctype in ("text/html", "application/xhtml+xml") or ext in HTML_EXTENSIONS:
        return "html"
    if ctype.startswith("text/") or ext in TEXT_EXTENSIONS or (not ctype and not ext):
        sniff = head[:200].lower()
        if ctype != "text/plain" and (sniff.startswith((b"<!doctype html", b"<html")) or b"<body" in sniff):
            return "html"
        return "text"
    what = f"{filename or 'document'} ({content_type or 'unknown type'})"
    raise DocumentError(f"cannot render {what} as fax pages")


def _charset(content_type: str | None) -> str | None:
    match = re.search(r"charset=\"?([\w.:-]+)", content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def _decode_text(data: bytes, content_type: str | None) -> str:
    for charset in (_charset(content_type), "utf-8"):
        if charset:
            try:
                return data.decode(charset)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("latin-1")


def render_document(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    resolution: Resolution = "fine",
    a4_length: bool = True,
    soffice: str | None = None,
) -> list[FaxPage]:
    """Render any supported document as fax pages (see the module docstring).

    Raises
    ------
    DocumentError
        Unknown type, a file the renderer cannot read, or a failed conversion.
    MissingToolError
        An Office document and no LibreOffice.
    """
    kind = detect_kind(data, filename=filename, content_type=content_type)
    if kind == "pdf":
        return render_pdf(data, resolution=resolution, a4_length=a4_length)
    if kind == "image":
        return render_image(data, resolution=resolution, a4_length=a4_length)
    if kind == "office":
        pdf = office_to_pdf(data, filename or "document.docx", soffice=soffice)
        return render_pdf(pdf, resolution=resolution, a4_length=a4_length)
    text = _decode_text(data, content_type)
    pdf = html_to_pdf(text) if kind == "html" else text_to_pdf(text)
    return render_pdf(pdf, resolution=resolution, a4_length=a4_length)


# -- bi-level conversion and placement -----------------------------------------------------------------


def _block_share(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Share of True pels in each BLOCK x BLOCK block (partial blocks at the edges padded False)."""
    h, w = mask.shape
    bh, bw = -(-h // BLOCK), -(-w // BLOCK)
    padded = np.zeros((bh * BLOCK, bw * BLOCK), np.uint16)
    padded[:h, :w] = mask
    share: npt.NDArray[np.float64] = padded.reshape(bh, BLOCK, bw, BLOCK).sum(axis=(1, 3)) / (BLOCK * BLOCK)
    return share


def _dilate(blocks: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Each block or any of its eight neighbours."""
    out = blocks.copy()
    out[1:] |= blocks[:-1]
    out[:-1] |= blocks[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def binarize(grey: npt.ArrayLike) -> GreyArray:
    """Grey (0 = black .. 255 = white) to pels (1 = black): threshold text, dither photos, per block.

    Notes
    -----
    For each ``BLOCK x BLOCK`` block, ``s`` = share of pels with ``32 <= g < 192`` and ``p`` = share
    of blank paper (``g >= 248``).  Blocks with ``s > 0.4`` are photo; the photo region grows into
    neighbouring blocks with ``p < 0.5`` (the light parts of a photo) until it stops, and then by
    one more block.  Photo blocks take the Floyd-Steinberg result of the whole image (Pillow), the
    others ``g < TEXT_THRESHOLD``.
    """
    g = np.asarray(grey, dtype=np.uint8)
    if g.ndim != 2:
        raise ValueError("binarize needs a 2-D grey image")
    h, w = g.shape
    out = g < TEXT_THRESHOLD
    share = _block_share((g >= MID_GREY[0]) & (g < MID_GREY[1]))
    paper = _block_share(g >= PAPER_WHITE)
    photo = share > PHOTO_SHARE
    # grow photos into neighbouring blocks without blank paper (their light parts), then by one block
    candidate = paper < 0.5
    for _ in range(max(photo.shape)):
        grown = _dilate(photo) & candidate | photo
        if np.array_equal(grown, photo):
            break
        photo = grown
    photo = _dilate(photo)
    if photo.any():
        mask = np.repeat(np.repeat(photo, BLOCK, axis=0), BLOCK, axis=1)[:h, :w]
        dithered = ~np.asarray(Image.fromarray(g).convert("1", dither=Image.Dither.FLOYDSTEINBERG))
        out = np.where(mask, dithered, out)
    return out.astype(np.uint8)


def _place(pels: GreyArray, resolution: Resolution, a4_length: bool) -> FaxPage:
    """Centre pels across the fax line, top of the page; pad to A4 length when asked."""
    rows, cols = pels.shape
    lines = A4_LINES[resolution] if a4_length else max(rows, 1)
    page = np.zeros((lines, A4_WIDTH), np.uint8)
    rows, cols = min(rows, lines), min(cols, A4_WIDTH)
    left = (A4_WIDTH - cols) // 2
    src_left = (pels.shape[1] - cols) // 2
    page[:rows, left : left + cols] = pels[:rows, src_left : src_left + cols]
    return FaxPage.at(page, resolution)


def _box_points(resolution: Resolution) -> tuple[float, float]:
    xdpi, ydpi = RESOLUTIONS[resolution]
    return A4_WIDTH / xdpi * POINTS_PER_INCH, A4_LINES[resolution] / ydpi * POINTS_PER_INCH


# -- PDF ---------------------------------------------------------------------------------------------

#: PDFium is not thread-safe (pypdfium2 documents it; concurrent renders crash the process): one
#: document at a time in this process.
_PDFIUM = threading.Lock()


def render_pdf(data: bytes, *, resolution: Resolution = "fine", a4_length: bool = True) -> list[FaxPage]:
    """Every page of a PDF as a fax page (true size, shrunk to fit, landscape turned)."""
    import pypdfium2 as pdfium

    xdpi, ydpi = RESOLUTIONS[resolution]
    box_w, box_h = _box_points(resolution)
    grey: list[tuple[Image.Image, int, int]] = []
    with _PDFIUM:
        try:
            doc = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise DocumentError(f"cannot read the PDF: {exc}") from exc
        try:
            for index in range(len(doc)):
                page = doc[index]
                try:
                    pw, ph = page.get_size()
                    if pw <= 0 or ph <= 0:
                        continue
                    turn = pw > ph
                    qw, qh = (ph, pw) if turn else (pw, ph)
                    fit = min(1.0, box_w / qw, box_h / qh) if a4_length else min(1.0, box_w / qw)
                    tw = min(A4_WIDTH, max(1, round(qw * fit / POINTS_PER_INCH * xdpi)))
                    th = max(1, round(qh * fit / POINTS_PER_INCH * ydpi))
                    if a4_length:
                        th = min(th, A4_LINES[resolution])
                    scale = max(xdpi, ydpi) / POINTS_PER_INCH * fit
                    bitmap = page.render(scale=scale, rotation=270 if turn else 0, grayscale=True)
                    grey.append((bitmap.to_pil().convert("L"), tw, th))
                finally:
                    page.close()
        finally:
            doc.close()
    pages = []
    for img, tw, th in grey:
        if img.size != (tw, th):
            img = img.resize((tw, th), Image.Resampling.BOX)
        pages.append(_place(binarize(np.asarray(img)), resolution, a4_length))
    if not pages:
        raise DocumentError("the PDF has no pages")
    return pages


# -- images ------------------------------------------------------------------------------------------


def _frame_dpi(img: Image.Image) -> tuple[float, float] | None:
    dpi = img.info.get("dpi")
    try:
        x, y = float(dpi[0]), float(dpi[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return None
    return (x, y) if x > 1 and y > 1 else None


def _to_grey(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return img.convert("L")


def _image_page(img: Image.Image, resolution: Resolution, a4_length: bool) -> FaxPage:
    xdpi, ydpi = RESOLUTIONS[resolution]
    dpi = _frame_dpi(img)
    if (
        img.mode == "1"
        and img.width == A4_WIDTH
        and dpi is not None
        and abs(dpi[0] - xdpi) <= FAX_DPI_TOLERANCE
    ):
        # already a fax page: keep the pels, repeat or drop lines for the vertical resolution
        pels = (~np.asarray(img)).astype(np.uint8)
        rows = max(1, round(pels.shape[0] * ydpi / dpi[1]))
        pick = np.minimum(((np.arange(rows) + 0.5) * dpi[1] / ydpi).astype(np.int64), pels.shape[0] - 1)
        return _place(pels[pick], resolution, a4_length)
    grey = _to_grey(img)
    src_x, src_y = dpi or (1.0, 1.0)
    aspect = (grey.height / src_y) / (grey.width / src_x)  # physical height / width
    tw = A4_WIDTH
    th = max(1, round(tw / xdpi * aspect * ydpi))
    if a4_length and th > A4_LINES[resolution]:
        th = A4_LINES[resolution]
        tw = max(1, min(A4_WIDTH, round(th / ydpi / aspect * xdpi)))
    resized = grey.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _place(binarize(np.asarray(resized)), resolution, a4_length)


def render_image(data: bytes, *, resolution: Resolution = "fine", a4_length: bool = True) -> list[FaxPage]:
    """An image file as fax pages: every page of a TIFF, the first frame of anything else."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DocumentError(f"cannot read the image: {exc}") from exc
    pages = []
    with img:
        frames = getattr(img, "n_frames", 1) if img.format == "TIFF" else 1
        for index in range(frames):
            img.seek(index)
            frame = img if img.format == "TIFF" else ImageOps.exif_transpose(img)
            pages.append(_image_page(frame, resolution, a4_length))
    return pages


# -- text and HTML (reportlab) ------------------------------------------------------------------------

_FONT_DIRS: Final = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts")
_DEJAVU: Final = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
)
_VERA: Final = ("Vera.ttf", "VeraBd.ttf", "VeraIt.ttf", "VeraBI.ttf")
FONT: Final = "UmsSans"
MONO_FONT: Final = "Courier"


@cache
def body_font() -> str:
    """Register and return a Unicode TrueType family: DejaVu Sans when installed, else reportlab's Vera."""
    import reportlab
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    candidates = [Path(d) for d in _FONT_DIRS]
    files: Sequence[Path] = []
    for d in candidates:
        if all((d / f).is_file() for f in _DEJAVU):
            files = [d / f for f in _DEJAVU]
            break
    else:
        vera = Path(reportlab.__file__).parent / "fonts"
        files = [vera / f for f in _VERA]
    names = (FONT, FONT + "-Bold", FONT + "-Italic", FONT + "-BoldItalic")
    for name, path in zip(names, files, strict=True):
        pdfmetrics.registerFont(TTFont(name, str(path)))
    for bold in (0, 1):
        for italic in (0, 1):
            addMapping(FONT, bold, italic, names[bold + 2 * italic])
    return FONT


def _styles() -> dict[str, Any]:
    from reportlab.lib.styles import ParagraphStyle

    font = body_font()
    body = ParagraphStyle("body", fontName=font, fontSize=11, leading=14.5, spaceAfter=5)
    bold = font + "-Bold"
    return {
        "body": body,
        "h1": ParagraphStyle("h1", parent=body, fontName=bold, fontSize=18, leading=22, spaceAfter=8),
        "h2": ParagraphStyle("h2", parent=body, fontName=bold, fontSize=15, leading=19, spaceAfter=6),
        "h3": ParagraphStyle("h3", parent=body, fontName=bold, fontSize=12.5, leading=16),
        "bullet": ParagraphStyle("bullet", parent=body, leftIndent=18, bulletIndent=6, spaceAfter=2),
        "quote": ParagraphStyle("quote", parent=body, leftIndent=18, textColor="#333333"),
        "pre": ParagraphStyle("pre", parent=body, fontName=MONO_FONT, fontSize=9.5, leading=12),
        "cell": ParagraphStyle("cell", parent=body, spaceAfter=1),
    }


def _build_pdf(flowables: list[Any], title: str) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    if not flowables:
        flowables = [Paragraph("", _styles()["body"])]
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=title,
        author="",
        creator="ums",
        producer="ums",
        invariant=1,
    )
    doc.build(flowables)
    return buf.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def text_to_pdf(text: str, *, title: str = "") -> bytes:
    """Lay out a plain-text body on A4: line breaks kept, long lines wrapped, indentation kept."""
    from reportlab.platypus import Paragraph

    style = _styles()["body"]
    flowables = []
    for para in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)):
        if not para.strip():
            continue
        lines = []
        for line in para.split("\n"):
            stripped = line.lstrip(" ")
            lines.append("&nbsp;" * (len(line) - len(stripped)) + _escape(stripped))
        flowables.append(Paragraph("<br/>".join(lines), style))
    return _build_pdf(flowables, title)


class _HtmlFlow(HTMLParser):
    """A small HTML-to-flowables converter for mail bodies: blocks, lists, tables as rows, b/i/u."""

    BLOCKS: Final = frozenset(
        {
            "p",
            "div",
            "li",
            "tr",
            "blockquote",
            "pre",
            "ul",
            "ol",
            "table",
            "section",
            "article",
            "header",
            "footer",
            "address",
            "dt",
            "dd",
            "dl",
            "center",
            "form",
            "main",
            "nav",
            "aside",
            "figure",
            "caption",
        }
        | {f"h{i}" for i in range(1, 7)}
    )
    SKIP: Final = frozenset({"head", "style", "script", "title", "template", "noscript", "svg"})
    INLINE: Final = {
        "b": "b",
        "strong": "b",
        "i": "i",
        "em": "i",
        "u": "u",
        "s": "strike",
        "strike": "strike",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []  # (style name, reportlab markup or raw text for "pre")
        self._buf: list[str] = []
        self._open: list[str] = []  # open inline markup tags
        self._style: list[str] = ["body"]
        self._skip = 0
        self._pre = 0
        self._cells = 0

    def _flush(self) -> None:
        if self._pre:
            text = "".join(self._buf)
            if text.strip("\n"):
                self.blocks.append(("pre", text.strip("\n")))
        else:
            markup = "".join(self._buf).strip()
            while markup.endswith("<br/>"):
                markup = markup[: -len("<br/>")].rstrip()
            if re.sub(r"<[^>]*>|&nbsp;", "", markup).strip():
                closing = "".join(f"</{t}>" for t in reversed(self._open))
                self.blocks.append((self._style[-1], markup + closing))
        self._buf = ["".join(f"<{t}>" for t in self._open)] if not self._pre else []
        self._cells = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
            return
        if self._skip:
            return
        if tag in self.INLINE and not self._pre:
            self._open.append(self.INLINE[tag])
            self._buf.append(f"<{self.INLINE[tag]}>")
        elif tag == "br":
            self._buf.append("\n" if self._pre else "<br/>")
        elif tag in ("td", "th"):
            if self._cells:
                self._buf.append("&nbsp;&nbsp;&nbsp;")
            self._cells += 1
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._buf.append(_escape(f"[{alt}]"))
        elif tag == "hr":
            self._flush()
            self.blocks.append(("hr", ""))
        elif tag in self.BLOCKS:
            self._flush()
            if tag in ("h1", "h2", "h3"):
                style = tag
            elif tag in ("h4", "h5", "h6"):
                style = "h3"
            elif tag == "li":
                style = "bullet"
            elif tag in ("blockquote", "dd"):
                style = "quote"
            elif tag == "pre":
                self._pre += 1
                self._buf = []
                style = "pre"
            else:
                style = self._style[-1]
            self._style.append(style)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag in self.INLINE and not self._pre:
            name = self.INLINE[tag]
            if name in self._open:
                # close down to the matching tag and reopen the ones above it (keeps markup balanced)
                idx = len(self._open) - 1 - self._open[::-1].index(name)
                above = self._open[idx + 1 :]
                self._buf.append("".join(f"</{t}>" for t in reversed(self._open[idx:])))
                self._buf.append("".join(f"<{t}>" for t in above))
                del self._open[idx]
        elif tag in self.BLOCKS:
            self._flush()
            if tag == "pre" and self._pre:
                self._pre -= 1
                self._buf = ["".join(f"<{t}>" for t in self._open)]
            if len(self._style) > 1:
                self._style.pop()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:
            self._buf.append(data)
        else:
            self._buf.append(_escape(re.sub(r"\s+", " ", data)))

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_pdf(html: str, *, title: str = "") -> bytes:
    """Lay out a simple HTML mail body on A4 (paragraphs, headings, lists, tables as rows, b/i/u)."""
    from reportlab.platypus import HRFlowable, Paragraph, Preformatted

    parser = _HtmlFlow()
    parser.feed(html)
    parser.close()
    styles = _styles()
    flowables: list[Any] = []
    for style, content in parser.blocks:
        if style == "hr":
            flowables.append(HRFlowable(width="100%", thickness=0.8, spaceBefore=4, spaceAfter=6))
        elif style == "pre":
            flowables.append(Preformatted(content.expandtabs(4), styles["pre"], maxLineLength=90))
        elif style == "bullet":
            flowables.append(Paragraph(content, styles["bullet"], bulletText="\u2022"))
        else:
            flowables.append(Paragraph(content, styles[style]))
    return _build_pdf(flowables, title)


# -- Office documents (LibreOffice) ------------------------------------------------------------------


def find_soffice() -> str | None:
    """Path of LibreOffice's ``soffice`` (or ``libreoffice``) program, None if not installed."""
    return shutil.which("soffice") or shutil.which("libreoffice")


def office_to_pdf(data: bytes, filename: str, *, soffice: str | None = None, timeout: float = 180.0) -> bytes:
    """Convert an Office document to PDF with LibreOffice headless.

    Each call uses its own temporary profile directory (``-env:UserInstallation``), so conversions
    can run in parallel and never touch a user's profile.

    Raises
    ------
    MissingToolError
        LibreOffice is not installed (and no ``soffice`` path was given).
    DocumentError
        The conversion failed or timed out.
    """
    program = soffice or find_soffice()
    if not program:
        raise MissingToolError(
            "soffice",
            f"cannot convert {filename}: LibreOffice (soffice) is not installed "
            "(Debian: apt-get install libreoffice-writer-nogui libreoffice-calc-nogui "
            "libreoffice-impress-nogui)",
        )
    ext = Path(filename).suffix.lower() or ".docx"
    with tempfile.TemporaryDirectory(prefix="ums-office-") as tmp:
        work = Path(tmp)
        src = work / f"document{ext}"
        src.write_bytes(data)
        out_dir = work / "out"
        cmd = [
            program,
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--convert-to",
            "pdf",
            "--outdir",
            str(out_dir),
            str(src),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise DocumentError(f"LibreOffice did not convert {filename} within {timeout:.0f} s") from exc
        except OSError as exc:
            raise MissingToolError("soffice", f"cannot run LibreOffice ({program}): {exc}") from exc
        result = out_dir / "document.pdf"
        if proc.returncode != 0 or not result.is_file():
            detail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-300:]
            raise DocumentError(
                f"LibreOffice could not convert {filename} (exit {proc.returncode}): {detail}"
            )
        return result.read_bytes()
