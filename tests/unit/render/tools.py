"""Helpers for the render tests: run poppler and libtiff tools, read their bitmaps back.

What it does
------------
:func:`pdftoppm_pages` renders PDF pages with poppler at a given resolution and returns them as
uint8 arrays (1 = black); :func:`pdfinfo` returns poppler's page count and page sizes;
:func:`needs` is a skip marker for a missing Debian tool.

How it works
------------
The tools run as subprocesses with a timeout; pdftoppm writes PGM files into a temporary directory
(``-gray``, anti-aliasing off), thresholded at mid-grey.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image


def needs(*programs: str) -> pytest.MarkDecorator:
    missing = [p for p in programs if shutil.which(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


needs_poppler = needs("pdfinfo", "pdftoppm")
needs_libtiff = needs("tiffinfo", "tiffcp")


def pdfinfo(path: Path) -> tuple[int, list[tuple[float, float]]]:
    """(pages, [(width_pt, height_pt), ...]) as poppler reports them."""
    out = subprocess.run(
        ["pdfinfo", "-f", "1", "-l", "9999", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    sizes = [
        (float(w), float(h))
        for w, h in re.findall(r"^Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts", out, re.MULTILINE)
    ]
    return pages, sizes


def pdftoppm_pages(
    path: Path, xdpi: float, ydpi: float, tmp: Path, first: int = 1, last: int | None = None
) -> list[npt.NDArray[np.uint8]]:
    """Pages rendered by poppler at xdpi x ydpi, as uint8 arrays with 1 = black."""
    last = last if last is not None else first
    prefix = tmp / "ppm"
    subprocess.run(
        ["pdftoppm", "-f", str(first), "-l", str(last), "-rx", str(xdpi), "-ry", str(ydpi), "-gray",
         "-aa", "no", "-aaVector", "no", str(path), str(prefix)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pages = []
    for file in sorted(tmp.glob("ppm*.pgm")):
        with Image.open(file) as img:
            pages.append((np.asarray(img) < 128).astype(np.uint8))
        file.unlink()
    return pages
