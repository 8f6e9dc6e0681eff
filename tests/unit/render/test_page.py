"""The page model: validation, physical size, PNG output and the thumbnail."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ums.render.page import A4_LINES, RESOLUTIONS, FaxPage, page_png, thumbnail_png


def test_page_normalises_pels_and_reports_size() -> None:
    page = FaxPage(np.full((1143, 1728), 7, np.int32), 204, 98)
    assert page.pels.dtype == np.uint8 and page.pels.max() == 1
    assert (page.rows, page.width, page.width_class) == (1143, 1728, "A4")
    w_mm, h_mm = page.size_mm
    assert w_mm == pytest.approx(215.15, abs=0.01)  # T.4 §2.2: 215 mm scan line
    assert h_mm == pytest.approx(297, abs=1)


@pytest.mark.parametrize("resolution", list(RESOLUTIONS))
def test_a4_length_is_297_mm_at_every_resolution(resolution: str) -> None:
    page = FaxPage.at(np.zeros((A4_LINES[resolution], 1728)), resolution)  # type: ignore[arg-type]
    assert page.size_mm[1] == pytest.approx(297, abs=1)


@pytest.mark.parametrize("shape", [(0, 1728), (10, 0), (1728,)])
def test_page_rejects_empty_arrays(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        FaxPage(np.zeros(shape, np.uint8))


def test_page_png_is_exact_with_resolution() -> None:
    rng = np.random.default_rng(3)
    page = FaxPage((rng.random((100, 1728)) < 0.3).astype(np.uint8), 204, 98)
    with Image.open(io.BytesIO(page_png(page))) as img:
        assert img.mode == "1"
        assert np.array_equal(~np.asarray(img), page.pels != 0)
        assert [round(v) for v in img.info["dpi"]] == [204, 98]


@pytest.mark.parametrize(("ydpi", "lines"), [(98.0, 1143), (196.0, 2286)])
def test_thumbnail_keeps_the_physical_aspect(ydpi: float, lines: int) -> None:
    pels = np.zeros((lines, 1728), np.uint8)
    pels[lines // 4 : lines // 2, 200:1500] = 1  # a black box a quarter of the page high
    with Image.open(io.BytesIO(thumbnail_png(FaxPage(pels, 204, ydpi), width=400))) as img:
        assert img.mode == "L"
        assert img.size == (400, round(400 * (lines / ydpi) / (1728 / 204)))
        grey = np.asarray(img)
    dark_rows = np.flatnonzero((grey < 128).mean(axis=1) > 0.5)
    assert dark_rows[0] == pytest.approx(img.size[1] / 4, abs=2)
    assert dark_rows[-1] == pytest.approx(img.size[1] / 2, abs=2)
