"""Operator commands for fax pages: ``ums fax render`` and ``ums fax decode``.

What it does
------------
``ums fax render IN... -o OUT.tif|OUT.pdf [--fine|--superfine] [--cover --from X --to Y --comment Z]``
renders documents (PDF, images, text, HTML, Office files) into fax pages and writes them as a TIFF
Class F or a G4 PDF, optionally with a cover page in front and a PNG thumbnail of the first page.

``ums fax decode RAW --width 1728 --compression mh|mr|mmr -o OUT.png`` decodes raw T.4/T.6 data (as
received from the line, or a strip cut out of a TIFF) with our decoder and writes the page as PNG,
TIFF or PDF; bad rows and the longest run of them are reported like a fax machine would count them.

How it works
------------
``add_parsers(subparsers)`` adds the ``fax`` command to the main parser of ``ums.cli``;
``run(args)`` runs it and returns the exit status: 0 on success, 1 when an input cannot be rendered
or decoded (the reason on stderr), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ums.render.page import RESOLUTIONS, FaxPage, Resolution, page_png, thumbnail_png

__all__ = ["add_parsers", "run"]


def add_parsers(subparsers: Any, extra: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """Add ``fax render`` and ``fax decode`` to an ``add_subparsers()`` object; returns the fax parser.

    ``extra(sub)`` adds further ``fax`` sub-commands (``ums.cli`` adds send, queue and cancel).
    """
    fax = subparsers.add_parser("fax", help="render documents to fax pages, decode raw fax data")
    sub = fax.add_subparsers(dest="fax_command", required=True)

    render = sub.add_parser("render", help="documents -> fax pages as TIFF (Class F) or PDF")
    render.add_argument("inputs", nargs="+", metavar="IN", help="PDF, image, text, HTML or Office files")
    render.add_argument("-o", "--output", required=True, help="OUT.tif / OUT.tiff / OUT.pdf")
    res = render.add_mutually_exclusive_group()
    res.add_argument("--standard", dest="resolution", action="store_const", const="standard")
    res.add_argument("--fine", dest="resolution", action="store_const", const="fine")
    res.add_argument("--superfine", dest="resolution", action="store_const", const="superfine")
    render.set_defaults(resolution="fine")
    render.add_argument(
        "--compression", choices=("g4", "g3", "g3-2d"), default="g4", help="TIFF only (default g4)"
    )
    render.add_argument(
        "--natural-length", action="store_true", help="keep short pages short (no A4 padding)"
    )
    render.add_argument("--cover", action="store_true", help="put a cover page in front")
    render.add_argument("--from", dest="sender", default="", help="cover: sender")
    render.add_argument("--to", dest="recipient", default="", help="cover: recipient")
    render.add_argument("--comment", default="", help="cover: comment")
    render.add_argument("--subject", default="", help="cover: subject")
    render.add_argument("--date", default=None, help="cover: date text (default: now)")
    render.add_argument("--logo", type=Path, default=None, help="cover: company logo image")
    render.add_argument("--thumbnail", type=Path, default=None, help="also write a PNG preview of page 1")

    decode = sub.add_parser("decode", help="raw T.4/T.6 data -> PNG / TIFF / PDF")
    decode.add_argument("raw", type=Path, metavar="RAW")
    decode.add_argument("--width", type=int, default=1728, help="pels per row (default 1728)")
    decode.add_argument("--compression", choices=("mh", "mr", "mmr"), required=True)
    decode.add_argument("--msb-first", action="store_true", help="first bit in the MSB (TIFF FillOrder 1)")
    decode.add_argument("--rows", type=int, default=None, help="expected rows (MMR without EOFB)")
    decode.add_argument(
        "--resolution", choices=tuple(RESOLUTIONS), default="fine", help="vertical resolution (default fine)"
    )
    decode.add_argument("-o", "--output", required=True, help="OUT.png / OUT.tif / OUT.pdf")
    if extra is not None:
        extra(sub)
    return fax  # type: ignore[no-any-return]


def _write_pages(pages: list[FaxPage], out: Path, compression: str = "g4") -> int:
    suffix = out.suffix.lower()
    if suffix in (".tif", ".tiff"):
        from ums.render.tiff import write_tiff

        data = write_tiff(pages, compression=compression)  # type: ignore[arg-type]
    elif suffix == ".pdf":
        from ums.render.pdf import write_pdf

        data = write_pdf(pages)
    elif suffix == ".png":
        if len(pages) != 1:
            print("error: PNG output holds one page", file=sys.stderr)
            return 2
        data = page_png(pages[0])
    else:
        print(f"error: unknown output type {out.name} (use .tif, .tiff or .pdf)", file=sys.stderr)
        return 2
    out.write_bytes(data)
    return 0


def _render(args: argparse.Namespace) -> int:
    from ums.render.cover import CoverInfo, render_cover
    from ums.render.documents import DocumentError, render_document

    resolution: Resolution = args.resolution
    out = Path(args.output)
    if out.suffix.lower() not in (".tif", ".tiff", ".pdf"):
        print(f"error: unknown output type {out.name} (use .tif, .tiff or .pdf)", file=sys.stderr)
        return 2
    pages: list[FaxPage] = []
    for name in args.inputs:
        path = Path(name)
        try:
            data = path.read_bytes()
            pages += render_document(
                data, filename=path.name, resolution=resolution, a4_length=not args.natural_length
            )
        except (OSError, DocumentError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 1
    if args.cover:
        info = CoverInfo(
            sender=args.sender,
            recipient=args.recipient,
            date=args.date or datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"),
            pages=len(pages) + 1,
            comment=args.comment.replace("\\n", "\n"),
            subject=args.subject,
        )
        try:
            pages.insert(0, render_cover(info, resolution=resolution, logo=args.logo))
        except OSError as exc:
            print(f"error: cover page: {exc}", file=sys.stderr)
            return 1
    status = _write_pages(pages, out, args.compression)
    if status:
        return status
    if args.thumbnail:
        args.thumbnail.write_bytes(thumbnail_png(pages[0]))
    print(f"pages={len(pages)} resolution={resolution} output={out} bytes={out.stat().st_size}")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from ums.fax.t4 import decode

    try:
        data = args.raw.read_bytes()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.width < 1 or (args.rows is not None and args.rows < 0):
        print("error: --width must be >= 1 and --rows >= 0", file=sys.stderr)
        return 2
    result = decode(
        data, width=args.width, compression=args.compression, msb_first=args.msb_first, rows=args.rows
    )
    print(
        f"rows={result.rows} bad_rows={result.bad_rows} longest_bad_run={result.longest_bad_run} "
        f"end_of_page={'yes' if result.end_of_page else 'no'}"
    )
    if result.rows == 0:
        print("error: no rows decoded", file=sys.stderr)
        return 1
    xdpi, ydpi = RESOLUTIONS[args.resolution]
    page = FaxPage(result.page, xdpi, ydpi, bad_rows=result.bad_rows, longest_bad_run=result.longest_bad_run)
    return _write_pages([page], Path(args.output))


def run(args: argparse.Namespace) -> int:
    """Run ``ums fax render`` or ``ums fax decode``; returns the exit status."""
    if args.fax_command == "render":
        return _render(args)
    if args.fax_command == "decode":
        return _decode(args)
    return 2  # pragma: no cover - argparse enforces the choices


def main(argv: list[str] | None = None) -> int:
    """``python -m ums.render.fax_cli render|decode ...`` (the same as ``ums fax ...``)."""
    parser = argparse.ArgumentParser(prog="ums")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["fax", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
