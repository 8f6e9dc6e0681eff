"""Throughput of the T.4/T.6 codecs against libtiff (through Pillow) on the ITU test charts.

What it does
------------
For MH, MR (K=4) and MMR, encodes and decodes the eight 1728-pel ITU charts with ``ums.fax.t4`` and
with libtiff in the same run, and prints pages/s for both and the ratio (libtiff time / ours).

How it works
------------
libtiff encode = Pillow ``save(compression="group3"/"group4")`` of a one-strip TIFF; libtiff decode =
Pillow ``open`` + ``load`` of a one-strip TIFF around the raw data.  Both include Pillow's small
container overhead, which is part of what the project would pay for using libtiff.  Each figure is
the best of ``--repeat`` passes over all pages.

Run: ``.venv/bin/python bench/t4.py [--repeat N] [--profile mh|mr|mmr]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.fax.pages import itu_page, libtiff_decode
from ums.fax.t4 import decode, encode

MODES = {"mh": ("group3", 0, 1), "mr": ("group3", 1, 4), "mmr": ("group4", 0, 1)}


def _libtiff_encode(page: np.ndarray, compression: str, t4: int) -> bytes:
    info = {278: page.shape[0], 266: 2}
    if compression == "group3":
        info[292] = t4
    buf = io.BytesIO()
    Image.fromarray(page != 0).save(buf, format="TIFF", compression=compression, tiffinfo=info)
    return buf.getvalue()


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", choices=sorted(MODES))
    args = ap.parse_args()
    pages = [itu_page(f"itu{i}") for i in range(1, 9)]
    n = len(pages)
    if args.profile:
        mode = args.profile
        k = MODES[mode][2]
        raws = [encode(p, compression=mode, k=k) for p in pages]  # type: ignore[arg-type]
        prof = cProfile.Profile()
        prof.enable()
        for p, raw in zip(pages, raws, strict=True):
            encode(p, compression=mode, k=k)  # type: ignore[arg-type]
            decode(raw, width=1728, compression=mode)  # type: ignore[arg-type]
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
        return
    print(f"{n} ITU charts, 1728 x 2376; best of {args.repeat}; pages/s (higher is better)")
    head = ("mode", "enc ours", "enc libtiff", "ratio", "dec ours", "dec libtiff", "ratio", "KB/page")
    print("{:5} {:>9} {:>12} {:>6}   {:>9} {:>12} {:>6}  {}".format(*head))
    for mode, (comp, t4, k) in MODES.items():
        raws = [encode(p, compression=mode, k=k) for p in pages]  # type: ignore[arg-type]
        for p, raw in zip(pages, raws, strict=True):  # sanity: both decoders agree
            assert np.array_equal(decode(raw, width=1728, compression=mode).page, p)  # type: ignore[arg-type]
            assert np.array_equal(libtiff_decode(raw, 1728, p.shape[0], 4 if comp == "group4" else 3, t4), p)
        enc_ours = _best(lambda: [encode(p, compression=mode, k=k) for p in pages], args.repeat)  # type: ignore[arg-type]  # noqa: B023
        enc_lib = _best(lambda: [_libtiff_encode(p, comp, t4) for p in pages], args.repeat)  # noqa: B023
        dec_ours = _best(
            lambda: [decode(r, width=1728, compression=mode) for r in raws],  # type: ignore[arg-type]  # noqa: B023
            args.repeat,
        )
        dec_lib = _best(
            lambda: [
                libtiff_decode(r, 1728, p.shape[0], 4 if comp == "group4" else 3, t4)  # noqa: B023
                for p, r in zip(pages, raws, strict=True)  # noqa: B023
            ],
            args.repeat,
        )
        kb = sum(map(len, raws)) / n / 1024
        print(
            f"{mode:5} {n / enc_ours:9.1f} {n / enc_lib:12.1f} {enc_ours / enc_lib:5.1f}x   "
            f"{n / dec_ours:9.1f} {n / dec_lib:12.1f} {dec_ours / dec_lib:5.1f}x  {kb:7.1f}"
        )
    print("ratio = our time / libtiff time (goal: encode <= 3x, decode <= 10x)")


if __name__ == "__main__":
    main()
