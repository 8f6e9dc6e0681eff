"""Test pages and libtiff (Pillow) helpers for the T.4/T.6 codec tests.

What it does
------------
:func:`itu_page` loads one ITU test chart from ``testdata/itu-fax`` (gzip'd PBM) as an ``H x 1728``
uint8 array (1 = black), cropping or padding the narrower charts to 1728 pels.  :func:`synthetic_pages`
builds edge-case pages.  :func:`libtiff_encode` has libtiff (through Pillow) write a one-strip fax
TIFF and returns the raw strip; :func:`libtiff_decode` wraps raw T.4/T.6 data in a minimal one-strip
TIFF in memory and has libtiff decode it.

How it works
------------
libtiff's fax codec is photometric-agnostic: it codes 0 bits as white runs and 1 bits as black
runs.  Pillow writes mode "1" as BlackIsZero, so handing it the page with True = black gives a strip
of standard fax data (the file itself then shows a negative, which does not matter here; setting
PhotometricInterpretation 0 instead would be correct but makes Pillow's save about 50 times slower).
For the same reason the in-memory TIFF used for decoding says BlackIsZero and the pels are read
back as they are.  That TIFF is a single little-endian IFD with the strip right after it.
"""

from __future__ import annotations

import gzip
import io
import struct
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

ITU_DIR = Path(__file__).resolve().parents[3] / "testdata" / "itu-fax"
ITU_NAMES = [f"itu{i}" for i in range(1, 9)] + [f"test{i}" for i in range(1, 5)]
FAX_WIDTH = 1728

Page = npt.NDArray[np.uint8]


@cache
def itu_page(name: str) -> Page:
    """One ITU chart as uint8 (1 = black), width forced to 1728 (crop or pad white on the right)."""
    with gzip.open(ITU_DIR / f"{name}.pbm.gz") as f:
        img = Image.open(io.BytesIO(f.read()))
        img.load()
    page = (np.asarray(img.convert("L")) < 128).astype(np.uint8)
    out = np.zeros((page.shape[0], FAX_WIDTH), np.uint8)
    w = min(FAX_WIDTH, page.shape[1])
    out[:, :w] = page[:, :w]
    out.setflags(write=False)
    return out


def synthetic_pages() -> dict[str, Page]:
    """Edge-case pages: uniform, alternating pels, margin pels, random (seeded), all page widths."""
    w = FAX_WIDTH
    rng = np.random.default_rng(20240)
    yy, xx = np.mgrid[0:40, 0:w]
    margins = np.zeros((40, w), np.uint8)
    margins[::3, 0] = 1
    margins[1::3, w - 1] = 1
    margins[2::4, [0, w - 1]] = 1
    margins[5, 1] = margins[6, w - 2] = 1
    pages = {
        "white": np.zeros((30, w), np.uint8),
        "black": np.ones((30, w), np.uint8),
        "checkerboard": ((xx + yy) & 1).astype(np.uint8),
        "stripes": (xx & 1).astype(np.uint8),
        "stripes_shifted": ((xx + (yy // 2)) & 1).astype(np.uint8),
        "margins": margins,
        "random_half": (rng.random((60, w)) < 0.5).astype(np.uint8),
        "random_sparse": (rng.random((60, w)) < 0.03).astype(np.uint8),
        "random_blocks": np.repeat(np.repeat(rng.random((12, w // 8)) < 0.4, 5, axis=0), 8, axis=1).astype(
            np.uint8
        ),
    }
    for width in (2048, 2432, 3456, 4096, 4864):
        p = (rng.random((16, width)) < 0.1).astype(np.uint8)
        p[0] = 0
        p[1] = 1
        p[2, : width // 2] = 1  # one run > 2560 pels at R16 widths
        p[3, 5:] = 1
        pages[f"w{width}"] = p
    return pages


def _pil(page: Page) -> Image.Image:
    return Image.fromarray(np.asarray(page) != 0)  # mode "1", bit 1 = black pel = black run


def libtiff_encode(page: Page, compression: str, *, t4_options: int = 0, fill_order: int = 2) -> bytes:
    """Raw strip of a one-strip TIFF written by libtiff: group3 (T4Options) or group4."""
    info: dict[int, int] = {278: page.shape[0], 266: fill_order}
    if compression == "group3":
        info[292] = t4_options
    buf = io.BytesIO()
    _pil(page).save(buf, format="TIFF", compression=compression, tiffinfo=info)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        tags = img.tag_v2
    assert len(tags[273]) == 1, "expected a single strip"
    return data[tags[273][0] : tags[273][0] + tags[279][0]]


def tiff_bytes(
    raw: bytes,
    width: int,
    height: int,
    compression: int,
    t4_options: int,
    fill_order: int,
    photometric: int = 0,
) -> bytes:
    """A minimal one-strip bi-level TIFF around raw CCITT data."""
    tags = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 1),
        (259, 3, compression),
        (262, 3, photometric),
        (266, 3, fill_order),
        (273, 4, 0),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(raw)),
        (292 if compression == 3 else 293, 4, t4_options),
    ]
    data_offset = 8 + 2 + 12 * len(tags) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(tags)))
    for tag, typ, value in tags:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, 1) + packed
    out += struct.pack("<I", 0) + raw
    return bytes(out)


def libtiff_decode(
    raw: bytes, width: int, height: int, compression: int, t4_options: int = 0, fill_order: int = 2
) -> Page:
    """Decode raw T.4 (compression 3) / T.6 (4) data with libtiff; uint8, 1 = black."""
    data = tiff_bytes(raw, width, height, compression, t4_options, fill_order, photometric=1)
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img).astype(np.uint8)
