"""``ums fax render`` and ``ums fax decode`` through the parser the main CLI uses."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.fax.pages import itu_page
from tests.unit.render.samples import mixed_pdf, png_bytes, text_image
from ums.fax.t4 import encode
from ums.render import fax_cli
from ums.render.tiff import read_tiff

pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ums")
    fax_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    return fax_cli.run(parser.parse_args(argv))


def test_render_documents_with_cover_to_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.pdf").write_bytes(mixed_pdf(5))
    (tmp_path / "b.png").write_bytes(png_bytes(text_image()))
    (tmp_path / "c.txt").write_text("Hello Bob,\nplease sign.\n")
    out, thumb = tmp_path / "out.tif", tmp_path / "thumb.png"
    inputs = [str(tmp_path / name) for name in ("a.pdf", "b.png", "c.txt")]
    options = ["--standard", "--compression", "g3-2d", "--cover", "--from", "Alice", "--to", "Bob"]
    options += ["--comment", "two\\nlines", "--date", "2026-03-01", "--thumbnail", str(thumb)]
    status = _run(["fax", "render", *inputs, "-o", str(out), *options])
    assert status == 0
    assert "pages=8 resolution=standard" in capsys.readouterr().out
    pages = read_tiff(out.read_bytes())
    assert len(pages) == 8 and all(p.pels.shape == (1143, 1728) and p.ydpi == 98 for p in pages)
    with Image.open(thumb) as img:
        assert img.format == "PNG" and img.width == 800


def test_render_to_pdf_fine(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(mixed_pdf(5))
    assert _run(["fax", "render", str(tmp_path / "a.pdf"), "-o", str(tmp_path / "o.pdf")]) == 0
    assert (tmp_path / "o.pdf").read_bytes().count(b"/CCITTFaxDecode") == 5


def test_render_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.mp3").write_bytes(b"ID3\x03junk")
    assert _run(["fax", "render", str(tmp_path / "a.mp3"), "-o", str(tmp_path / "o.pdf")]) == 1
    assert "a.mp3" in capsys.readouterr().err
    assert _run(["fax", "render", str(tmp_path / "missing.pdf"), "-o", str(tmp_path / "o.pdf")]) == 1
    assert _run(["fax", "render", str(tmp_path / "a.mp3"), "-o", str(tmp_path / "o.doc")]) == 2


@pytest.mark.parametrize("compression", ["mh", "mr", "mmr"])
def test_decode_raw_data_to_png(compression: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = itu_page("itu2")[:600]
    raw = tmp_path / "page.raw"
    raw.write_bytes(encode(page, compression=compression))  # type: ignore[arg-type]
    out = tmp_path / "page.png"
    assert (
        _run(["fax", "decode", str(raw), "--width", "1728", "--compression", compression, "-o", str(out)])
        == 0
    )
    assert "rows=600 bad_rows=0 longest_bad_run=0 end_of_page=yes" in capsys.readouterr().out
    with Image.open(out) as img:
        assert np.array_equal(~np.asarray(img), page != 0)


def test_decode_reports_damage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = itu_page("itu1")[:400]
    data = bytearray(encode(page, compression="mh"))
    data[5000:5040] = bytes(40)  # wipe some rows
    raw = tmp_path / "damaged.raw"
    raw.write_bytes(bytes(data))
    out = tmp_path / "page.tif"
    assert (
        _run(["fax", "decode", str(raw), "--compression", "mh", "--resolution", "standard", "-o", str(out)])
        == 0
    )
    report = capsys.readouterr().out
    bad = int(report.split("bad_rows=")[1].split()[0])
    assert bad > 0
    (decoded,) = read_tiff(out.read_bytes())
    assert decoded.ydpi == 98
    with Image.open(io.BytesIO(out.read_bytes())) as img:
        assert img.tag_v2[326] == bad


def test_decode_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "empty.raw"
    raw.write_bytes(b"")
    assert _run(["fax", "decode", str(raw), "--compression", "mmr", "-o", str(tmp_path / "x.png")]) == 1
    assert "no rows" in capsys.readouterr().err
