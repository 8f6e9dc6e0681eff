"""The fax page model shared by the TIFF, PDF and document renderers.

What it does
------------
A :class:`FaxPage` is a bi-level page as a fax machine sees it: an ``H x W`` uint8 array (1 = black),
the horizontal and vertical resolution in dots per inch, and, for received pages, the bad-row counts
the T.4 decoder reported.  The module also names the T.4 resolutions and page widths, and turns a page
into PNG images: the page itself (:func:`page_png`) and a small grey-scale preview for e-mails
(:func:`thumbnail_png`) whose aspect ratio is corrected for the non-square fax pels.

How it works
------------
Resolutions are the values TIFF Class F writes (RFC 2306 §4): 204 dpi horizontally for the T.4 R8
grid of 8 pels/mm (1728 pels on the 215 mm A4 scan line, T.4 §2.2), and 98 / 196 / 392 lines per
inch for 3.85 / 7.7 / 15.4 lines/mm (T.4 §2.3).  A4 length is 297 mm, i.e. 1143 / 2286 / 4572 lines.
The physical size of a page is always pels / dpi on each axis, so a standard-resolution page (every
line twice as tall as a pel is wide) is shown at its true proportions by whatever reads the size.

The thumbnail is box-filtered down from the 1-bit page (area averaging gives grey anti-aliased
strokes, which reads far better at small sizes than a subsampled 1-bit image), to a fixed width and
the height that keeps the physical aspect ratio.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "A4_LINES",
    "A4_WIDTH",
    "PAGE_WIDTHS",
    "RESOLUTIONS",
    "FaxPage",
    "Resolution",
    "page_image",
    "page_png",
    "thumbnail_png",
]

Resolution = Literal["standard", "fine", "superfine"]
PageArray = npt.NDArray[np.uint8]

XDPI: Final = 204.0
"""T.4 §2.2: R8 = 1728 pels on the 215 mm A4 scan line; TIFF Class F (RFC 2306 §4) writes 204 dpi."""
RESOLUTIONS: Final[dict[Resolution, tuple[float, float]]] = {
    "standard": (XDPI, 98.0),  # T.4 §2.3: 3.85 lines/mm
    "fine": (XDPI, 196.0),  # 7.7 lines/mm
    "superfine": (XDPI, 392.0),  # 15.4 lines/mm
}
A4_LINES: Final[dict[Resolution, int]] = {"standard": 1143, "fine": 2286, "superfine": 4572}
"""Lines of a 297 mm A4 page: 297 x 3.85, 7.7, 15.4 lines/mm."""
A4_WIDTH: Final = 1728
"""T.4 §2.2: pels per scan line for ISO A4 at R8."""
PAGE_WIDTHS: Final[dict[int, str]] = {1728: "A4", 2048: "B4", 2432: "A3", 3456: "A4", 4096: "B4", 4864: "A3"}
"""T.4 §2.2 scan-line widths (R8, and the R16 doubles) and the paper they are for."""
MM_PER_INCH: Final = 25.4


@dataclass(frozen=True, eq=False)
class FaxPage:
    """One bi-level fax page.

    Attributes
    ----------
    pels : ndarray of uint8, shape (rows, width)
        1 = black, 0 = white.  Any non-zero input is stored as 1.
    xdpi, ydpi : float
        Pels per inch across and lines per inch down the page.
    bad_rows : int or None
        For received pages: rows the decoder replaced (TIFF BadFaxLines); None for rendered pages.
    longest_bad_run : int or None
        For received pages: longest run of replaced rows (TIFF ConsecutiveBadFaxLines).
    """

    pels: PageArray
    xdpi: float = XDPI
    ydpi: float = 196.0
    bad_rows: int | None = None
    longest_bad_run: int | None = None

    def __post_init__(self) -> None:
        arr = np.asarray(self.pels)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"a page needs at least one row and one column, got shape {arr.shape}")
        if self.xdpi <= 0 or self.ydpi <= 0:
            raise ValueError("resolution must be positive")
        if arr.dtype != np.uint8 or arr.max(initial=0) > 1:
            arr = (arr != 0).astype(np.uint8)
        object.__setattr__(self, "pels", arr)

    @classmethod
    def at(cls, pels: npt.ArrayLike, resolution: Resolution) -> FaxPage:
        """A page at one of the named T.4 resolutions."""
        xdpi, ydpi = RESOLUTIONS[resolution]
        return cls(np.asarray(pels), xdpi, ydpi)

    @property
    def rows(self) -> int:
        return int(self.pels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pels.shape[1])

    @property
    def width_class(self) -> str | None:
        """ "A4", "B4" or "A3" for the T.4 scan-line widths, None for any other width."""
        return PAGE_WIDTHS.get(self.width)

    @property
    def size_inches(self) -> tuple[float, float]:
        """Physical (width, height): pels / dpi on each axis."""
        return self.width / self.xdpi, self.rows / self.ydpi

    @property
    def size_mm(self) -> tuple[float, float]:
        w, h = self.size_inches
        return w * MM_PER_INCH, h * MM_PER_INCH


def page_image(page: FaxPage) -> Image.Image:
    """The page as a Pillow mode "1" image (black pels black), with its dpi in ``info``."""
    img = Image.fromarray(page.pels == 0)
    img.info["dpi"] = (page.xdpi, page.ydpi)
    return img


def page_png(page: FaxPage) -> bytes:
    """The page pel for pel as a 1-bit PNG (its pHYs chunk carries the two resolutions)."""
    buf = io.BytesIO()
    page_image(page).save(buf, format="PNG", dpi=(page.xdpi, page.ydpi), optimize=True)
    return buf.getvalue()


def thumbnail_png(page: FaxPage, *, width: int = 800) -> bytes:
    """A grey-scale preview ``width`` pixels wide, its height following the physical aspect ratio."""
    if width < 1:
        raise ValueError("width must be >= 1")
    w_in, h_in = page.size_inches
    height = max(1, round(width * h_in / w_in))
    grey = Image.fromarray(np.where(page.pels != 0, 0, 255).astype(np.uint8))
    thumb = grey.resize((width, height), Image.Resampling.BOX)
    buf = io.BytesIO()
    thumb.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
