"""Fax modem receivers and transmitters against SpanDSP: BER against SNR, and CPU per second of signal.

What it does
------------
1. **Sensitivity.**  For each modem and rate, SpanDSP's transmitter makes one burst per channel
   (random data, -13 dBm0, flat line, no clock offset, linear samples as in SpanDSP's own tests);
   white noise is added from the first to the last non-zero sample of the burst at each SNR of a
   grid (full band, 0-4 kHz; the Debian SpanDSP never trains when noise precedes the signal), and
   the *identical* noisy signals
   go to SpanDSP's receiver and to ours.  It prints the BER of both per SNR, the SNR where each reaches
   BER 1e-5 (log-linear interpolation between the grid points that bracket it) and the difference.
   A receiver that fails to train counts every bit of that burst as wrong.  ``--plot`` writes the
   curves to docs/modems-ber.png.
2. **Cost.**  CPU seconds (``time.process_time``) per second of signal: our receiver as a bank of 1
   and as a bank of ``--batch`` channels, our transmitter, and SpanDSP's receiver and transmitter in
   the same run (SpanDSP's receiver puts its bits straight into a C HDLC receiver, so no Python runs
   per bit); the ratio ours/SpanDSP; and how many concurrent receivers one core sustains.
   ``--profile MODEM:RATE`` prints a cProfile of our bank receiver.

Run: ``.venv/bin/python bench/modems.py [--modems v17:14400,v29:9600] [--bits 200000] [--plot]``
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import math
import pstats
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peers import line, spandsp  # noqa: E402
from ums.softfax_g711 import common  # noqa: E402

ALL = [
    ("v21ch2", 300),
    ("v27ter", 2400),
    ("v27ter", 4800),
    ("v29", 7200),
    ("v29", 9600),
    ("v17", 7200),
    ("v17", 9600),
    ("v17", 12000),
    ("v17", 14400),
]

#: SNR grids (dB) around each modem's cliff.
GRID = {
    ("v21ch2", 300): np.arange(0.0, 12.1, 1.0),
    ("v27ter", 2400): np.arange(4.0, 14.1, 1.0),
    ("v27ter", 4800): np.arange(9.0, 19.1, 1.0),
    ("v29", 7200): np.arange(10.0, 20.1, 1.0),
    ("v29", 9600): np.arange(14.0, 24.1, 1.0),
    ("v17", 7200): np.arange(8.0, 16.1, 0.5),
    ("v17", 9600): np.arange(11.0, 19.1, 0.5),
    ("v17", 12000): np.arange(14.0, 22.1, 0.5),
    ("v17", 14400): np.arange(18.0, 26.1, 0.5),
}

Bits = npt.NDArray[np.uint8]


# --- our modems, by name -------------------------------------------------------------------------


def our_tx(modem: str, rate: int, bits: Bits, level_dbm0: float = -13.0) -> npt.NDArray[np.int16]:
    """Whole burst from our transmitter."""
    tx: Any
    if modem == "v21ch2":
        from ums.softfax_g711.v21 import FskTx

        tx = FskTx(2, level_dbm0=level_dbm0)
    elif modem == "v27ter":
        from ums.softfax_g711.v27ter import V27terTx

        tx = V27terTx(rate, level_dbm0=level_dbm0)
    elif modem == "v29":
        from ums.softfax_g711.v29 import V29Tx

        tx = V29Tx(rate, level_dbm0=level_dbm0)
    else:
        from ums.softfax_g711.v17 import V17Tx

        tx = V17Tx(rate, level_dbm0=level_dbm0)
    tx.send(bits)
    tx.finish()
    out = []
    while not tx.done:
        out.append(tx.generate(1600))
    return np.concatenate(out)


class BankRun:
    """A new bank of ``n`` of our receivers; ``feed`` an (n, m) block at a time, ``bits()`` at the end."""

    def __init__(self, modem: str, rate: int, n: int) -> None:
        self.bank: Any
        if modem == "v21ch2":
            from ums.softfax_g711.v21 import FskRxBank

            self.bank = FskRxBank(n, 2)
        elif modem == "v27ter":
            from ums.softfax_g711.v27ter import V27terRxBank

            self.bank = V27terRxBank(n, rate)
        elif modem == "v29":
            from ums.softfax_g711.v29 import V29RxBank

            self.bank = V29RxBank(n, rate)
        else:
            from ums.softfax_g711.v17 import V17RxBank

            self.bank = V17RxBank(n, rate)
        self.acc: list[list[Bits]] = [[] for _ in range(n)]

    def feed(self, block: npt.NDArray[np.int16]) -> None:
        for i, o in enumerate(self.bank.receive(block)):
            if o.bits.size:
                self.acc[i].append(o.bits)

    def bits(self) -> list[Bits]:
        return [np.concatenate(a) if a else np.zeros(0, np.uint8) for a in self.acc]


# --- measurement ---------------------------------------------------------------------------------


def count_errors(got: Bits, sent: Bits) -> int:
    """Bit errors of ``got`` against ``sent``, aligned on the first 1000 bits (a receiver may put out a
    few bits more or fewer at the start); missing bits count as errors."""
    if got.size == 0:
        return int(sent.size)
    probe = min(1000, sent.size)
    best_off, best = 0, probe + 1
    for off in range(0, min(64, max(got.size - probe, 0) + 1)):
        e = int(np.count_nonzero(got[off : off + probe] != sent[:probe]))
        if e < best:
            best_off, best = off, e
    seg = got[best_off : best_off + sent.size]
    return int(np.count_nonzero(seg != sent[: seg.size])) + (sent.size - seg.size)


def noisy_burst(
    clean: npt.NDArray[np.float64], snr: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """White noise ``snr`` dB below -13 dBm0, from the first to the last non-zero sample of the burst:
    the Debian SpanDSP does not train when noise precedes the signal (V.29 and V.17 transmitters start
    with silence of their own)."""
    on = np.flatnonzero(clean)
    out = clean.copy()
    if on.size:
        a, b = int(on[0]), int(on[-1]) + 1
        out[a:b] = line.awgn(clean[a:b], snr, rng, signal_dbm0=-13.0)
    return out


@dataclass
class Curve:
    snr: list[float]
    ber_ours: list[float]
    ber_span: list[float]


def snr_at(snrs: Sequence[float], bers: Sequence[float], bits: int, target: float = 1e-5) -> float | None:
    """Lowest SNR where BER falls to ``target`` (log-linear interpolation; 0 errors counts as 0.5/bits)."""
    floor = 0.5 / max(bits, 1)
    logs = [math.log10(max(b, floor)) for b in bers]
    lt = math.log10(target)
    for i in range(1, len(snrs)):
        if logs[i - 1] > lt >= logs[i] and all(v <= lt for v in logs[i:]):
            a, b = logs[i - 1], logs[i]
            return snrs[i - 1] + (snrs[i] - snrs[i - 1]) * (a - lt) / (a - b)
    if logs and logs[0] <= lt:
        return snrs[0]
    return None


def sweep(modem: str, rate: int, total_bits: int, channels: int, seed: int) -> Curve:
    rng = np.random.default_rng(seed)
    per = max(total_bits // channels, 2000)
    sent = [rng.integers(0, 2, per).astype(np.uint8) for _ in range(channels)]
    clean = [spandsp.ModemTx(modem, rate, b, level_dbm0=-13.0).run().astype(np.float64) for b in sent]
    m = max(c.size for c in clean) + 1600
    snrs = [float(s) for s in GRID[(modem, rate)]]
    curve = Curve([], [], [])
    for snr in snrs:
        noisy = np.zeros((channels, m), dtype=np.int16)
        for i, c in enumerate(clean):
            burst = noisy_burst(c, snr, np.random.default_rng(seed * 1000 + i))
            noisy[i] = line.to_int16(np.concatenate([np.zeros(400), burst, np.zeros(m - c.size - 400)]))
        errs_span = 0
        for i in range(channels):
            rx = spandsp.ModemRx(modem, rate)
            rx.receive(noisy[i])
            errs_span += count_errors(rx.bits, sent[i])
        run = BankRun(modem, rate, channels)
        for start in range(0, m, 1600):
            run.feed(noisy[:, start : start + 1600])
        got = run.bits()
        errs_ours = sum(count_errors(g, s) for g, s in zip(got, sent, strict=True))
        n = per * channels
        curve.snr.append(snr)
        curve.ber_ours.append(errs_ours / n)
        curve.ber_span.append(errs_span / n)
        bo, bs = errs_ours / n, errs_span / n
        print(f"  {modem} {rate} snr={snr:5.1f} dB  ber_ours={bo:.2e}  ber_spandsp={bs:.2e}")
        if errs_ours == 0 and errs_span == 0 and snr > snrs[0] + 2:
            break
    return curve


def cpu(modem: str, rate: int, batch: int, seconds: float, seed: int) -> dict[str, float]:
    """CPU seconds per second of signal for each part."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, int(rate * seconds)).astype(np.uint8)
    t0 = time.process_time()
    span_signal = spandsp.ModemTx(modem, rate, bits, level_dbm0=-13.0).run()
    span_tx = time.process_time() - t0
    dur = span_signal.size / common.SAMPLE_RATE
    t0 = time.process_time()
    ours_signal = our_tx(modem, rate, bits)
    our_tx_s = time.process_time() - t0
    noisy = line.to_int16(noisy_burst(span_signal.astype(np.float64), 30.0, np.random.default_rng(seed)))
    rx = spandsp.ModemRx(modem, rate, c_sink=True)
    t0 = time.process_time()
    for start in range(0, noisy.size, 160):
        rx.receive(noisy[start : start + 160])
    span_rx = time.process_time() - t0
    one = BankRun(modem, rate, 1)
    t0 = time.process_time()
    for start in range(0, noisy.size, 160):
        one.feed(noisy[None, start : start + 160])
    our_rx1 = time.process_time() - t0
    many = np.repeat(noisy[None, :], batch, axis=0)
    bank = BankRun(modem, rate, batch)
    t0 = time.process_time()
    for start in range(0, noisy.size, 160):
        bank.feed(many[:, start : start + 160])
    our_rxn = time.process_time() - t0
    return {
        "seconds": dur,
        "span_tx": span_tx / dur,
        "span_rx": span_rx / dur,
        "our_tx": our_tx_s / (ours_signal.size / common.SAMPLE_RATE),
        "our_rx1": our_rx1 / dur,
        "our_rxn": our_rxn / dur / batch,
    }


def plot(curves: dict[tuple[str, int], Curve], path: Path) -> None:
    """BER curves, ours solid and SpanDSP dashed, with Pillow (no plotting library needed)."""
    from PIL import Image, ImageDraw

    w, h, left, bottom, top, right = 1000, 640, 70, 50, 20, 190
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xs = [s for c in curves.values() for s in c.snr]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 30.0)
    y0, y1 = -6.0, -0.3

    def px(snr: float, ber: float) -> tuple[float, float]:
        lb = min(max(math.log10(max(ber, 1e-7)), y0), y1)
        fx = left + (snr - x0) / max(x1 - x0, 1e-9) * (w - left - right)
        fy = top + (y1 - lb) / (y1 - y0) * (h - top - bottom)
        return fx, fy

    for e in range(-6, 0):
        _, yy = px(x0, 10.0**e)
        d.line([(left, yy), (w - right, yy)], fill=(225, 225, 225))
        d.text((8, yy - 6), f"1e{e}", fill="black")
    for s in range(math.floor(x0), math.ceil(x1) + 1, 2):
        xx, _ = px(float(s), 1e-6)
        d.line([(xx, top), (xx, h - bottom)], fill=(235, 235, 235))
        d.text((xx - 6, h - bottom + 6), str(s), fill="black")
    d.text((w // 2 - 60, h - 22), "SNR (dB, full band)", fill="black")
    d.text((left, 2), "BER: ours (solid) vs SpanDSP (dashed), SpanDSP transmitter, flat AWGN", fill="black")
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    palette += [(227, 119, 194), (127, 127, 127), (188, 189, 34)]
    for k, ((modem, rate), c) in enumerate(curves.items()):
        col = palette[k % len(palette)]
        pts_o = [px(s, b) for s, b in zip(c.snr, c.ber_ours, strict=True)]
        pts_s = [px(s, b) for s, b in zip(c.snr, c.ber_span, strict=True)]
        if len(pts_o) > 1:
            d.line(pts_o, fill=col, width=2)
        for a, b in itertools.pairwise(pts_s):
            mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
            d.line([a, (mx, my)], fill=col, width=1)
        yy = top + 14 * k
        d.line([(w - right + 10, yy + 6), (w - right + 40, yy + 6)], fill=col, width=2)
        d.text((w - right + 45, yy), f"{modem} {rate}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modems", default=",".join(f"{m}:{r}" for m, r in ALL))
    ap.add_argument("--bits", type=int, default=200_000, help="bits per SNR point (all channels together)")
    ap.add_argument("--channels", type=int, default=10, help="bursts per SNR point, received as one bank")
    ap.add_argument("--batch", type=int, default=100, help="bank size for the cost figures")
    ap.add_argument("--seconds", type=float, default=10.0, help="signal length for the cost figures")
    ap.add_argument("--no-ber", action="store_true")
    ap.add_argument("--no-cpu", action="store_true")
    ap.add_argument("--plot", type=Path, nargs="?", const=ROOT / "docs" / "modems-ber.png")
    ap.add_argument("--profile", default=None, help="MODEM:RATE to profile our bank receiver")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if not spandsp.available():
        print("SpanDSP (libspandsp2) is needed as the reference: apt-get install libspandsp2")
        return 2
    wanted = [(m, int(r)) for m, r in (item.split(":") for item in args.modems.split(","))]
    if args.profile:
        m, r = args.profile.split(":")
        prof = cProfile.Profile()
        prof.enable()
        cpu(m, int(r), args.batch, args.seconds, args.seed)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return 0
    curves: dict[tuple[str, int], Curve] = {}
    rows = []
    for modem, rate in wanted:
        print(f"{modem} {rate}")
        snr_o = snr_s = None
        if not args.no_ber:
            c = sweep(modem, rate, args.bits, args.channels, args.seed)
            curves[(modem, rate)] = c
            n = max(args.bits // args.channels, 2000) * args.channels
            snr_o = snr_at(c.snr, c.ber_ours, n)
            snr_s = snr_at(c.snr, c.ber_span, n)
        costs = cpu(modem, rate, args.batch, args.seconds, args.seed) if not args.no_cpu else {}
        rows.append((modem, rate, snr_o, snr_s, costs))
    print()
    print("| modem | SNR at BER 1e-5: ours | SpanDSP | difference |")
    print("|---|---|---|---|")
    for modem, rate, snr_o, snr_s, _ in rows:
        fo = f"{snr_o:.1f} dB" if snr_o is not None else "not reached"
        fs = f"{snr_s:.1f} dB" if snr_s is not None else "not reached"
        diff = f"{snr_o - snr_s:+.1f} dB" if snr_o is not None and snr_s is not None else "-"
        print(f"| {modem} {rate} | {fo} | {fs} | {diff} |")
    if not args.no_cpu:
        print()
        print(
            f"| modem | our RX, 1 call | our RX, per call in a bank of {args.batch} | SpanDSP RX "
            "| ratio (bank/SpanDSP) | our RX calls per core (bank) | our TX | SpanDSP TX |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for modem, rate, _, _, c in rows:
            print(
                f"| {modem} {rate} | {c['our_rx1'] * 1e3:.2f} ms/s | {c['our_rxn'] * 1e3:.3f} ms/s "
                f"| {c['span_rx'] * 1e3:.3f} ms/s | {c['our_rxn'] / max(c['span_rx'], 1e-9):.1f}x "
                f"| {1.0 / max(c['our_rxn'], 1e-9):.0f} | {c['our_tx'] * 1e3:.2f} ms/s "
                f"| {c['span_tx'] * 1e3:.3f} ms/s |"
            )
    if args.plot and curves:
        plot(curves, args.plot)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
